"""The local attention without the 9x copies: pixel-centric blocks.

Computes the same functions as naive.py (the paper's form, arXiv
2309.16889 Sec. III-B and III-D), forward and backward, to float32
round-off, without ever copying a pixel tensor 9 times:

  * the pixel map is reshaped into cell blocks [B, Hs, Ws, h*w, ...] and
    meets the 9 shifted superpixel grids [B, Hs, Ws, 9, ...] (small) once;
  * eq. (4) (pixels attend to their 9 superpixels): the softmax runs over
    the last axis of the block logits [B, Hs, Ws, ..., h*w, 9];
  * eq. (3) (superpixel i attends to the 9*h*w pixels around it): the
    softmax of i runs over the entries of its 9 neighbouring blocks that
    point back at i. Per-block maxima, sums and weighted sums of values are
    computed block by block and shifted back to i
    (`_superpixel_softmax_terms`, `_sum_over_seeing_blocks`);
  * the affine projections of the dual-path layer are moved from the
    H*W pixels to the Hs*Ws superpixels where they commute with the
    attention (`superpixel_update`, `pixel_update`).

Shapes and arguments are those of naive.py, plus `cell_order` for the
functions of whole pixel maps: True when those maps (in and out) are in
neighbors.to_cell_order's order, which spares the two transposes to and
from cell blocks.

`Efficient` is this form behind the interface of the layers
(interface.LocalAttention); its pixel order is the cell order.
"""

import numpy as np
import tensorflow as tf

from deeplab_sp.model.kernels import portable_ops
from deeplab_sp.model.kernels import profile
from deeplab_sp.model.kernels import xla_islands
from deeplab_sp.model.local_attention import interface
from deeplab_sp.model.local_attention import neighbors
from deeplab_sp.model.local_attention import slot_ops

NUM_NEIGHBORS = neighbors.NUM_NEIGHBORS


def _grids(grid, kernels, sign=1, axis=3):
  return slot_ops.neighbor_grids(grid, sign, axis,
                                 use_xla=kernels.xla_islands)


_shift_slots = slot_ops.shift_slots


def superpixel_attention(query, key, value, key_position=None,
                         value_position=None, kernels=profile.CPU):
  """Eq. (3) without copying pixels: per-block partial softmax sums.

  Pixel block j (the h*w pixels of cell j) is seen by superpixel j - o_s
  through slot s. Logits L[j, s, p] pair block j's pixel p with that
  superpixel. The softmax of superpixel i runs over L[i + o_s, s, :] for the
  9 slots s.
  """
  query, cell_height, cell_width = _scaled_query(query, key)
  # [B, Hs, Ws, h*w, N, D]
  key_blocks = neighbors.to_blocks(key, cell_height, cell_width)
  value_blocks = neighbors.to_blocks(value, cell_height, cell_width)
  # [B, Hs, Ws, 9, N, D]: slot s of block j holds superpixel j - o_s.
  seeing_queries = _grids(query, kernels, sign=-1)
  # [B, Hs, Ws, h*w, 9, N]
  logits = tf.einsum('byxsnd,byxpnd->byxpsn', seeing_queries, key_blocks)
  logits += _position_logits(query, key_position)
  exp_logits, sums = _superpixel_softmax_terms(
      logits, kernels=kernels, use_xla=kernels.xla_islands)
  # [B, Hs, Ws, N, D]
  outputs = _sum_over_seeing_blocks(
      tf.einsum('byxpsn,byxpnd->byxsnd', exp_logits, value_blocks), kernels)
  outputs += _position_values(exp_logits, value_position)
  return outputs / sums[..., tf.newaxis]


