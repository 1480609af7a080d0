"""Training-step benchmark of the SP-Transformer, NAIVE vs EFFICIENT.

The inference benchmark (benchmark.py) breaks the latency of one forward
pass down as Table IV of the SP-Transformer paper (arXiv 2309.16889) does.
Training costs more: the backward pass, the loss and the optimizer. This
module measures, for each local attention implementation:

  * 'step': one whole training step of the trainer itself
    (deeplab_sp/trainer/trainer.py, `Trainer.train_step`): forward pass,
    per-image top-k% cross-entropy, gradients, and the updates of both
    optimizers of the SplitOptimizer, on one fixed batch of random images
    and labels;
  * 'encoder_step': the encoder's own training step, its forward and
    backward pass and the backbone optimizer's update of its variables (what
    a network without the superpixel decoder would cost);
  * the forward and backward pass of each component (encoder, hypercolumn,
    tokenization, classifier, association) on its real inputs, recorded
    from one forward pass of the model in training mode (timing.py): the
    gradients of the component's variables and of its inputs (not of the
    images), from a fixed random output gradient (only through the dense
    logits for the association, as in the loss).

Timing: every (implementation, row) pair is a `tf.function`, warmed up
alone, then timed in rounds (timing.round_robin), each round calling every
pair once, so that the implementations and the rows are all measured over
the same stretch of time. A figure is the median over the rounds;
'total_over_encoder' is the median over rounds of that round's step /
encoder_step. On CPU the two steps of each implementation are timed this
way in a subprocess of their own (a whole step at the Cityscapes geometry holds
several GiB, and the allocators keep what they free: the NAIVE step, the
EFFICIENT one and the components do not fit in one process of a 24 GiB
machine), under a memory limit, before the components of both
implementations are timed together in this process; on a GPU all rows are
timed together. The models run in the config's precision
(trainer_options.mixed_precision) and with its use_xla.

Peak memory (peak_memory.py): the forward and backward pass of the
tokenization and of the whole step (`Trainer.replica_gradients`: forward,
loss and gradients) per implementation, and of the encoder (shared), each in
float32 and in bfloat16 (tf_keras' mixed_bfloat16 policy): on CPU the
growth of a fresh subprocess's resident set, on GPU the allocator's peak.
Weights and optimizer slots exist before the measured call and are not in
its figure; 'training_state_bytes' gives their size (weights and the two
AdamW moments, float32). A measurement that would need more memory than the
machine has is reported as such (None, with a note), and the step of that
implementation is then not timed.
"""

import dataclasses
import functools
import gc
import itertools
import json
import statistics
from typing import Callable, Dict, Optional, Sequence

from google.protobuf import text_format
import numpy as np
import tensorflow as tf
import tf_keras

from deeplab_sp import experiment as experiment_lib
from deeplab_sp.analysis import benchmark
from deeplab_sp.analysis import devices
from deeplab_sp.analysis import peak_memory
from deeplab_sp.analysis import timing
from deeplab_sp.model import local_attention
from deeplab_sp.model import sp_transformer
from deeplab_sp.protos import config_pb2
from deeplab_sp.trainer import optimizer as optimizer_lib
from deeplab_sp.trainer import trainer as trainer_lib

# The model's components (forward + backward each), then the two steps.
COMPONENTS = sp_transformer.COMPONENTS
ENCODER_STEP, STEP = 'encoder_step', 'step'
ROWS = COMPONENTS + (ENCODER_STEP, STEP)
# What the peak memory is measured of; the encoder is the same model in
# both implementations, so it is measured once.
MEMORY_PARTS = ('tokenization', STEP)
ENCODER = 'encoder'
FLOAT32, BFLOAT16 = 'float32', 'bfloat16'
PRECISIONS = (FLOAT32, BFLOAT16)
# The tf_keras policy of each measured precision.
_POLICIES = {FLOAT32: 'float32', BFLOAT16: 'mixed_bfloat16'}
# AdamW keeps two moments per weight: weights + moments = 3 float32 copies.
_STATE_COPIES = 3

