"""The checks of an experiment's options (besides the model's own).

`validate` is what experiment.load_experiment runs before it resolves
anything: each problem is one ConfigError naming the file, the field and
the fix. Range checks are tables of rules (utils/config_rules.py); the
model's options are checked by their network (model/builder/); what is
left here relates fields to each other (the schedule, the datasets and the
model's input sizes, the evaluation scales).
"""

import math
import re
from typing import Optional, Tuple

from google.protobuf import descriptor

from deeplab_sp.data import dataset_info
from deeplab_sp.model import builder
from deeplab_sp.model import geometry as geometry_lib
from deeplab_sp.protos import config_pb2
from deeplab_sp.protos import dataset_pb2
from deeplab_sp.protos import model_pb2
from deeplab_sp.utils import config_rules

ConfigError = config_rules.ConfigError
MAX_CROP_SIDE = config_rules.MAX_CROP_SIDE

# The modes of trainer/train.py, and which datasets each one reads.
TRAIN_MODES = ('train', 'train_and_eval')
EVAL_MODES = ('eval', 'train_and_eval', 'continuous_eval')
MODES = ('train', 'eval', 'train_and_eval', 'continuous_eval')

OPTIMIZERS = ('adamw', 'sgd')
LEARNING_RATE_POLICIES = ('poly', 'constant')
# trainer_options.mixed_precision -> the tf_keras global policy it sets.
MIXED_PRECISION_POLICIES = {'none': 'float32', 'float16': 'mixed_float16',
                            'bfloat16': 'mixed_bfloat16'}

# experiment_name is one directory under --model_dir: a single path
# component of safe characters, not '.' or '..'.
_EXPERIMENT_NAME_PATTERN = re.compile(r'^[A-Za-z0-9_.\-]+$')

_TRAINER_RULES = (
    *(config_rules.positive(field) for field in (
        'training_number_of_steps', 'save_checkpoints_steps',
        'num_checkpoints_to_keep', 'save_summaries_steps', 'steps_per_loop',
        'log_steps', 'base_learning_rate',
        'backbone_learning_rate_multiplier')),
    *(config_rules.non_negative(field) for field in (
        'warmup_steps', 'save_image_summaries_steps', 'gradient_clip_norm',
        'weight_decay', 'poly_end_learning_rate')),
)
_DATASET_RULES = (
    config_rules.positive('batch_size'),
    config_rules.at_most('batch_size', 'MAX_BATCH_SIZE'),
    config_rules.non_negative('resize_longer_side'),
    config_rules.at_most('resize_longer_side', 'MAX_CROP_SIDE'),
    config_rules.non_negative(
        'panoptic_label_divisor', "0: the records hold semantic labels; "
        "1000: DeepLab2's panoptic records"),
    config_rules.non_negative('shuffle_buffer_size'),
    config_rules.non_negative('num_parallel_reads'),
    config_rules.at_most('num_parallel_reads', 'MAX_PARALLEL_READS'),
    config_rules.non_negative('max_examples'),
)
_CROP_RULES = (config_rules.positive('crop_size'),
               config_rules.at_most('crop_size', 'MAX_CROP_SIDE'))
_AUGMENTATION_RULES = (
    config_rules.non_negative('scale_factor_step_size', '0 = continuous'),
    config_rules.in_unit_interval('color_jitter_strength', False, False),
)
_EVALUATOR_RULES = (
    config_rules.positive('eval_interval_steps'),
    config_rules.positive('continuous_eval_timeout_seconds'),
    config_rules.non_negative('num_vis_images'),
)


def crop_size(dataset_options: dataset_pb2.DatasetOptions) -> Tuple[int, int]:
  """(height, width) of DatasetOptions.crop_size."""
  return int(dataset_options.crop_size[0]), int(dataset_options.crop_size[1])


def model_geometry(model_options: model_pb2.ModelOptions,
                   input_size, path: Optional[str] = None,
                   field: Optional[str] = None
                  ) -> Optional[geometry_lib.Geometry]:
  """The Geometry of `model_options` at `input_size` (height, width).

  None for the per-pixel baselines, once their input-size check passed
  (builder.model_geometry).

  Raises:
    ConfigError: the GeometryError of model/geometry.py, prefixed with
      `path` and `field` (what the size came from) when given.
  """
  try:
    return builder.model_geometry(model_options, input_size)
  except geometry_lib.GeometryError as e:
    prefix = ': '.join(part for part in (path, field) if part)
    raise ConfigError(f'{prefix}: {e}' if prefix else str(e)) from None


