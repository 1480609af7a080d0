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

from deeplab_sp.model.layers import position_embedding

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


def project_and_resize(projection, features: tf.Tensor, size,
                       training=None) -> tf.Tensor:
  """resize(projection(features), size), bilinear, computed cheaply.

  Bilinear downsampling by an even integer factor f (half-pixel centres, no
  antialiasing: tf.image.resize's default) samples each output pixel half
  way between input rows f*i + f/2 - 1 and f*i + f/2 (and the same columns),
  so it reads only 4 of every f*f input pixels, each with weight 1/4. The
  per-pixel projection is therefore evaluated on those pixels only and
  averaged: the same values to float round-off, with f*f/4 times less work
  (4x for the stride-2 endpoint of a stride-8 hypercolumn). Other sizes take
  the plain path.

  Args:
    projection: per-pixel layer (acts on the channel axis only).
    features: [B, H, W, C] endpoint.
    size: (height, width) of the result.
    training: passed to `projection`.

  Returns:
    [B, size[0], size[1], channels] in the projection's dtype.
  """
  height, width = size
  factor = _even_downsampling_factor(features, size)
  if factor:
    channels = features.shape[-1]
    first = factor // 2 - 1
    # [B, height, f, width, f, C] -> the 2x2 sampled pixels of each cell:
    # [B, height, 2, width, 2, C].
    cells = tf.reshape(features, (-1, height, factor, width, factor,
                                  channels))
    sampled = cells[:, :, first:first + 2, :, first:first + 2, :]
    # Projected as an image [B, 2 * height, 2 * width, C] (rank 4, as on the
    # plain path), then the mean of each cell's 4 samples:
    # [B, height, width, channels].
    projected = projection(
        tf.reshape(sampled, (-1, 2 * height, 2 * width, channels)),
        training=training)
    projected = tf.reshape(projected,
                           (-1, height, 2, width, 2, projected.shape[-1]))
    return tf.reduce_mean(projected, axis=(2, 4))
  projected = projection(features, training=training)
  if projected.shape[1] != height or projected.shape[2] != width:
    dtype = projected.dtype
    projected = tf.cast(tf.image.resize(projected, (height, width),
                                        method='bilinear'), dtype)
  return projected


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
  """

  def __init__(self, endpoint_strides: Sequence[int],
               channels: int = DEFAULT_CHANNELS, output_stride: int = 8,
               mlp_hidden_channels: int = DEFAULT_CHANNELS, **kwargs):
    super().__init__(**kwargs)
    self.endpoint_strides = tuple(int(s) for s in endpoint_strides)
    self.channels = channels
    self.output_stride = output_stride
    self.mlp_hidden_channels = mlp_hidden_channels
    # One MLP per endpoint, in the order of endpoint_strides.
    self._projections = []
    for stride in self.endpoint_strides:
      layers = []
      if mlp_hidden_channels:
        layers += [
            tf_keras.layers.Dense(mlp_hidden_channels,
                                  name=f'stride{stride}_hidden'),
            tf_keras.layers.LayerNormalization(name=f'stride{stride}_norm'),
            tf_keras.layers.Activation('gelu', name=f'stride{stride}_gelu'),
        ]
      layers.append(tf_keras.layers.Dense(channels,
                                          name=f'stride{stride}_output'))
      self._projections.append(tf_keras.Sequential(
          layers, name=f'stride{stride}_mlp'))
    self.position_embedding = position_embedding.AddPositionEmbedding(
        name='pixel_position_embedding')

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
