"""Reads and validates experiment configurations (text `ExperimentOptions`).

One experiment is one text protobuf (DeepLab2's convention); the schema in
protos/*.proto documents every field. `load_experiment_options` parses a file
and checks everything that can be checked before any work starts, so that a
mistake surfaces as one `ConfigError` naming the file, the field and the fix
instead of a stack trace an hour into training.
"""

import dataclasses
import re
from typing import Optional, Sequence, Tuple

from google.protobuf import text_format
import tensorflow as tf

from deeplab_sp.data import dataset_info
from deeplab_sp.protos import config_pb2
from deeplab_sp.protos import dataset_pb2
from deeplab_sp.protos import model_pb2

# The modes of trainer/train.py, and which datasets each one reads.
TRAIN_MODES = ('train', 'train_and_eval')
EVAL_MODES = ('eval', 'train_and_eval', 'continuous_eval')
MODES = ('train', 'eval', 'train_and_eval', 'continuous_eval')

OPTIMIZERS = ('adamw', 'sgd')
LEARNING_RATE_POLICIES = ('poly', 'constant')
MIXED_PRECISION_POLICIES = ('none', 'float16', 'bfloat16')

_EXPERIMENT_NAME_PATTERN = re.compile(r'^[A-Za-z0-9_.\-]+$')


class ConfigError(ValueError):
  """A configuration mistake the user can fix; the message says how."""


@dataclasses.dataclass(frozen=True)
class Geometry:
  """Sizes of the model's feature maps for one input size.

  Attributes:
    input_height, input_width: image size fed to the model, in pixels.
    hypercolumn_height, hypercolumn_width: input size / output stride.
    grid_height, grid_width: superpixel grid Hs x Ws.
    superpixel_height, superpixel_width: h x w hypercolumn pixels per
      superpixel cell.
  """
  input_height: int
  input_width: int
  hypercolumn_height: int
  hypercolumn_width: int
  grid_height: int
  grid_width: int
  superpixel_height: int
  superpixel_width: int

  @property
  def output_stride(self) -> int:
    return self.input_height // self.hypercolumn_height


