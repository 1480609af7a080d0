"""Superpixel classification (arXiv 2309.16889, Sec. III-C).

k multi-head self-attention layers over all Hs*Ws superpixels (paper: k = 4,
4 heads, 256 channels) give every superpixel global context; a linear
classifier then predicts class logits C_i per superpixel. Each layer is a
pre-norm transformer block: x + MHSA(LN(x)), then x + FFN(LN(x)) (GELU
feed-forward of ffn_channels; none if 0), with a final LayerNorm before the
classifier.
"""

import functools

import tensorflow as tf
import tf_keras

from deeplab_sp.model.kernels import activations
from deeplab_sp.model.kernels import attention
from deeplab_sp.model.kernels import dense_rows
from deeplab_sp.model.kernels import layer_norm
from deeplab_sp.model.kernels import profile

_LAYER_NORM_EPSILON = 1e-5
_INIT_STDDEV = 0.02


class SuperpixelClassifier(tf_keras.layers.Layer):
  """Self-attention over superpixels, then per-superpixel class logits.

  Call args:
    superpixels: [B, Hs, Ws, C_in].

  Returns:
    Class logits [B, Hs, Ws, num_classes].

  Args:
    num_classes: number of classes.
    num_layers: self-attention layers k (paper: 4).
    num_heads: heads (paper: 4).
    channels: width of the self-attention layers (paper: 256).
    ffn_channels: hidden width of the feed-forward blocks; 0 = none.
    dropout_rate: dropout inside the blocks.
    kernels: the model's kernel profile (kernels/profile.py); None: its
      default.
  """

  def __init__(self, num_classes, num_layers=4, num_heads=4, channels=256,
               ffn_channels=1024, dropout_rate=0.0, kernels=None, **kwargs):
    super().__init__(**kwargs)
    self.kernels = profile.get(kernels)
    self.num_classes = num_classes
    self.num_layers = num_layers
    self.num_heads = num_heads
    self.channels = channels
    self.ffn_channels = ffn_channels
    self.dropout_rate = dropout_rate
    initializer = lambda: tf_keras.initializers.TruncatedNormal(
        stddev=_INIT_STDDEV)
    norm = lambda name: layer_norm.LayerNormalization(
        epsilon=_LAYER_NORM_EPSILON, kernels=self.kernels, name=name)
    # The matmul form where the profile has the CPU forms; tf_keras' layer
    # (same variables) otherwise.
    self_attention = (attention.MultiHeadSelfAttention
                      if self.kernels.cpu_forms
                      else tf_keras.layers.MultiHeadAttention)
    self.input_projection = None
    self.attention_norms, self.attentions = [], []
    self.ffn_norms, self.ffns = [], []
    for i in range(num_layers):
      self.attention_norms.append(norm(f'attention_norm_{i}'))
      self.attentions.append(self_attention(
          num_heads, channels // num_heads, dropout=dropout_rate,
          kernel_initializer=initializer(), name=f'self_attention_{i}'))
      if ffn_channels:
        self.ffn_norms.append(norm(f'ffn_norm_{i}'))
        self.ffns.append(tf_keras.Sequential([
            tf_keras.layers.Dense(ffn_channels,
                                  activation=functools.partial(
                                      activations.keras_gelu,
                                      kernels=self.kernels),
                                  kernel_initializer=initializer()),
            tf_keras.layers.Dropout(dropout_rate),
            tf_keras.layers.Dense(channels, kernel_initializer=initializer()),
        ], name=f'ffn_{i}'))
    self.output_norm = norm('output_norm')
    self.classifier = tf_keras.layers.Dense(
        num_classes, kernel_initializer=initializer(), name='class_logits')

  def build(self, input_shape):
    if input_shape[-1] != self.channels:
      self.input_projection = tf_keras.layers.Dense(self.channels,
                                                    name='input_projection')
    super().build(input_shape)

  def call(self, superpixels, training=None):
    grid_height, grid_width = superpixels.shape[1], superpixels.shape[2]
    if self.input_projection is not None:
      superpixels = self.input_projection(superpixels)
    # [B, Hs*Ws, C]: every superpixel attends to all the others.
    tokens = tf.reshape(superpixels,
                        (-1, grid_height * grid_width, self.channels))
    for i in range(self.num_layers):
      normed = self.attention_norms[i](tokens)
      tokens = tokens + self.attentions[i](normed, normed, training=training)
      if self.ffn_channels:
        tokens = tokens + dense_rows.on_rows(
            lambda x, i=i: self.ffns[i](x, training=training),
            self.ffn_norms[i](tokens))
    logits = dense_rows.on_rows(self.classifier, self.output_norm(tokens))
    return tf.reshape(logits, (-1, grid_height, grid_width, self.num_classes))

  def get_config(self):
    config = super().get_config()
    config.update({
        'num_classes': self.num_classes,
        'num_layers': self.num_layers,
        'num_heads': self.num_heads,
        'channels': self.channels,
        'ffn_channels': self.ffn_channels,
        'dropout_rate': self.dropout_rate,
    })
    return config
