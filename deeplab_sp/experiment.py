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
from typing import Optional, Sequence, Tuple

from google.protobuf import descriptor
from google.protobuf import text_format
import tensorflow as tf

from deeplab_sp import experiment_checks
from deeplab_sp.data import dataset_info
from deeplab_sp.model import builder
from deeplab_sp.model import geometry as geometry_lib
from deeplab_sp.protos import config_pb2
from deeplab_sp.protos import dataset_pb2
from deeplab_sp.utils import config_rules

# What the checks (experiment_checks.py, utils/config_rules.py) define, under
# the names callers know.
ConfigError = config_rules.ConfigError
MAX_BATCH_SIZE = config_rules.MAX_BATCH_SIZE
MAX_CROP_SIDE = config_rules.MAX_CROP_SIDE
MAX_CHANNELS = config_rules.MAX_CHANNELS
MAX_LAYERS = config_rules.MAX_LAYERS
MAX_PARALLEL_READS = config_rules.MAX_PARALLEL_READS
TRAIN_MODES = experiment_checks.TRAIN_MODES
EVAL_MODES = experiment_checks.EVAL_MODES
MODES = experiment_checks.MODES
OPTIMIZERS = experiment_checks.OPTIMIZERS
LEARNING_RATE_POLICIES = experiment_checks.LEARNING_RATE_POLICIES
MIXED_PRECISION_POLICIES = experiment_checks.MIXED_PRECISION_POLICIES
MAX_BOUNDARY_BAND_PIXELS = experiment_checks.MAX_BOUNDARY_BAND_PIXELS
MAX_EVAL_SCALE = experiment_checks.MAX_EVAL_SCALE
MAX_EVAL_SCALES = experiment_checks.MAX_EVAL_SCALES
crop_size = experiment_checks.crop_size
model_geometry = experiment_checks.model_geometry
set_training_steps = experiment_checks.set_training_steps

Geometry = geometry_lib.Geometry


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
    lines.append(f'model: {builder.describe(model)}')
    for field, info in (('train_dataset_options', self.train_dataset),
                        ('eval_dataset_options', self.eval_dataset)):
      if info is None:
        continue
      dataset = getattr(options, field)
      height, width = crop_size(dataset)
      features = builder.get_network(model).feature_sizes(
          model, (height, width))
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
  experiment_checks.validate(options, path, mode)
  train = (dataset_info.from_options(options.train_dataset_options)
           if options.HasField('train_dataset_options') else None)
  evaluation = (dataset_info.from_options(options.eval_dataset_options)
                if options.HasField('eval_dataset_options') else None)
  field, describing = experiment_checks.describing_dataset(options)
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