_CHILD_PROGRAM = ('import json, sys\n'
                  'from deeplab_sp.analysis import train_benchmark\n'
                  'train_benchmark.peak_memory_child(json.loads(sys.argv[1]))')
_STEP_TIMING_PROGRAM = (
    'import json, sys\n'
    'from deeplab_sp.analysis import train_benchmark\n'
    'train_benchmark.step_timing_child(json.loads(sys.argv[1]))')

_SEED = 0


@dataclasses.dataclass
class TrainBenchmarkSettings:
  """What to measure.

  Attributes:
    height, width: input image size; None: the config's model input size.
    batch: images per step (on one device).
    implementations: subset of local_attention.IMPLEMENTATIONS to compare.
    num_warmup: untimed calls of each function before timing (at least 1).
    num_runs: timed rounds; the median is reported.
    measure_memory: whether to measure the peak memory.
    precisions: the precisions of the memory measurements (PRECISIONS).
    memory_limit_bytes: the most memory one measurement may use; None: the
      memory available when it starts, less a margin.
  """
  height: Optional[int] = None
  width: Optional[int] = None
  batch: int = 1
  implementations: Sequence[str] = local_attention.IMPLEMENTATIONS
  num_warmup: int = 2
  num_runs: int = 5
  measure_memory: bool = True
  precisions: Sequence[str] = PRECISIONS
  memory_limit_bytes: Optional[int] = None


def validate_settings(settings: TrainBenchmarkSettings) -> None:
  """Raises ValueError naming the bad setting and the fix."""
  if not settings.implementations:
    raise ValueError('Pass at least one of '
                     f'{", ".join(local_attention.IMPLEMENTATIONS)}.')
  for name in settings.implementations:
    local_attention.normalize_implementation(name)
  if settings.batch < 1 or settings.num_runs < 1 or settings.num_warmup < 0:
    raise ValueError('batch and num_runs must be >= 1 and num_warmup >= 0 '
                     f'(got {settings.batch}, {settings.num_runs}, '
                     f'{settings.num_warmup}).')
  if (settings.height is None) != (settings.width is None):
    raise ValueError('Give both height and width, or neither (then the '
                     "config's eval crop_size is used).")
  for name in settings.precisions:
    if name not in PRECISIONS:
      raise ValueError(f'Unknown precision {name!r}: choose among '
                       f'{", ".join(PRECISIONS)}.')
  if settings.memory_limit_bytes is not None and (
      settings.memory_limit_bytes <= 0):
    raise ValueError('The memory limit must be positive, got '
                     f'{settings.memory_limit_bytes} bytes.')


def random_batch(batch: int, size, num_classes: int) -> Dict[str, tf.Tensor]:
  """{'image': float32 [batch, H, W, 3] in [0, 255], 'label': int32}."""
  rng = np.random.default_rng(_SEED + 1)
  labels = rng.integers(0, num_classes, size=(batch, *size))
  return {'image': benchmark.random_images(batch, size),
          'label': tf.constant(labels, tf.int32)}


