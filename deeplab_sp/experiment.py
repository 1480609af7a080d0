"""One experiment: a text `ExperimentOptions` read, validated and resolved.

One experiment is one text protobuf (DeepLab2's convention); the schema in
protos/*.proto documents every field. `load_experiment` parses a file,
checks everything that can be checked before any work starts, and returns
one immutable `Experiment` that holds the facts every part of the project
needs (class count, input size, model geometry, dataset descriptions), so
that a mistake surfaces as one `ConfigError` naming the file, the field and
the fix instead of a stack trace an hour into training, and no caller
derives these facts again.

Which dataset describes the experiment (the one precedence rule):

  The *describing* DatasetOptions is `eval_dataset_options` if the config
  sets it, else `train_dataset_options`. Its dataset gives the class names
  and colormap (`Experiment.dataset`), and its `crop_size` is the input size
  the model is built for (`Experiment.input_size`, and `Experiment.geometry`
  at that size): the exported model and the evaluation run at that size,
  while training reads crops of `train_dataset_options.crop_size` (also
  checked against the geometry). When both datasets are set they must have
  the same number of classes (one label space), so `num_classes` does not
  depend on the rule.

Each check happens once, here; the trainer, evaluator, export and tools take
the Experiment and trust it.
"""

import dataclasses
import math
import re
from typing import Optional, Sequence, Tuple

from google.protobuf import descriptor
from google.protobuf import text_format
import tensorflow as tf

from deeplab_sp.data import dataset_info
from deeplab_sp.model import builder
from deeplab_sp.model import encoders
from deeplab_sp.model import geometry as geometry_lib
from deeplab_sp.protos import config_pb2
from deeplab_sp.protos import dataset_pb2
from deeplab_sp.protos import model_pb2

# The modes of trainer/train.py, and which datasets each one reads.
TRAIN_MODES = ('train', 'train_and_eval')
EVAL_MODES = ('eval', 'train_and_eval', 'continuous_eval')
MODES = ('train', 'eval', 'train_and_eval', 'continuous_eval')

OPTIMIZERS = ('adamw', 'sgd')
LEARNING_RATE_POLICIES = ('poly', 'constant')
# trainer_options.mixed_precision -> the tf_keras global policy it sets.
MIXED_PRECISION_POLICIES = {'none': 'float32', 'float16': 'mixed_float16',
                            'bfloat16': 'mixed_bfloat16'}

# Upper limits of sizes. Nothing real comes near them; a value above one is
# a typo (an extra digit) that would otherwise fail later as an
# out-of-memory error or a silent hour of work.
MAX_BATCH_SIZE = 4096          # Global batch size of a dataset.
MAX_CROP_SIDE = 16384          # Pixels per side of a crop.
MAX_CHANNELS = 65536           # Any width (channels, FFN or MLP channels).
MAX_LAYERS = 1000              # Layers of one transformer stack.
# Files read in parallel: each is a thread of tf.data's interleave, and tens
# of thousands of threads abort the process (pthread_create) instead of
# failing with an error.
MAX_PARALLEL_READS = 1024

# experiment_name is one directory under --model_dir: a single path
# component of safe characters, not '.' or '..'.
_EXPERIMENT_NAME_PATTERN = re.compile(r'^[A-Za-z0-9_.\-]+$')

Geometry = geometry_lib.Geometry


class ConfigError(ValueError):
  """A configuration mistake the user can fix; the message says how."""