def superpixel_update(query, pixels, key, value, key_position=None,
                      value_position=None, cell_order=False,
                      kernels=profile.CPU):
  """Eq. (3) with affine pixel keys and values, never projecting the pixels.

  Per head, q . (x_p K + b_k) = (K q) . x_p + q . b_k and
  sum_p a_p (x_p V + b_v) = (sum_p a_p x_p) V + b_v (the softmax weights
  a_p sum to 1), so the projections move to the Hs*Ws superpixels; the h*w
  pixel features of each block meet the 9 seeing superpixels' C-channel
  queries directly.
  """
  grid_height, grid_width, num_heads = neighbors.static_dims(query, 1, 2, 3)
  channels = neighbors.static_dims(pixels, 3)[0]
  # In the first layer the queries come from the learned superpixels alone:
  # the exports would store their products with the per-pixel position
  # tables (of the size of the image) as constants.
  query = portable_ops.computed_in_graph(query, pixels, kernels.portable)
  query, cell_height, cell_width = _scaled_query(query, pixels)
  # [B, Hs, Ws, h*w, C]
  pixel_blocks = neighbors.cells_as_blocks(pixels, cell_height, cell_width,
                                          cell_order)
  # Slot s of block j holds superpixel j - o_s. The queries brought to the
  # pixel features: K q [B, Hs, Ws, 9*N, C], and q . b_k [B, Hs, Ws, 9, N].
  seeing_key_queries = tf.reshape(
      _grids(_per_head_product(query, tf.transpose(key.kernel, [1, 2, 0])),
             kernels, sign=-1),
      [-1, grid_height, grid_width, NUM_NEIGHBORS * num_heads, channels])
  seeing_bias_logits = _grids(
      tf.einsum('byxnd,nd->byxn', query, key.bias), kernels, sign=-1)
  # [B, Hs, Ws, h*w, 9, N]: one [h*w, C] x [C, 9*N] product per block.
  logits = tf.reshape(
      tf.matmul(pixel_blocks, seeing_key_queries, transpose_b=True),
      [-1, grid_height, grid_width, cell_height * cell_width, NUM_NEIGHBORS,
       num_heads])
  # expand_dims, not [:, :, :, tf.newaxis]: TFLite has no rank-6 slice.
  logits += tf.expand_dims(seeing_bias_logits, 3)
  logits += _position_logits(query, key_position)
  exp_logits, sums = _superpixel_softmax_terms(
      logits, kernels=kernels, use_xla=kernels.xla_islands)
  # sum_p exp * x_p per superpixel, [B, Hs, Ws, N, C], then V per head.
  block_features = tf.matmul(
      tf.reshape(exp_logits, [-1, grid_height, grid_width,
                              cell_height * cell_width,
                              NUM_NEIGHBORS * num_heads]),
      pixel_blocks, transpose_a=True)  # [B, Hs, Ws, 9*N, C]
  weighted_features = _sum_over_seeing_blocks(tf.reshape(
      block_features,
      [-1, grid_height, grid_width, NUM_NEIGHBORS, num_heads, channels]),
                                              kernels)
  outputs = _per_head_product(weighted_features,
                              tf.transpose(value.kernel, [1, 0, 2]))
  outputs += _position_values(exp_logits, value_position)
  return outputs / sums[..., tf.newaxis] + value.bias


def pixel_attention(query, key, value, key_position=None,
                    value_position=None, kernels=profile.CPU):
  """Eq. (4) on pixel blocks against the 9 shifted superpixel grids."""
  dtype = query.dtype
  height, width, head_dim = neighbors.static_dims(query, 1, 2, 4)
  grid_height, grid_width = neighbors.static_dims(key, 1, 2)
  cell_height, cell_width = neighbors.cell_size(height, width, grid_height,
                                                grid_width)
  query *= tf.cast(1.0 / np.sqrt(head_dim), dtype)
  # [B, Hs, Ws, h*w, N, D]
  query_blocks = neighbors.to_blocks(query, cell_height, cell_width)
  # [B, Hs, Ws, 9, N, D]: slot s of cell j holds superpixel j + o_s.
  neighbor_keys = _grids(key, kernels)
  neighbor_values = _grids(value, kernels)
  # [B, Hs, Ws, N, h*w, 9]
  logits = tf.einsum('byxpnd,byxsnd->byxnps', query_blocks, neighbor_keys)
  if key_position is not None:
    logits += tf.einsum('byxpnd,snd->byxnps', query_blocks,
                        tf.cast(key_position, dtype))
  weights = _neighbor_slot_softmax(logits, portable=kernels.portable,
                                   use_xla=kernels.xla_islands)
  # [B, Hs, Ws, h*w, N, D]
  outputs = tf.einsum('byxnps,byxsnd->byxpnd', weights, neighbor_values)
  if value_position is not None:
    outputs += tf.einsum('byxnps,snd->byxpnd', weights,
                         tf.cast(value_position, dtype))
  return neighbors.from_blocks(outputs, cell_height, cell_width)