class TrainingSetup:
  """One implementation's model, optimizer and trainer, ready to time.

  Attributes:
    model: the SPTransformer built from the config.
    trainer: the experiment's Trainer (train_step, replica_gradients) on the
      default strategy, with a SplitOptimizer built from the config.
    batch: the fixed batch every step trains on.
    calls: component -> (layer, args, kwargs) of its call in training mode.
  """

  def __init__(self, experiment: experiment_lib.Experiment,
               implementation: str, size, batch: int):
    self.model = benchmark.build_model(experiment, implementation, size)
    trainer_options = experiment.options.trainer_options
    optimizer = optimizer_lib.SplitOptimizer(
        trainer_options,
        dynamic_loss_scale=trainer_options.mixed_precision == 'float16')
    # No dataset: every step reads the same batch (see `step`).
    self.trainer = trainer_lib.Trainer(tf.distribute.get_strategy(),
                                       self.model, optimizer, None,
                                       trainer_options)
    self.batch = random_batch(batch, size, experiment.num_classes)

  @functools.cached_property
  def calls(self):
    """Component -> (layer, args, kwargs), recorded on first use."""
    return timing.record_calls(self.model, self.batch['image'],
                               {name: name for name in COMPONENTS},
                               training=True)

  def step(self) -> Callable[[], object]:
    """The trainer's whole step as a no-argument tf.function."""
    return _function(self.trainer.train_step, itertools.repeat(self.batch))

  def loss_and_gradients(self) -> Callable[[], object]:
    """The step's forward and backward pass (no update), a tf.function."""
    return _function(self.trainer.replica_gradients, self.batch)

  def forward_backward(self, component: str) -> Callable[[], object]:
    """One component's forward and backward pass, a tf.function."""
    layer, args, kwargs = self.calls[component]
    return forward_backward_call(
        layer, args, kwargs, differentiate_inputs=component != ENCODER,
        differentiated_outputs=_differentiated_outputs(component))

  def encoder_step(self) -> Callable[[], object]:
    """The encoder's forward and backward pass and its optimizer update."""
    return _function(_encoder_step, self.forward_backward(ENCODER),
                     self.model.encoder.trainable_variables,
                     self.trainer.optimizer.backbone)


def _function(python_function, *args):
  """tf.function of python_function(*args) without arguments.

  Through functools.partial, so that TensorFlow does not count the many
  functions made from one Python function as retracing (and warn).
  """
  return tf.function(functools.partial(python_function, *args),
                     autograph=False)


def _encoder_step(gradients, variables, optimizer):
  variable_gradients = gradients()[:len(variables)]
  optimizer.apply_gradients(zip(variable_gradients, variables),
                            experimental_aggregate_gradients=False)


def _differentiated_outputs(component):
  """The outputs the loss depends on: the association's dense logits."""
  if component == 'association':
    return lambda outputs: [outputs['semantic_logits']]
  return lambda outputs: [t for t in tf.nest.flatten(outputs)
                          if t.dtype.is_floating]


def forward_backward_call(layer, args, kwargs, differentiate_inputs: bool,
                          differentiated_outputs) -> Callable[[], list]:
  """A no-argument tf.function: gradients of one layer call.

  Args:
    layer: a layer (or model).
    args, kwargs: its recorded arguments ('training' is set to True).
    differentiate_inputs: also return the gradients of the floating-point
      tensor arguments (a component inside the model propagates them).
    differentiated_outputs: outputs -> the list of tensors to differentiate.

  Returns:
    The function; it returns the gradients of the layer's trainable
    variables (in that order), then of its differentiated inputs, of
    sum(output * g) for a fixed random output gradient g.
  """
  if 'training' in kwargs:
    kwargs = dict(kwargs, training=True)
  inputs = [a for a in tf.nest.flatten(args)
            if differentiate_inputs and tf.is_tensor(a) and
            a.dtype.is_floating]
  call = functools.partial(_outputs, layer, args, kwargs,
                           differentiated_outputs)
  # The outputs' shapes, from a trace (no computation).
  outputs = _function(call).get_concrete_function().structured_outputs
  rng = np.random.default_rng(_SEED + 2)
  cotangents = [tf.constant(rng.normal(size=t.shape), t.dtype)
                for t in outputs]
  return _function(_gradients, call, inputs, layer.trainable_variables,
                   cotangents)


def _outputs(layer, args, kwargs, differentiated_outputs):
  return differentiated_outputs(layer(*args, **kwargs))


def _gradients(call, inputs, variables, cotangents):
  with tf.GradientTape() as tape:
    tape.watch(inputs)
    outputs = call()
  return tape.gradient(outputs, variables + inputs,
                       output_gradients=cotangents)


