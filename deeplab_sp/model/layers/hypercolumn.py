"""Hypercolumn pixel features of the SP-Transformer (arXiv 2309.16889, III-A).

Each encoder endpoint is projected by an MLP to `channels`, bilinearly resized
to the hypercolumn resolution (input / output_stride) and summed; a learned
position embedding stored at 1/4 of the hypercolumn resolution is bilinearly
upsampled and added.
"""

import math

import tensorflow as tf
import tf_keras

# Position embeddings are stored at 1/4 of the feature resolution (Sec. III).
POSITION_EMBEDDING_DOWNSAMPLE = 4


def resize_bilinear(features, size):
  """Bilinear resize keeping the dtype: [b, h, w, c] -> [b, H, W, c]."""
  dtype = features.dtype
  if features.shape[1:3] == tuple(size):
    return features
  resized = tf.image.resize(features, size, method='bilinear')
  return tf.cast(resized, dtype)


class PositionEmbedding2D(tf_keras.layers.Layer):
  """A learned [h/4, w/4, c] embedding, upsampled to [h, w, c] and added.

  Args:
    height, width: the reference feature size the embedding is stored for
      (stored at ceil(size / 4)).
    channels: embedding channels.

  Call: features [batch, H, W, channels] -> same shape.
  """

  def __init__(self, height, width, channels, **kwargs):
    super().__init__(**kwargs)
    self._height, self._width, self._channels = height, width, channels
    self.embedding = self.add_weight(
        'embedding',
        shape=(math.ceil(height / POSITION_EMBEDDING_DOWNSAMPLE),
               math.ceil(width / POSITION_EMBEDDING_DOWNSAMPLE), channels),
        initializer=tf_keras.initializers.TruncatedNormal(stddev=0.02))

  def call(self, features):
    size = features.shape[1:3]
    embedding = tf.cast(self.embedding, features.dtype)[tf.newaxis]
    return features + resize_bilinear(embedding, size)

  def get_config(self):
    config = super().get_config()
    config.update({'height': self._height, 'width': self._width,
                   'channels': self._channels})
    return config


class Hypercolumn(tf_keras.layers.Layer):
  """Sum of MLP-projected, resized encoder endpoints plus a position embedding.

  Args:
    endpoint_strides: strides of the encoder endpoints used (e.g. (2, 8, 32)).
    channels: output channels (paper: 256).
    output_stride: hypercolumn stride in input pixels (paper: 8 / 4).
    mlp_hidden_channels: hidden width of each projection MLP; 0 = linear.
    height, width: hypercolumn size the position embedding is stored for.

  Call: endpoints {stride: [b, H/stride, W/stride, c_s]} and the input size
    -> [b, H/output_stride, W/output_stride, channels].
  """

  def __init__(self, endpoint_strides, channels=256, output_stride=8,
               mlp_hidden_channels=256, height=128, width=256, **kwargs):
    super().__init__(**kwargs)
    self._endpoint_strides = tuple(endpoint_strides)
    self._channels = channels
    self._output_stride = output_stride
    self._mlp_hidden_channels = mlp_hidden_channels
    self._height, self._width = height, width
    self._projections = {}
    for stride in self._endpoint_strides:
      layers = []
      if mlp_hidden_channels:
        layers.append(tf_keras.layers.Dense(
            mlp_hidden_channels, activation='gelu', name=f'mlp_{stride}_hidden'))
      layers.append(tf_keras.layers.Dense(channels, name=f'mlp_{stride}_out'))
      self._projections[stride] = layers
    self.position_embedding = PositionEmbedding2D(height, width, channels,
                                                  name='position_embedding')

  def call(self, endpoints, input_size):
    size = (input_size[0] // self._output_stride,
            input_size[1] // self._output_stride)
    total = None
    for stride in self._endpoint_strides:
      x = endpoints[stride]
      for layer in self._projections[stride]:
        x = layer(x)  # [b, H/stride, W/stride, channels]
      x = resize_bilinear(x, size)  # [b, H/output_stride, W/output_stride, c]
      total = x if total is None else total + x
    return self.position_embedding(total)

  def get_config(self):
    config = super().get_config()
    config.update({'endpoint_strides': self._endpoint_strides,
                   'channels': self._channels,
                   'output_stride': self._output_stride,
                   'mlp_hidden_channels': self._mlp_hidden_channels,
                   'height': self._height, 'width': self._width})
    return config
