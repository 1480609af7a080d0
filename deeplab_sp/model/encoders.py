"""Backbones of the SP-Transformer (arXiv 2309.16889, Sec. III-A, Table I).

Each encoder maps RGB images in [0, 255] to a dict of endpoints keyed by
output stride, applying its own input normalisation inside the model:

- `resnet50`: tf_keras.applications.ResNet50 with 'caffe' preprocessing
  (RGB -> BGR, ImageNet mean subtracted). Endpoints at strides 2 (conv1 relu),
  8 (conv3 output) and 32 (conv5 output), as in the paper. ResNet-50 has no
  drop path, so `drop_path_keep_prob` is ignored for it.
- `convnext_large`: tf_keras.applications.ConvNeXtLarge with its built-in
  normalisation layer. ConvNeXt has no stride-2 feature (its stem is a 4x4
  patchify conv), so its endpoints are strides 4, 8 and 32. Drop path rate =
  1 - drop_path_keep_prob.
- `tiny_convnet`: a few conv-BN-ReLU stages, endpoints at strides 2, 8, 32;
  for the default experiment and the tests (not in the paper).

Pretrained weights come only from a local file (Keras-applications `.h5`
file, include_top=False, or a TF checkpoint prefix of our encoder); nothing
is downloaded.
"""

import tensorflow as tf
import tf_keras
from tf_keras.src.applications import convnext

ENCODER_NAMES = ('resnet50', 'convnext_large', 'tiny_convnet')

# Layer names of the Keras-applications ResNet50 endpoints, by stride.
_RESNET50_ENDPOINTS = {2: 'conv1_relu', 8: 'conv3_block4_out',
                       32: 'conv5_block3_out'}
# ConvNeXt-L stage depths and widths (keras applications 'large').
_CONVNEXT_LARGE_DEPTHS = (3, 3, 27, 3)
_CONVNEXT_LARGE_WIDTHS = (192, 384, 768, 1536)
# ImageNet channel means (BGR) of the 'caffe' preprocessing of ResNet50.
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
# Strides of the tiny encoder's endpoints and its number of stages.
_TINY_ENDPOINT_STRIDES = (2, 8, 32)


def _convnext_endpoints(base):
  """ConvNeXt endpoint tensors by stride: the outputs of stages 1 and 2 (the
  layers just before the following downsampling blocks; the residual adds
  have no stable names) and the final (normalised) stage-4 output."""
  names = [layer.name for layer in base.layers]
  def before(layer_name):
    return base.layers[names.index(layer_name) - 1].output
  return {4: before(f'{base.name}_downsampling_block_0'),
          8: before(f'{base.name}_downsampling_block_1'),
          32: base.output}


class KerasApplicationEncoder(tf_keras.layers.Layer):
  """A tf_keras.applications backbone returning endpoints by stride.

  Args:
    name: one of 'resnet50', 'convnext_large'.
    drop_path_keep_prob: ConvNeXt stochastic depth keep probability.

  Call: images [batch, height, width, 3] float RGB in [0, 255] ->
    {stride: [batch, height / stride, width / stride, channels]}.
  """

  def __init__(self, name='resnet50', drop_path_keep_prob=1.0, **kwargs):
    super().__init__(name=name, **kwargs)
    self._encoder_name = name
    self._drop_path_keep_prob = drop_path_keep_prob
    if name == 'resnet50':
      base = tf_keras.applications.ResNet50(
          include_top=False, weights=None, input_shape=(None, None, 3))
      endpoints = {stride: base.get_layer(layer).output
                   for stride, layer in _RESNET50_ENDPOINTS.items()}
    elif name == 'convnext_large':
      # ConvNeXtLarge() fixes drop_path_rate to 0; the generic constructor
      # with the same depths and widths (hence the same layer names, so the
      # applications' .h5 weights load) takes it.
      base = convnext.ConvNeXt(
          depths=_CONVNEXT_LARGE_DEPTHS,
          projection_dims=_CONVNEXT_LARGE_WIDTHS,
          drop_path_rate=1.0 - drop_path_keep_prob,
          model_name='convnext_large', include_top=False, weights=None,
          input_shape=(None, None, 3), include_preprocessing=True)
      endpoints = _convnext_endpoints(base)
    else:
      raise ValueError(f'Unknown application encoder {name!r}.')
    self.backbone = base
    self.endpoint_strides = tuple(sorted(endpoints))
    self._endpoint_model = tf_keras.Model(
        base.inputs, [endpoints[stride] for stride in self.endpoint_strides])

  def call(self, images, training=None):
    if self._encoder_name == 'resnet50':
      # 'caffe' preprocessing: RGB -> BGR, minus the ImageNet mean.
      images = images[..., ::-1] - tf.constant(_CAFFE_BGR_MEAN, images.dtype)
    outputs = self._endpoint_model(images, training=training)
    return dict(zip(self.endpoint_strides, outputs))

  def load_pretrained(self, path):
    load_encoder_weights(self, path)

  def get_config(self):
    return {'name': self._encoder_name,
            'drop_path_keep_prob': self._drop_path_keep_prob}


