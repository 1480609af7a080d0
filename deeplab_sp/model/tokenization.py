"""Superpixel tokenization (arXiv 2309.16889, Sec. III-B, equations 3 and 4).

A regular Hs x Ws grid of superpixels, each covering an h x w cell of
hypercolumn pixels, starts from learned queries S0 (one vector per cell,
plus a learned position embedding stored at 1/4 of the grid resolution).
Then n local dual-path cross-attention layers update superpixels and pixels
together, both reading the features of layer t-1:

  S_i^t = S_i^{t-1} + sum_{p in N(i)} softmax(q(S_i) . k(I_p)) v(I_p)   (3)
  I_p^t = I_p^{t-1} + sum_{i in N(p)} softmax(q(I_p) . k(S_i)) v(S_i)   (4)

N(i) is the 9*h*w pixels of the 3x3 cells around cell i, N(p) the 9
superpixels of the 3x3 cells around the cell of pixel p; neighbours outside
the grid are masked out of every softmax. The attention itself is computed
by a deeplab_sp.model.local_attention form chosen when the layer is built,
the paper's (`NAIVE`, explicit 9x duplication) or an equal, faster one
(`EFFICIENT`); the layer hands it its pixel-side projections (Dense layers)
rather than projected pixels, so that EFFICIENT can apply them to the
superpixels instead of every pixel.

Implementation choices (the paper builds on MaX-DeepLab's dual-path
transformer and leaves these to the implementer):
  * pre-norm: q, k, v are linear projections of layer-normalised features
    (an MLP of one layer), keys and values of the neighbourhood get additive
    learned *relative* position embeddings, shared by all superpixels
    ([9*h*w, C] for the superpixel path, [9, C] for the pixel path);
  * each path has an output projection and a residual connection; the
    superpixel path then has a pre-norm feed-forward block (ffn_channels),
    the pixel path one only if pixel_ffn_channels > 0;
  * both outputs get a final LayerNorm (they feed the association's dot
    products and the classifier).
  * If the layer is called at another geometry (other h, w) than it was
    built for, the superpixel path's relative position table, seen as a
    [3h, 3w] image, is bilinearly resized.
"""

import tensorflow as tf
import tf_keras

from deeplab_sp.model import local_attention
from deeplab_sp.model import position_embedding
from deeplab_sp.model.kernels import activations
from deeplab_sp.model.kernels import dense_rows
from deeplab_sp.model.kernels import layer_norm
from deeplab_sp.model.kernels import portable_ops
from deeplab_sp.model.kernels import profile
from deeplab_sp.model.kernels import resize
from deeplab_sp.model.local_attention import neighbors

_INIT_STDDEV = 0.02
_LAYER_NORM_EPSILON = 1e-5


def _initializer():
  return tf_keras.initializers.TruncatedNormal(stddev=_INIT_STDDEV)


def _dense(units, name):
  return tf_keras.layers.Dense(units, name=name,
                               kernel_initializer=_initializer())


def _feed_forward(channels, hidden_channels, name, kernels):
  return tf_keras.Sequential([
      _dense(hidden_channels, f'{name}_hidden'),
      activations.activation(activations.keras_gelu, kernels, f'{name}_gelu'),
      _dense(channels, f'{name}_output'),
  ], name=name)


def _resize_neighborhood_table(table, cell_height, cell_width,
                               new_height, new_width):
  """Resizes a [9*h*w, C] neighbourhood table to [9*h'*w', C].

  Slots are cell-major over the 3x3 neighbour cells, then row-major over the
  pixels of a cell; as an image the table is [3h, 3w, C].
  """
  channels = table.shape[-1]
  image = tf.reshape(table, (3, 3, cell_height, cell_width, channels))
  image = tf.reshape(tf.transpose(image, (0, 2, 1, 3, 4)),
                     (3 * cell_height, 3 * cell_width, channels))
  image = resize.bilinear(image[tf.newaxis],
                          (3 * new_height, 3 * new_width))[0]
  image = tf.reshape(image, (3, new_height, 3, new_width, channels))
  image = tf.transpose(image, (0, 2, 1, 3, 4))
  return tf.reshape(image, (9 * new_height * new_width, channels))


