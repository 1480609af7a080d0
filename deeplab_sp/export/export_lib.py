"""Exports a segmentation model as a SavedModel for TF Serving.

The SavedModel is written in TF Serving's versioned layout,
`<output_path>/<version>/`, with two signatures:

  serving_default(encoded_images: string [B]): JPEG/PNG/BMP/GIF bytes (what
    TF Serving's REST API receives as {"b64": ...}); decoded by
    tfrecord_format.decode_image, the decoder of the training and evaluation
    records, so a JPEG gives the model the pixels it gave it in training
    (the accurate integer DCT, not tf.io.decode_image's default). Bytes that
    are not an image raise InvalidArgumentError (a client error, not a
    crash).
  serving_float(images: float32 [B, H, W, 3]): RGB in [0, 255], any H, W.

Both return
  'semantic': int32 [B, Hmax, Wmax], the label map (train ids) of each
    image at the image's own size;
  'image_size': int32 [B, 2], each image's (height, width);
  'superpixel_ids': int32 [B, Hmax, Wmax], hard superpixel assignment
    (absolute ids row * grid_width + col), unless disabled or the model has
    no superpixels (the per-pixel baselines);
  'probabilities': float32 [B, Hmax, Wmax, K], unless disabled (off by
    default: it is K times larger than the label map).
When the images of one batch have different sizes, every output is padded
bottom/right to the largest height and width (Hmax, Wmax) of the batch:
'semantic' with IGNORE_LABEL (255), 'superpixel_ids' with -1,
'probabilities' with 0; 'image_size' tells where each image ends. For a
batch of one size (the common case) there is no padding.

Size handling. The model is built for one input size (Experiment.input_size:
the crop_size of eval_dataset_options, else of train_dataset_options). Each
image is resized, keeping its aspect ratio, to fit inside that size
(bilinear; scale = min(H_model / h, W_model / w), up or down), padded
bottom/right with 127.5 (as the input pipeline pads) to the model size, and
run through the model. The padding is cropped off the logits, which are
resized back to the image's own size (bilinear) before the argmax (and
softmax); the superpixel ids are cropped and resized with nearest neighbour.

Input limits. Both signatures refuse an image with more than
max_input_pixels pixels (height * width; export flag --max_input_pixels,
default image_header.DEFAULT_MAX_INPUT_PIXELS = 4096 * 4096) with an
InvalidArgumentError naming the limit and the image's size. For encoded
images the size is read from the header (JPEG, PNG, GIF, BMP; any other
format is refused) before anything is decoded, so a small file claiming a
huge size costs nothing; a GIF's every frame is read, and its frames
together are held to the same limit (image_header). The outputs are made
at the image's own size, so the limit bounds them too; the softmax is
computed only when 'probabilities' is exported. A batch is padded to its
largest height and width, so the batch too is bounded: batch size x
largest height x largest width at most max_batch_pixels (export flag
--max_batch_pixels, default 4 x max_input_pixels), checked from the
headers before any image of the batch is decoded. An empty batch returns
empty outputs.

Export writes into a temporary directory beside the version directory
(named by utils/io.temporary_name); one left by a killed export (its pid
is gone) is removed by the next export to the same output path.
"""

import contextlib
import logging as python_logging
import os
import re
from typing import Dict, Optional, Sequence, Tuple

from absl import logging
import tensorflow as tf

from deeplab_sp import experiment as experiment_lib
from deeplab_sp.data import dataset_info
from deeplab_sp.data import preprocessing
from deeplab_sp.data import tfrecord_format
from deeplab_sp.export import image_header
from deeplab_sp.export import version_dir
from deeplab_sp.model import builder
from deeplab_sp.model.kernels import xla_islands
from deeplab_sp.protos import model_pb2
from deeplab_sp.trainer import checkpoints
from deeplab_sp.utils import io

IGNORE_LABEL = dataset_info.IGNORE_LABEL
# Padding value of 'superpixel_ids' outside an image (no superpixel).
SUPERPIXEL_ID_PAD = -1
SERVING_DEFAULT = 'serving_default'
SERVING_FLOAT = 'serving_float'


