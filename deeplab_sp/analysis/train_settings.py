"""What the training benchmark measures: its settings and vocabulary.

TrainBenchmarkSettings is what a caller asks for (tools/benchmark.py's
flags); RunSettings is what was run, resolved against the experiment and
the device; the constants name the timed rows, the memory parts and the
precisions that train_measurements.py's records refer to.
"""

import dataclasses
from typing import List, Optional, Sequence

from deeplab_sp.model import geometry as geometry_lib
from deeplab_sp.model import local_attention
from deeplab_sp.model import sp_transformer

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


@dataclasses.dataclass
class RunSettings:
  """The settings as run: TrainBenchmarkSettings resolved, and the setting.

  The fields of TrainBenchmarkSettings (height and width resolved, the
  implementations' canonical names), then: geometry (the model's feature
  map sizes), num_layers and channels (of the tokenization), encoder (its
  name), timing_policy (the tf_keras policy everything is timed in, the
  config's trainer_options.mixed_precision), use_xla (the config's), device
  (devices.describe()) and steps_in_subprocess (whether each
  implementation's two steps were timed in a child process of their own).
  """
  height: int
  width: int
  batch: int
  implementations: List[str]
  num_warmup: int
  num_runs: int
  measure_memory: bool
  precisions: List[str]
  memory_limit_bytes: Optional[int]
  geometry: geometry_lib.Geometry
  num_layers: int
  channels: int
  encoder: str
  timing_policy: str
  use_xla: bool
  device: str
  steps_in_subprocess: bool