def _timed_functions(setup: TrainingSetup, time_steps: bool
                    ) -> Dict[str, Callable[[], object]]:
  """The components' forward + backward; the two steps if time_steps."""
  functions = {name: setup.forward_backward(name) for name in COMPONENTS}
  if time_steps:
    functions[ENCODER_STEP] = setup.encoder_step()
    functions[STEP] = setup.step()
  return functions


def training_state_bytes(model) -> int:
  """Bytes of the weights and their AdamW moments, in float32."""
  count = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
  return _STATE_COPIES * 4 * count


# Peak memory.


def peak_bytes(experiment: experiment_lib.Experiment, implementation: str,
               part: str, precision: str, size, batch: int,
               limit_bytes: Optional[int] = None) -> Optional[int]:
  """Peak memory of one forward and backward pass of `part`.

  Args:
    experiment: the loaded experiment.
    implementation: NAIVE or EFFICIENT.
    part: 'encoder', 'tokenization' or 'step' (loss and gradients).
    precision: FLOAT32 or BFLOAT16.
    size: (height, width).
    batch: images.
    limit_bytes: see peak_memory.rss_growth_in_subprocess (CPU only).

  Returns:
    Bytes, or None where not measurable (CPU, not Linux).

  Raises:
    peak_memory.MemoryLimitExceeded: it needs more memory than the limit.
  """
  if devices.gpu_in_use():
    with _policy(_POLICIES[precision]):
      return peak_memory.gpu_peak_bytes(
          _measured_call(experiment, implementation, part, size, batch))
  request = dict(options=text_format.MessageToString(experiment.options),
                 implementation=implementation, part=part,
                 precision=precision, size=list(size), batch=batch)
  return peak_memory.rss_growth_in_subprocess(
      _CHILD_PROGRAM, json.dumps(request), limit_bytes)


def peak_memory_child(request: dict) -> None:
  """Runs in the subprocess: reports the call's resident-set growth.

  Args:
    request: the JSON-decoded arguments of `peak_bytes`, the
      ExperimentOptions in text format.
  """
  tf_keras.mixed_precision.set_global_policy(
      _POLICIES[request['precision']])
  peak_memory.report_rss_growth(_measured_call(
      _requested_experiment(request), request['implementation'],
      request['part'], tuple(request['size']), request['batch']))


def _requested_experiment(request: dict) -> experiment_lib.Experiment:
  return experiment_lib.experiment_from_options(
      text_format.Parse(request['options'], config_pb2.ExperimentOptions()),
      mode=None)


def step_timing_child(request: dict) -> None:
  """Runs in the subprocess: times the encoder's and the whole step.

  Args:
    request: {'options' (ExperimentOptions, text format), 'implementation',
      'policy' (tf_keras policy name), 'size', 'batch', 'num_warmup',
      'num_runs'}. Prints {'rounds': {row: [ms, ...]}} (print_result).
  """
  tf_keras.mixed_precision.set_global_policy(request['policy'])
  setup = TrainingSetup(_requested_experiment(request),
                        request['implementation'], tuple(request['size']),
                        request['batch'])
  functions = {ENCODER_STEP: setup.encoder_step(), STEP: setup.step()}
  peak_memory.print_result({'rounds': timing.round_robin(
      functions, request['num_warmup'], request['num_runs'])})


def _time_steps_in_subprocess(experiment, implementation, policy, size,
                              settings) -> Dict[str, list]:
  """step_timing_child's rounds, in a subprocess under a memory limit.

  On CPU the whole step of one implementation at the Cityscapes geometry
  holds several GiB, and TensorFlow's allocators keep what they freed: the
  two implementations' steps and the components do not fit in one process
  of a machine with little memory. Alone in a fresh process, each step is
  timed with its own encoder step (whose ratio is 'total_over_encoder'),
  and a step that does not fit stops at the limit instead of the machine.

  Raises:
    peak_memory.MemoryLimitExceeded: the step does not fit.
  """
  request = dict(options=text_format.MessageToString(experiment.options),
                 implementation=implementation, policy=policy,
                 size=list(size), batch=settings.batch,
                 num_warmup=settings.num_warmup, num_runs=settings.num_runs)
  result = peak_memory.guarded_subprocess(
      _STEP_TIMING_PROGRAM, json.dumps(request),
      settings.memory_limit_bytes, what=f'The {implementation} step')
  return result['rounds']


