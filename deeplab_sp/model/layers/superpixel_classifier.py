"""Superpixel classification (arXiv 2309.16889, Sec. III-C).

k multi-head self-attention layers over all Hs*Ws superpixels (paper: k = 4,
4 heads, 256 channels) give every superpixel global context; a linear
classifier then predicts class logits C_i per superpixel. Each layer is a
pre-norm transformer block: x + MHSA(LN(x)), then x + FFN(LN(x)) (GELU
feed-forward of ffn_channels; none if 0), with a final LayerNorm before the
classifier.
"""

import math

import tensorflow as tf
import tf_keras

from deeplab_sp.model.layers import layer_norm
from deeplab_sp.model.layers import rows

_LAYER_NORM_EPSILON = 1e-5
_INIT_STDDEV = 0.02


class MultiHeadSelfAttention(tf_keras.layers.MultiHeadAttention):
  """tf_keras' MultiHeadAttention with matmuls for self-attention.

  tf_keras projects with einsums (then a separate bias pass) and contracts
  [B, T, N, H] queries and keys with einsums, which on CPU transpose inside
  and make the [B, N, T, S] logits about 4x slower than one batched matmul
  over heads-first tensors. For self-attention (query = value = key, no
  mask, float32) this layer instead projects the [B*T, C] token matrix once
  with the three kernels side by side (one MatMul with its BiasAdd fused),
  moves the heads first with one transpose, and forms the logits, the
  weighted sum and the output projection as matmuls. Same variables, same
  results (float32 round-off); other calls go to tf_keras' code.
  """

  def call(self, query, value, key=None, attention_mask=None,
           return_attention_scores=False, training=None,
           use_causal_mask=False):
    projections = (self._query_dense, self._key_dense, self._value_dense,
                   self._output_dense) if self._built_from_signature else ()
    # The first call (tf_keras' code) builds the projections.
    if (not projections or not all(p.built for p in projections) or
        value is not query or (key is not None and key is not query) or
        attention_mask is not None or use_causal_mask or
        isinstance(query, tf.RaggedTensor) or query.shape.rank != 3 or
        self.compute_dtype != 'float32' or not self._use_bias):
      return super().call(query, value, key=key,
                          attention_mask=attention_mask,
                          return_attention_scores=return_attention_scores,
                          training=training, use_causal_mask=use_causal_mask)
    tokens, channels = query.shape[1], query.shape[2]
    num_heads, key_dim = self._num_heads, self._key_dim
    value_dim = self._value_dim
    kernel = tf.concat([tf.reshape(p.kernel, [channels, -1])
                        for p in projections[:3]], axis=1)
    bias = tf.concat([tf.reshape(p.bias, [-1]) for p in projections[:3]],
                     axis=0)
    # [B*T, N*(2*key_dim + value_dim)]
    projected = tf.nn.bias_add(
        tf.matmul(tf.reshape(query, [-1, channels]), kernel), bias)
    sizes = [num_heads * key_dim, num_heads * key_dim, num_heads * value_dim]
    heads = []
    for part, dim in zip(tf.split(projected, sizes, axis=1),
                         (key_dim, key_dim, value_dim)):
      # [B, N, T, dim]
      heads.append(tf.transpose(
          tf.reshape(part, [-1, tokens, num_heads, dim]), [0, 2, 1, 3]))
    query_heads, key_heads, value_heads = heads
    query_heads *= 1.0 / math.sqrt(float(key_dim))
    # [B, N, T, S]
    scores = self._masked_softmax(
        tf.matmul(query_heads, key_heads, transpose_b=True), None)
    weights = self._dropout_layer(scores, training=training)
    # [B*T, N*value_dim] in (head, channel) order, as the output kernel.
    attended = tf.reshape(
        tf.transpose(tf.matmul(weights, value_heads), [0, 2, 1, 3]),
        [-1, num_heads * value_dim])
    output_kernel = self._output_dense.kernel
    output = tf.nn.bias_add(
        tf.matmul(attended, tf.reshape(output_kernel,
                                       [num_heads * value_dim, -1])),
        self._output_dense.bias)
    output = tf.reshape(output, [-1, tokens, output_kernel.shape[-1]])
    if return_attention_scores:
      return output, scores
    return output


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
  """

  def __init__(self, num_classes, num_layers=4, num_heads=4, channels=256,
               ffn_channels=1024, dropout_rate=0.0, **kwargs):
    super().__init__(**kwargs)
    self.num_classes = num_classes
    self.num_layers = num_layers
    self.num_heads = num_heads
    self.channels = channels
    self.ffn_channels = ffn_channels
    self.dropout_rate = dropout_rate
    initializer = lambda: tf_keras.initializers.TruncatedNormal(
        stddev=_INIT_STDDEV)
    norm = lambda name: layer_norm.LayerNormalization(
        epsilon=_LAYER_NORM_EPSILON, name=name)
    self.input_projection = None
    self.attention_norms, self.attentions = [], []
    self.ffn_norms, self.ffns = [], []
    for i in range(num_layers):
      self.attention_norms.append(norm(f'attention_norm_{i}'))
      self.attentions.append(MultiHeadSelfAttention(
          num_heads, channels // num_heads, dropout=dropout_rate,
          kernel_initializer=initializer(), name=f'self_attention_{i}'))
      if ffn_channels:
        self.ffn_norms.append(norm(f'ffn_norm_{i}'))
        self.ffns.append(tf_keras.Sequential([
            tf_keras.layers.Dense(ffn_channels, activation='gelu',
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
        tokens = tokens + rows.on_rows(
            lambda x, i=i: self.ffns[i](x, training=training),
            self.ffn_norms[i](tokens))
    logits = rows.on_rows(self.classifier, self.output_norm(tokens))
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
