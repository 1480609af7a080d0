"""The serving module: the model and one tf.function per signature.

The shape of TF Model Garden's ExportModule: a tf.Module that holds the
model and has one method per input type, each a tf.function with its input
signature; `signatures()` maps the SavedModel's signature keys to them.
export_lib's docstring describes the signatures, their outputs and limits;
resizing.py the size handling they share.
"""

from typing import Dict, Optional, Sequence, Tuple

import tensorflow as tf

from deeplab_sp.data import tfrecord_format
from deeplab_sp.export import image_header
from deeplab_sp.export import resizing

# Signature keys and the name of each one's input.
SERVING_DEFAULT = 'serving_default'  # encoded_images: string [B]
SERVING_FLOAT = 'serving_float'  # images: float32 [B, H, W, 3]
SERVING_IMAGE_TENSOR = 'serving_image_tensor'  # images: uint8 [B, H, W, 3]
# DeepLab2's names of our outputs (its common.py PRED_SEMANTIC_KEY and
# PRED_SEMANTIC_PROBS_KEY), added as aliases of the same tensors.
DEEPLAB2_ALIASES = {'semantic_pred': 'semantic',
                    'semantic_probs': 'probabilities'}


class ServingModule(tf.Module):
  """Wraps a model with decoding, resize/pad and resize-back logic.

  Attributes (tracked, so they are in the SavedModel too):
    model_variables: the Keras model's variables.
    colormap: tf.Variable int32 [K, 3], the dataset's colours.
    class_names: tf.Variable string [K].
    model_input_size: tf.Variable int32 [2], (H_model, W_model).
    pixel_limits: tf.Variable int64 [2], (max_input_pixels,
      max_batch_pixels).
  """

  def __init__(self, model: tf.keras.Model, input_size: Sequence[int],
               num_classes: int,
               colormap: Optional[Sequence[Sequence[int]]] = None,
               class_names: Optional[Sequence[str]] = None,
               include_probabilities: bool = False,
               include_superpixel_ids: bool = True,
               max_input_pixels: int = image_header.DEFAULT_MAX_INPUT_PIXELS,
               max_batch_pixels: Optional[int] = None,
               include_deeplab2_names: bool = True,
               experiment_text: Optional[str] = None):
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
      include_deeplab2_names: add DeepLab2's names of the outputs
        (DEEPLAB2_ALIASES) as aliases.
      experiment_text: the resolved experiment config (text format), which
        export_lib stores as an asset of the SavedModel; None: none.
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
    self.include_deeplab2_names = include_deeplab2_names
    self.max_input_pixels = int(max_input_pixels)
    self.max_batch_pixels = int(max_batch_pixels)
    self.experiment_text = experiment_text
    if colormap is None:
      colormap = [(0, 0, 0)] * num_classes
    if class_names is None:
      class_names = [str(i) for i in range(num_classes)]
    self.colormap = tf.Variable(tf.constant(colormap, tf.int32),
                                trainable=False, name='colormap')
    self.class_names = tf.Variable(tf.constant(list(class_names)),
                                   trainable=False, name='class_names')
    self.model_input_size = tf.Variable(
        tf.constant(self.input_size, tf.int32), trainable=False,
        name='model_input_size')
    self.pixel_limits = tf.Variable(
        tf.constant([self.max_input_pixels, self.max_batch_pixels],
                    tf.int64), trainable=False, name='pixel_limits')

  @property
  def model(self) -> tf.keras.Model:
    """The wrapped Keras model (in memory only)."""
    return self._get_model()

  def signatures(self) -> Dict[str, tf.types.experimental.PolymorphicFunction]:
    """The SavedModel's signatures: key -> tf.function of this module."""
    return {SERVING_DEFAULT: self.serve_encoded,
            SERVING_FLOAT: self.serve_float,
            SERVING_IMAGE_TENSOR: self.serve_image_tensor}

  def output_names(self) -> Tuple[str, ...]:
    """The names of the signatures' outputs, in a fixed order."""
    names = ['semantic', 'image_size']
    if self.include_superpixel_ids:
      names.append('superpixel_ids')
    if self.include_probabilities:
      names.append('probabilities')
    if self.include_deeplab2_names:
      names += [alias for alias, name in DEEPLAB2_ALIASES.items()
                if name in names]
    return tuple(names)

  def _capture_model_variables(self) -> None:
    """Captures the model's variables by name, at the top of a signature.

    A traced function captures a variable where it first reads it, with a
    name made there: inside tf.map_fn's loop (where the model runs) that is
    `input_<n>` for an input named `map_<k>_while_input_<n>`, and saving
    the signature logs a note listing every such pair as a renaming. Each
    variable captured here first, under the name its input gets
    (`model_variable_<i>`), is what the loop's capture then reuses.
    """
    for index, variable in enumerate(self.model_variables):
      tf.convert_to_tensor(variable.handle, name=f'model_variable_{index}')

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
    padded, fitted = resizing.prepare(image, self.input_size)
    return padded, fitted, tf.shape(image)[:2]

  def _run(self, padded: tf.Tensor, fitted: tf.Tensor,
           sizes: tf.Tensor) -> Dict[str, tf.Tensor]:
    """Runs the model on padded images and maps outputs to the image sizes.

    Args:
      padded: float32 [B, H_model, W_model, 3].
      fitted: int32 [B, 2], size of each resized image inside `padded`.
      sizes: int32 [B, 2], each image's own size.
    """
    self._capture_model_variables()
    padded = tf.ensure_shape(padded, [None, *self.input_size, 3])
    # Without the output, the ids are an empty [0, 0] stand-in throughout.
    ids_size = self.input_size if self.include_superpixel_ids else (0, 0)

    def run_one(image):
      # One image at a time with a static batch of 1: the model's layers may
      # need a static batch size (the serving batch size is unknown).
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
    semantic, superpixel_ids, probabilities = resizing.restore_batch(
        logits, ids, fitted, sizes, self.num_classes,
        self.include_superpixel_ids, self.include_probabilities)
    outputs = {'semantic': semantic, 'image_size': sizes,
               'superpixel_ids': superpixel_ids,
               'probabilities': probabilities}
    for alias, name in DEEPLAB2_ALIASES.items():
      outputs[alias] = outputs[name]
    return {name: outputs[name] for name in self.output_names()}

  def _serve_images(self, images: tf.Tensor) -> Dict[str, tf.Tensor]:
    """float32 [B, h, w, 3] RGB 0..255 -> outputs, after the size checks."""
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
        lambda image: resizing.prepare(image, self.input_size), images,
        fn_output_signature=(
            tf.TensorSpec([*self.input_size, 3], tf.float32),
            tf.TensorSpec([2], tf.int32)))
    sizes = tf.tile(tf.shape(images)[tf.newaxis, 1:3], [tf.shape(images)[0], 1])
    return self._run(padded, fitted, sizes)

  @tf.function(input_signature=[
      tf.TensorSpec([None], tf.string, name='encoded_images')])
  def serve_encoded(self, encoded_images: tf.Tensor) -> Dict[str, tf.Tensor]:
    """string [B] encoded images -> outputs (see export_lib's docstring)."""
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
    """float32 [B, h, w, 3] RGB 0..255 -> outputs (see export_lib)."""
    return self._serve_images(images)

  @tf.function(input_signature=[
      tf.TensorSpec([None, None, None, 3], tf.uint8, name='images')])
  def serve_image_tensor(self, images: tf.Tensor) -> Dict[str, tf.Tensor]:
    """uint8 [B, h, w, 3] RGB -> outputs (see export_lib).

    Model Garden's `image_tensor` input type: what a decoder gives, without
    the 4x larger float32 request of serving_float.
    """
    return self._serve_images(tf.cast(images, tf.float32))