def pixel_update(pixels, query, key, value, output, key_position=None,
                 value_position=None, cell_order=False, kernels=profile.CPU):
  """Eq. (4) with affine pixel queries and output map, pixels unprojected.

  Per head and neighbour slot, (x_p Q + b_q) . k = x_p . (Q k) + b_q . k
  and (sum_s a_s v_s) O = sum_s a_s (v_s O), so Q and O are applied to the
  Hs*Ws superpixel keys and values (and the 9 position embeddings) instead,
  and each block's h*w pixel features meet the 9 neighbouring C-channel
  keys and values directly.
  """
  dtype = pixels.dtype
  height, width, channels = neighbors.static_dims(pixels, 1, 2, 3)
  grid_height, grid_width, num_heads, head_dim = neighbors.static_dims(
      key, 1, 2, 3, 4)
  cell_height, cell_width = neighbors.cell_size(height, width, grid_height,
                                                grid_width)
  out_channels = neighbors.static_dims(output.kernel, 2)[0]
  scale = tf.cast(1.0 / np.sqrt(head_dim), dtype)
  # As in superpixel_update: the first layer's keys and values come from
  # the learned superpixels alone.
  key, value = (portable_ops.computed_in_graph(tensor, pixels,
                                               kernels.portable)
                for tensor in (key, value))
  # Keys plus their slot's position embedding, brought to the pixel
  # features, per head and slot (slot s of cell j is superpixel j + o_s):
  # Q k / sqrt(D) [B, Hs, Ws, N, 9, C] and b_q . k / sqrt(D)
  # [B, Hs, Ws, N, 9]; the values times O, [B, Hs, Ws, N, 9, C_out].
  key_features = _grids(
      _per_head_product(key * scale, tf.transpose(query.kernel, [1, 2, 0])),
      kernels, axis=4)
  key_biases = _grids(
      tf.einsum('byxnd,nd->byxn', key * scale, query.bias), kernels, axis=4)
  value_features = _grids(
      _per_head_product(value, output.kernel), kernels, axis=4)
  if key_position is not None:
    key_position = tf.cast(key_position, dtype) * scale
    key_features = _add_per_slot(
        key_features, tf.einsum('snd,cnd->nsc', key_position, query.kernel))
    key_biases += tf.einsum('snd,nd->ns', key_position, query.bias)
  if value_position is not None:
    value_features = _add_per_slot(
        value_features, tf.einsum('snd,ndc->nsc',
                                  tf.cast(value_position, dtype),
                                  output.kernel))
  block_shape = [-1, grid_height, grid_width]
  # [B, Hs, Ws, h*w, C]
  pixel_blocks = neighbors.cells_as_blocks(pixels, cell_height, cell_width,
                                          cell_order)
  # [B, Hs, Ws, h*w, N, 9]: one [h*w, C] x [C, N*9] product per block.
  logits = tf.matmul(
      pixel_blocks,
      tf.reshape(key_features, block_shape + [num_heads * NUM_NEIGHBORS,
                                              channels]),
      transpose_b=True)
  logits = tf.reshape(logits, block_shape + [
      cell_height * cell_width, num_heads, NUM_NEIGHBORS])
  logits += tf.expand_dims(key_biases, 3)
  weights = _neighbor_slot_softmax(logits, portable=kernels.portable,
                                   use_xla=kernels.xla_islands)
  # [B, Hs, Ws, h*w, C_out]: one [h*w, N*9] x [N*9, C_out] product per block.
  outputs = tf.matmul(
      tf.reshape(weights, block_shape + [cell_height * cell_width,
                                         num_heads * NUM_NEIGHBORS]),
      tf.reshape(value_features, block_shape + [num_heads * NUM_NEIGHBORS,
                                                out_channels]))
  # bias_add, not +: its gradient (a sum over every pixel) is one fast
  # kernel on CPU, a broadcast's several times slower.
  return tf.nn.bias_add(
      neighbors.blocks_as_cells(outputs, cell_height, cell_width, cell_order),
      output.bias)