class DualPathCrossAttention(tf_keras.layers.Layer):
  """One local dual-path cross-attention layer (equations 3 and 4).

  Call args:
    inputs: (superpixels [B, Hs, Ws, C], pixels [B, Hs*h, Ws*w, C]).
    training: dropout on or off.
    pixels_in_attention_order: the pixel maps (in and out) are in the
      local attention's pixel order (`LocalAttention.to_pixel_order`), not
      in image order.

  Returns:
    (superpixels [B, Hs, Ws, C], pixels [B, Hs*h, Ws*w, C]).

  Args:
    channels: C (paper: 256).
    num_heads: attention heads (paper: 2); must divide channels.
    ffn_channels: hidden width of the superpixel path's feed-forward block;
      0 = none.
    pixel_ffn_channels: same for the pixel path; 0 = none.
    implementation: 'NAIVE' or 'EFFICIENT' (local_attention.get).
    dropout_rate: dropout on the attention outputs.
    kernels: the model's kernel profile (kernels/profile.py); None: its
      default.
  """

  def __init__(self, channels=256, num_heads=2, ffn_channels=1024,
               pixel_ffn_channels=0, implementation=local_attention.NAIVE,
               dropout_rate=0.0, kernels=None, **kwargs):
    super().__init__(**kwargs)
    self.kernels = profile.get(kernels)
    if channels % num_heads:
      raise ValueError(f'num_heads ({num_heads}) must divide channels '
                       f'({channels}).')
    self.channels = channels
    self.num_heads = num_heads
    self.ffn_channels = ffn_channels
    self.pixel_ffn_channels = pixel_ffn_channels
    self.local_attention = local_attention.get(implementation, self.kernels)
    self.implementation = self.local_attention.name
    self.dropout_rate = dropout_rate
    self._head_channels = channels // num_heads

    norm = lambda name: layer_norm.LayerNormalization(
        epsilon=_LAYER_NORM_EPSILON, kernels=self.kernels, name=name)
    self.superpixel_norm = norm('superpixel_norm')
    self.pixel_norm = norm('pixel_norm')
    # Superpixel path (eq. 3): queries from superpixels, keys/values from
    # pixels. Pixel path (eq. 4): queries from pixels, keys/values from
    # superpixels.
    self.superpixel_query = _dense(channels, 'superpixel_query')
    self.pixel_key = _dense(channels, 'pixel_key')
    self.pixel_value = _dense(channels, 'pixel_value')
    self.pixel_query = _dense(channels, 'pixel_query')
    self.superpixel_key = _dense(channels, 'superpixel_key')
    self.superpixel_value = _dense(channels, 'superpixel_value')
    self.superpixel_output = _dense(channels, 'superpixel_output')
    self.pixel_output = _dense(channels, 'pixel_output')
    self.dropout = tf_keras.layers.Dropout(dropout_rate)
    self.superpixel_ffn = self.pixel_ffn = None
    if ffn_channels:
      self.superpixel_ffn_norm = norm('superpixel_ffn_norm')
      self.superpixel_ffn = _feed_forward(channels, ffn_channels,
                                          'superpixel_ffn', self.kernels)
    if pixel_ffn_channels:
      self.pixel_ffn_norm = norm('pixel_ffn_norm')
      self.pixel_ffn = _feed_forward(channels, pixel_ffn_channels,
                                     'pixel_ffn', self.kernels)

  def build(self, input_shape):
    superpixel_shape, pixel_shape = input_shape
    self._cell_height = pixel_shape[1] // superpixel_shape[1]
    self._cell_width = pixel_shape[2] // superpixel_shape[2]
    slots = neighbors.NUM_NEIGHBORS * self._cell_height * self._cell_width
    # Relative position embeddings, shared by all superpixels (Sec. III-B):
    # [9*h*w, C] over a superpixel's pixel neighbourhood, [9, C] over a
    # pixel's superpixel neighbourhood.
    self.pixel_key_position = self.add_weight(
        'pixel_key_position', (slots, self.channels), initializer=_initializer())
    self.pixel_value_position = self.add_weight(
        'pixel_value_position', (slots, self.channels),
        initializer=_initializer())
    self.superpixel_key_position = self.add_weight(
        'superpixel_key_position', (neighbors.NUM_NEIGHBORS, self.channels),
        initializer=_initializer())
    self.superpixel_value_position = self.add_weight(
        'superpixel_value_position', (neighbors.NUM_NEIGHBORS, self.channels),
        initializer=_initializer())
    # The pixel-side projections are not called as layers: the local
    # attention receives them as affine maps (EFFICIENT folds them into the
    # superpixel side). Build them here.
    for dense in (self.pixel_key, self.pixel_value, self.pixel_query,
                  self.pixel_output):
      with tf.name_scope(dense.name):
        dense.build(pixel_shape[:-1] + (self.channels,))
    super().build(input_shape)

  def _heads(self, tensor):
    """[..., C] -> [..., N, D]."""
    shape = tf.concat([tf.shape(tensor)[:-1],
                       [self.num_heads, self._head_channels]], axis=0)
    result = tf.reshape(tensor, shape)
    result.set_shape(tensor.shape[:-1].concatenate(
        [self.num_heads, self._head_channels]))
    return result

  def _merge_heads(self, tensor):
    """[..., N, D] -> [..., C]."""
    shape = tf.concat([tf.shape(tensor)[:-2], [self.channels]], axis=0)
    result = tf.reshape(tensor, shape)
    result.set_shape(tensor.shape[:-2].concatenate([self.channels]))
    return result

  def _pixel_positions(self, cell_height, cell_width, pixels):
    """Relative tables of the superpixel path, at the current geometry.

    `pixels` (the layer's input) only keeps the resize in the ONNX/TFLite
    graphs (portable_ops.computed_in_graph) instead of a stored result.
    """
    key, value = self.pixel_key_position, self.pixel_value_position
    if (cell_height, cell_width) != (self._cell_height, self._cell_width):
      key, value = (_resize_neighborhood_table(
          portable_ops.computed_in_graph(t, pixels, self.kernels.portable),
          self._cell_height,
          self._cell_width, cell_height, cell_width) for t in (key, value))
    return key, value

  def call(self, inputs, training=None, pixels_in_attention_order=False):
    superpixels, pixels = inputs
    cell_height = pixels.shape[1] // superpixels.shape[1]
    cell_width = pixels.shape[2] // superpixels.shape[2]
    if not pixels_in_attention_order:
      pixels = self.local_attention.to_pixel_order(pixels, cell_height,
                                                   cell_width)
    dtype = self.compute_dtype
    normed_superpixels = self.superpixel_norm(superpixels)  # [B, Hs, Ws, C]
    normed_pixels = self.pixel_norm(pixels)                 # [B, H, W, C]

    # Equation (3): each superpixel attends to its 9*h*w neighbouring pixels,
    # through the pixel_key / pixel_value projections of the normalised
    # pixels.
    key_position, value_position = self._pixel_positions(cell_height,
                                                         cell_width, pixels)
    superpixel_update = self.local_attention.superpixel_update(
        self._heads(dense_rows.on_rows(self.superpixel_query,
                                       normed_superpixels)),
        normed_pixels, key=self.pixel_key, value=self.pixel_value,
        key_position=self._heads(tf.cast(key_position, dtype)),
        value_position=self._heads(
            tf.cast(value_position, dtype)))  # [B, Hs, Ws, N, D]

    # Equation (4): each pixel attends to its 9 neighbouring superpixels,
    # with pixel_query queries; pixel_output projects the heads' result.
    pixel_update = self.local_attention.pixel_update(
        normed_pixels, query=self.pixel_query,
        superpixel_key=self._heads(dense_rows.on_rows(self.superpixel_key,
                                                      normed_superpixels)),
        superpixel_value=self._heads(dense_rows.on_rows(
            self.superpixel_value, normed_superpixels)),
        output=self.pixel_output,
        key_position=self._heads(tf.cast(self.superpixel_key_position, dtype)),
        value_position=self._heads(
            tf.cast(self.superpixel_value_position, dtype)))  # [B, H, W, C]

    superpixels = superpixels + self.dropout(
        dense_rows.on_rows(self.superpixel_output,
                     self._merge_heads(superpixel_update)),
        training=training)
    pixels = pixels + self.dropout(pixel_update, training=training)
    if self.superpixel_ffn is not None:
      superpixels = superpixels + dense_rows.on_rows(
          self.superpixel_ffn, self.superpixel_ffn_norm(superpixels))
    if self.pixel_ffn is not None:
      pixels = pixels + dense_rows.on_rows(self.pixel_ffn,
                                     self.pixel_ffn_norm(pixels))
    if not pixels_in_attention_order:
      pixels = self.local_attention.from_pixel_order(pixels, cell_height,
                                                     cell_width)
    return superpixels, pixels

  def get_config(self):
    config = super().get_config()
    config.update({
        'channels': self.channels,
        'num_heads': self.num_heads,
        'ffn_channels': self.ffn_channels,
        'pixel_ffn_channels': self.pixel_ffn_channels,
        'implementation': self.implementation,
        'dropout_rate': self.dropout_rate,
    })
    return config


