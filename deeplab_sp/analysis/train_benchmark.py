"""Training-step benchmark of the SP-Transformer, NAIVE vs EFFICIENT.

The inference benchmark (benchmark.py) breaks the latency of one forward
pass down as Table IV of the SP-Transformer paper (arXiv 2309.16889) does.
Training costs more: the backward pass, the loss and the optimizer. This
module measures, for each local attention implementation, the trainer's
whole step ('step'), the encoder's own step ('encoder_step': what a network
without the superpixel decoder would cost) and the forward and backward
pass of each component (encoder, hypercolumn, tokenization, classifier,
association) on its real inputs; train_setup.py builds them.

The modules: train_measurements.py (what is measured: StepTiming,
PeakMemory, their ratios, TrainBenchmarkResults), train_setup.py (the timed
functions), train_child.py (the child processes), train_report.py (the text
report); this one decides what runs where.

Timing: every (implementation, row) pair is a `tf.function`, warmed up
alone, then timed in rounds (timing.round_robin), each round calling every
pair once, so that the implementations and the rows are all measured over
the same stretch of time. A figure is the median over the rounds;
'total_over_encoder' is the median over rounds of that round's step /
encoder_step. On CPU the two steps of each implementation are timed this
way in a child process of their own (a whole step at the Cityscapes
geometry holds several GiB, and the allocators keep what they free: the
NAIVE step, the EFFICIENT one and the components do not fit in one process
of a 24 GiB machine), under a memory limit, before the components of both
implementations are timed together in this process; on a GPU all rows are
timed together. The models run in the config's precision
(trainer_options.mixed_precision) and with its use_xla.

Peak memory (peak_memory.py): the forward and backward pass of the
tokenization and of the whole step (`Trainer.replica_gradients`: forward,
loss and gradients) per implementation, and of the encoder (shared), each in
float32 and in bfloat16 (tf_keras' mixed_bfloat16 policy): on CPU the
growth of a fresh child process's resident set, on GPU the allocator's
peak. Weights and optimizer slots exist before the measured call and are
not in its figure; 'training_state_bytes' gives their size (weights and the
two AdamW moments, float32). A measurement that would need more memory than
the machine has is reported as such (None, with a note), and the step of
that implementation is then not timed.
"""

import dataclasses
import gc
from typing import Callable, List, NamedTuple, Optional, Set, Tuple

from deeplab_sp import experiment as experiment_lib
from deeplab_sp.analysis import benchmark
from deeplab_sp.analysis import devices
from deeplab_sp.analysis import peak_memory
from deeplab_sp.analysis import timing
from deeplab_sp.analysis import train_child
from deeplab_sp.analysis import train_measurements as measurements
from deeplab_sp.analysis import train_report
from deeplab_sp.analysis import train_settings as settings_lib
from deeplab_sp.analysis import train_setup
from deeplab_sp.model import local_attention

# The interface of tools/benchmark.py.
TrainBenchmarkSettings = settings_lib.TrainBenchmarkSettings
TrainBenchmarkResults = measurements.TrainBenchmarkResults
format_table = train_report.format_table


def to_json(results: TrainBenchmarkResults) -> dict:
  """The results as JSON-serialisable data (dataclasses.asdict)."""
  return dataclasses.asdict(results)


def measure_peak_memory(experiment: experiment_lib.Experiment,
                        implementation: str, part: str, precision: str,
                        size, batch: int, limit_bytes: Optional[int] = None
                       ) -> measurements.PeakMemory:
  """Peak memory of one forward and backward pass of `part`.

  Args:
    experiment: the loaded experiment.
    implementation: NAIVE or EFFICIENT.
    part: 'encoder', 'tokenization' or 'step' (loss and gradients).
    precision: FLOAT32 or BFLOAT16.
    size: (height, width).
    batch: images.
    limit_bytes: the most memory the child process may use (CPU only);
      None: the memory available when it starts, less a margin.

  Returns:
    On a GPU the allocator's peak, measured in this process; on CPU the
    resident-set growth of a child process (peak_bytes None where not
    measurable: not Linux).

  Raises:
    peak_memory.MemoryLimitExceeded: it needs more memory than the limit.
  """
  if not devices.gpu_in_use():
    return train_child.peak_memory_in_child(
        experiment, implementation, part, precision, size, batch,
        limit_bytes)
  with train_setup.policy(train_setup.POLICIES[precision]):
    setup = train_setup.TrainingSetup(experiment, implementation, size, batch)
    peak = peak_memory.gpu_peak_bytes(setup.measured_part(part))
  return measurements.PeakMemory(implementation, part, precision, *size,
                                 batch, measurements.GPU_ALLOCATOR_PEAK, peak)