@dataclasses.dataclass(frozen=True, eq=False)
class Experiment:
  """A validated experiment and the facts derived from it (once).

  Attributes:
    options: the validated ExperimentOptions. It is this Experiment's own
      copy and must not be mutated (every other field was derived from it);
      to change a value, edit `copy_options()` and call
      `experiment_from_options` on it.
    path: the config file (or '<string>').
    mode: the mode it was validated for (one of MODES), or None when no data
      is read (export, predict, model statistics).
    train_dataset, eval_dataset: the datasets (dataset_info.DatasetInfo,
      registered or described) of train_dataset_options /
      eval_dataset_options, None when the config does not set that dataset.
    dataset: the entry of the describing dataset (see the module docstring).
    num_classes: classes the model predicts.
    input_size: (height, width) the model is built for: the describing
      dataset's crop_size.
    geometry: the SP-Transformer's feature-map sizes at `input_size`; None
      for the per-pixel baselines (model_options.meta_architecture), which
      have no superpixel grid.
  """
  options: config_pb2.ExperimentOptions
  path: str
  mode: Optional[str]
  train_dataset: Optional[dataset_info.DatasetInfo]
  eval_dataset: Optional[dataset_info.DatasetInfo]
  dataset: dataset_info.DatasetInfo
  num_classes: int
  input_size: Tuple[int, int]
  geometry: Optional[Geometry]

  def copy_options(self) -> config_pb2.ExperimentOptions:
    """A mutable copy of `options` (to derive another experiment)."""
    copy = config_pb2.ExperimentOptions()
    copy.CopyFrom(self.options)
    return copy

  @property
  def name(self) -> str:
    """experiment_name: the output directory <model_dir>/<name>."""
    return self.options.experiment_name

  @property
  def meta_architecture(self) -> str:
    """The network: one of builder.META_ARCHITECTURES."""
    return builder.meta_architecture(
        self.options.model_options.meta_architecture)

  @property
  def has_superpixels(self) -> bool:
    """Whether the network has superpixels (only the SP-Transformer)."""
    return builder.has_superpixels(self.options.model_options)

  @property
  def keras_mixed_precision_policy(self) -> str:
    """The tf_keras global policy of trainer_options.mixed_precision."""
    precision = self.options.trainer_options.mixed_precision
    return MIXED_PRECISION_POLICIES[precision]

  def summary(self, with_path: bool = True) -> str:
    """A short human-readable summary of the experiment's geometry."""
    options = self.options
    lines = [f'config: {self.path}'] if with_path else []
    lines.append(f'experiment: {self.name}')
    model = options.model_options
    lines.append(f'model: {_model_summary(model)}')
    for field, info in (('train_dataset_options', self.train_dataset),
                        ('eval_dataset_options', self.eval_dataset)):
      if info is None:
        continue
      dataset = getattr(options, field)
      height, width = crop_size(dataset)
      geometry = model_geometry(model, (height, width))
      if geometry is not None:
        features = (
            f'hypercolumn {geometry.hypercolumn_height}x'
            f'{geometry.hypercolumn_width}, superpixel grid '
            f'{geometry.grid_height}x{geometry.grid_width}, '
            f'{geometry.superpixel_height}x{geometry.superpixel_width} = '
            f'{geometry.superpixel_height * geometry.superpixel_width} '
            'hypercolumn pixels per superpixel')
      elif self.meta_architecture == builder.HYPERCOLUMN_PIXEL_CLASSIFIER:
        stride = model.hypercolumn.output_stride
        features = (f'hypercolumn and logits {height // stride}x'
                    f'{width // stride}')
      else:
        stride = model.deeplabv3plus.low_level_stride
        features = (f'ASPP {height // builder.ASPP_STRIDE}x'
                    f'{width // builder.ASPP_STRIDE}, logits '
                    f'{height // stride}x{width // stride}')
      lines.append(
          f'{field.split("_")[0]}: dataset {info.name} '
          f'({info.num_classes} classes), crop {height}x{width}, batch '
          f'{dataset.batch_size}, {features}, files '
          f'{", ".join(dataset.file_pattern) or "(none)"}')
    trainer = options.trainer_options
    lines.append(
        f'trainer: {trainer.training_number_of_steps} steps, '
        f'{trainer.optimizer} lr {trainer.base_learning_rate:g} '
        f'({trainer.learning_rate_policy}, {trainer.warmup_steps} warm-up), '
        f'weight decay {trainer.weight_decay:g}, top-k '
        f'{trainer.top_k_percent_pixels:g}% pixels')
    return '\n'.join(lines)