class TinyConvNet(tf_keras.layers.Layer):
  """A small conv-BN-ReLU encoder with endpoints at strides 2, 8 and 32.

  Args:
    base_channels: channels of the stride-2 stage; doubled at each stage.

  Call: images [batch, height, width, 3] RGB in [0, 255] ->
    {2: [b, H/2, W/2, c], 8: [b, H/8, W/8, 2c], 32: [b, H/32, W/32, 4c]}.
  """

  def __init__(self, base_channels=16, name='tiny_convnet', **kwargs):
    super().__init__(name=name, **kwargs)
    self._base_channels = base_channels
    self.endpoint_strides = _TINY_ENDPOINT_STRIDES
    self._stages = []
    previous_stride = 1
    for index, stride in enumerate(_TINY_ENDPOINT_STRIDES):
      channels = base_channels * 2 ** index
      layers = []
      factor = stride // previous_stride
      while factor > 1:  # One stride-2 conv per halving.
        layers += [tf_keras.layers.Conv2D(channels, 3, strides=2,
                                          padding='same', use_bias=False),
                   tf_keras.layers.BatchNormalization(),
                   tf_keras.layers.ReLU()]
        factor //= 2
      self._stages.append(layers)
      previous_stride = stride

  def call(self, images, training=None):
    # Normalise [0, 255] to roughly [-1, 1].
    x = images / 127.5 - 1.0
    endpoints = {}
    for stride, layers in zip(self.endpoint_strides, self._stages):
      for layer in layers:
        if isinstance(layer, tf_keras.layers.BatchNormalization):
          x = layer(x, training=training)
        else:
          x = layer(x)
      endpoints[stride] = x
    return endpoints

  def load_pretrained(self, path):
    load_encoder_weights(self, path)

  def get_config(self):
    config = super().get_config()
    config.update({'base_channels': self._base_channels})
    return config


def load_encoder_weights(encoder, path):
  """Loads pretrained weights from a local `.h5` file or a TF checkpoint.

  Raises:
    FileNotFoundError: `path` does not exist.
    ValueError: the file does not fit the encoder.
  """
  is_h5 = path.endswith('.h5') or path.endswith('.hdf5')
  exists = (tf.io.gfile.exists(path) if is_h5 else
            tf.io.gfile.exists(path + '.index') or tf.io.gfile.exists(path))
  if not exists:
    raise FileNotFoundError(
        f'encoder.pretrained_weights: {path!r} does not exist. Give the local '
        'path of a Keras-applications .h5 weight file (include_top=False) or '
        'a TF checkpoint prefix, or leave the field empty to train from '
        'scratch.')
  try:
    if is_h5:
      target = getattr(encoder, 'backbone', None)
      if target is None:
        raise ValueError('only the keras-applications encoders read .h5 files')
      if path.startswith('gs://'):
        local = '/tmp/_encoder_weights.h5'
        tf.io.gfile.copy(path, local, overwrite=True)
        path = local
      target.load_weights(path)
    else:
      tf.train.Checkpoint(encoder=encoder).read(path).assert_existing_objects_matched()
  except (ValueError, KeyError, OSError, AssertionError,
          tf.errors.OpError) as error:
    raise ValueError(
        f'encoder.pretrained_weights: {path!r} does not fit encoder '
        f'{encoder.name!r} ({error}). Use the weight file of the same '
        'architecture with include_top=False.') from error


def build_encoder(encoder_options):
  """Builds the encoder named in an `EncoderOptions` proto.

  Raises:
    ValueError: unknown name (the message lists ENCODER_NAMES).
  """
  name = encoder_options.name
  if name == 'tiny_convnet':
    encoder = TinyConvNet(encoder_options.tiny_convnet_base_channels)
  elif name in ('resnet50', 'convnext_large'):
    encoder = KerasApplicationEncoder(name, encoder_options.drop_path_keep_prob)
  else:
    raise ValueError(f'model_options.encoder.name: unknown encoder {name!r}; '
                     f'use one of {ENCODER_NAMES}.')
  return encoder
