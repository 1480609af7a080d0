"""The local attention as the paper writes it: 9x duplication (reference).

Zhu et al., "Superpixel Transformers for Efficient Semantic Segmentation"
(arXiv 2309.16889), Sec. III-B and III-D: every neighbour's key and value
is copied to each of the cells that see it, so that both attentions become
dense batched products over gathered tensors, [..., 9*h*w, D] for a
superpixel's pixels (eq. 3) and [..., 9, D] for a pixel's superpixels
(eq. 4-6). This form defines the numbers; efficient.py must equal it.

Shapes: B batch, Hs x Ws superpixel grid, h x w pixels per cell,
H = Hs*h, W = Ws*w, N heads of D channels, C feature channels. Queries are
unscaled (scaled by 1/sqrt(D) here). Affine maps are
interface.Affine with per-head kernels [C, N, D] and biases [N, D] (the
output map of `pixel_update`: [N, D, C_out] and [C_out]). Pixel maps are in
image order.

`Naive` is this form behind the interface of the layers
(interface.LocalAttention).
"""

import numpy as np
import tensorflow as tf

from deeplab_sp.model.local_attention import interface
from deeplab_sp.model.kernels import profile
from deeplab_sp.model.local_attention import neighbors
from deeplab_sp.model.local_attention import slot_ops

NUM_NEIGHBORS = neighbors.NUM_NEIGHBORS


def superpixel_attention(query, key, value, key_position=None,
                         value_position=None, kernels=profile.CPU):
  """Eq. (3)'s attention term by copying each pixel to the 9 cells seeing it.

  Args:
    query: [B, Hs, Ws, N, D] queries q(S_i).
    key, value: [B, H, W, N, D] keys k(I_p) and values v(I_p).
    key_position, value_position: optional [9*h*w, N, D] relative position
      tables added to the keys / values of a superpixel's neighbourhood.

  Returns:
    [B, Hs, Ws, N, D] = sum_p softmax_p(q . k_p / sqrt(D)) v_p.
  """
  grid_height, grid_width, _, head_dim = neighbors.static_dims(
      query, 1, 2, 3, 4)
  height, width = neighbors.static_dims(key, 1, 2)
  cell_height, cell_width = neighbors.cell_size(height, width, grid_height,
                                                grid_width)
  query *= tf.cast(1.0 / np.sqrt(head_dim), query.dtype)
  # [B, Hs, Ws, 9*h*w, N, D]: every pixel key/value copied 9 times.
  neighbor_keys = _gather_neighborhood_pixels(key, cell_height, cell_width,
                                              kernels)
  neighbor_values = _gather_neighborhood_pixels(value, cell_height,
                                                cell_width, kernels)
  if key_position is not None:
    neighbor_keys += tf.cast(key_position, key.dtype)
  if value_position is not None:
    neighbor_values += tf.cast(value_position, value.dtype)
  # [B, Hs, Ws, N, 9*h*w]
  logits = tf.einsum('byxnd,byxpnd->byxnp', query, neighbor_keys)
  # [Hs, Ws, 9*h*w]: a pixel is valid when its cell is inside the grid.
  valid = np.repeat(neighbors.neighbor_valid_mask_np(grid_height, grid_width),
                    cell_height * cell_width, axis=-1)
  valid = tf.constant(valid[np.newaxis, :, :, np.newaxis, :])
  weights = neighbors.masked_softmax(logits, valid, kernels.portable)
  # [B, Hs, Ws, N, D]
  return tf.einsum('byxnp,byxpnd->byxnd', weights, neighbor_values)