def _model_summary(model: model_pb2.ModelOptions) -> str:
  """One line describing the network of `model`."""
  name = builder.meta_architecture(model.meta_architecture)
  encoder = f'encoder {model.encoder.name}'
  hypercolumn = (f'hypercolumn {model.hypercolumn.channels} ch at stride '
                 f'{model.hypercolumn.output_stride}')
  if name == builder.HYPERCOLUMN_PIXEL_CLASSIFIER:
    return (f'{name}: {encoder}, {hypercolumn}, per-pixel MLP classifier '
            f'({model.pixel_classifier.hidden_channels} hidden ch), no '
            'superpixels')
  if name == builder.DEEPLABV3PLUS:
    options = model.deeplabv3plus
    rates = ', '.join(str(r) for r in builder.atrous_rates(options))
    return (f'{name}: {encoder}, ASPP at stride {builder.ASPP_STRIDE} '
            f'({options.aspp_channels} ch, rates {rates}), decoder at stride '
            f'{options.low_level_stride} ({options.low_level_channels} + '
            f'{options.decoder_channels} ch, {options.decoder_num_convs} '
            'conv(s)), no superpixels')
  tokenization = model.superpixel_tokenization
  implementation = model_pb2.LocalAttentionImplementation.Name(
      tokenization.implementation)
  return (f'{encoder}, {hypercolumn}, {tokenization.num_layers} '
          f'cross-attention layer(s) ({tokenization.channels} ch, '
          f'{tokenization.num_heads} heads, {implementation}), '
          f'{model.superpixel_classifier.num_layers} self-attention layer(s)')


def load_experiment(path: str,
                    mode: Optional[str] = 'train_and_eval',
                    overrides: Sequence[str] = ()) -> Experiment:
  """Reads, parses, validates and resolves the experiment at `path`.

  Args:
    path: local or gs:// path of a .textproto file.
    mode: one of MODES; decides which datasets must have file patterns.
      None (for tools that read no data: export, predict, model_stats,
      benchmark): no file pattern is required.
    overrides: text-format ExperimentOptions fragments applied in order on
      top of the file (see apply_overrides), e.g. the --config_override
      flags.

  Raises:
    ConfigError: naming the file, the line or field, and the fix (also for
      a missing file, a directory or a file that is not UTF-8 text).
  """
  options = parse_experiment_options(read_config_text(path), path)
  for override in overrides:
    apply_overrides(options, override)
  return experiment_from_options(options, path, mode)


def apply_overrides(options: config_pb2.ExperimentOptions,
                    override: str) -> None:
  """Applies a text-format ExperimentOptions fragment to `options`.

  The Model Garden's --params_override, for protos: every field the fragment
  sets replaces the config's value, and a repeated field is replaced as a
  whole (file_pattern, crop_size), not appended to as a plain text-proto
  merge would; messages are merged field by field. E.g.
  `trainer_options { base_learning_rate: 1e-4 }` or
  `eval_dataset_options { file_pattern: "data/camvid/test-*.tfrecord" }`.

  Raises:
    ConfigError: naming the override and the text-proto error.
  """
  fragment = config_pb2.ExperimentOptions()
  try:
    text_format.Parse(override, fragment)
  except text_format.ParseError as e:
    raise ConfigError(
        f'--config_override {override!r}: {e} -- write text-format '
        'ExperimentOptions fields, e.g. --config_override='
        '"trainer_options { base_learning_rate: 1e-4 }" (fields in '
        'protos/*.proto).') from None
  _replace_set_fields(options, fragment)


def _replace_set_fields(target, fragment) -> None:
  """Sets in `target` every field set in `fragment` (see apply_overrides)."""
  for field, value in fragment.ListFields():
    if field.is_repeated:
      target.ClearField(field.name)
      getattr(target, field.name).extend(value)
    elif field.type == descriptor.FieldDescriptor.TYPE_MESSAGE:
      if field.containing_oneof is not None:
        # Selecting another member of a oneof replaces the previous one.
        target.ClearField(field.name)
      _replace_set_fields(getattr(target, field.name), value)
      if not value.ListFields():
        getattr(target, field.name).SetInParent()
    else:
      setattr(target, field.name, value)


