"""Hypercolumn pixel features (arXiv 2309.16889, Sec. III-A).

Each encoder endpoint (ResNet-50: strides 2, 8, 32) is projected by an MLP to
`channels` (paper: 256), bilinearly resized to the hypercolumn resolution
(input size / output_stride; paper: stride 8 on Cityscapes, 4 on ADE20K),
and the projections are summed. A learned position embedding stored at 1/4
of the hypercolumn resolution is upsampled and added (the pixel features'
position embedding of Sec. IV-A).
"""

from typing import Dict, Sequence

import tensorflow as tf
import tf_keras

from deeplab_sp.model import position_embedding
from deeplab_sp.model.kernels import activations
from deeplab_sp.model.kernels import dense_rows
from deeplab_sp.model.kernels import layer_norm
from deeplab_sp.model.kernels import profile
from deeplab_sp.model.kernels import resize
from deeplab_sp.model.kernels import xla_islands

# Paper, Sec. IV-A: every endpoint is projected to 256 channels.
DEFAULT_CHANNELS = 256


def _even_downsampling_factor(features: tf.Tensor, size) -> int:
  """f if `features` is exactly f times `size` with an even f >= 4, else 0."""
  in_height, in_width = features.shape[1], features.shape[2]
  if in_height is None or in_width is None:
    return 0
  factor = in_height // size[0]
  if (factor < 4 or factor % 2 or in_height != factor * size[0] or
      in_width != factor * size[1]):
    return 0
  return factor


class EndpointProjection(tf_keras.layers.Layer):
  """The per-pixel MLP of one endpoint: `output(hidden(x))`.

  hidden: Dense(hidden_channels) -> LayerNorm -> GELU, or the identity when
  hidden_channels is 0. output: Dense(channels), affine (no activation), so
  it commutes with bilinear resizing (whose weights sum to 1).

  Call: [..., C_in] -> [..., channels].

  kernels: the model's kernel profile (kernels/profile.py); None: its
  default.
  """

  def __init__(self, channels: int, hidden_channels: int, kernels=None,
               **kwargs):
    super().__init__(**kwargs)
    self.channels = channels
    self.hidden_channels = hidden_channels
    self.kernels = profile.get(kernels)
    self.hidden_layers = []
    if hidden_channels:
      self.hidden_layers = [
          tf_keras.layers.Dense(hidden_channels, name='hidden'),
          layer_norm.LayerNormalization(name='norm', kernels=self.kernels),
          activations.activation(activations.gelu, self.kernels, 'gelu'),
      ]
    self.output_projection = tf_keras.layers.Dense(channels, name='output')

  def hidden(self, features, training=None, activate=True):
    """The hidden layer; activate=False stops before its GELU."""
    hidden_layers = self.hidden_layers if activate else self.hidden_layers[:-1]

    def layers(pixels):
      for layer in hidden_layers:
        pixels = layer(pixels, training=training)
      return pixels
    return dense_rows.on_rows(layers, features)

  def output(self, features):
    return dense_rows.on_rows(self.output_projection, features)

  def call(self, features, training=None):
    return self.output(self.hidden(features, training=training))

  def get_config(self):
    config = super().get_config()
    config.update({'channels': self.channels,
                   'hidden_channels': self.hidden_channels})
    return config


@xla_islands.fused
def _mean_of_samples(samples, activate, kernels):
  """[B, H, 2, W, 2, C] -> [B, H, W, C]: the mean of the 2 x 2 samples of
  each pixel, GELU first if activate; one fused loop under XLA."""
  if activate:
    samples = activations.gelu(samples, kernels)
  return 0.25 * tf.reduce_sum(samples, axis=(2, 4))


def _resize(features, size):
  """Bilinear resize (half-pixel centres, no antialiasing), dtype kept."""
  if tuple(features.shape[1:3]) == tuple(size):
    return features
  return resize.bilinear(features, size)