def describing_dataset(options: config_pb2.ExperimentOptions
                      ) -> Tuple[str, dataset_pb2.DatasetOptions]:
  """(field name, DatasetOptions) of the dataset that describes the
  experiment: eval_dataset_options if set, else train_dataset_options."""
  if options.HasField('eval_dataset_options'):
    return 'eval_dataset_options', options.eval_dataset_options
  return 'train_dataset_options', options.train_dataset_options


_FLOAT_TYPES = (descriptor.FieldDescriptor.TYPE_FLOAT,
                descriptor.FieldDescriptor.TYPE_DOUBLE)


def _is_repeated(field: descriptor.FieldDescriptor) -> bool:
  # Newer protobuf runtimes have `is_repeated` and no `label`.
  is_repeated = getattr(field, 'is_repeated', None)
  if is_repeated is not None:
    return bool(is_repeated)
  return field.label == descriptor.FieldDescriptor.LABEL_REPEATED


def _validate_finite(path: str, message, prefix: str = '') -> None:
  """Every float field set anywhere in `message` is finite (no NaN/inf)."""
  for field, value in message.ListFields():
    name = f'{prefix}{field.name}'
    repeated = _is_repeated(field)
    values = value if repeated else [value]
    if field.type == descriptor.FieldDescriptor.TYPE_MESSAGE:
      for index, item in enumerate(values):
        _validate_finite(
            path, item, f'{name}[{index}].' if repeated else f'{name}.')
    elif field.type in _FLOAT_TYPES:
      for item in values:
        if not math.isfinite(item):
          raise ConfigError(f'{path}: {name} is {item}; it must be a finite '
                            'number.')


def validate(options: config_pb2.ExperimentOptions, path: str,
             mode: Optional[str]) -> None:
  """Raises ConfigError on the first problem found in `options`."""
  if mode is not None:
    config_rules.check_choice(path, 'mode', mode, MODES)
  _validate_name(path, options.experiment_name)
  _validate_finite(path, options)
  builder.validate(path, options.model_options)
  _validate_trainer(path, options.trainer_options)
  # use_xla compiles the forward pass as a function nested in the
  # distributed step, where the cross-replica all-reduce of synchronized
  # BatchNorm cannot run (tf.distribute refuses a merge_call there).
  if (options.model_options.encoder.sync_batchnorm and
      options.trainer_options.use_xla):
    raise ConfigError(
        f'{path}: model_options.encoder.sync_batchnorm cannot be combined '
        'with trainer_options.use_xla (the compiled forward pass cannot '
        'all-reduce BatchNorm statistics across replicas): set one of them '
        'to false.')

  classes = {}
  if options.HasField('train_dataset_options') or mode in TRAIN_MODES:
    _validate_dataset(path, 'train_dataset_options',
                      options.train_dataset_options, options.model_options,
                      needs_files=mode in TRAIN_MODES)
    classes['train_dataset_options'] = dataset_info.from_options(
        options.train_dataset_options)
  if options.HasField('eval_dataset_options') or mode in EVAL_MODES:
    _validate_dataset(path, 'eval_dataset_options',
                      options.eval_dataset_options, options.model_options,
                      needs_files=mode in EVAL_MODES)
    if mode in EVAL_MODES and options.eval_dataset_options.repeat:
      raise ConfigError(
          f'{path}: eval_dataset_options.repeat is true, so an evaluation '
          'would never end; remove `repeat: true` from eval_dataset_options '
          '(unset, the evaluation split is read once).')
    classes['eval_dataset_options'] = dataset_info.from_options(
        options.eval_dataset_options)
  counts = {info.name: info.num_classes for info in classes.values()}
  if len(set(counts.values())) > 1:
    raise ConfigError(
        f'{path}: train_dataset_options.dataset and eval_dataset_options.'
        f'dataset have different class counts ({counts}); train and '
        'evaluate on the same label space.')

  config_rules.check(path, 'evaluator_options', options.evaluator_options,
                     _EVALUATOR_RULES)
  _validate_evaluator(path, options)