def _measure_memory(experiment, run: settings_lib.RunSettings, progress
                   ) -> Tuple[List[measurements.PeakMemory], List[str]]:
  """Every peak memory measurement, and notes on those out of memory."""
  size = (run.height, run.width)
  peaks, notes = [], []

  def measure(implementation, part, precision):
    progress(f'{implementation}: peak memory of the {part} forward + '
             f'backward pass, {precision}')
    try:
      peak = measure_peak_memory(experiment, implementation, part, precision,
                                 size, run.batch, run.memory_limit_bytes)
    except peak_memory.MemoryLimitExceeded as e:
      notes.append(f'{implementation} {part} {precision}: out of memory. '
                   f'{e}')
      progress(f'  out of memory: {e}')
      # Only a child process stops at the limit: a resident-set figure.
      peak = measurements.PeakMemory(
          implementation, part, precision, *size, run.batch,
          measurements.RSS_GROWTH, peak_bytes=None, out_of_memory=True)
    else:
      progress(f'  {train_report.format_bytes(peak.peak_bytes)}')
    peaks.append(peak)

  # The encoder is the same in both; the EFFICIENT model builds faster.
  encoder_owner = (local_attention.EFFICIENT
                   if local_attention.EFFICIENT in run.implementations
                   else run.implementations[0])
  for precision in run.precisions:
    measure(encoder_owner, settings_lib.ENCODER, precision)
    for implementation in run.implementations:
      for part in settings_lib.MEMORY_PARTS:
        measure(implementation, part, precision)
  return peaks, notes


def _time_steps_apart(experiment, run: settings_lib.RunSettings, peaks,
                      notes: List[str], progress
                     ) -> Tuple[List[measurements.StepTiming], Set[str]]:
  """The steps timed in child processes (CPU), and the untimed steps.

  A step whose peak memory in the timed precision is out of memory is not
  timed; on a GPU the others are timed in this process (_time_together).
  """
  step = settings_lib.STEP
  timed_precision = {policy: name for name, policy
                     in train_setup.POLICIES.items()}.get(run.timing_policy)
  timings, untimed = [], set()
  for implementation in run.implementations:
    if any(p.out_of_memory and (p.implementation, p.part, p.precision) == (
        implementation, step, timed_precision) for p in peaks):
      notes.append(f'{implementation} step: not timed, it does not fit in '
                   'the memory available.')
      progress(f'  {notes[-1]}')
      untimed.add(implementation)
    elif run.steps_in_subprocess:
      progress(f'{implementation}: timing the whole step and the encoder '
               f'step in a subprocess at {run.height}x{run.width}, batch '
               f'{run.batch} ({run.num_warmup} warm-up calls, '
               f'{run.num_runs} rounds)')
      try:
        steps = train_child.time_steps(
            experiment, implementation, run.timing_policy,
            (run.height, run.width), run.batch, run.num_warmup, run.num_runs,
            run.memory_limit_bytes)
      except peak_memory.MemoryLimitExceeded as e:
        notes.append(f'{implementation} step: not timed, out of memory. {e}')
        progress(f'  {notes[-1]}')
        untimed.add(implementation)
        continue
      timings += steps
      ms = {t.part: t.median_ms for t in steps}
      progress(f'  step {ms[step]:.0f} ms, encoder step '
               f'{ms[settings_lib.ENCODER_STEP]:.0f} ms')
  return timings, untimed


class _Timed(NamedTuple):
  """A function timed in this process; 'NAIVE/step' in progress lines."""
  implementation: str
  part: str

  def __str__(self):
    return f'{self.implementation}/{self.part}'