def project_and_resize(projection: EndpointProjection, features: tf.Tensor,
                       size, training=None) -> tf.Tensor:
  """resize(projection(features), size), bilinear, computed cheaply.

  Two exact rewrites (equal to float round-off):
  - The output layer is affine and bilinear weights sum to 1, so it is
    applied at the smaller of the two resolutions: after the resize when
    downsampling, before it when upsampling.
  - Bilinear downsampling by an even integer factor f (tf.image.resize's
    default half-pixel centres, no antialiasing) places each output pixel
    half way between input rows f*i + f/2 - 1 and f*i + f/2 (and the same
    columns): it reads only 4 of every f*f input pixels, each with weight
    1/4. The hidden layer then runs on those pixels only, and is averaged.
  For the stride-2 endpoint of a stride-8 hypercolumn this is 4x less work
  in the hidden layer and 16x less in the output layer.

  Args:
    projection: the endpoint's EndpointProjection.
    features: [B, H, W, C] endpoint.
    size: (height, width) of the result.
    training: passed to `projection`.

  Returns:
    [B, size[0], size[1], channels].
  """
  height, width = size
  factor = _even_downsampling_factor(features, size)
  if factor:
    channels = features.shape[-1]
    first = factor // 2 - 1
    # [B, height, f, width, f, C]: the f x f input pixels of each cell.
    cells = tf.reshape(features, (-1, height, factor, width, factor,
                                  channels))
    # The 2 x 2 sampled pixels of every cell, [B, height, 2, width, 2, C]:
    # one slice, whose gradient is one pad (a slice per sample would each
    # write an endpoint-sized gradient, then add them).
    sampled = tf.slice(cells, [0, 0, first, 0, first, 0],
                       [-1, height, 2, width, 2, channels])
    activate = bool(projection.hidden_layers)
    hidden = projection.hidden(sampled, training=training, activate=False)
    # Their mean, [B, height, width, C_hidden].
    hidden = _mean_of_samples(hidden, activate=activate,
                              kernels=projection.kernels,
                              use_xla=projection.kernels.xla_islands)
  elif features.shape[1] is not None and features.shape[1] > height:
    # Other downsampling: resize the hidden features.
    hidden = _resize(projection.hidden(features, training=training),
                     (height, width))
  else:
    return _resize(projection(features, training=training), (height, width))
  # The output layer on the fewer (output-size) pixels.
  return projection.output(hidden)


class Hypercolumn(tf_keras.layers.Layer):
  """Sums MLP-projected, resized encoder endpoints.

  Call args:
    endpoints: dict {stride: [B, H/stride, W/stride, C_stride]}.
    image_size: (H, W) of the input image, static ints.

  Returns:
    [B, H / output_stride, W / output_stride, channels].

  Args:
    endpoint_strides: strides of the endpoints that will be passed.
    channels: output channels (paper: 256).
    output_stride: hypercolumn stride in input pixels.
    mlp_hidden_channels: hidden width of each endpoint's MLP; 0 = linear.
    kernels: the model's kernel profile (kernels/profile.py); None: its
      default.
  """

  def __init__(self, endpoint_strides: Sequence[int],
               channels: int = DEFAULT_CHANNELS, output_stride: int = 8,
               mlp_hidden_channels: int = DEFAULT_CHANNELS, kernels=None,
               **kwargs):
    super().__init__(**kwargs)
    self.kernels = profile.get(kernels)
    self.endpoint_strides = tuple(int(s) for s in endpoint_strides)
    self.channels = channels
    self.output_stride = output_stride
    self.mlp_hidden_channels = mlp_hidden_channels
    # One MLP per endpoint, in the order of endpoint_strides.
    self._projections = [
        EndpointProjection(channels, mlp_hidden_channels,
                           kernels=self.kernels, name=f'stride{stride}_mlp')
        for stride in self.endpoint_strides]
    self.position_embedding = position_embedding.AddPositionEmbedding(
        kernels=self.kernels, name='pixel_position_embedding')

  def call(self, endpoints: Dict[int, tf.Tensor], image_size,
           training=None):
    height = image_size[0] // self.output_stride
    width = image_size[1] // self.output_stride
    total = None
    for stride, projection in zip(self.endpoint_strides, self._projections):
      projected = project_and_resize(projection, endpoints[stride],
                                     (height, width), training)
      total = projected if total is None else total + projected
    # [B, H / output_stride, W / output_stride, channels].
    return self.position_embedding(total)

  def get_config(self):
    config = super().get_config()
    config.update({
        'endpoint_strides': self.endpoint_strides,
        'channels': self.channels,
        'output_stride': self.output_stride,
        'mlp_hidden_channels': self.mlp_hidden_channels,
    })
    return config