def _measured_call(experiment, implementation, part, size, batch):
  setup = TrainingSetup(experiment, implementation, size, batch)
  if part == STEP:
    return setup.loss_and_gradients()
  return setup.forward_backward(part)


class _policy:  # pylint: disable=invalid-name
  """Context: tf_keras' global mixed-precision policy, restored after."""

  def __init__(self, name):
    self._name = name
    self._previous = None

  def __enter__(self):
    self._previous = tf_keras.mixed_precision.global_policy()
    tf_keras.mixed_precision.set_global_policy(self._name)

  def __exit__(self, *unused):
    tf_keras.mixed_precision.set_global_policy(self._previous)


def _measure_memory(experiment, settings, size, implementations, progress):
  """{implementation: {precision: {part: bytes or None}}}, encoder's, notes."""
  peaks = {i: {p: {} for p in settings.precisions} for i in implementations}
  encoder_peaks = {}
  notes = []

  def measure(implementation, part, precision):
    progress(f'{implementation}: peak memory of the {part} forward + '
             f'backward pass, {precision}')
    try:
      peak = peak_bytes(experiment, implementation, part, precision, size,
                        settings.batch, settings.memory_limit_bytes)
    except peak_memory.MemoryLimitExceeded as e:
      notes.append(f'{implementation} {part} {precision}: out of memory. '
                   f'{e}')
      progress(f'  out of memory: {e}')
      return None
    progress(f'  {_format_bytes(peak)}')
    return peak

  # The encoder is the same in both; the EFFICIENT model builds faster.
  encoder_owner = (local_attention.EFFICIENT
                   if local_attention.EFFICIENT in implementations
                   else implementations[0])
  for precision in settings.precisions:
    encoder_peaks[precision] = measure(encoder_owner, ENCODER, precision)
    for implementation in implementations:
      for part in MEMORY_PARTS:
        peaks[implementation][precision][part] = measure(
            implementation, part, precision)
  return peaks, encoder_peaks, notes


# The benchmark.