def _add_per_slot(slotted, table):
  """slotted [B, Hs, Ws, N, 9, C] + table [N, 9, C], broadcast over cells.

  As a bias_add on [cells, N*9*C] rows: the table's gradient, a sum over
  all cells, is then one fast CPU kernel; a broadcasting add's gradient
  reduces the leading axes several times slower.
  """
  shape = tf.shape(slotted)
  rows = tf.reshape(slotted, [-1, int(np.prod(slotted.shape[3:]))])
  result = tf.reshape(tf.nn.bias_add(rows, tf.reshape(table, [-1])), shape)
  result.set_shape(slotted.shape)
  return result


def gather_neighbors(superpixel_values, height, width, kernels=profile.CPU):
  """[B, Hs, Ws, C] -> [B, H, W, 9, C] by broadcasting the shifted grids."""
  grid_height, grid_width, channels = neighbors.static_dims(
      superpixel_values, 1, 2, 3)
  cell_height, cell_width = neighbors.cell_size(height, width, grid_height,
                                                grid_width)
  # [B, Hs, Ws, 9, C], zeros outside.
  shifted = _grids(superpixel_values, kernels)
  shifted = shifted[:, :, tf.newaxis, :, tf.newaxis]
  batch = tf.shape(superpixel_values)[0]
  # [B, Hs, h, Ws, w, 9, C]
  shifted = tf.broadcast_to(shifted, tf.stack([
      batch, grid_height, cell_height, grid_width, cell_width, NUM_NEIGHBORS,
      channels]))
  return tf.reshape(shifted, [-1, height, width, NUM_NEIGHBORS, channels])


def association_logits(pixels, superpixels, kernels=profile.CPU):
  """Eq. (5)'s logits from pixel blocks and the 9 shifted superpixel grids."""
  height, width, channels = neighbors.static_dims(pixels, 1, 2, 3)
  grid_height, grid_width = neighbors.static_dims(superpixels, 1, 2)
  cell_height, cell_width = neighbors.cell_size(height, width, grid_height,
                                                grid_width)
  # [B, Hs, h, Ws, w, C]
  blocks = tf.reshape(pixels, [
      -1, grid_height, cell_height, grid_width, cell_width, channels])
  # [B, Hs, Ws, 9, C]
  shifted = _grids(superpixels, kernels)
  # [B, Hs, h, Ws, w, 9]
  logits = tf.einsum('byhxwc,byxsc->byhxws', blocks, shifted)
  return neighbors.where_inside_grid(
      tf.reshape(logits, [-1, height, width, NUM_NEIGHBORS]), grid_height,
      grid_width, neighbors.masked_logit(pixels.dtype))


def combine_neighbors(weights, superpixel_values, weights_are_masked=False,
                      kernels=profile.CPU):
  """Eq. (6) as one [w, 9] x [9, C] product per cell row of pixels."""
  height, width = neighbors.static_dims(weights, 1, 2)
  grid_height, grid_width, channels = neighbors.static_dims(
      superpixel_values, 1, 2, 3)
  cell_height, cell_width = neighbors.cell_size(height, width, grid_height,
                                                grid_width)
  if not weights_are_masked:
    weights = neighbors.where_inside_grid(weights, grid_height, grid_width,
                                          0.0)
  # [B*Hs, h, Ws, w, 9]: batch and grid rows share one axis, so no tensor
  # has more than 5 axes (TFLite's batched matmul takes no more).
  weights = tf.reshape(weights, [
      -1, cell_height, grid_width, cell_width, NUM_NEIGHBORS])
  # [B*Hs, 1, Ws, 9, C]
  shifted = tf.reshape(_grids(superpixel_values, kernels),
                       [-1, 1, grid_width, NUM_NEIGHBORS, channels])
  # Broadcast over the h rows of a cell: the result is already in image
  # order.
  combined = tf.matmul(weights, shifted)
  return tf.reshape(combined, [-1, height, width, channels])


