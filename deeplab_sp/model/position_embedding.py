"""Learned position embeddings stored at reduced resolution.

The SP-Transformer (arXiv 2309.16889, Sec. IV-A) uses "a single set of
learned position embeddings for each superpixel and pixel feature,
initialized at 1/4 resolution of each feature, bilinearly upsampled to the
feature resolution". The table is sized from the feature map the layer is
built for and is resized to whatever size it is called with.
"""

import math

import tensorflow as tf
import tf_keras

from deeplab_sp.model.kernels import portable_ops
from deeplab_sp.model.kernels import profile
from deeplab_sp.model.kernels import resize

# The stored table is this many times smaller than the feature map (paper,
# Sec. IV-A).
POSITION_EMBEDDING_DOWNSAMPLING = 4
_INIT_STDDEV = 0.02


class AddPositionEmbedding(tf_keras.layers.Layer):
  """Adds a learned, bilinearly upsampled position embedding.

  Input and output: [batch, height, width, channels]. The table has shape
  [ceil(height / 4), ceil(width / 4), channels] for the size seen at build
  time.

  Args:
    downsampling: resolution ratio between the features and the table.
    kernels: the model's kernel profile (kernels/profile.py); None: its
      default.
  """

  def __init__(self, downsampling: int = POSITION_EMBEDDING_DOWNSAMPLING,
               kernels=None, **kwargs):
    super().__init__(**kwargs)
    self.downsampling = downsampling
    self.kernels = profile.get(kernels)

  def build(self, input_shape):
    height, width, channels = input_shape[1], input_shape[2], input_shape[3]
    if height is None or width is None:
      raise ValueError(f'{self.name} needs a static feature size, got '
                       f'{input_shape}.')
    self.table = self.add_weight(
        'position_embedding',
        shape=(math.ceil(height / self.downsampling),
               math.ceil(width / self.downsampling), channels),
        initializer=tf_keras.initializers.TruncatedNormal(stddev=_INIT_STDDEV),
        trainable=True)
    super().build(input_shape)

  def call(self, features):
    size = tf.shape(features)[1:3]
    # In the ONNX/TFLite forms the resize runs in the graph: folded, the
    # table resized to the feature map would be stored at its size.
    table = portable_ops.computed_in_graph(self.table[tf.newaxis], features,
                                           self.kernels.portable)
    embedding = resize.bilinear(table, size)
    return features + tf.cast(embedding, features.dtype)

  def get_config(self):
    config = super().get_config()
    config.update({'downsampling': self.downsampling})
    return config