class SuperpixelTokenization(tf_keras.layers.Layer):
  """Learned superpixel queries refined by local dual-path cross-attention.

  Call args:
    pixels: hypercolumn features [B, Hs*h, Ws*w, C_in].

  Returns:
    (superpixels [B, Hs, Ws, C], pixels [B, Hs*h, Ws*w, C]): the outputs
    S^n and I^n of the last layer, layer-normalised.

  Args:
    grid_height, grid_width: the superpixel grid Hs x Ws (paper: 32x64 on
      Cityscapes, 40x40 on ADE20K).
    num_layers: n cross-attention layers (paper: 2).
    channels: C (paper: 256).
    num_heads: heads (paper: 2).
    ffn_channels, pixel_ffn_channels, implementation, dropout_rate,
      kernels: see DualPathCrossAttention.
  """

  def __init__(self, grid_height=32, grid_width=64, num_layers=2,
               channels=256, num_heads=2, ffn_channels=1024,
               pixel_ffn_channels=0, implementation=local_attention.NAIVE,
               dropout_rate=0.0, kernels=None, **kwargs):
    super().__init__(**kwargs)
    self.kernels = profile.get(kernels)
    self.grid_height = grid_height
    self.grid_width = grid_width
    self.num_layers = num_layers
    self.channels = channels
    self.num_heads = num_heads
    self.ffn_channels = ffn_channels
    self.pixel_ffn_channels = pixel_ffn_channels
    self.local_attention = local_attention.get(implementation, self.kernels)
    self.implementation = self.local_attention.name
    self.dropout_rate = dropout_rate
    self.superpixel_position_embedding = (
        position_embedding.AddPositionEmbedding(
            kernels=self.kernels, name='superpixel_position_embedding'))
    self.cross_attention_layers = [
        DualPathCrossAttention(channels, num_heads, ffn_channels,
                               pixel_ffn_channels, self.implementation,
                               dropout_rate, kernels=self.kernels,
                               name=f'cross_attention_{i}')
        for i in range(num_layers)]
    self.superpixel_output_norm = layer_norm.LayerNormalization(
        epsilon=_LAYER_NORM_EPSILON, kernels=self.kernels,
        name='superpixel_output_norm')
    self.pixel_output_norm = layer_norm.LayerNormalization(
        epsilon=_LAYER_NORM_EPSILON, kernels=self.kernels,
        name='pixel_output_norm')
    self.pixel_input_projection = None

  def build(self, input_shape):
    in_channels = input_shape[3]
    # S0: one learned query per grid cell, randomly initialised (Sec. III-B).
    self.queries = self.add_weight(
        'queries', (self.grid_height, self.grid_width, self.channels),
        initializer=tf_keras.initializers.TruncatedNormal(stddev=1.0))
    if in_channels != self.channels:
      self.pixel_input_projection = _dense(self.channels, 'pixel_input')
    super().build(input_shape)

  def call(self, pixels, training=None):
    if self.pixel_input_projection is not None:
      pixels = self.pixel_input_projection(pixels)
    batch = tf.shape(pixels)[0]
    queries = tf.cast(self.queries, self.compute_dtype)[tf.newaxis]
    superpixels = self.superpixel_position_embedding(queries)
    superpixels = tf.tile(superpixels, [batch, 1, 1, 1])  # [B, Hs, Ws, C]
    # Between the layers the pixels only meet per-pixel operations, so they
    # stay in the local attention's pixel order (EFFICIENT's cell order)
    # throughout rather than being reordered in every layer.
    cell_size = (pixels.shape[1] // self.grid_height,
                 pixels.shape[2] // self.grid_width)
    pixels = self.local_attention.to_pixel_order(pixels, *cell_size)
    for layer in self.cross_attention_layers:
      superpixels, pixels = layer((superpixels, pixels), training=training,
                                  pixels_in_attention_order=True)
    pixels = self.pixel_output_norm(pixels)
    pixels = self.local_attention.from_pixel_order(pixels, *cell_size)
    return self.superpixel_output_norm(superpixels), pixels

  def get_config(self):
    config = super().get_config()
    config.update({
        'grid_height': self.grid_height,
        'grid_width': self.grid_width,
        'num_layers': self.num_layers,
        'channels': self.channels,
        'num_heads': self.num_heads,
        'ffn_channels': self.ffn_channels,
        'pixel_ffn_channels': self.pixel_ffn_channels,
        'implementation': self.implementation,
        'dropout_rate': self.dropout_rate,
    })
    return config