def _per_head_product(features, kernel):
  """Per-head matrix products: [B, Hs, Ws, N, X] x [N, X, Y] -> [..., N, Y].

  The product of tf.einsum('byxnc,ncd->byxnd') as one batched matmul over
  the N heads of [cells, X] matrices: on CPU the einsum, and above all its
  two einsum gradients, were slower here.
  """
  grid_height, grid_width, num_heads, channels = neighbors.static_dims(
      features, 1, 2, 3, 4)
  rows = tf.transpose(tf.reshape(features, [-1, num_heads, channels]),
                      [1, 0, 2])
  products = tf.transpose(tf.matmul(rows, kernel), [1, 0, 2])
  return tf.reshape(products, [-1, grid_height, grid_width, num_heads,
                               kernel.shape[-1]])


# Eq. (3)'s softmax from per-block terms.


def _scaled_query(query, pixels):
  """(query / sqrt(D), h, w) for superpixel queries and a pixel map."""
  grid_height, grid_width, head_dim = neighbors.static_dims(query, 1, 2, 4)
  height, width = neighbors.static_dims(pixels, 1, 2)
  cell_height, cell_width = neighbors.cell_size(height, width, grid_height,
                                                grid_width)
  return (query * tf.cast(1.0 / np.sqrt(head_dim), query.dtype), cell_height,
          cell_width)


@xla_islands.fused
def _superpixel_softmax_terms(logits, kernels):
  """The unnormalised softmax of equation (3), from per-block logits.

  An XLA island in graphs (kernels/xla_islands.py), as is
  `_neighbor_slot_softmax`: their chains of masks, maxima, exponentials and
  sums run as a few fused loops instead of a pass over memory each.

  Args:
    logits: [B, Hs, Ws, h*w, 9, N]; slot s of block j pairs the block's
      pixels with superpixel j - o_s.

  Returns:
    (exp_logits [B, Hs, Ws, h*w, 9, N]: exp(logit - the maximum of the
    superpixel the slot points at), exactly 0 at slots pointing outside the
    grid; sums [B, Hs, Ws, N]: each superpixel's sum of them over its 9*h*w
    pixels).
  """
  grid_height, grid_width = neighbors.static_dims(logits, 1, 2)
  dtype = logits.dtype
  valid = neighbors.neighbor_valid_mask_np(grid_height, grid_width)
  # [Hs, Ws, 9]: block j, slot s points at a superpixel inside the grid.
  seen_by_valid = tf.constant(valid[:, :, ::-1].copy())
  valid = tf.constant(valid)
  masked = tf.cast(neighbors.masked_logit(dtype), dtype)

  # Softmax maximum of superpixel i: max over its 9 neighbouring blocks.
  # [B, Hs, Ws, 9, N]
  block_max = tf.stop_gradient(tf.reduce_max(logits, axis=3))
  # Slot s of cell i holds block i + o_s's maximum.
  neighbor_max = tf.where(valid[tf.newaxis, :, :, :, tf.newaxis],
                          _shift_slots(block_max), masked)
  # [B, Hs, Ws, N]
  superpixel_max = tf.reduce_max(neighbor_max, axis=3)
  # [B, Hs, Ws, 1, 9, N]: back to the blocks, the maximum of the superpixel
  # each slot points at.
  max_at_blocks = tf.expand_dims(_grids(superpixel_max, kernels, sign=-1), 3)
  shifted_logits = tf.where(
      seen_by_valid[tf.newaxis, :, :, tf.newaxis, :, tf.newaxis],
      logits - max_at_blocks, masked)
  exp_logits = tf.exp(shifted_logits)
  # Per-block partial sums [B, Hs, Ws, 9, N], shifted to their superpixels.
  return exp_logits, _sum_over_seeing_blocks(
      tf.reduce_sum(exp_logits, axis=3), kernels)


