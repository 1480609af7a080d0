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
      projected = projection(endpoints[stride],
                                            training=training)
      if projected.shape[1] != height or projected.shape[2] != width:
        projected = tf.image.resize(projected, (height, width),
                                    method='bilinear')
        projected = tf.cast(projected, self.compute_dtype)
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