def model_geometry(model_options: model_pb2.ModelOptions,
                   input_size: Sequence[int]) -> Geometry:
  """Returns the Geometry of `model_options` at `input_size` (height, width).

  Raises:
    ConfigError: if the hypercolumn stride does not divide the input size or
      the superpixel grid does not divide the hypercolumn.
  """
  if len(input_size) != 2:
    raise ConfigError(f'Input size must be (height, width), got {input_size}.')
  height, width = int(input_size[0]), int(input_size[1])
  stride = model_options.hypercolumn.output_stride
  grid_h = model_options.superpixel_tokenization.grid_height
  grid_w = model_options.superpixel_tokenization.grid_width
  if stride <= 0 or grid_h <= 0 or grid_w <= 0:
    raise ConfigError(
        'hypercolumn.output_stride and superpixel_tokenization.grid_height/'
        f'grid_width must be positive (got {stride}, {grid_h}, {grid_w}).')
  cell_h, cell_w = stride * grid_h, stride * grid_w
  if height % cell_h or width % cell_w or height <= 0 or width <= 0:
    raise ConfigError(
        f'Input size {height}x{width} is not divisible by output_stride * '
        f'superpixel grid = {stride}*{grid_h} x {stride}*{grid_w} = '
        f'{cell_h}x{cell_w}: every superpixel cell must cover a whole number '
        f'of hypercolumn pixels. Use a size that is a multiple of '
        f'{cell_h}x{cell_w} (e.g. {max(1, round(height / cell_h)) * cell_h}x'
        f'{max(1, round(width / cell_w)) * cell_w}), or change '
        'hypercolumn.output_stride / superpixel_tokenization.grid_height / '
        'grid_width.')
  return Geometry(
      input_height=height,
      input_width=width,
      hypercolumn_height=height // stride,
      hypercolumn_width=width // stride,
      grid_height=grid_h,
      grid_width=grid_w,
      superpixel_height=height // cell_h,
      superpixel_width=width // cell_w)


def parse_experiment_options(text: str,
                             path: str = '<string>'
                            ) -> config_pb2.ExperimentOptions:
  """Parses text-format ExperimentOptions; ConfigError names file and line."""
  options = config_pb2.ExperimentOptions()
  try:
    text_format.Parse(text, options)
  except text_format.ParseError as e:
    # ParseError's message is '<line>:<column> : <what>'.
    hint = ('Check the spelling against protos/*.proto (every field is '
            'documented there).' if 'has no field named' in str(e) or
            'has no value named' in str(e) else
            'Fix the text-proto syntax at that position.')
    raise ConfigError(f'{path}:{e} -- {hint}') from None
  return options


def load_experiment_options(path: str,
                            mode: Optional[str] = 'train_and_eval'
                           ) -> config_pb2.ExperimentOptions:
  """Reads, parses and validates the text ExperimentOptions at `path`.

  Args:
    path: local or gs:// path of a .textproto file.
    mode: one of MODES; decides which datasets must have file patterns.
      None (for tools that read no data: export, model_stats, benchmark):
      no file pattern is required.

  Returns:
    The validated ExperimentOptions.

  Raises:
    ConfigError: naming the file, the line or field, and the fix.
  """
  if not tf.io.gfile.exists(path):
    raise ConfigError(f'Config file {path} does not exist; pass an existing '
                      '.textproto, e.g. --config_file=configs/synthetic/'
                      'sp_transformer_tiny.textproto')
  with tf.io.gfile.GFile(path, 'r') as f:
    text = f.read()
  options = parse_experiment_options(text, path)
  validate_experiment_options(options, path, mode)
  return options


def _require_positive(path: str, field: str, value) -> None:
  if value <= 0:
    raise ConfigError(
        f'{path}: {field} must be positive, got {value}. Set it to a value '
        '> 0 (see its comment in protos/).')


def _require_unit_interval(path: str, field: str, value: float,
                           low_open: bool, high_open: bool) -> None:
  low_ok = value > 0 if low_open else value >= 0
  high_ok = value < 1 if high_open else value <= 1
  if not (low_ok and high_ok):
    interval = ('(' if low_open else '[') + '0, 1' + (')' if high_open else ']')
    raise ConfigError(f'{path}: {field} must be in {interval}, got {value}.')


def _validate_choice(path: str, field: str, value: str,
                     choices: Sequence[str]) -> None:
  if value not in choices:
    raise ConfigError(f'{path}: unknown {field} {value!r}; use one of '
                      f'{", ".join(choices)}.')


def _validate_model(path: str, options: model_pb2.ModelOptions) -> None:
  """Checks names, counts and ranges of ModelOptions."""
  from deeplab_sp.model import encoders  # pylint: disable=g-import-not-at-top
  _validate_choice(path, 'model_options.encoder.name', options.encoder.name,
                   encoders.ENCODER_NAMES)
  _require_unit_interval(path, 'model_options.encoder.drop_path_keep_prob',
                         options.encoder.drop_path_keep_prob,
                         low_open=True, high_open=False)
  _require_positive(path, 'model_options.encoder.tiny_convnet_base_channels',
                    options.encoder.tiny_convnet_base_channels)
  weights = options.encoder.pretrained_weights
  if weights and not (tf.io.gfile.exists(weights) or
                      tf.io.gfile.exists(weights + '.index')):
    raise ConfigError(
        f'{path}: model_options.encoder.pretrained_weights {weights!r} does '
        'not exist. Give the local path of the Keras-applications weight file '
        '(.h5, include_top=False) or a TF checkpoint prefix, or leave it '
        'empty to train from scratch. Nothing is downloaded.')

  hypercolumn = options.hypercolumn
  _require_positive(path, 'model_options.hypercolumn.channels',
                    hypercolumn.channels)
  _require_positive(path, 'model_options.hypercolumn.output_stride',
                    hypercolumn.output_stride)
  if hypercolumn.mlp_hidden_channels < 0:
    raise ConfigError(f'{path}: model_options.hypercolumn.mlp_hidden_channels '
                      'must be >= 0 (0 = a linear projection).')

  tokenization = options.superpixel_tokenization
  prefix = 'model_options.superpixel_tokenization'
  for field in ('grid_height', 'grid_width', 'num_layers', 'channels',
                'num_heads'):
    _require_positive(path, f'{prefix}.{field}', getattr(tokenization, field))
  if tokenization.channels % tokenization.num_heads:
    raise ConfigError(
        f'{path}: {prefix}.num_heads ({tokenization.num_heads}) must divide '
        f'{prefix}.channels ({tokenization.channels}).')
  for field in ('ffn_channels', 'pixel_ffn_channels'):
    if getattr(tokenization, field) < 0:
      raise ConfigError(f'{path}: {prefix}.{field} must be >= 0 '
                        '(0 = no feed-forward block).')
  _require_unit_interval(path, f'{prefix}.dropout_rate',
                         tokenization.dropout_rate, False, True)

  classifier = options.superpixel_classifier
  prefix = 'model_options.superpixel_classifier'
  if classifier.num_layers < 0:
    raise ConfigError(f'{path}: {prefix}.num_layers must be >= 0.')
  for field in ('num_heads', 'channels'):
    _require_positive(path, f'{prefix}.{field}', getattr(classifier, field))
  if classifier.channels % classifier.num_heads:
    raise ConfigError(
        f'{path}: {prefix}.num_heads ({classifier.num_heads}) must divide '
        f'{prefix}.channels ({classifier.channels}).')
  if classifier.ffn_channels < 0:
    raise ConfigError(f'{path}: {prefix}.ffn_channels must be >= 0.')
  _require_unit_interval(path, f'{prefix}.dropout_rate',
                         classifier.dropout_rate, False, True)


def _validate_trainer(path: str, options) -> None:
  """Checks TrainerOptions."""
  prefix = 'trainer_options'
  for field in ('training_number_of_steps', 'save_checkpoints_steps',
                'num_checkpoints_to_keep', 'save_summaries_steps',
                'steps_per_loop', 'log_steps'):
    _require_positive(path, f'{prefix}.{field}', getattr(options, field))
  for field in ('warmup_steps', 'save_image_summaries_steps',
                'gradient_clip_norm', 'weight_decay', 'poly_end_learning_rate'):
    if getattr(options, field) < 0:
      raise ConfigError(f'{path}: {prefix}.{field} must be >= 0, got '
                        f'{getattr(options, field)}.')
  _require_positive(path, f'{prefix}.base_learning_rate',
                    options.base_learning_rate)
  _require_positive(path, f'{prefix}.backbone_learning_rate_multiplier',
                    options.backbone_learning_rate_multiplier)
  if not 0 < options.top_k_percent_pixels <= 100:
    raise ConfigError(f'{path}: {prefix}.top_k_percent_pixels must be in '
                      f'(0, 100], got {options.top_k_percent_pixels}.')
  _validate_choice(path, f'{prefix}.optimizer', options.optimizer, OPTIMIZERS)
  _validate_choice(path, f'{prefix}.learning_rate_policy',
                   options.learning_rate_policy, LEARNING_RATE_POLICIES)
  _validate_choice(path, f'{prefix}.mixed_precision', options.mixed_precision,
                   MIXED_PRECISION_POLICIES)


def crop_size(dataset_options: dataset_pb2.DatasetOptions) -> Tuple[int, int]:
  """Returns (height, width) of DatasetOptions.crop_size (validated)."""
  return int(dataset_options.crop_size[0]), int(dataset_options.crop_size[1])


def _validate_dataset(path: str, field: str,
                      options: dataset_pb2.DatasetOptions,
                      model_options: model_pb2.ModelOptions,
                      needs_files: bool) -> None:
  """Checks one DatasetOptions against the registry and the model geometry."""
  if not options.dataset:
    raise ConfigError(f'{path}: {field}.dataset is not set; use one of '
                      f'{", ".join(dataset_info.dataset_names())}.')
  if options.dataset not in dataset_info.DATASETS:
    raise ConfigError(f'{path}: unknown {field}.dataset {options.dataset!r}; '
                      f'use one of {", ".join(dataset_info.dataset_names())}.')
  if needs_files and not any(options.file_pattern):
    raise ConfigError(
        f'{path}: {field}.file_pattern is empty, but this mode reads that '
        f'split. Add e.g. file_pattern: "data/{options.dataset}/'
        f'{"train" if "train" in field else "val"}-*.tfrecord" (build the '
        'records with tools/build_*_data.py).')
  _require_positive(path, f'{field}.batch_size', options.batch_size)
  if len(options.crop_size) != 2:
    raise ConfigError(f'{path}: {field}.crop_size must have exactly two '
                      f'values (height, width), got {list(options.crop_size)}.'
                      ' Write `crop_size: 1024 crop_size: 2048`.')
  for value in options.crop_size:
    _require_positive(path, f'{field}.crop_size', value)
  try:
    model_geometry(model_options, crop_size(options))
  except ConfigError as e:
    raise ConfigError(f'{path}: {field}.crop_size: {e}') from None
  if options.resize_longer_side < 0:
    raise ConfigError(f'{path}: {field}.resize_longer_side must be >= 0.')
  if options.shuffle_buffer_size < 0 or options.num_parallel_reads < 0 or (
      options.max_examples < 0):
    raise ConfigError(f'{path}: {field}.shuffle_buffer_size, '
                      'num_parallel_reads and max_examples must be >= 0.')
  aug = options.augmentations
  if not 0 < aug.min_scale_factor <= aug.max_scale_factor:
    raise ConfigError(
        f'{path}: {field}.augmentations needs 0 < min_scale_factor <= '
        f'max_scale_factor, got {aug.min_scale_factor} and '
        f'{aug.max_scale_factor}.')
  if aug.scale_factor_step_size < 0:
    raise ConfigError(f'{path}: {field}.augmentations.scale_factor_step_size '
                      'must be >= 0 (0 = continuous).')
  _require_unit_interval(path, f'{field}.augmentations.color_jitter_strength',
                         aug.color_jitter_strength, False, False)


def validate_experiment_options(options: config_pb2.ExperimentOptions,
                                path: str = '<config>',
                                mode: Optional[str] = 'train_and_eval'
                               ) -> None:
  """Raises ConfigError on the first problem found in `options`."""
  if mode is not None:
    _validate_choice(path, 'mode', mode, MODES)
  if not options.experiment_name:
    raise ConfigError(f'{path}: experiment_name is not set; it names the '
                      'output directory <model_dir>/<experiment_name>.')
  if not _EXPERIMENT_NAME_PATTERN.match(options.experiment_name):
    raise ConfigError(
        f'{path}: experiment_name {options.experiment_name!r} may only use '
        "letters, digits, '_', '-' and '.'.")
  _validate_model(path, options.model_options)
  _validate_trainer(path, options.trainer_options)

  datasets = []
  if options.HasField('train_dataset_options') or mode in TRAIN_MODES:
    _validate_dataset(path, 'train_dataset_options',
                      options.train_dataset_options, options.model_options,
                      needs_files=mode in TRAIN_MODES)
    datasets.append(options.train_dataset_options.dataset)
  if options.HasField('eval_dataset_options') or mode in EVAL_MODES:
    _validate_dataset(path, 'eval_dataset_options',
                      options.eval_dataset_options, options.model_options,
                      needs_files=mode in EVAL_MODES)
    if mode in EVAL_MODES and options.eval_dataset_options.repeat:
      raise ConfigError(
          f'{path}: eval_dataset_options.repeat is true (its default), so '
          'an evaluation would never end; add `repeat: false` to '
          'eval_dataset_options.')
    datasets.append(options.eval_dataset_options.dataset)
  classes = {name: dataset_info.get_dataset_info(name).num_classes
             for name in datasets}
  if len(set(classes.values())) > 1:
    raise ConfigError(
        f'{path}: train_dataset_options.dataset and eval_dataset_options.'
        f'dataset have different class counts ({classes}); train and '
        'evaluate on the same label space.')

  evaluator = options.evaluator_options
  _require_positive(path, 'evaluator_options.eval_interval_steps',
                    evaluator.eval_interval_steps)
  _require_positive(path, 'evaluator_options.continuous_eval_timeout_seconds',
                    evaluator.continuous_eval_timeout_seconds)
  if evaluator.num_vis_images < 0:
    raise ConfigError(f'{path}: evaluator_options.num_vis_images must be >= 0.')


def num_classes(options: config_pb2.ExperimentOptions) -> int:
  """Number of classes of the experiment's dataset (train, else eval)."""
  name = (options.train_dataset_options.dataset or
          options.eval_dataset_options.dataset)
  return dataset_info.get_dataset_info(name).num_classes


def model_input_size(options: config_pb2.ExperimentOptions
                    ) -> Tuple[int, int]:
  """The input size the model is built for: the eval crop, else train crop."""
  for dataset in (options.eval_dataset_options, options.train_dataset_options):
    if len(dataset.crop_size) == 2:
      return crop_size(dataset)
  raise ConfigError('Neither eval_dataset_options nor train_dataset_options '
                    'sets crop_size; the model needs an input size.')


def summary(options: config_pb2.ExperimentOptions,
            path: Optional[str] = None) -> str:
  """A short human-readable summary of the experiment's geometry."""
  lines = []
  if path:
    lines.append(f'config: {path}')
  lines.append(f'experiment: {options.experiment_name}')
  model = options.model_options
  tokenization = model.superpixel_tokenization
  lines.append(
      f'model: encoder {model.encoder.name}, hypercolumn '
      f'{model.hypercolumn.channels} ch at stride '
      f'{model.hypercolumn.output_stride}, {tokenization.num_layers} '
      f'cross-attention layer(s) ({tokenization.channels} ch, '
      f'{tokenization.num_heads} heads, '
      f'{model_pb2.LocalAttentionImplementation.Name(tokenization.implementation)}'
      f'), {model.superpixel_classifier.num_layers} self-attention layer(s)')
  for field in ('train_dataset_options', 'eval_dataset_options'):
    if not options.HasField(field):
      continue
    dataset = getattr(options, field)
    geometry = model_geometry(model, crop_size(dataset))
    info = dataset_info.get_dataset_info(dataset.dataset)
    lines.append(
        f'{field.split("_")[0]}: dataset {dataset.dataset} '
        f'({info.num_classes} classes), crop {geometry.input_height}x'
        f'{geometry.input_width}, batch {dataset.batch_size}, hypercolumn '
        f'{geometry.hypercolumn_height}x{geometry.hypercolumn_width}, '
        f'superpixel grid {geometry.grid_height}x{geometry.grid_width}, '
        f'{geometry.superpixel_height}x{geometry.superpixel_width} = '
        f'{geometry.superpixel_height * geometry.superpixel_width} '
        'hypercolumn pixels per superpixel, files '
        f'{", ".join(dataset.file_pattern) or "(none)"}')
  trainer = options.trainer_options
  lines.append(
      f'trainer: {trainer.training_number_of_steps} steps, '
      f'{trainer.optimizer} lr {trainer.base_learning_rate:g} '
      f'({trainer.learning_rate_policy}, {trainer.warmup_steps} warm-up), '
      f'weight decay {trainer.weight_decay:g}, top-k '
      f'{trainer.top_k_percent_pixels:g}% pixels')
  return '\n'.join(lines)