def run_train_benchmark(experiment: experiment_lib.Experiment,
                        settings: TrainBenchmarkSettings,
                        progress=print) -> dict:
  """Measures the training step; see the module docstring.

  Args:
    experiment: the loaded experiment (model and trainer options, class
      count, input size).
    settings: what to measure.
    progress: called with one line of progress at a time.

  Returns:
    A JSON-serialisable dict: 'mode' ('train'), 'settings'; per
    implementation {'ms': {row: ms or None}, 'total_over_encoder': step /
    encoder_step, 'peak_bytes': {precision: {'tokenization', 'step': bytes
    or None}}, 'step_memory_over_encoder': {precision: ratio}};
    'encoder_peak_bytes' {precision: bytes}; 'training_state_bytes';
    with both implementations 'speedup' {row: NAIVE ms / EFFICIENT ms},
    'memory_ratio' (the tokenization's NAIVE / EFFICIENT peak, float32) and
    'memory_ratios' {precision: that ratio}; 'notes' (what could not be
    measured, and why).
  """
  validate_settings(settings)
  size = benchmark.input_size(
      experiment, benchmark.BenchmarkSettings(height=settings.height,
                                              width=settings.width))
  geometry = benchmark.model_geometry(experiment.options.model_options, size)
  implementations = [local_attention.normalize_implementation(i)
                     for i in settings.implementations]
  model_options = experiment.options.model_options
  precision = experiment.keras_mixed_precision_policy
  results = {'mode': 'train', 'settings': dict(
      dataclasses.asdict(settings), implementations=implementations,
      height=size[0], width=size[1], geometry=dataclasses.asdict(geometry),
      num_layers=model_options.superpixel_tokenization.num_layers,
      channels=model_options.superpixel_tokenization.channels,
      encoder=model_options.encoder.name, timing_policy=precision,
      use_xla=experiment.options.trainer_options.use_xla,
      device=devices.describe())}
  notes = []
  peaks = encoder_peaks = None
  if settings.measure_memory:
    # First, while this process holds no model: each measurement runs
    # alone, and what does not fit is known before it is timed.
    peaks, encoder_peaks, notes = _measure_memory(
        experiment, settings, size, implementations, progress)
    results['encoder_peak_bytes'] = encoder_peaks

  # The memory measurement of the timed precision, if there is one.
  timed_precision = {policy: name for name, policy in _POLICIES.items()
                    }.get(precision)
  # The whole steps: on CPU each alone in a subprocess, before this process
  # builds any model (see _time_steps_in_subprocess); on a GPU, whose memory
  # one process holds, with the components below.
  in_subprocess = not devices.gpu_in_use()
  results['settings']['steps_in_subprocess'] = in_subprocess
  rounds = {}
  # Implementations whose steps are not timed (they do not fit).
  untimed = set()
  for implementation in implementations:
    if (peaks is not None and timed_precision in peaks[implementation] and
        peaks[implementation][timed_precision][STEP] is None):
      notes.append(f'{implementation} step: not timed, it does not fit in '
                   'the memory available.')
      progress(f'  {notes[-1]}')
      untimed.add(implementation)
    elif in_subprocess:
      progress(f'{implementation}: timing the whole step and the encoder '
               f'step in a subprocess at {size[0]}x{size[1]}, batch '
               f'{settings.batch} ({settings.num_warmup} warm-up calls, '
               f'{settings.num_runs} rounds)')
      try:
        step_rounds = _time_steps_in_subprocess(
            experiment, implementation, precision, size, settings)
      except peak_memory.MemoryLimitExceeded as e:
        notes.append(f'{implementation} step: not timed, out of memory. {e}')
        progress(f'  {notes[-1]}')
        untimed.add(implementation)
        continue
      for row, times in step_rounds.items():
        rounds[f'{implementation}/{row}'] = times
      progress(f'  step {statistics.median(step_rounds[STEP]):.0f} ms, '
               'encoder step '
               f'{statistics.median(step_rounds[ENCODER_STEP]):.0f} ms')

  functions, setups = {}, {}
  with _policy(precision):
    for implementation in implementations:
      progress(f'{implementation}: building the model, optimizer and '
               f'trainer at {size[0]}x{size[1]}, batch {settings.batch}')
      setup = TrainingSetup(experiment, implementation, size, settings.batch)
      setups[implementation] = setup
      time_steps = not in_subprocess and implementation not in untimed
      for row, function in _timed_functions(setup, time_steps).items():
        functions[f'{implementation}/{row}'] = function
    progress(f'Timing {len(functions)} functions: {settings.num_warmup} '
             f'warm-up calls each, then {settings.num_runs} rounds')
    rounds.update(timing.round_robin(functions, settings.num_warmup,
                                     settings.num_runs, progress))
  results['training_state_bytes'] = training_state_bytes(
      setups[implementations[0]].model)
  del functions, setups
  gc.collect()

  for implementation in implementations:
    times = {row: rounds.get(f'{implementation}/{row}') for row in ROWS}
    entry = {'ms': {row: statistics.median(t) if t else None
                    for row, t in times.items()}}
    entry['total_over_encoder'] = (statistics.median(
        s / e for s, e in zip(times[STEP], times[ENCODER_STEP]))
                                   if times[STEP] and times[ENCODER_STEP]
                                   else None)
    if peaks is not None:
      entry['peak_bytes'] = peaks[implementation]
      entry['step_memory_over_encoder'] = {
          p: _ratio(peaks[implementation][p][STEP], encoder_peaks[p])
          for p in settings.precisions}
    results[implementation] = entry
  naive, efficient = local_attention.NAIVE, local_attention.EFFICIENT
  if naive in results and efficient in results:
    results['speedup'] = {
        row: _ratio(results[naive]['ms'][row], results[efficient]['ms'][row])
        for row in ROWS}
    if peaks is not None:
      results['memory_ratios'] = {
          p: _ratio(peaks[naive][p]['tokenization'],
                    peaks[efficient][p]['tokenization'])
          for p in settings.precisions}
      results['memory_ratio'] = results['memory_ratios'].get(FLOAT32)
  results['notes'] = notes
  return results


