"""Compiles one whole training step with XLA, as a Cloud TPU runs it.

On a TPU every training step is one XLA program: anything in the step that
XLA cannot compile (host-side Python, a data-dependent shape, an op without
an XLA kernel, tensors of mixed float precisions) fails the job only once it
reaches the TPU. This module compiles the trainer's own step
(`Trainer.replica_step`: forward pass, per-image top-k cross-entropy,
gradients, both AdamW updates, the loss metric) with `jit_compile=True` on
the machine at hand, at the config's training crop size, in the precision
asked for, and reports the compile time and the memory of the compiled
program as XLA's buffer assignment gives it.

What this does not check: XLA's TPU backend itself (its own op coverage,
layouts and memory; the CPU backend compiles the same HLO, and the figures
here are the CPU program's), the cross-replica all-reduces of a multi-core
step (one replica here), the input pipeline (it runs on the TPU host) and
the speed.
"""

import dataclasses
import glob
import os
import re
import shutil
import tempfile
import time
from typing import Optional

import tensorflow as tf
import tf_keras

from deeplab_sp import experiment as experiment_lib
from deeplab_sp.model import builder
from deeplab_sp.trainer import optimizer as optimizer_lib
from deeplab_sp.trainer import trainer as trainer_lib

# --precision -> trainer_options.mixed_precision.
PRECISIONS = {'float32': 'none', 'bfloat16': 'bfloat16',
              'float16': 'float16'}

# The name of the compiled function (compile_training_step's
# tpu_compat_training_step); XLA's dumped module names contain it.
_STEP_NAME = 'tpu_compat_training_step'

_ALLOCATION = re.compile(r'^allocation \d+: size (\d+), (.*)$')


def _size(num_bytes: int) -> str:
  if num_bytes >= 1024**3:
    return f'{num_bytes / 1024**3:.2f} GiB'
  return f'{num_bytes / 1024**2:.1f} MiB'


class CompileError(RuntimeError):
  """The training step does not compile with XLA."""


@dataclasses.dataclass(frozen=True)
class ProgramMemory:
  """Bytes of the compiled step's buffers (XLA's buffer assignment).

  Attributes:
    total: all buffers of the program.
    arguments: its parameters: variables, optimizer slots and the batch.
    temporaries: buffers live only during the step (activations kept for the
      backward pass, gradients, scratch).
  """
  total: int
  arguments: int
  temporaries: int


@dataclasses.dataclass(frozen=True)
class CompileReport:
  """What compiling one training step gave.

  Attributes:
    config_file: the experiment config.
    batch_size: images in the step (one replica).
    precision: float32, bfloat16 or float16 compute.
    crop_size: (height, width) of the images.
    trace_seconds: tracing the step into a graph.
    compile_seconds: XLA compiling the traced step.
    hlo_instructions: instructions of the optimised HLO module.
    memory: the program's buffers, or None where XLA wrote none.
  """
  config_file: str
  batch_size: int
  precision: str
  crop_size: tuple
  trace_seconds: float
  compile_seconds: float
  hlo_instructions: int
  memory: Optional[ProgramMemory]

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)

  def text(self) -> str:
    lines = [
        f'The training step of {self.config_file} compiles with XLA '
        f'(jit_compile=True).',
        f'  batch {self.batch_size}, {self.precision}, crop '
        f'{self.crop_size[0]}x{self.crop_size[1]}',
        f'  trace {self.trace_seconds:.1f} s, XLA compile '
        f'{self.compile_seconds:.1f} s, {self.hlo_instructions} HLO '
        'instructions',
    ]
    if self.memory:
      memory = self.memory
      other = memory.total - memory.arguments - memory.temporaries
      lines.append(
          f'  program memory (XLA CPU buffer assignment): '
          f'{_size(memory.total)} = arguments {_size(memory.arguments)} '
          '(variables, optimizer slots, batch) + temporaries '
          f'{_size(memory.temporaries)} + constants and outputs '
          f'{_size(other)}')
    else:
      lines.append('  program memory: not reported (XLA wrote no buffer '
                   'assignment; see enable_memory_report)')
    return '\n'.join(lines)


def enable_memory_report(dump_dir: str) -> None:
  """Makes XLA write the buffer assignment of each program to `dump_dir`.

  XLA reads XLA_FLAGS once, at its first compilation in the process: call
  this before anything compiles with XLA (the tool does so at start-up).
  """
  flags = os.environ.get('XLA_FLAGS', '')
  os.environ['XLA_FLAGS'] = (
      f'{flags} --xla_dump_to={dump_dir} '
      f'--xla_dump_hlo_module_re=.*{_STEP_NAME}.*').strip()