def experiment_from_options(options: config_pb2.ExperimentOptions,
                            path: str = '<string>',
                            mode: Optional[str] = 'train_and_eval'
                           ) -> Experiment:
  """Validates `options` (copied) for `mode` and resolves the Experiment.

  Raises:
    ConfigError: on the first problem, naming `path`, the field and the fix.
  """
  options_copy = config_pb2.ExperimentOptions()
  options_copy.CopyFrom(options)
  options = options_copy
  resolve_dataset_info_files(options, path)
  _validate(options, path, mode)
  train = (dataset_info.from_options(options.train_dataset_options)
           if options.HasField('train_dataset_options') else None)
  evaluation = (dataset_info.from_options(options.eval_dataset_options)
                if options.HasField('eval_dataset_options') else None)
  field, describing = _describing_dataset(options)
  dataset = evaluation if field == 'eval_dataset_options' else train
  if dataset is None:
    raise ConfigError(
        f'{path}: neither eval_dataset_options nor train_dataset_options is '
        'set; the model needs a dataset (its classes) and a crop_size (its '
        'input size). Add eval_dataset_options { dataset: ... crop_size: H '
        'crop_size: W }.')
  input_size = crop_size(describing)
  return Experiment(
      options=options, path=path, mode=mode, train_dataset=train,
      eval_dataset=evaluation, dataset=dataset,
      num_classes=dataset.num_classes, input_size=input_size,
      geometry=model_geometry(options.model_options, input_size, path,
                              f'{field}.crop_size'))


def resolve_dataset_info_files(options: config_pb2.ExperimentOptions,
                                path: str) -> None:
  """Replaces each DatasetOptions.dataset_info_file by the description it
  holds (dataset_description), so that the resolved options, and the
  experiment config saved beside the checkpoints, are self-contained."""
  for field in ('train_dataset_options', 'eval_dataset_options'):
    if not options.HasField(field):
      continue
    dataset = getattr(options, field)
    if dataset.WhichOneof('source') != 'dataset_info_file':
      continue
    file_field = f'{field}.dataset_info_file'
    info_path = dataset.dataset_info_file
    hint = ('write the path of a text DatasetDescription (relative paths are '
            'read from the current directory), e.g. dataset_info_file: '
            '"configs/camvid/camvid.dataset.textproto"')
    if not info_path or not tf.io.gfile.exists(info_path) or (
        tf.io.gfile.isdir(info_path)):
      raise ConfigError(
          f'{path}: {file_field} {info_path!r} is not a file; {hint}.')
    try:
      with tf.io.gfile.GFile(info_path, 'rb') as f:
        text = f.read().decode('utf-8')
    except (tf.errors.OpError, OSError, UnicodeDecodeError) as e:
      raise ConfigError(f'{path}: {file_field}: cannot read {info_path} '
                        f'({getattr(e, "message", e)}); {hint}.') from None
    description = dataset_pb2.DatasetDescription()
    try:
      text_format.Parse(text, description)
    except text_format.ParseError as e:
      raise ConfigError(
          f'{info_path}:{e} -- ({file_field}) fix the text-proto syntax; '
          'the fields are documented in protos/dataset.proto '
          '(DatasetDescription).') from None
    dataset.dataset_description.CopyFrom(description)


def read_config_text(path: str) -> str:
  """The text of the config file at `path`; ConfigError if it is not one."""
  hint = ('pass an existing .textproto, e.g. --config_file=configs/'
          'synthetic/sp_transformer_tiny.textproto')
  if not tf.io.gfile.exists(path):
    raise ConfigError(f'Config file {path} does not exist; {hint}')
  if tf.io.gfile.isdir(path):
    raise ConfigError(f'Config file {path} is a directory; {hint}')
  try:
    with tf.io.gfile.GFile(path, 'rb') as f:
      data = f.read()
  except (tf.errors.OpError, OSError) as e:
    raise ConfigError(f'Cannot read config file {path} '
                      f'({getattr(e, "message", e)}); {hint}') from None
  try:
    return data.decode('utf-8')
  except UnicodeDecodeError as e:
    raise ConfigError(
        f'Config file {path} is not UTF-8 text (byte {e.start}); it is not '
        f'a text ExperimentOptions. {hint[0].upper()}{hint[1:]}') from None


def parse_experiment_options(text: str,
                             path: str = '<string>'
                            ) -> config_pb2.ExperimentOptions:
  """Parses text-format ExperimentOptions (no validation).

  Raises:
    ConfigError: naming the file and line.
  """
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