def _ratio(numerator, denominator):
  return numerator / denominator if numerator and denominator else None


def _format_bytes(value):
  return 'n/a' if value is None else f'{value / 2**20:.1f} MiB'


def format_table(results: dict) -> str:
  """A text report of `run_train_benchmark`'s results."""
  settings = results['settings']
  implementations = [i for i in local_attention.IMPLEMENTATIONS
                     if i in results]
  geometry = settings['geometry']
  both = 'speedup' in results
  lines = [
      f"Training step, input {settings['height']}x{settings['width']}, "
      f"batch {settings['batch']}, encoder {settings['encoder']}, "
      f"hypercolumn {geometry['hypercolumn_height']}x"
      f"{geometry['hypercolumn_width']}, superpixels "
      f"{geometry['grid_height']}x{geometry['grid_width']}, "
      f"{settings['num_layers']} tokenization layers x "
      f"{settings['channels']} channels, {settings['timing_policy']}, "
      f"{settings['device']}.",
      f"Forward + backward of each component, the encoder's step (with its "
      f"optimizer update) and the whole trainer step; median of "
      f"{settings['num_runs']} rounds after {max(settings['num_warmup'], 1)}"
      ' warm-up, milliseconds' + (
          '; the two steps of each implementation timed in a subprocess of '
          'their own.' if settings.get('steps_in_subprocess') else '.'), '']
  header = f'{"":<16s}' + ''.join(f'{i:>12s}' for i in implementations)
  lines.append(header + (f'{"speedup":>10s}' if both else ''))
  for row in ROWS:
    line = f'{row:<16s}' + ''.join(
        _cell(results[i]['ms'][row], '{:12.1f}') for i in implementations)
    if both:
      line += _cell(results['speedup'][row], '{:9.2f}x', 10)
    lines.append(line)
  lines.append(f'{"step/encoder":<16s}' + ''.join(
      _cell(results[i]['total_over_encoder'], '{:11.2f}x')
      for i in implementations))
  if 'encoder_peak_bytes' in results:
    lines += ['', 'Peak memory of the forward + backward pass (' + (
        'allocator peak' if settings['device'].startswith('GPU') else
        'resident-set growth') + ', MiB):']
    header = f'{"":<24s}' + ''.join(f'{i:>12s}' for i in implementations)
    lines.append(header + (f'{"ratio":>10s}' if both else ''))
    for precision in settings['precisions']:
      for part in MEMORY_PARTS:
        line = f'{part + " " + precision:<24s}' + ''.join(
            _cell(_mib(results[i]['peak_bytes'][precision][part]),
                  '{:12.1f}') for i in implementations)
        if both and part == 'tokenization':
          line += _cell(results['memory_ratios'][precision], '{:9.2f}x', 10)
        lines.append(line)
      lines.append(f'{"encoder " + precision:<24s}' + _cell(
          _mib(results['encoder_peak_bytes'][precision]), '{:12.1f}'))
      lines.append(f'{"step/encoder " + precision:<24s}' + ''.join(
          _cell(results[i]['step_memory_over_encoder'][precision],
                '{:11.2f}x') for i in implementations))
    lines.append('Weights and AdamW moments (float32, not in the figures '
                 f"above): {_mib(results['training_state_bytes']):.1f} MiB.")
  for note in results['notes']:
    lines.append('Note: ' + note)
  return '\n'.join(lines)


def _mib(value):
  return None if value is None else value / 2**20


def _cell(value, form, width=12):
  return f'{"n/a":>{width}s}' if value is None else form.format(value)