def pixel_attention(query, key, value, key_position=None,
                    value_position=None, kernels=profile.CPU):
  """Eq. (4)'s attention term by copying each superpixel to its pixels.

  Args:
    query: [B, H, W, N, D] queries q(I_p).
    key, value: [B, Hs, Ws, N, D] keys k(S_i) and values v(S_i).
    key_position, value_position: optional [9, N, D] relative position
      tables added to the key / value of each neighbour slot.

  Returns:
    [B, H, W, N, D] = sum_i softmax_i(q . k_i / sqrt(D)) v_i.
  """
  height, width, num_heads, head_dim = neighbors.static_dims(
      query, 1, 2, 3, 4)
  grid_height, grid_width = neighbors.static_dims(key, 1, 2)
  query *= tf.cast(1.0 / np.sqrt(head_dim), query.dtype)

  def copies(superpixels):
    """[B, H, W, 9, N, D]: each superpixel copied to its 9*h*w pixels."""
    flat = tf.reshape(superpixels, [-1, grid_height, grid_width,
                                    num_heads * head_dim])
    return tf.reshape(gather_neighbors(flat, height, width),
                      [-1, height, width, NUM_NEIGHBORS, num_heads, head_dim])

  neighbor_keys, neighbor_values = copies(key), copies(value)
  if key_position is not None:
    neighbor_keys += tf.cast(key_position, key.dtype)
  if value_position is not None:
    neighbor_values += tf.cast(value_position, value.dtype)
  # [B, H, W, N, 9]
  logits = tf.einsum('byxnd,byxsnd->byxns', query, neighbor_keys)
  valid = neighbors.neighbor_superpixel_ids_np(
      height, width, grid_height, grid_width) >= 0
  valid = tf.constant(valid[np.newaxis, :, :, np.newaxis, :])
  weights = neighbors.masked_softmax(logits, valid, kernels.portable)
  # [B, H, W, N, D]
  return tf.einsum('byxns,byxsnd->byxnd', weights, neighbor_values)


def superpixel_update(query, pixels, key, value, key_position=None,
                      value_position=None, kernels=profile.CPU):
  """Eq. (3)'s attention term with keys k(I_p) and values v(I_p) of pixels.

  Projects every pixel with the affine `key` and `value` maps, then attends
  (`superpixel_attention`).

  Args:
    query: [B, Hs, Ws, N, D].
    pixels: [B, H, W, C] pixel features I_p.
    key, value: Affine, per-head kernels [C, N, D] and biases [N, D].
    key_position, value_position: optional [9*h*w, N, D].

  Returns:
    [B, Hs, Ws, N, D].
  """
  project = lambda affine: tf.einsum('byxc,cnd->byxnd', pixels,
                                     affine.kernel) + affine.bias
  return superpixel_attention(query, project(key), project(value),
                              key_position, value_position, kernels)


def pixel_update(pixels, query, key, value, output, key_position=None,
                 value_position=None, kernels=profile.CPU):
  """Eq. (4)'s attention term with queries q(I_p), and its output map.

  Projects every pixel with the affine `query` map, attends
  (`pixel_attention`) and applies the `output` map to the heads' results.

  Args:
    pixels: [B, H, W, C] pixel features I_p.
    query: Affine, per-head kernel [C, N, D] and bias [N, D].
    key, value: [B, Hs, Ws, N, D] superpixel keys and values.
    output: Affine, kernel [N, D, C_out] and bias [C_out].
    key_position, value_position: optional [9, N, D].

  Returns:
    [B, H, W, C_out].
  """
  queries = tf.einsum('byxc,cnd->byxnd', pixels, query.kernel) + query.bias
  update = pixel_attention(queries, key, value, key_position, value_position,
                           kernels)
  return tf.einsum('byxnd,ndc->byxc', update, output.kernel) + output.bias


def gather_neighbors(superpixel_values, height, width):
  """[B, Hs, Ws, C] -> [B, H, W, 9, C]: each pixel's 9 neighbours' values.

  Zeros at slots outside the grid.
  """
  grid_height, grid_width, channels = neighbors.static_dims(
      superpixel_values, 1, 2, 3)
  ids = neighbors.neighbor_superpixel_ids(height, width, grid_height,
                                          grid_width)
  # [B, Hs * Ws, C]
  flat_values = tf.reshape(
      superpixel_values, [-1, grid_height * grid_width, channels])
  # [B, H, W, 9, C]
  gathered = tf.gather(flat_values, tf.maximum(ids, 0), axis=1)
  valid = tf.reshape(ids >= 0, [1, height, width, NUM_NEIGHBORS, 1])
  return tf.where(valid, gathered, tf.zeros_like(gathered))