# Largest EvaluatorOptions.boundary_band_pixels: its dilation window is


def _validate_trainer(path: str, options) -> None:
  """Checks TrainerOptions."""
  prefix = 'trainer_options'
  config_rules.check(path, prefix, options, _TRAINER_RULES)
  _validate_schedule(path, options)
  top_k = options.top_k_percent_pixels
  if not 0 < top_k <= 100:
    raise ConfigError(f'{path}: {prefix}.top_k_percent_pixels must be in '
                      f'[1, 100] (a percent), got {top_k:g}.')
  # The Model Garden's top_k_percent_pixels and DeepLab2's top_k_percent are
  # fractions; copied here, 0.2 would silently train on 0.2% of the pixels.
  # Under 1% is no useful setting, so such a value is taken for a fraction.
  if top_k < 1:
    raise ConfigError(
        f'{path}: {prefix}.top_k_percent_pixels is a percent in [1, 100]; '
        f'{top_k:g} looks like a fraction: write {top_k * 100:g} for the top '
        f'{top_k * 100:g}%.')
  config_rules.check_choice(path, f'{prefix}.optimizer', options.optimizer,
                            OPTIMIZERS)
  config_rules.check_choice(path, f'{prefix}.learning_rate_policy',
                            options.learning_rate_policy,
                            LEARNING_RATE_POLICIES)
  config_rules.check_choice(path, f'{prefix}.mixed_precision',
                            options.mixed_precision,
                            tuple(MIXED_PRECISION_POLICIES))
  # orbit.Controller writes training summaries at the end of an inner loop
  # of steps_per_loop steps, and refuses a summary interval that is not a
  # multiple of it.
  if options.save_summaries_steps % options.steps_per_loop:
    raise ConfigError(
        f'{path}: {prefix}.save_summaries_steps '
        f'({options.save_summaries_steps}) must be a multiple of '
        f'{prefix}.steps_per_loop ({options.steps_per_loop}): summaries are '
        'written at the end of a loop. Change one of them, e.g. '
        'save_summaries_steps: '
        f'{_next_multiple(options.save_summaries_steps, options.steps_per_loop)}'
        '.')


def set_training_steps(options, steps: int) -> None:
  """Sets TrainerOptions `options` to `steps` steps (tools that shorten a
  config's run).

  A warm-up that would no longer fit (warmup_steps >= steps, refused by
  _validate_schedule) is shortened in proportion, keeping the schedule's
  shape: warmup_steps * steps / the config's steps.
  """
  if options.warmup_steps >= steps:
    options.warmup_steps = (options.warmup_steps * steps //
                            max(options.training_number_of_steps, 1))
    options.warmup_steps = min(options.warmup_steps, steps - 1)
  options.training_number_of_steps = steps


def _validate_schedule(path: str, options) -> None:
  """Checks the learning-rate schedule of TrainerOptions `options`.

  The warm-up ramps the rate from 0 to the schedule's value at step
  warmup_steps; with the poly decay that value is 0 once warmup_steps
  reaches the last step, so such a run trains at a rate near 0 throughout.
  A negative poly power makes the rate infinite at the last step.
  """
  prefix = 'trainer_options'
  steps, warmup = options.training_number_of_steps, options.warmup_steps
  if warmup >= steps:
    default = ('' if options.HasField('warmup_steps') else
               ', the default when the config does not set it')
    raise ConfigError(
        f'{path}: {prefix}.warmup_steps ({warmup}{default}) must be below '
        f'{prefix}.training_number_of_steps ({steps}), else the learning '
        'rate stays near 0 for the whole run. Set e.g. warmup_steps: '
        f'{steps // 10} (a tenth of the steps).')
  # `not >= 0` also refuses NaN.
  if not options.poly_learning_power >= 0:
    raise ConfigError(
        f'{path}: {prefix}.poly_learning_power must be >= 0, got '
        f'{options.poly_learning_power}: the poly learning rate '
        '(1 - step / steps)^power would be infinite at the last step. Use '
        'e.g. 0.9 (the paper).')