def _time_together(experiment, run: settings_lib.RunSettings,
                   time_steps: Set[str], progress
                  ) -> Tuple[List[measurements.StepTiming], int]:
  """The components (and the steps of `time_steps`), round-robin here.

  Returns:
    The timings, and the training state bytes of the first implementation.
  """
  size = (run.height, run.width)
  steps = (settings_lib.ENCODER_STEP, settings_lib.STEP)
  functions, setups = {}, {}
  with train_setup.policy(run.timing_policy):
    for implementation in run.implementations:
      progress(f'{implementation}: building the model, optimizer and '
               f'trainer at {size[0]}x{size[1]}, batch {run.batch}')
      setup = train_setup.TrainingSetup(experiment, implementation, size,
                                        run.batch)
      setups[implementation] = setup
      parts = settings_lib.COMPONENTS + (
          steps if implementation in time_steps else ())
      for part in parts:
        functions[_Timed(implementation, part)] = setup.timed_part(part)
    progress(f'Timing {len(functions)} functions: {run.num_warmup} '
             f'warm-up calls each, then {run.num_runs} rounds')
    rounds = timing.round_robin(functions, run.num_warmup, run.num_runs,
                                progress)
  state_bytes = train_setup.training_state_bytes(
      setups[run.implementations[0]].model)
  del functions, setups
  gc.collect()
  timings = [measurements.StepTiming.from_rounds(
      times, implementation=key.implementation, part=key.part,
      policy=run.timing_policy, height=run.height, width=run.width,
      batch=run.batch, in_subprocess=False)
             for key, times in rounds.items()]
  return timings, state_bytes


def _run_settings(experiment, settings, size, implementations
                 ) -> settings_lib.RunSettings:
  model_options = experiment.options.model_options
  return settings_lib.RunSettings(
      height=size[0], width=size[1], batch=settings.batch,
      implementations=implementations, num_warmup=settings.num_warmup,
      num_runs=settings.num_runs, measure_memory=settings.measure_memory,
      precisions=list(settings.precisions),
      memory_limit_bytes=settings.memory_limit_bytes,
      geometry=benchmark.model_geometry(model_options, size),
      num_layers=model_options.superpixel_tokenization.num_layers,
      channels=model_options.superpixel_tokenization.channels,
      encoder=model_options.encoder.name,
      timing_policy=experiment.keras_mixed_precision_policy,
      use_xla=experiment.options.trainer_options.use_xla,
      device=devices.describe(),
      # On a GPU, whose memory one process holds, the steps are timed with
      # the components (see _time_steps_apart).
      steps_in_subprocess=not devices.gpu_in_use())


def run_train_benchmark(experiment: experiment_lib.Experiment,
                        settings: TrainBenchmarkSettings,
                        progress: Callable[[str], None] = print
                       ) -> TrainBenchmarkResults:
  """Measures the training step; see the module docstring.

  Args:
    experiment: the loaded experiment (model and trainer options, class
      count, input size).
    settings: what to measure.
    progress: called with one line of progress at a time.

  Returns:
    The measurements and their ratios; to_json gives them as JSON data,
    format_table as text.
  """
  settings_lib.validate_settings(settings)
  size = benchmark.input_size(
      experiment, benchmark.BenchmarkSettings(height=settings.height,
                                              width=settings.width))
  implementations = [local_attention.normalize_implementation(i)
                     for i in settings.implementations]
  run = _run_settings(experiment, settings, size, implementations)
  peaks, notes = [], []
  if run.measure_memory:
    # First, while this process holds no model: each measurement runs
    # alone, and what does not fit is known before it is timed.
    peaks, notes = _measure_memory(experiment, run, progress)
  # Then the steps apart, before this process builds any model.
  timings, untimed = _time_steps_apart(experiment, run, peaks, notes,
                                       progress)
  time_steps = (set() if run.steps_in_subprocess else
                set(implementations) - untimed)
  together, state_bytes = _time_together(experiment, run, time_steps,
                                         progress)
  order = local_attention.IMPLEMENTATIONS
  timings = sorted(timings + together, key=lambda t: (
      order.index(t.implementation), settings_lib.ROWS.index(t.part)))
  return TrainBenchmarkResults.from_measurements(
      run, timings, peaks, state_bytes, notes)