class ServingModule(tf.Module):
  """Wraps a model with decoding, resize/pad and resize-back logic.

  Attributes (tracked, so they are in the SavedModel too):
    model_variables: the Keras model's variables.
    colormap: tf.Variable int32 [K, 3], the dataset's colours.
    class_names: tf.Variable string [K].
  """

  def __init__(self, model: tf.keras.Model, input_size: Sequence[int],
               num_classes: int,
               colormap: Optional[Sequence[Sequence[int]]] = None,
               class_names: Optional[Sequence[str]] = None,
               include_probabilities: bool = False,
               include_superpixel_ids: bool = True,
               max_input_pixels: int = image_header.DEFAULT_MAX_INPUT_PIXELS,
               max_batch_pixels: Optional[int] = None):
    """Initialises the module.

    Args:
      model: maps float32 [B, H_model, W_model, 3] to a dict with
        'semantic_logits' [B, H_model, W_model, K] and, if
        include_superpixel_ids, 'superpixel_ids' [B, H_model, W_model].
      input_size: (H_model, W_model), the size the model is built for.
      num_classes: K.
      colormap: K (r, g, b) triples stored with the model (default grey).
      class_names: K names stored with the model (default '0'..).
      include_probabilities: add the 'probabilities' output.
      include_superpixel_ids: add the 'superpixel_ids' output.
      max_input_pixels: the largest height * width accepted.
      max_batch_pixels: the largest batch size * largest height * largest
        width of a batch (its padded outputs); None:
        image_header.default_max_batch_pixels(max_input_pixels).
    """
    if max_input_pixels <= 0:
      raise ValueError('--max_input_pixels must be positive, got '
                       f'{max_input_pixels}.')
    if max_batch_pixels is None:
      max_batch_pixels = image_header.default_max_batch_pixels(
          max_input_pixels)
    if max_batch_pixels < max_input_pixels:
      raise ValueError(
          f'--max_batch_pixels ({max_batch_pixels}) is less than '
          f'--max_input_pixels ({max_input_pixels}): one image at the limit '
          'would be refused. Raise --max_batch_pixels or leave it out (4 x '
          '--max_input_pixels).')
    super().__init__(name='sp_transformer_serving')
    # The Keras model is kept out of the SavedModel's object graph (its
    # layers' call functions, e.g. the encoder's int-keyed endpoint dict,
    # are not serialisable); only its variables are tracked, and the traced
    # signatures capture them.
    self._get_model = lambda: model
    if not model.built:
      # Create the variables now, outside the traced signatures.
      model(tf.zeros([1, *input_size, 3]), training=False)
    self.model_variables = list(model.variables)
    self.input_size = (int(input_size[0]), int(input_size[1]))
    self.num_classes = int(num_classes)
    self.include_probabilities = include_probabilities
    self.include_superpixel_ids = include_superpixel_ids
    self.max_input_pixels = int(max_input_pixels)
    self.max_batch_pixels = int(max_batch_pixels)
    if colormap is None:
      colormap = [(0, 0, 0)] * num_classes
    if class_names is None:
      class_names = [str(i) for i in range(num_classes)]
    self.colormap = tf.Variable(tf.constant(colormap, tf.int32),
                                trainable=False, name='colormap')
    self.class_names = tf.Variable(tf.constant(list(class_names)),
                                   trainable=False, name='class_names')

  @property
  def model(self) -> tf.keras.Model:
    """The wrapped Keras model (in memory only)."""
    return self._get_model()

  def _fit_size(self, size: tf.Tensor) -> tf.Tensor:
    """int32 [2] image size -> int32 [2] size that fits the model input."""
    model_size = tf.constant(self.input_size, tf.float32)
    scale = tf.reduce_min(model_size / tf.cast(size, tf.float32))
    fitted = tf.round(tf.cast(size, tf.float32) * scale)
    return tf.cast(tf.clip_by_value(fitted, 1.0, model_size), tf.int32)

  def _prepare(self, image: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    """float32 [h, w, 3] -> (padded [H_model, W_model, 3], fitted size [2])."""
    size = tf.shape(image)[:2]
    fitted = self._fit_size(size)
    resized = tf.cond(
        tf.reduce_all(tf.equal(fitted, size)),
        lambda: image,
        lambda: tf.image.resize(image, fitted, method='bilinear'))
    # Bottom/right padding with the value the input pipeline pads with, so
    # the model sees what it saw in training and evaluation.
    padding = tf.stack([[0, self.input_size[0] - fitted[0]],
                        [0, self.input_size[1] - fitted[1]], [0, 0]])
    padded = tf.pad(resized, padding,
                    constant_values=preprocessing.PAD_PIXEL_VALUE)
    return tf.ensure_shape(padded, [*self.input_size, 3]), fitted

  def _header_size(self, encoded: tf.Tensor) -> tf.Tensor:
    """int64 [2], the (height, width) in the header, after its checks."""
    size = image_header.encoded_image_size(encoded)
    with tf.control_dependencies(image_header.encoded_size_checks(
        encoded, self.max_input_pixels, size)):
      return tf.stack([size.height, size.width])

  def _decode(self, encoded: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor,
                                                 tf.Tensor]:
    """Decodes an image whose header serve_encoded has checked."""
    image = tf.cast(tfrecord_format.decode_image(encoded), tf.float32)
    padded, fitted = self._prepare(image)
    return padded, fitted, tf.shape(image)[:2]

  def _run(self, padded: tf.Tensor, fitted: tf.Tensor,
           sizes: tf.Tensor) -> Dict[str, tf.Tensor]:
    """Runs the model on padded images and maps outputs to the image sizes.

    Args:
      padded: float32 [B, H_model, W_model, 3].
      fitted: int32 [B, 2], size of each resized image inside `padded`.
      sizes: int32 [B, 2], each image's own size.
    """
    padded = tf.ensure_shape(padded, [None, *self.input_size, 3])
    # Without the output, the ids are an empty [0, 0] stand-in throughout.
    ids_size = self.input_size if self.include_superpixel_ids else (0, 0)

    def run_one(image):
      # One image at a time with a static batch of 1: the model's layers may
      # need a static batch size (the serving batch size is unknown).
      # No XLA clusters: TF Serving does not JIT-compile them on CPU.
      with xla_islands.disabled():
        outputs = self.model(image[tf.newaxis], training=False)
      ids = (tf.cast(outputs['superpixel_ids'][0], tf.int32)
             if self.include_superpixel_ids else tf.zeros(ids_size, tf.int32))
      return tf.cast(outputs['semantic_logits'][0], tf.float32), ids

    # [B, H_model, W_model, K] and [B, H_model, W_model]
    logits, ids = tf.map_fn(
        run_one, padded,
        fn_output_signature=(
            tf.TensorSpec([*self.input_size, self.num_classes], tf.float32),
            tf.TensorSpec(ids_size, tf.int32)))
    # [2]; zeros for an empty batch (whose outputs are empty).
    max_size = tf.maximum(tf.reduce_max(sizes, axis=0), 0)

    def restore(args):
      image_logits, image_ids, image_fitted, size = args
      image_logits = image_logits[:image_fitted[0], :image_fitted[1]]
      same = tf.reduce_all(tf.equal(image_fitted, size))
      image_logits = tf.cond(
          same, lambda: image_logits,
          lambda: tf.image.resize(image_logits, size, method='bilinear'))
      # [h, w, K]
      semantic = tf.argmax(image_logits, axis=-1, output_type=tf.int32)
      pad = [[0, max_size[0] - size[0]], [0, max_size[1] - size[1]]]
      semantic = tf.pad(semantic, pad, constant_values=IGNORE_LABEL)
      if self.include_superpixel_ids:
        image_ids = image_ids[:image_fitted[0], :image_fitted[1], tf.newaxis]
        image_ids = tf.cond(
            same, lambda: image_ids,
            lambda: tf.image.resize(image_ids, size, method='nearest'))[..., 0]
        # [h, w]
        image_ids = tf.pad(image_ids, pad, constant_values=SUPERPIXEL_ID_PAD)
      if not self.include_probabilities:
        # Not computed (a softmax over every pixel) when not exported.
        return semantic, image_ids, tf.zeros([0, 0, self.num_classes])
      probabilities = tf.nn.softmax(image_logits, axis=-1)
      probabilities = tf.pad(probabilities, pad + [[0, 0]])
      return semantic, image_ids, probabilities

    def restore_all():
      return tf.map_fn(
          restore, (logits, ids, fitted, sizes),
          fn_output_signature=(
              tf.TensorSpec([None, None], tf.int32),
              tf.TensorSpec([None, None], tf.int32),
              tf.TensorSpec([None, None, self.num_classes], tf.float32)))

    def empty():
      # map_fn cannot stack zero outputs of unknown size.
      return (tf.zeros([0, 0, 0], tf.int32), tf.zeros([0, 0, 0], tf.int32),
              tf.zeros([0, 0, 0, self.num_classes]))

    semantic, superpixel_ids, probabilities = tf.cond(
        tf.equal(tf.shape(sizes)[0], 0), empty, restore_all)
    result = {'semantic': semantic, 'image_size': sizes}
    if self.include_superpixel_ids:
      result['superpixel_ids'] = superpixel_ids
    if self.include_probabilities:
      result['probabilities'] = probabilities
    return result

  @tf.function(input_signature=[
      tf.TensorSpec([None], tf.string, name='encoded_images')])
  def serve_encoded(self, encoded_images: tf.Tensor) -> Dict[str, tf.Tensor]:
    """string [B] encoded images -> outputs (see the module docstring)."""
    # Every header, and the padded batch they make, is checked before the
    # decoders allocate anything.
    header_sizes = tf.map_fn(
        self._header_size, encoded_images,
        fn_output_signature=tf.TensorSpec([2], tf.int64))
    with tf.control_dependencies(image_header.batch_checks(
        header_sizes, self.max_batch_pixels)):
      encoded_images = tf.identity(encoded_images)
    padded, fitted, sizes = tf.map_fn(
        self._decode, encoded_images,
        fn_output_signature=(
            tf.TensorSpec([*self.input_size, 3], tf.float32),
            tf.TensorSpec([2], tf.int32), tf.TensorSpec([2], tf.int32)))
    return self._run(padded, fitted, sizes)

  @tf.function(input_signature=[
      tf.TensorSpec([None, None, None, 3], tf.float32, name='images')])
  def serve_float(self, images: tf.Tensor) -> Dict[str, tf.Tensor]:
    """float32 [B, h, w, 3] RGB 0..255 -> outputs (see the module docstring)."""
    shape = tf.shape(images)
    checks = image_header.size_checks(shape[1], shape[2],
                                      self.max_input_pixels)
    with tf.control_dependencies(checks):
      # The outputs are [B, H, W] too: the same bound as a padded batch.
      checks = image_header.batch_checks(
          tf.tile(shape[tf.newaxis, 1:3], [shape[0], 1]),
          self.max_batch_pixels)
    with tf.control_dependencies(checks):
      images = tf.identity(images)
    padded, fitted = tf.map_fn(
        self._prepare, images,
        fn_output_signature=(
            tf.TensorSpec([*self.input_size, 3], tf.float32),
            tf.TensorSpec([2], tf.int32)))
    sizes = tf.tile(tf.shape(images)[tf.newaxis, 1:3], [tf.shape(images)[0], 1])
    return self._run(padded, fitted, sizes)


def build_serving_module(experiment: experiment_lib.Experiment,
                         checkpoint_path: Optional[str] = None,
                         include_probabilities: bool = False,
                         include_superpixel_ids: bool = True,
                         max_input_pixels: int = (
                             image_header.DEFAULT_MAX_INPUT_PIXELS),
                         max_batch_pixels: Optional[int] = None
                        ) -> ServingModule:
  """Builds the model of `experiment`, restores a checkpoint, wraps it.

  Args:
    experiment: the Experiment (its model, input size and dataset).
    checkpoint_path: a checkpoint prefix or a directory (its latest
      checkpoint is used); None keeps the initial weights (tests).
    include_probabilities, include_superpixel_ids, max_input_pixels,
      max_batch_pixels: see ServingModule; a model without superpixels
      (the per-pixel baselines) has no 'superpixel_ids' output whatever
      include_superpixel_ids says.

  Raises:
    FileNotFoundError: if checkpoint_path holds no checkpoint.
  """
  input_size = experiment.input_size
  num_classes = experiment.num_classes
  model = restored_model(experiment, checkpoint_path)
  if include_superpixel_ids and not experiment.has_superpixels:
    logging.info('%s has no superpixels: the SavedModel has no '
                 "'superpixel_ids' output.", experiment.meta_architecture)
    include_superpixel_ids = False
  info = experiment.dataset
  return ServingModule(model, input_size, num_classes, info.colormap,
                       info.class_names, include_probabilities,
                       include_superpixel_ids, max_input_pixels,
                       max_batch_pixels)


def restored_model(experiment: experiment_lib.Experiment,
                   checkpoint_path: Optional[str] = None,
                   local_attention_implementation: Optional[str] = None
                  ) -> tf.keras.Model:
  """The experiment's model at its input size, with a checkpoint's weights.

  Args:
    experiment: the Experiment (its model options, classes and input size).
    checkpoint_path: a checkpoint prefix or a directory (its latest
      checkpoint is used); None keeps the initial weights (tests).
    local_attention_implementation: NAIVE or EFFICIENT for the tokenization
      and the association, whatever the config says (both compute the same
      function with the same variables); None keeps the config's.

  Raises:
    FileNotFoundError: if checkpoint_path holds no checkpoint.
  """
  # The checkpoint holds every weight: do not read the encoder's pretrained
  # (ImageNet) file, which need not exist where the model is exported.
  model_options = type(experiment.options.model_options)()
  model_options.CopyFrom(experiment.options.model_options)
  model_options.encoder.ClearField('pretrained_weights')
  if (local_attention_implementation is not None and
      experiment.has_superpixels):
    value = model_pb2.LocalAttentionImplementation.Value(
        local_attention_implementation)
    model_options.superpixel_tokenization.implementation = value
    model_options.superpixel_association.implementation = value
  input_size = experiment.input_size
  model = builder.build_model(model_options, experiment.num_classes,
                              input_size)
  # Create the variables before restoring, so that every checkpoint value
  # is matched (and a checkpoint of another model is a clear error).
  model(tf.zeros([1, *input_size, 3]), training=False)
  if checkpoint_path is not None:
    restore_checkpoint(model, checkpoint_path)
  return model


def resolve_checkpoint(checkpoint_path: str) -> str:
  """Returns the checkpoint prefix of a prefix or a directory."""
  if tf.io.gfile.isdir(checkpoint_path):
    latest = tf.train.latest_checkpoint(checkpoint_path)
    if latest is None:
      raise FileNotFoundError(
          f'No checkpoint in directory {checkpoint_path}; pass '
          '--checkpoint_path=<model_dir>/<experiment_name> after training, or '
          'a prefix like .../ckpt-1000.')
    return latest
  if not tf.io.gfile.exists(checkpoint_path + '.index'):
    raise FileNotFoundError(
        f'Checkpoint {checkpoint_path} not found (no {checkpoint_path}.index);'
        ' pass a prefix like <model_dir>/<experiment_name>/ckpt-1000 or the '
        'directory that holds the checkpoints.')
  return checkpoint_path


def restore_checkpoint(model: tf.keras.Model, checkpoint_path: str) -> str:
  """Restores `model` from a trainer checkpoint; returns the prefix used."""
  prefix = resolve_checkpoint(checkpoint_path)
  logging.info('Restoring model weights from %s', prefix)
  # A damaged checkpoint is named as such, not as one of another model.
  checkpoints.verify_or_explain(prefix, flag=None)
  tf.train.Checkpoint(model=model).read(prefix).expect_partial(
  ).assert_existing_objects_matched()
  return prefix


def next_version(output_path: str) -> int:
  """1 + the largest numeric version directory under output_path (or 1)."""
  if not tf.io.gfile.isdir(output_path):
    return 1
  versions = [int(name.rstrip('/')) for name in tf.io.gfile.listdir(output_path)
              if name.rstrip('/').isdigit()]
  return max(versions, default=0) + 1


# TensorFlow's note that inputs of a traced function get new names in the
# SavedModel; the list of new names is captured.
_RENAMING_NOTE = re.compile(
    r'contains input name\(s\) .* will be renamed to (?P<names>.*) in the '
    r'SavedModel')


class _LoopCaptureRenamingFilter(python_logging.Filter):
  """Drops TensorFlow's renaming note about the model's variables.

  The signatures run the model inside tf.map_fn, so each model variable is
  captured by the map's while loop, as a function input that TensorFlow
  names `input_<n>` there and `map_<k>_while_input_<n>` in the SavedModel:
  one INFO line listing a hundred names per signature. These are captured
  variables, not the signature's inputs, whose names (`encoded_images`,
  `images`) are kept; a note that renames anything else still shows.
  """

  def filter(self, record: python_logging.LogRecord) -> bool:
    match = _RENAMING_NOTE.search(record.getMessage())
    if not match:
      return True
    names = [name.strip() for name in match.group('names').split(',')]
    return not all(re.fullmatch(r'map(_\d+)?_while_input_\d+', name)
                   for name in names)


@contextlib.contextmanager
def _without_loop_capture_renaming_notes():
  # TensorFlow's SavedModel code logs the note through absl (today), or its
  # own logger.
  loggers = (logging.get_absl_logger(), tf.get_logger())
  note_filter = _LoopCaptureRenamingFilter()
  for logger in loggers:
    logger.addFilter(note_filter)
  try:
    yield
  finally:
    for logger in loggers:
      logger.removeFilter(note_filter)


def export_saved_model(module: ServingModule, output_path: str,
                       version: Optional[int] = None,
                       overwrite: bool = False) -> str:
  """Writes `module` to <output_path>/<version>/ atomically.

  The SavedModel is written into a temporary directory beside the version
  directory, then renamed into place (on local disks nothing half-written is
  ever visible under the version's name).

  Args:
    module: the ServingModule.
    output_path: the model's base directory (TF Serving's --model_base_path).
    version: positive version number; None = next free version.
    overwrite: replace an existing version directory.

  Returns:
    The version directory.

  Raises:
    ValueError: bad version; FileExistsError: version exists, no overwrite;
    io.DiskFullError: the disk filled up (nothing is left behind).
  """
  # Temporaries of killed exports: their pid is gone, and no one else
  # writes such names.
  for path in io.remove_stale_temporaries(output_path, directories=True):
    logging.info('Removed %s, left by an interrupted export.', path)
  if version is None:
    version = next_version(output_path)
  if version <= 0:
    raise ValueError(f'--version must be a positive integer, got {version}.')
  export_dir = os.path.join(output_path, str(version))
  exists = tf.io.gfile.exists(export_dir) or os.path.islink(export_dir)
  if exists and not overwrite:
    raise FileExistsError(
        f'{export_dir} exists; pass --overwrite to replace it or a new '
        '--version (default: the next free version).')
  if exists:
    # Only a SavedModel this tool wrote is replaced; never a link's target.
    version_dir.check_replaceable(export_dir)
  tf.io.gfile.makedirs(output_path)
  # Neither name is a number, so TF Serving never loads either.
  temp_dir = io.temporary_name(export_dir)
  old_dir = io.temporary_name(export_dir)
  try:
    signatures = {SERVING_DEFAULT: module.serve_encoded,
                  SERVING_FLOAT: module.serve_float}
    logging.info('Writing SavedModel to %s', temp_dir)
    with _without_loop_capture_renaming_notes(), io.disk_full_names(
        export_dir, ' while writing the SavedModel; nothing was written'):
      tf.saved_model.save(module, temp_dir, signatures=signatures)
    if exists:
      version_dir.check_replaceable(export_dir)
      tf.io.gfile.rename(export_dir, old_dir)
    try:
      tf.io.gfile.rename(temp_dir, export_dir)
    except BaseException:
      if exists:
        tf.io.gfile.rename(old_dir, export_dir)
      raise
    if exists:
      version_dir.remove_tree(old_dir)
  finally:
    if tf.io.gfile.exists(temp_dir):
      version_dir.remove_tree(temp_dir)
  logging.info('Exported SavedModel version %d to %s', version, export_dir)
  return export_dir


def export_from_config(config_file: str, checkpoint_path: str,
                       output_path: str, version: Optional[int] = None,
                       overwrite: bool = False,
                       include_probabilities: bool = False,
                       include_superpixel_ids: bool = True,
                       max_input_pixels: int = (
                           image_header.DEFAULT_MAX_INPUT_PIXELS),
                       max_batch_pixels: Optional[int] = None,
                       overrides: Sequence[str] = ()) -> str:
  """tools/export_model.py: config + checkpoint -> versioned SavedModel.

  `overrides` are text-format ExperimentOptions fragments applied on top of
  `config_file` (--config_override; see experiment.apply_overrides).
  """
  experiment = experiment_lib.load_experiment(config_file, mode=None,
                                              overrides=overrides)
  module = build_serving_module(experiment, checkpoint_path,
                                include_probabilities, include_superpixel_ids,
                                max_input_pixels, max_batch_pixels)
  return export_saved_model(module, output_path, version, overwrite)