def association_logits(pixels, superpixels):
  """Eq. (5)'s logits I_p . S_i, [B, H, W, 9]; masked outside the grid."""
  height, width = neighbors.static_dims(pixels, 1, 2)
  grid_height, grid_width = neighbors.static_dims(superpixels, 1, 2)
  dtype = pixels.dtype
  # [B, H, W, 9, C]: 9 copies of every superpixel per pixel.
  neighbor_features = gather_neighbors(superpixels, height, width)
  logits = tf.einsum('byxc,byxsc->byxs', pixels, neighbor_features)
  valid = tf.constant(neighbors.neighbor_superpixel_ids_np(
      height, width, grid_height, grid_width) >= 0)[tf.newaxis]
  return tf.where(valid, logits, tf.cast(neighbors.masked_logit(dtype), dtype))


def combine_neighbors(weights, superpixel_values, weights_are_masked=False):
  """Eq. (6): Y_p = sum_{i in N(p)} Q_pi C_i, [B, H, W, C].

  Args:
    weights: [B, H, W, 9]; ignored (taken as 0) at out-of-grid slots.
    superpixel_values: [B, Hs, Ws, C].
    weights_are_masked: unused here (the reference always masks).
  """
  del weights_are_masked  # The reference masks regardless.
  height, width = neighbors.static_dims(weights, 1, 2)
  grid_height, grid_width = neighbors.static_dims(superpixel_values, 1, 2)
  valid = tf.constant(neighbors.neighbor_superpixel_ids_np(
      height, width, grid_height, grid_width) >= 0)[tf.newaxis]
  weights = tf.where(valid, weights, tf.zeros_like(weights))
  # [B, H, W, 9, C]
  neighbor_values = gather_neighbors(superpixel_values, height, width)
  return tf.einsum('byxs,byxsc->byxc', weights, neighbor_values)


def _gather_neighborhood_pixels(pixels, cell_height, cell_width, kernels):
  """[B, Hs*h, Ws*w, N, D] -> [B, Hs, Ws, 9*h*w, N, D], zeros outside."""
  height, width, num_heads, head_dim = neighbors.static_dims(
      pixels, 1, 2, 3, 4)
  grid_height, grid_width = height // cell_height, width // cell_width
  # [B, Hs, h, Ws, w, N, D] -> [B, Hs, Ws, h, w, N, D]
  blocks = tf.reshape(pixels, [-1, grid_height, cell_height, grid_width,
                               cell_width, num_heads, head_dim])
  blocks = tf.transpose(blocks, [0, 1, 3, 2, 4, 5, 6])
  # [B, Hs, Ws, 9, h, w, N, D]: slot s of cell i holds the block of i + o_s.
  neighbor_blocks = slot_ops.neighbor_grids(blocks,
                                            use_xla=kernels.xla_islands)
  return tf.reshape(neighbor_blocks, [
      -1, grid_height, grid_width,
      NUM_NEIGHBORS * cell_height * cell_width, num_heads, head_dim])


class Naive(interface.LocalAttention):
  """The paper's form, the reference; pixel maps in image order."""

  name = 'NAIVE'

  def _superpixel_update(self, query, pixels, key, value, key_position,
                         value_position):
    return superpixel_update(query, pixels, key, value, key_position,
                             value_position, self.kernels)

  def _pixel_update(self, pixels, query, key, value, output, key_position,
                    value_position):
    return pixel_update(pixels, query, key, value, output, key_position,
                        value_position, self.kernels)

  def _association_logits(self, pixels, superpixels):
    return association_logits(pixels, superpixels)

  def _combine_neighbors(self, weights, superpixel_values,
                         weights_are_masked):
    return combine_neighbors(weights, superpixel_values, weights_are_masked)
