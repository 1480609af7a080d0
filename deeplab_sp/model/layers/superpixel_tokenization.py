"""Superpixel tokenization (arXiv 2309.16889, Sec. III-B, equations 3, 4).

Learned queries S0 (one per grid cell) and n local dual-path cross-attention
layers. Each layer, MaX-DeepLab style:
  1. q, k, v linear projections of both paths (from the layer t-1 features),
     split into heads; relative position embeddings over the neighbourhood
     (shared by all superpixels) are added to keys and values;
  2. eq. (3): S += W_s . superpixel_update(q(S), k(I), v(I));
     eq. (4): I += W_p . pixel_update(q(I), k(S), v(S))  (both read t-1);
  3. LayerNorm per path, then (optional) FFN + residual + LayerNorm per path.
Neighbours outside the grid are masked inside the ops of local_attention.py;
`implementation` (NAIVE = the paper's 9x duplication / EFFICIENT) is passed
through to them. Absolute position embeddings of both paths are stored at
1/4 resolution, upsampled and added before the first layer.
"""

import tensorflow as tf
import tf_keras

from deeplab_sp.model import local_attention
from deeplab_sp.model.layers import hypercolumn as hypercolumn_lib

_INIT_STDDEV = 0.02


def _ffn(hidden, channels, prefix):
  return [tf_keras.layers.Dense(hidden, activation='gelu',
                                name=f'{prefix}_ffn_hidden'),
          tf_keras.layers.Dense(channels, name=f'{prefix}_ffn_out')]


class DualPathCrossAttention(tf_keras.layers.Layer):
  """One local dual-path cross-attention layer (eq. 3 and 4).

  Args:
    channels: C of both paths; num_heads: N (C = N * D).
    superpixel_height, superpixel_width: h, w pixels per cell.
    ffn_channels / pixel_ffn_channels: FFN hidden width per path (0 = none).
    implementation: 'NAIVE' / 'EFFICIENT' or the proto enum value.
    dropout_rate: dropout on the attention outputs.

  Call: superpixels [b, Hs, Ws, C], pixels [b, Hs*h, Ws*w, C] -> same shapes.
  """

  def __init__(self, channels, num_heads, superpixel_height, superpixel_width,
               ffn_channels=1024, pixel_ffn_channels=0, implementation='NAIVE',
               dropout_rate=0.0, **kwargs):
    super().__init__(**kwargs)
    if channels % num_heads:
      raise ValueError(f'superpixel_tokenization.num_heads ({num_heads}) must '
                       f'divide channels ({channels}).')
    self._config = dict(channels=channels, num_heads=num_heads,
                        superpixel_height=superpixel_height,
                        superpixel_width=superpixel_width,
                        ffn_channels=ffn_channels,
                        pixel_ffn_channels=pixel_ffn_channels,
                        implementation=local_attention.normalize_implementation(
                            implementation),
                        dropout_rate=dropout_rate)
    self._heads, self._head_channels = num_heads, channels // num_heads
    dense = lambda name: tf_keras.layers.Dense(channels, name=name)
    self.superpixel_qkv = tf_keras.layers.Dense(3 * channels, name='s_qkv')
    self.pixel_qkv = tf_keras.layers.Dense(3 * channels, name='p_qkv')
    self.superpixel_output = dense('s_out')
    self.pixel_output = dense('p_out')
    self.superpixel_norm = tf_keras.layers.LayerNormalization(name='s_norm')
    self.pixel_norm = tf_keras.layers.LayerNormalization(name='p_norm')
    self.dropout = tf_keras.layers.Dropout(dropout_rate)
    self.superpixel_ffn = (_ffn(ffn_channels, channels, 's') if ffn_channels
                           else [])
    self.pixel_ffn = (_ffn(pixel_ffn_channels, channels, 'p')
                      if pixel_ffn_channels else [])
    self.superpixel_ffn_norm = tf_keras.layers.LayerNormalization(
        name='s_ffn_norm')
    self.pixel_ffn_norm = tf_keras.layers.LayerNormalization(name='p_ffn_norm')
    init = tf_keras.initializers.TruncatedNormal(stddev=_INIT_STDDEV)
    pixels_per_neighborhood = (local_attention.NUM_NEIGHBORS *
                               superpixel_height * superpixel_width)
    # Relative position embeddings, shared by all neighbourhoods.
    shape_s = (pixels_per_neighborhood, num_heads, self._head_channels)
    shape_p = (local_attention.NUM_NEIGHBORS, num_heads, self._head_channels)
    self.pixel_key_position = self.add_weight('pixel_key_position', shape_s,
                                              initializer=init)
    self.pixel_value_position = self.add_weight('pixel_value_position',
                                                shape_s, initializer=init)
    self.superpixel_key_position = self.add_weight(
        'superpixel_key_position', shape_p, initializer=init)
    self.superpixel_value_position = self.add_weight(
        'superpixel_value_position', shape_p, initializer=init)

  def _heads_split(self, x):
    # [b, h, w, C] -> [b, h, w, N, D]
    shape = tf.shape(x)
    return tf.reshape(x, tf.concat(
        [shape[:3], [self._heads, self._head_channels]], 0))

  def _heads_merge(self, x):
    shape = tf.shape(x)
    return tf.reshape(x, tf.concat([shape[:3], [-1]], 0))

  def call(self, superpixels, pixels, training=None):
    implementation = self._config['implementation']
    dtype = superpixels.dtype
    s_q, s_k, s_v = tf.split(self.superpixel_qkv(superpixels), 3, axis=-1)
    p_q, p_k, p_v = tf.split(self.pixel_qkv(pixels), 3, axis=-1)
    cast = lambda w: tf.cast(w, dtype)
    # Eq. (3): [b, Hs, Ws, N, D] attending to the 9*h*w pixels of N(i).
    superpixel_update = local_attention.superpixel_update(
        self._heads_split(s_q), self._heads_split(p_k), self._heads_split(p_v),
        cast(self.pixel_key_position), cast(self.pixel_value_position),
        implementation=implementation)
    # Eq. (4): [b, H, W, N, D] attending to the 9 superpixels of N(p).
    pixel_update = local_attention.pixel_update(
        self._heads_split(p_q), self._heads_split(s_k), self._heads_split(s_v),
        cast(self.superpixel_key_position),
        cast(self.superpixel_value_position), implementation=implementation)
    superpixels = self.superpixel_norm(superpixels + self.dropout(
        self.superpixel_output(self._heads_merge(superpixel_update)),
        training=training))
    pixels = self.pixel_norm(pixels + self.dropout(
        self.pixel_output(self._heads_merge(pixel_update)), training=training))
    if self.superpixel_ffn:
      update = superpixels
      for layer in self.superpixel_ffn:
        update = layer(update)
      superpixels = self.superpixel_ffn_norm(superpixels + update)
    if self.pixel_ffn:
      update = pixels
      for layer in self.pixel_ffn:
        update = layer(update)
      pixels = self.pixel_ffn_norm(pixels + update)
    return superpixels, pixels

  def get_config(self):
    config = super().get_config()
    config.update(self._config)
    return config