def read_program_memory(dump_dir: str) -> Optional[ProgramMemory]:
  """The step's ProgramMemory from XLA's dump in `dump_dir`, if any."""
  files = glob.glob(os.path.join(
      dump_dir, f'*{_STEP_NAME}*buffer-assignment.txt'))
  reports = []
  for path in files:
    total = arguments = temporaries = 0
    with open(path) as f:
      for line in f:
        match = _ALLOCATION.match(line)
        if not match:
          continue
        size, kind = int(match.group(1)), match.group(2)
        total += size
        if kind.startswith('parameter'):
          arguments += size
        elif kind.startswith('preallocated-temp'):
          temporaries += size
    reports.append(ProgramMemory(total, arguments, temporaries))
  # A second compilation of the same step (none today) would dump again.
  return max(reports, key=lambda m: m.total) if reports else None


def _instruction_count(hlo_text: str) -> int:
  """Instructions (`%name = shape op(...)` lines) of an HLO module's text."""
  return sum(1 for line in hlo_text.splitlines()
             if line.lstrip().startswith(('%', 'ROOT ')) and ' = ' in line)


def compile_training_step(experiment: experiment_lib.Experiment,
                          batch_size: int = 1,
                          precision: Optional[str] = None,
                          dump_dir: Optional[str] = None) -> CompileReport:
  """Compiles one training step of `experiment` with XLA.

  Args:
    experiment: loaded for a training mode (its train dataset sets the crop).
    batch_size: images of the step.
    precision: a key of PRECISIONS; None: the config's mixed_precision.
    dump_dir: where enable_memory_report() made XLA write, or None.

  Returns:
    The CompileReport.

  Raises:
    ValueError: for a bad batch_size or precision.
    CompileError: if XLA cannot compile the step (with XLA's reason).
  """
  if batch_size < 1:
    raise ValueError(f'--batch must be at least 1, got {batch_size}.')
  options = experiment.copy_options()
  trainer_options = options.trainer_options
  if precision is not None:
    if precision not in PRECISIONS:
      raise ValueError(f'Unknown precision {precision!r}: use one of '
                       f'{sorted(PRECISIONS)}.')
    trainer_options.mixed_precision = PRECISIONS[precision]
  precision = {v: k for k, v in PRECISIONS.items()}[
      trainer_options.mixed_precision]
  if not options.HasField('train_dataset_options'):
    raise ValueError(f'{experiment.path}: the training step needs '
                     'train_dataset_options (its crop_size); add it.')
  crop = experiment_lib.crop_size(options.train_dataset_options)

  previous_policy = tf_keras.mixed_precision.global_policy()
  tf_keras.mixed_precision.set_global_policy(
      experiment_lib.MIXED_PRECISION_POLICIES[trainer_options.mixed_precision])
  try:
    model = builder.build_model(options.model_options,
                                experiment.num_classes, experiment.input_size,
                                load_pretrained_weights=False)
    optimizer = optimizer_lib.SplitOptimizer(
        trainer_options,
        dynamic_loss_scale=trainer_options.mixed_precision == 'float16')
    trainer = trainer_lib.Trainer(tf.distribute.get_strategy(), model,
                                  optimizer, None, trainer_options)

    def tpu_compat_training_step(images, labels):
      trainer.replica_step({'image': images, 'label': labels})
    compiled = tf.function(tpu_compat_training_step, jit_compile=True)
    specs = (tf.TensorSpec([batch_size, crop[0], crop[1], 3], tf.float32),
             tf.TensorSpec([batch_size, crop[0], crop[1]], tf.int32))
    start = time.monotonic()
    compiled.get_concrete_function(*specs)
    traced = time.monotonic()
    try:
      hlo = compiled.experimental_get_compiler_ir(*specs)(
          stage='optimized_hlo')
    except (ValueError, tf.errors.OpError) as e:
      raise CompileError(
          f'The training step of {experiment.path} (batch {batch_size}, '
          f'{precision}) does not compile with XLA, so it cannot run on a '
          f'TPU: {e}') from e
    done = time.monotonic()
  finally:
    tf_keras.mixed_precision.set_global_policy(previous_policy)
  return CompileReport(
      config_file=experiment.path, batch_size=batch_size,
      precision=precision, crop_size=tuple(crop),
      trace_seconds=traced - start, compile_seconds=done - traced,
      hlo_instructions=_instruction_count(hlo),
      memory=read_program_memory(dump_dir) if dump_dir else None)


class MemoryReportDirectory:
  """A temporary directory XLA dumps into; removed (only it) on exit."""

  def __init__(self):
    self.path = None

  def __enter__(self) -> str:
    self.path = tempfile.mkdtemp(prefix='deeplab_sp_xla_dump_')
    return self.path

  def __exit__(self, *exc_info):
    shutil.rmtree(self.path, ignore_errors=True)