def _next_multiple(value: int, step: int) -> int:
  return -(-value // step) * step



def _validate_dataset(path: str, field: str,
                      options: dataset_pb2.DatasetOptions,
                      model_options: model_pb2.ModelOptions,
                      needs_files: bool) -> None:
  """Checks one DatasetOptions against the registry and the model geometry."""
  info = _validate_dataset_source(path, field, options)
  if needs_files and not any(options.file_pattern):
    raise ConfigError(
        f'{path}: {field}.file_pattern is empty, but this mode reads that '
        f'split. Add e.g. file_pattern: "data/{info.name}/'
        f'{"train" if "train" in field else "val"}-*.tfrecord" (build the '
        'records with tools/build_*_data.py).')
  config_rules.check(path, field, options, _DATASET_RULES)
  if len(options.crop_size) != 2:
    raise ConfigError(f'{path}: {field}.crop_size must have exactly two '
                      f'values (height, width), got {list(options.crop_size)}.'
                      ' Write `crop_size: 1024 crop_size: 2048`.')
  config_rules.check(path, field, options, _CROP_RULES)
  model_geometry(model_options, crop_size(options), path, f'{field}.crop_size')
  aug = options.augmentations
  if not 0 < aug.min_scale_factor <= aug.max_scale_factor:
    raise ConfigError(
        f'{path}: {field}.augmentations needs 0 < min_scale_factor <= '
        f'max_scale_factor, got {aug.min_scale_factor} and '
        f'{aug.max_scale_factor}.')
  config_rules.check(path, f'{field}.augmentations', aug,
                     _AUGMENTATION_RULES)
  if (aug.color_augmentation != dataset_pb2.COLOR_JITTER and
      aug.HasField('color_jitter_strength')):
    raise ConfigError(
        f'{path}: {field}.augmentations sets color_jitter_strength, which '
        'only the COLOR_JITTER color_augmentation uses, and color_augmentation '
        f'{dataset_pb2.ColorAugmentation.Name(aug.color_augmentation)}: remove '
        'one of the two.')


def _validate_dataset_source(path: str, field: str,
                             options: dataset_pb2.DatasetOptions
                            ) -> dataset_info.DatasetInfo:
  """The dataset of one DatasetOptions: registered or described."""
  source = options.WhichOneof('source')
  registered = ', '.join(dataset_info.dataset_names())
  if source is None:
    raise ConfigError(
        f'{path}: {field} names no dataset; set dataset (one of '
        f'{registered}), or describe yours with dataset_description {{ ... }} '
        'or dataset_info_file: "..." (protos/dataset.proto).')
  if source == 'dataset':
    if options.dataset not in dataset_info.DATASETS:
      raise ConfigError(
          f'{path}: unknown {field}.dataset {options.dataset!r}; use one of '
          f'{registered}, or describe the dataset with dataset_description '
          'or dataset_info_file.')
    return dataset_info.get_dataset_info(options.dataset)
  try:
    return dataset_info.from_options(options)
  except dataset_info.DescriptionError as e:
    raise ConfigError(
        f'{path}: {field}.dataset_description.{e}') from None


def _validate_name(path: str, name: str) -> None:
  if not name:
    raise ConfigError(f'{path}: experiment_name is not set; it names the '
                      'output directory <model_dir>/<experiment_name>.')
  if not _EXPERIMENT_NAME_PATTERN.match(name) or name in ('.', '..'):
    raise ConfigError(
        f'{path}: experiment_name {name!r} is not a directory name: it '
        "names <model_dir>/<experiment_name>, so use letters, digits, '_', "
        "'-' and '.' only (no '/'), and not '.' or '..'.")



MAX_BOUNDARY_BAND_PIXELS = 64
# Limits of EvaluatorOptions.eval_scales. DeepLab's largest scale is 2.0 and
# its longest list six scales; a scale above the limit is most likely a typo
# (10 for 1.0) that would cost an out-of-memory error, and every scale is a
# forward pass (two with flipped images) of every evaluation batch.
MAX_EVAL_SCALE = 4.0
MAX_EVAL_SCALES = 16
# The suggestions of a scale that does not fit are multiples of this.
_EVAL_SCALE_STEP = 0.125


def _fitting_scales(model_options: model_pb2.ModelOptions,
                    size: Tuple[int, int], near: float,
                    count: int = 3) -> list:
  """The `count` multiples of _EVAL_SCALE_STEP nearest `near` whose scaled
  `size` (height, width) the model takes, ascending."""
  fitting = []
  for index in range(1, int(MAX_EVAL_SCALE / _EVAL_SCALE_STEP) + 1):
    scale = index * _EVAL_SCALE_STEP
    scaled = geometry_lib.scaled_size(size, scale)
    if max(scaled) > MAX_CROP_SIDE:
      continue
    try:
      builder.model_geometry(model_options, scaled)
    except geometry_lib.GeometryError:
      continue
    fitting.append(scale)
  return sorted(sorted(fitting, key=lambda s: abs(s - near))[:count])


def _validate_evaluator(path: str,
                        options: config_pb2.ExperimentOptions) -> None:
  """Checks the test-time augmentation of evaluator_options.

  Each scale must be finite, in (0, MAX_EVAL_SCALE], listed once, and
  resize the evaluation input (the describing dataset's crop_size, the
  size the model is built for) to a size the model takes: the evaluator
  runs the model at exactly geometry.scaled_size of it.
  """
  band = options.evaluator_options.boundary_band_pixels
  if not 0 <= band <= MAX_BOUNDARY_BAND_PIXELS:
    raise ConfigError(
        f'{path}: evaluator_options.boundary_band_pixels is {band}; it is '
        'the half width in pixels of the band around class boundaries '
        f'scored apart, in [0, {MAX_BOUNDARY_BAND_PIXELS}] (0: off), e.g. '
        '`boundary_band_pixels: 4`.')
  field = 'evaluator_options.eval_scales'
  scales = list(options.evaluator_options.eval_scales)
  if len(scales) > MAX_EVAL_SCALES:
    raise ConfigError(
        f'{path}: {field} lists {len(scales)} scales, above the limit '
        f'{MAX_EVAL_SCALES} (experiment.MAX_EVAL_SCALES); each one is a '
        'forward pass of every evaluation batch. List fewer (DeepLab uses '
        'up to six, e.g. 0.5 0.75 1.0 1.25 1.5 1.75).')
  for scale in scales:
    if not (math.isfinite(scale) and 0 < scale <= MAX_EVAL_SCALE):
      raise ConfigError(
          f'{path}: {field} has {scale:g}; every scale must be in (0, '
          f'{MAX_EVAL_SCALE:g}] (experiment.MAX_EVAL_SCALE): the factor the '
          'evaluation input is resized by, e.g. `eval_scales: [0.75, 1.0, '
          '1.25]` (leave it out for the plain evaluation at 1.0).')
  repeated = sorted({scale for scale in scales if scales.count(scale) > 1})
  if repeated:
    raise ConfigError(
        f'{path}: {field} lists {", ".join(f"{s:g}" for s in repeated)} '
        'more than once; a repeat only weights that scale more in the '
        'average and costs another forward pass. List each scale once.')
  dataset_field, describing = describing_dataset(options)
  if len(describing.crop_size) != 2:
    return  # No dataset: experiment_from_options reports it.
  size = crop_size(describing)
  for scale in scales:
    scaled = geometry_lib.scaled_size(size, scale)
    if max(scaled) > MAX_CROP_SIDE:
      raise ConfigError(
          f'{path}: {field} has {scale:g}, which resizes the evaluation '
          f'input {size[0]}x{size[1]} ({dataset_field}.crop_size) to '
          f'{scaled[0]}x{scaled[1]}, above the limit {MAX_CROP_SIDE} '
          'pixels per side (experiment.MAX_CROP_SIDE). Use a smaller scale.')
    try:
      builder.model_geometry(options.model_options, scaled)
    except geometry_lib.GeometryError as e:
      fitting = _fitting_scales(options.model_options, size, scale)
      hint = (f'Use scales whose sizes fit, e.g. '
              f'{", ".join(f"{s:g}" for s in fitting)}.' if fitting else
              f'No multiple of {_EVAL_SCALE_STEP} up to {MAX_EVAL_SCALE:g} '
              'fits this crop_size; change the crop_size or leave '
              f'{field} out.')
      raise ConfigError(
          f'{path}: {field} has {scale:g}, which resizes the evaluation '
          f'input {size[0]}x{size[1]} ({dataset_field}.crop_size) to '
          f'{scaled[0]}x{scaled[1]}, a size the model cannot take ({e}) '
          f'{hint}') from None