class SuperpixelTokenization(tf_keras.layers.Layer):
  """Learned superpixel queries refined by n dual-path cross-attention layers.

  Args:
    grid_height, grid_width: superpixel grid Hs x Ws.
    superpixel_height, superpixel_width: h x w hypercolumn pixels per cell.
    num_layers: n (paper: 2). channels: C (paper: 256). num_heads (paper: 2).
    ffn_channels, pixel_ffn_channels, implementation, dropout_rate: see
      DualPathCrossAttention.

  Call: pixel_features [b, Hs*h, Ws*w, c_in] ->
    (superpixels [b, Hs, Ws, C], pixels [b, Hs*h, Ws*w, C]).
  """

  def __init__(self, grid_height=32, grid_width=64, superpixel_height=4,
               superpixel_width=4, num_layers=2, channels=256, num_heads=2,
               ffn_channels=1024, pixel_ffn_channels=0, implementation='NAIVE',
               dropout_rate=0.0, **kwargs):
    super().__init__(**kwargs)
    self._config = dict(
        grid_height=grid_height, grid_width=grid_width,
        superpixel_height=superpixel_height, superpixel_width=superpixel_width,
        num_layers=num_layers, channels=channels, num_heads=num_heads,
        ffn_channels=ffn_channels, pixel_ffn_channels=pixel_ffn_channels,
        implementation=local_attention.normalize_implementation(
            implementation),
        dropout_rate=dropout_rate)
    # S0: one learned query per grid cell, [Hs, Ws, C].
    self.superpixel_queries = self.add_weight(
        'superpixel_queries', (grid_height, grid_width, channels),
        initializer=tf_keras.initializers.TruncatedNormal(stddev=1.0))
    self.pixel_projection = tf_keras.layers.Dense(channels,
                                                  name='pixel_projection')
    self.superpixel_position = hypercolumn_lib.PositionEmbedding2D(
        grid_height, grid_width, channels, name='superpixel_position')
    self.pixel_position = hypercolumn_lib.PositionEmbedding2D(
        grid_height * superpixel_height, grid_width * superpixel_width,
        channels, name='pixel_position')
    self.cross_attention_layers = [
        DualPathCrossAttention(channels, num_heads, superpixel_height,
                               superpixel_width, ffn_channels,
                               pixel_ffn_channels,
                               self._config['implementation'], dropout_rate,
                               name=f'dual_path_{index}')
        for index in range(num_layers)]

  def call(self, pixel_features, training=None):
    pixels = self.pixel_position(self.pixel_projection(pixel_features))
    batch = tf.shape(pixel_features)[0]
    queries = tf.cast(self.superpixel_queries, pixels.dtype)
    superpixels = tf.tile(queries[tf.newaxis], [batch, 1, 1, 1])
    superpixels = self.superpixel_position(superpixels)  # [b, Hs, Ws, C]
    for layer in self.cross_attention_layers:
      superpixels, pixels = layer(superpixels, pixels, training=training)
    return superpixels, pixels

  def get_config(self):
    config = super().get_config()
    config.update(self._config)
    return config