def crop_size(dataset_options: dataset_pb2.DatasetOptions) -> Tuple[int, int]:
  """(height, width) of DatasetOptions.crop_size."""
  return int(dataset_options.crop_size[0]), int(dataset_options.crop_size[1])


def model_geometry(model_options: model_pb2.ModelOptions,
                   input_size: Sequence[int],
                   path: Optional[str] = None,
                   field: Optional[str] = None) -> Optional[Geometry]:
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


def _describing_dataset(options: config_pb2.ExperimentOptions
                       ) -> Tuple[str, dataset_pb2.DatasetOptions]:
  """(field name, DatasetOptions) of the dataset that describes the
  experiment: eval_dataset_options if set, else train_dataset_options."""
  if options.HasField('eval_dataset_options'):
    return 'eval_dataset_options', options.eval_dataset_options
  return 'train_dataset_options', options.train_dataset_options


# Validation. Every function raises ConfigError on the first problem.


def _require_positive(path: str, field: str, value) -> None:
  if value <= 0:
    raise ConfigError(
        f'{path}: {field} must be positive, got {value}. Set it to a value '
        '> 0 (see its comment in protos/).')


def _require_at_most(path: str, field: str, value, limit: int,
                     constant: str) -> None:
  if value > limit:
    raise ConfigError(
        f'{path}: {field} is {value}, above the limit {limit} '
        f'(experiment.{constant}); it is most likely a typo. Use a smaller '
        'value.')


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


def _validate_meta_architecture(path: str,
                                options: model_pb2.ModelOptions) -> str:
  """The network's name, once no option message it ignores is set."""
  try:
    name = builder.meta_architecture(options.meta_architecture)
  except ValueError as e:
    raise ConfigError(f'{path}: model_options.meta_architecture: {e}'
                      ) from None
  unread = builder.unread_options(options)
  if unread:
    fields = ', '.join(f'model_options.{field}' for field in unread)
    read = ', '.join(builder.OPTIONS_READ[name])
    raise ConfigError(
        f'{path}: {fields} {"is" if len(unread) == 1 else "are"} set, but '
        f'model_options.meta_architecture {name} does not use '
        f'{"it" if len(unread) == 1 else "them"} (it reads {read}). Remove '
        f'{"it" if len(unread) == 1 else "them"}, or set the '
        'meta_architecture that does (protos/model.proto).')
  return name


def _validate_pixel_classifier(path: str,
                               options: model_pb2.PixelClassifierOptions
                              ) -> None:
  field = 'model_options.pixel_classifier.hidden_channels'
  if options.hidden_channels < 0:
    raise ConfigError(f'{path}: {field} must be >= 0 (0 = a linear '
                      f'classifier), got {options.hidden_channels}.')
  _require_at_most(path, field, options.hidden_channels, MAX_CHANNELS,
                   'MAX_CHANNELS')


def _validate_deeplabv3plus(path: str, options: model_pb2.ModelOptions
                           ) -> None:
  deeplab = options.deeplabv3plus
  prefix = 'model_options.deeplabv3plus'
  for field in ('aspp_channels', 'low_level_channels', 'decoder_channels'):
    _require_positive(path, f'{prefix}.{field}', getattr(deeplab, field))
    _require_at_most(path, f'{prefix}.{field}', getattr(deeplab, field),
                     MAX_CHANNELS, 'MAX_CHANNELS')
  if deeplab.decoder_num_convs < 0:
    raise ConfigError(f'{path}: {prefix}.decoder_num_convs must be >= 0, got '
                      f'{deeplab.decoder_num_convs}.')
  _require_at_most(path, f'{prefix}.decoder_num_convs',
                   deeplab.decoder_num_convs, MAX_LAYERS, 'MAX_LAYERS')
  for rate in deeplab.atrous_rates:
    _require_positive(path, f'{prefix}.atrous_rates', rate)
    _require_at_most(path, f'{prefix}.atrous_rates', rate, MAX_CROP_SIDE,
                     'MAX_CROP_SIDE')
  _require_unit_interval(path, f'{prefix}.aspp_dropout_rate',
                         deeplab.aspp_dropout_rate, False, True)
  encoder = options.encoder.name
  strides = [s for s in encoders.ENDPOINT_STRIDES[encoder]
             if s < builder.ASPP_STRIDE]
  if deeplab.low_level_stride not in strides:
    raise ConfigError(
        f'{path}: {prefix}.low_level_stride is {deeplab.low_level_stride}; '
        f'encoder {encoder} has endpoints below the ASPP stride '
        f'{builder.ASPP_STRIDE} at strides {", ".join(map(str, strides))} '
        '(Chen et al. use 4).')