def _sum_over_seeing_blocks(block_terms, kernels):
  """[B, Hs, Ws, 9, ...] per-block terms -> [B, Hs, Ws, ...] per superpixel.

  Slot s of block j belongs to superpixel j - o_s; superpixel i adds slot s
  of block i + o_s over the 9 slots.
  """
  return slot_ops.sum_over_slots(block_terms, use_xla=kernels.xla_islands)


def _position_logits(query, key_position):
  """q_{j - o_s} . key_position[s, p] per block j: [B, Hs, Ws, h*w, 9, N].

  0 if key_position is None. Formed on the unshifted query grid
  [B, Hs, Ws, N, D] (every superpixel against its 9*h*w table entries),
  then slot s of block j takes superpixel j - o_s's (0 outside the grid):
  the 9x copies of the queries are never needed.
  """
  if key_position is None:
    return 0.0
  # [B, Hs, Ws, 9, h*w, N]: superpixel i, slot s, pixel p.
  logits = tf.einsum('byxnd,spnd->byxspn', query,
                     _per_slot(key_position, query.dtype))
  return tf.transpose(_shift_slots(logits, sign=-1), [0, 1, 2, 4, 3, 5])


def _position_values(exp_logits, value_position):
  """sum_p exp_logits * value_position, per superpixel: [B, Hs, Ws, N, D].

  0 if value_position is None. The small [B, Hs, Ws, h*w, 9, N] weights
  are brought from the blocks to the superpixels they belong to first, so
  the product is one [9*h*w] contraction per superpixel and head.
  """
  if value_position is None:
    return 0.0
  # [B, Hs, Ws, 9, h*w, N]: slot s of superpixel i is block i + o_s's.
  weights = _shift_slots(tf.transpose(exp_logits, [0, 1, 2, 4, 3, 5]))
  return tf.einsum('byxspn,spnd->byxnd', weights,
                   _per_slot(value_position, exp_logits.dtype))


def _per_slot(position, dtype):
  """A [9*h*w, N, D] neighbourhood table as [9, h*w, N, D] in `dtype`."""
  num_heads, head_dim = neighbors.static_dims(position, 1, 2)
  return tf.reshape(tf.cast(position, dtype),
                    [NUM_NEIGHBORS, -1, num_heads, head_dim])


@xla_islands.fused
def _neighbor_slot_softmax(logits, portable):
  """Softmax over the 9 neighbour slots of block logits [B, Hs, Ws, ..., 9].

  Slot s of cell j is superpixel j + o_s; slots outside the grid get
  exactly 0. The logits have rank 6 (two axes between the grid and slots).
  """
  grid_height, grid_width = neighbors.static_dims(logits, 1, 2)
  valid = neighbors.neighbor_valid_mask_np(grid_height, grid_width)
  return neighbors.masked_softmax(logits, tf.constant(
      valid[np.newaxis, :, :, np.newaxis, np.newaxis, :]), portable)


class Efficient(interface.LocalAttention):
  """The form without the 9x copies; pixel maps in cell order.

  Cell order (neighbors.to_cell_order) holds each cell's pixels
  contiguously, so the updates read the pixel map as cell blocks with a
  reshape instead of a transpose in each call.
  """

  name = 'EFFICIENT'

  def to_pixel_order(self, pixels, cell_height, cell_width):
    return neighbors.to_cell_order(pixels, cell_height, cell_width)

  def from_pixel_order(self, pixels, cell_height, cell_width):
    return neighbors.from_cell_order(pixels, cell_height, cell_width)

  def _superpixel_update(self, query, pixels, key, value, key_position,
                         value_position):
    return superpixel_update(query, pixels, key, value, key_position,
                             value_position, cell_order=True,
                             kernels=self.kernels)

  def _pixel_update(self, pixels, query, key, value, output, key_position,
                    value_position):
    return pixel_update(pixels, query, key, value, output, key_position,
                        value_position, cell_order=True, kernels=self.kernels)

  def _association_logits(self, pixels, superpixels):
    return association_logits(pixels, superpixels, self.kernels)

  def _combine_neighbors(self, weights, superpixel_values,
                         weights_are_masked):
    return combine_neighbors(weights, superpixel_values, weights_are_masked,
                             self.kernels)