def _validate_model(path: str, options: model_pb2.ModelOptions) -> None:
  """Checks names, counts and ranges of ModelOptions."""
  name = _validate_meta_architecture(path, options)
  _validate_choice(path, 'model_options.encoder.name', options.encoder.name,
                   encoders.ENCODER_NAMES)
  _require_unit_interval(path, 'model_options.encoder.drop_path_keep_prob',
                         options.encoder.drop_path_keep_prob,
                         low_open=True, high_open=False)
  _require_positive(path, 'model_options.encoder.tiny_convnet_base_channels',
                    options.encoder.tiny_convnet_base_channels)
  _require_at_most(path, 'model_options.encoder.tiny_convnet_base_channels',
                   options.encoder.tiny_convnet_base_channels, MAX_CHANNELS,
                   'MAX_CHANNELS')
  weights = options.encoder.pretrained_weights
  if weights and not (tf.io.gfile.exists(weights) or
                      tf.io.gfile.exists(weights + '.index')):
    raise ConfigError(
        f'{path}: model_options.encoder.pretrained_weights {weights!r} does '
        'not exist. Give the local path of the Keras-applications weight file '
        '(.h5, include_top=False) or a TF checkpoint prefix, or leave it '
        'empty to train from scratch. Nothing is downloaded.')
  if name == builder.DEEPLABV3PLUS:
    _validate_deeplabv3plus(path, options)
    return

  hypercolumn = options.hypercolumn
  prefix = 'model_options.hypercolumn'
  _require_positive(path, f'{prefix}.channels', hypercolumn.channels)
  _require_positive(path, f'{prefix}.output_stride', hypercolumn.output_stride)
  if hypercolumn.mlp_hidden_channels < 0:
    raise ConfigError(f'{path}: {prefix}.mlp_hidden_channels must be >= 0 '
                      '(0 = a linear projection).')
  for field in ('channels', 'mlp_hidden_channels'):
    _require_at_most(path, f'{prefix}.{field}', getattr(hypercolumn, field),
                     MAX_CHANNELS, 'MAX_CHANNELS')
  if name == builder.HYPERCOLUMN_PIXEL_CLASSIFIER:
    _validate_pixel_classifier(path, options.pixel_classifier)
    return

  tokenization = options.superpixel_tokenization
  prefix = 'model_options.superpixel_tokenization'
  for field in ('grid_height', 'grid_width', 'num_layers', 'channels',
                'num_heads'):
    _require_positive(path, f'{prefix}.{field}', getattr(tokenization, field))
  _require_at_most(path, f'{prefix}.num_layers', tokenization.num_layers,
                   MAX_LAYERS, 'MAX_LAYERS')
  for field in ('ffn_channels', 'pixel_ffn_channels'):
    if getattr(tokenization, field) < 0:
      raise ConfigError(f'{path}: {prefix}.{field} must be >= 0 '
                        '(0 = no feed-forward block).')
  for field in ('channels', 'ffn_channels', 'pixel_ffn_channels'):
    _require_at_most(path, f'{prefix}.{field}', getattr(tokenization, field),
                     MAX_CHANNELS, 'MAX_CHANNELS')
  if tokenization.channels % tokenization.num_heads:
    raise ConfigError(
        f'{path}: {prefix}.num_heads ({tokenization.num_heads}) must divide '
        f'{prefix}.channels ({tokenization.channels}).')
  _require_unit_interval(path, f'{prefix}.dropout_rate',
                         tokenization.dropout_rate, False, True)

  classifier = options.superpixel_classifier
  prefix = 'model_options.superpixel_classifier'
  if classifier.num_layers < 0:
    raise ConfigError(f'{path}: {prefix}.num_layers must be >= 0.')
  _require_at_most(path, f'{prefix}.num_layers', classifier.num_layers,
                   MAX_LAYERS, 'MAX_LAYERS')
  for field in ('num_heads', 'channels'):
    _require_positive(path, f'{prefix}.{field}', getattr(classifier, field))
  if classifier.ffn_channels < 0:
    raise ConfigError(f'{path}: {prefix}.ffn_channels must be >= 0.')
  for field in ('channels', 'ffn_channels'):
    _require_at_most(path, f'{prefix}.{field}', getattr(classifier, field),
                     MAX_CHANNELS, 'MAX_CHANNELS')
  if classifier.channels % classifier.num_heads:
    raise ConfigError(
        f'{path}: {prefix}.num_heads ({classifier.num_heads}) must divide '
        f'{prefix}.channels ({classifier.channels}).')
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
  _validate_schedule(path, options)
  _require_positive(path, f'{prefix}.base_learning_rate',
                    options.base_learning_rate)
  _require_positive(path, f'{prefix}.backbone_learning_rate_multiplier',
                    options.backbone_learning_rate_multiplier)
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
  _validate_choice(path, f'{prefix}.optimizer', options.optimizer, OPTIMIZERS)
  _validate_choice(path, f'{prefix}.learning_rate_policy',
                   options.learning_rate_policy, LEARNING_RATE_POLICIES)
  _validate_choice(path, f'{prefix}.mixed_precision', options.mixed_precision,
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
  _require_positive(path, f'{field}.batch_size', options.batch_size)
  _require_at_most(path, f'{field}.batch_size', options.batch_size,
                   MAX_BATCH_SIZE, 'MAX_BATCH_SIZE')
  if len(options.crop_size) != 2:
    raise ConfigError(f'{path}: {field}.crop_size must have exactly two '
                      f'values (height, width), got {list(options.crop_size)}.'
                      ' Write `crop_size: 1024 crop_size: 2048`.')
  for value in options.crop_size:
    _require_positive(path, f'{field}.crop_size', value)
    _require_at_most(path, f'{field}.crop_size', value, MAX_CROP_SIDE,
                     'MAX_CROP_SIDE')
  model_geometry(model_options, crop_size(options), path, f'{field}.crop_size')
  if options.resize_longer_side < 0:
    raise ConfigError(f'{path}: {field}.resize_longer_side must be >= 0.')
  _require_at_most(path, f'{field}.resize_longer_side',
                   options.resize_longer_side, MAX_CROP_SIDE, 'MAX_CROP_SIDE')
  if options.panoptic_label_divisor < 0:
    raise ConfigError(
        f'{path}: {field}.panoptic_label_divisor must be >= 0 (0: the '
        'records hold semantic labels; 1000: DeepLab2\'s panoptic records).')
  if options.shuffle_buffer_size < 0 or options.num_parallel_reads < 0 or (
      options.max_examples < 0):
    raise ConfigError(f'{path}: {field}.shuffle_buffer_size, '
                      'num_parallel_reads and max_examples must be >= 0.')
  _require_at_most(path, f'{field}.num_parallel_reads',
                   options.num_parallel_reads, MAX_PARALLEL_READS,
                   'MAX_PARALLEL_READS')
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


def _validate(options: config_pb2.ExperimentOptions, path: str,
              mode: Optional[str]) -> None:
  """Raises ConfigError on the first problem found in `options`."""
  if mode is not None:
    _validate_choice(path, 'mode', mode, MODES)
  _validate_name(path, options.experiment_name)
  _validate_finite(path, options)
  _validate_model(path, options.model_options)
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

  evaluator = options.evaluator_options
  _require_positive(path, 'evaluator_options.eval_interval_steps',
                    evaluator.eval_interval_steps)
  _require_positive(path, 'evaluator_options.continuous_eval_timeout_seconds',
                    evaluator.continuous_eval_timeout_seconds)
  if evaluator.num_vis_images < 0:
    raise ConfigError(f'{path}: evaluator_options.num_vis_images must be >= 0.')
  _validate_evaluator(path, options)


# Largest EvaluatorOptions.boundary_band_pixels: its dilation window is
# (2w+1)^2 pixels per pixel; wider bands say nothing about boundaries.
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
  dataset_field, describing = _describing_dataset(options)
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
