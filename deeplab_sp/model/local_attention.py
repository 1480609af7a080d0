"""Local pixel-superpixel attention ops of the Superpixel Transformer.

Implements the local terms of the SP-Transformer (Zhu et al., "Superpixel
Transformers for Efficient Semantic Segmentation", arXiv 2309.16889):

  * `superpixel_update`: the attention term of equation (3), each superpixel
    attending to the 9*h*w pixels of the 3x3 block of cells around it;
  * `pixel_update`: the attention term of equation (4), each pixel attending
    to the 9 superpixels of the 3x3 block of cells around its own cell;
  * `projected_superpixel_update`, `projected_pixel_update`: the same terms
    with the dual-path layer's pixel-side affine projections (keys, values;
    queries and output) passed as kernels, so that EFFICIENT can move them
    to the superpixel side instead of applying them to every pixel;
  * `association_logits`: the dot products I_p . S_i of equation (5);
  * `combine_neighbors`: the weighted sum of equation (6);
  * helpers that describe the neighbourhoods (`neighbor_valid_mask`,
    `neighbor_superpixel_ids`, `where_inside_grid`, `gather_neighbors`).

Everything here is a pure function of tensors with static spatial shapes, so
it runs eagerly, under `tf.function` and under XLA (`jit_compile=True`), for
any batch size and for float32, float16 and bfloat16 inputs.

Neighbour slots. The 9 neighbours of a cell are numbered by their offset
(dy, dx) from it, row-major over dy, dx in (-1, 0, 1): slot 0 is (-1, -1),
slot 4 the cell itself, slot 8 (+1, +1) (`NEIGHBOR_OFFSETS`). The 9*h*w
pixels of a superpixel's neighbourhood are numbered slot-major, then by pixel
within the cell, row-major.

Borders. Neighbours outside the grid do not exist. They are masked out of
every softmax and receive a weight of exactly 0 (never attended to as zeros).
Logits returned to the caller (`association_logits`) carry
`masked_logit(dtype)` at such slots: half the most negative finite value of
the dtype. It is finite (so bilinear resizing and 0 * logit stay finite and
gradients never see inf or NaN), yet exp(masked - max) underflows to exactly
0 in every float type, including after a cast of float16/bfloat16 logits to
float32. Casting float32 masked logits to float16 turns them into -inf;
softmax still gives exactly 0 there.

Two implementations compute the same function (they agree to float32
round-off, forward and backward):

  * `NAIVE` (the paper's): every neighbour's key/value is copied to each of
    the cells that see it, so both attentions become dense batched matmuls
    over gathered tensors of shape [..., 9, D] (pixel path) and
    [..., 9*h*w, D] (superpixel path). It is the reference that defines the
    numbers, written to be read.
  * `EFFICIENT`: pixel-centric. The pixel tensor is reshaped into cell blocks
    [B, Hs, Ws, h*w, N, D] and meets the 9 shifted superpixel grids
    [B, Hs, Ws, 9, N, D] (small) once; logits are [B, Hs, Ws, N, h*w, 9]
    (pixel path; [B, Hs, Ws, h*w, 9, N] for the superpixel path).
    The pixel path's softmax runs over the last axis. For the superpixel
    path, the softmax of superpixel i runs over the entries of its 9
    neighbouring blocks that point back at i: per-block maxima, sums and
    weighted sums of values ([B, Hs, Ws, 9, N, D] partial sums) are computed
    block by block and shifted back to i, so no pixel tensor is ever copied
    9 times.
"""

import numpy as np
import tensorflow as tf

from deeplab_sp.protos import model_pb2

NAIVE = 'NAIVE'
EFFICIENT = 'EFFICIENT'
IMPLEMENTATIONS = (NAIVE, EFFICIENT)

# Offsets (dy, dx) of the 9 neighbour slots of a cell, row-major.
NEIGHBOR_OFFSETS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
NUM_NEIGHBORS = len(NEIGHBOR_OFFSETS)  # The 3x3 block of the paper, Fig. 3.
CENTER_SLOT = NEIGHBOR_OFFSETS.index((0, 0))

# Masked logits are this fraction of the dtype's most negative finite value
# (see the module docstring).
_MASKED_LOGIT_FRACTION = 0.5


def normalize_implementation(implementation):
  """Returns NAIVE or EFFICIENT from a name or a proto enum value.

  Args:
    implementation: 'NAIVE' / 'EFFICIENT' (any case) or
      `model_pb2.NAIVE` / `model_pb2.EFFICIENT` (ints 0 / 1).

  Raises:
    ValueError: if `implementation` is neither.
  """
  if isinstance(implementation, str):
    name = implementation.upper()
  elif isinstance(implementation, (int, np.integer)) and not isinstance(
      implementation, bool):
    try:
      name = model_pb2.LocalAttentionImplementation.Name(int(implementation))
    except ValueError:
      name = None
  else:
    name = None
  if name not in IMPLEMENTATIONS:
    raise ValueError(
        f'Unknown local attention implementation {implementation!r}: use one '
        f'of {IMPLEMENTATIONS} or the LocalAttentionImplementation enum of '
        'protos/model.proto (NAIVE = 0, EFFICIENT = 1).')
  return name


def masked_logit(dtype):
  """The finite logit put at out-of-grid neighbour slots, for `dtype`."""
  dtype = tf.as_dtype(dtype)
  return _MASKED_LOGIT_FRACTION * dtype.min


def neighbor_valid_mask(grid_height, grid_width):
  """Which of the 9 neighbour slots of each cell lie inside the grid.

  Args:
    grid_height: Hs, number of superpixel rows.
    grid_width: Ws, number of superpixel columns.

  Returns:
    A bool tf.Tensor [Hs, Ws, 9].
  """
  return tf.constant(_neighbor_valid_mask_np(grid_height, grid_width))


def neighbor_superpixel_ids(height, width, grid_height, grid_width):
  """Absolute superpixel id of each of the 9 neighbour slots of each pixel.

  A pixel (y, x) of an H x W map lies in cell (y // (H / Hs), x // (W / Ws)).

  Args:
    height: H, a multiple of `grid_height`.
    width: W, a multiple of `grid_width`.
    grid_height: Hs.
    grid_width: Ws.

  Returns:
    An int32 tf.Tensor [H, W, 9]: row * Ws + col of the slot's superpixel,
    -1 where the slot is outside the grid.
  """
  return tf.constant(
      _neighbor_superpixel_ids_np(height, width, grid_height, grid_width))


def where_inside_grid(values, grid_height, grid_width, fill):
  """`values` [batch, H, W, 9] with `fill` at slots outside the grid.

  The slots outside the grid depend only on the pixel's cell, so the mask is
  broadcast over the h x w pixels of each cell ([Hs, 1, Ws, 1, 9]) instead
  of being stored per pixel.
  """
  height, width = _static_dims(values, 1, 2)
  cell_height, cell_width = _cell_size(height, width, grid_height, grid_width)
  cells = tf.reshape(values, [-1, grid_height, cell_height, grid_width,
                              cell_width, NUM_NEIGHBORS])
  valid = _neighbor_valid_mask_np(grid_height, grid_width)
  valid = tf.constant(valid[np.newaxis, :, np.newaxis, :, np.newaxis, :])
  cells = tf.where(valid, cells, tf.cast(fill, values.dtype))
  return tf.reshape(cells, [-1, height, width, NUM_NEIGHBORS])


def gather_neighbors(superpixel_values, height, width, implementation=NAIVE):
  """Copies to every pixel the values of its 9 neighbouring superpixels.

  Args:
    superpixel_values: [batch, Hs, Ws, channels].
    height: H, a multiple of Hs.
    width: W, a multiple of Ws.
    implementation: NAIVE or EFFICIENT (see `normalize_implementation`).

  Returns:
    [batch, H, W, 9, channels]; zeros at slots outside the grid.
  """
  implementation = normalize_implementation(implementation)
  superpixel_values = tf.convert_to_tensor(superpixel_values)
  grid_height, grid_width, channels = _static_dims(superpixel_values, 1, 2, 3)
  cell_height, cell_width = _cell_size(height, width, grid_height, grid_width)
  if implementation == NAIVE:
    ids = neighbor_superpixel_ids(height, width, grid_height, grid_width)
    # [batch, Hs * Ws, channels]
    flat_values = tf.reshape(
        superpixel_values, [-1, grid_height * grid_width, channels])
    # [batch, H, W, 9, channels]
    gathered = tf.gather(flat_values, tf.maximum(ids, 0), axis=1)
    valid = tf.reshape(ids >= 0, [1, height, width, NUM_NEIGHBORS, 1])
    return tf.where(valid, gathered, tf.zeros_like(gathered))
  # [batch, Hs, Ws, 9, channels], zeros outside.
  shifted = _neighbor_grids(superpixel_values)
  shifted = shifted[:, :, tf.newaxis, :, tf.newaxis]
  batch = tf.shape(superpixel_values)[0]
  # [batch, Hs, h, Ws, w, 9, channels]
  shifted = tf.broadcast_to(shifted, tf.stack([
      batch, grid_height, cell_height, grid_width, cell_width, NUM_NEIGHBORS,
      channels]))
  return tf.reshape(shifted, [-1, height, width, NUM_NEIGHBORS, channels])


def combine_neighbors(weights, superpixel_values, implementation=NAIVE,
                      weights_are_masked=False):
  """Equation (6): Y_p = sum_{i in N(p)} Q_pi * C_i.

  Args:
    weights: [batch, H, W, 9], the weight of each neighbour slot of each
      pixel (H, W multiples of Hs, Ws; pixel (y, x) is in cell
      (y // (H / Hs), x // (W / Ws))). Weights at out-of-grid slots are
      ignored (treated as exactly 0).
    superpixel_values: [batch, Hs, Ws, channels], e.g. class logits C_i.
    implementation: NAIVE or EFFICIENT.
    weights_are_masked: the caller guarantees that the weights at
      out-of-grid slots are exactly 0 (e.g. a masked softmax); EFFICIENT then
      skips masking them.

  Returns:
    [batch, H, W, channels].
  """
  implementation = normalize_implementation(implementation)
  weights = tf.convert_to_tensor(weights)
  superpixel_values = tf.convert_to_tensor(superpixel_values)
  height, width = _static_dims(weights, 1, 2)
  grid_height, grid_width, channels = _static_dims(superpixel_values, 1, 2, 3)
  cell_height, cell_width = _cell_size(height, width, grid_height, grid_width)
  weights = tf.cast(weights, superpixel_values.dtype)
  if implementation == NAIVE:
    valid = tf.constant(
        _neighbor_superpixel_ids_np(height, width, grid_height, grid_width)
        >= 0)[tf.newaxis]
    weights = tf.where(valid, weights, tf.zeros_like(weights))
    # [batch, H, W, 9, channels]
    neighbors = gather_neighbors(superpixel_values, height, width, NAIVE)
    return tf.einsum('byxs,byxsc->byxc', weights, neighbors)
  if not weights_are_masked:
    weights = where_inside_grid(weights, grid_height, grid_width, 0.0)
  # [batch, Hs, h, Ws, w, 9]
  weights = tf.reshape(weights, [
      -1, grid_height, cell_height, grid_width, cell_width, NUM_NEIGHBORS])
  # [batch, Hs, 1, Ws, 9, channels]
  shifted = _neighbor_grids(superpixel_values)[:, :, tf.newaxis]
  # One [w, 9] x [9, channels] product per cell row of pixels, broadcast
  # over the h rows of a cell: the result is already in image order.
  combined = tf.matmul(weights, shifted)
  return tf.reshape(combined, [-1, height, width, channels])


def association_logits(pixel_features, superpixel_features,
                       implementation=NAIVE):
  """The logits of equation (5): I_p . S_i for the 9 neighbours i of p.

  Args:
    pixel_features: [batch, H, W, channels], H = Hs * h, W = Ws * w.
    superpixel_features: [batch, Hs, Ws, channels].
    implementation: NAIVE or EFFICIENT.

  Returns:
    [batch, H, W, 9] logits, `masked_logit(dtype)` at out-of-grid slots (see
    the module docstring).
  """
  implementation = normalize_implementation(implementation)
  pixel_features = tf.convert_to_tensor(pixel_features)
  superpixel_features = tf.convert_to_tensor(
      superpixel_features, dtype=pixel_features.dtype)
  height, width, channels = _static_dims(pixel_features, 1, 2, 3)
  grid_height, grid_width = _static_dims(superpixel_features, 1, 2)
  cell_height, cell_width = _cell_size(height, width, grid_height, grid_width)
  dtype = pixel_features.dtype
  if implementation == NAIVE:
    # [batch, H, W, 9, channels]: 9 copies of every superpixel per pixel.
    neighbors = gather_neighbors(superpixel_features, height, width, NAIVE)
    logits = tf.einsum('byxc,byxsc->byxs', pixel_features, neighbors)
    valid = tf.constant(
        _neighbor_superpixel_ids_np(height, width, grid_height, grid_width)
        >= 0)[tf.newaxis]
    return tf.where(valid, logits, tf.cast(masked_logit(dtype), dtype))
  # [batch, Hs, h, Ws, w, channels]
  blocks = tf.reshape(pixel_features, [
      -1, grid_height, cell_height, grid_width, cell_width, channels])
  # [batch, Hs, Ws, 9, channels]
  shifted = _neighbor_grids(superpixel_features)
  # [batch, Hs, h, Ws, w, 9]
  logits = tf.einsum('byhxwc,byxsc->byhxws', blocks, shifted)
  return where_inside_grid(
      tf.reshape(logits, [-1, height, width, NUM_NEIGHBORS]), grid_height,
      grid_width, masked_logit(dtype))


def superpixel_update(superpixel_query, pixel_key, pixel_value,
                      key_position=None, value_position=None,
                      implementation=NAIVE):
  """The attention term of equation (3): superpixels attend to pixels.

  Superpixel i attends to the 9*h*w pixels of the 3x3 block of cells centred
  on its cell; pixels of cells outside the grid are masked out of the
  softmax. Multi-head: N heads of D channels each.

  Args:
    superpixel_query: [batch, Hs, Ws, N, D] queries q(S_i) (unscaled; they
      are scaled by 1/sqrt(D) here).
    pixel_key: [batch, Hs*h, Ws*w, N, D] keys k(I_p).
    pixel_value: [batch, Hs*h, Ws*w, N, D] values v(I_p).
    key_position: optional [9*h*w, N, D] relative position embedding added
      to the keys of a superpixel's neighbourhood (slot-major, then pixel
      within the cell row-major; shared by all superpixels).
    value_position: optional [9*h*w, N, D], the same for the values.
    implementation: NAIVE or EFFICIENT.

  Returns:
    [batch, Hs, Ws, N, D] = sum_p softmax_p(q . k_p / sqrt(D)) v_p (no
    residual, no output projection).
  """
  implementation = normalize_implementation(implementation)
  superpixel_query, pixel_key, pixel_value = _to_tensors(
      superpixel_query, pixel_key, pixel_value)
  key_position, value_position = _to_tensors(
      key_position, value_position, dtype=superpixel_query.dtype)
  grid_height, grid_width, num_heads, head_dim = _static_dims(
      superpixel_query, 1, 2, 3, 4)
  height, width = _static_dims(pixel_key, 1, 2)
  cell_height, cell_width = _cell_size(height, width, grid_height, grid_width)
  _check_shape('pixel_key', pixel_key, [height, width, num_heads, head_dim])
  _check_shape('pixel_value', pixel_value, [height, width, num_heads, head_dim])
  _check_positions(key_position, value_position,
                   NUM_NEIGHBORS * cell_height * cell_width, num_heads,
                   head_dim)
  query = superpixel_query * tf.cast(
      1.0 / np.sqrt(head_dim), superpixel_query.dtype)
  if implementation == NAIVE:
    return _superpixel_update_naive(query, pixel_key, pixel_value,
                                    key_position, value_position,
                                    cell_height, cell_width)
  return _superpixel_update_efficient(query, pixel_key, pixel_value,
                                      key_position, value_position,
                                      cell_height, cell_width)


def pixel_update(pixel_query, superpixel_key, superpixel_value,
                 key_position=None, value_position=None, implementation=NAIVE):
  """The attention term of equation (4): pixels attend to superpixels.

  Pixel p attends to the 9 superpixels of the 3x3 block of cells centred on
  its own cell; superpixels outside the grid are masked out of the softmax.

  Args:
    pixel_query: [batch, H, W, N, D] queries q(I_p) (unscaled; scaled by
      1/sqrt(D) here), H = Hs * h, W = Ws * w.
    superpixel_key: [batch, Hs, Ws, N, D] keys k(S_i).
    superpixel_value: [batch, Hs, Ws, N, D] values v(S_i).
    key_position: optional [9, N, D] relative position embedding added to the
      key of each neighbour slot.
    value_position: optional [9, N, D], the same for the values.
    implementation: NAIVE or EFFICIENT.

  Returns:
    [batch, H, W, N, D] = sum_i softmax_i(q . k_i / sqrt(D)) v_i.
  """
  implementation = normalize_implementation(implementation)
  pixel_query, superpixel_key, superpixel_value = _to_tensors(
      pixel_query, superpixel_key, superpixel_value)
  key_position, value_position = _to_tensors(
      key_position, value_position, dtype=pixel_query.dtype)
  height, width, num_heads, head_dim = _static_dims(pixel_query, 1, 2, 3, 4)
  grid_height, grid_width = _static_dims(superpixel_key, 1, 2)
  cell_height, cell_width = _cell_size(height, width, grid_height, grid_width)
  _check_shape('superpixel_key', superpixel_key,
               [grid_height, grid_width, num_heads, head_dim])
  _check_shape('superpixel_value', superpixel_value,
               [grid_height, grid_width, num_heads, head_dim])
  _check_positions(key_position, value_position, NUM_NEIGHBORS, num_heads,
                   head_dim)
  query = pixel_query * tf.cast(1.0 / np.sqrt(head_dim), pixel_query.dtype)
  if implementation == NAIVE:
    return _pixel_update_naive(query, superpixel_key, superpixel_value,
                               key_position, value_position)
  return _pixel_update_efficient(query, superpixel_key, superpixel_value,
                                 key_position, value_position,
                                 cell_height, cell_width)


def projected_superpixel_update(superpixel_query, pixel_features, key_kernel,
                                key_bias, value_kernel, value_bias,
                                key_position=None, value_position=None,
                                implementation=NAIVE):
  """`superpixel_update` with the pixel keys and values as affine maps.

  The keys are k_p = x_p K + b_k and the values v_p = x_p V + b_v (the
  Dense layers of the dual-path layer), split into N heads of D channels.

  NAIVE projects all pixels, then runs `superpixel_update` (NAIVE).
  EFFICIENT never projects the pixels: per head, q . (x_p K + b_k) =
  (K q) . x_p + q . b_k and sum_p a_p (x_p V + b_v) = (sum_p a_p x_p) V + b_v
  (the softmax weights a_p sum to 1), so the projections move to the Hs*Ws
  superpixels; the h*w pixel features of each block meet the 9 seeing
  superpixels' C-channel queries directly (`_superpixel_update_efficient`'s
  block softmax). Same function, float32 round-off apart.

  Args:
    superpixel_query: [batch, Hs, Ws, N, D] (unscaled; scaled by 1/sqrt(D)).
    pixel_features: [batch, Hs*h, Ws*w, C].
    key_kernel, value_kernel: [C, N*D].
    key_bias, value_bias: [N*D].
    key_position, value_position: optional [9*h*w, N, D], see
      `superpixel_update`.
    implementation: NAIVE or EFFICIENT.

  Returns:
    [batch, Hs, Ws, N, D], as `superpixel_update`.
  """
  implementation = normalize_implementation(implementation)
  superpixel_query, pixel_features = _to_tensors(superpixel_query,
                                                 pixel_features)
  grid_height, grid_width, num_heads, head_dim = _static_dims(
      superpixel_query, 1, 2, 3, 4)
  height, width, channels = _static_dims(pixel_features, 1, 2, 3)
  dtype = superpixel_query.dtype
  key_kernel, value_kernel = (
      _head_kernel(k, channels, num_heads, head_dim, dtype, name)
      for k, name in ((key_kernel, 'key_kernel'),
                      (value_kernel, 'value_kernel')))
  key_bias, value_bias = (
      _head_bias(b, num_heads, head_dim, dtype, name)
      for b, name in ((key_bias, 'key_bias'), (value_bias, 'value_bias')))
  if implementation == NAIVE:
    project = lambda kernel, bias: tf.einsum(
        'byxc,cnd->byxnd', pixel_features, kernel) + bias
    return superpixel_update(
        superpixel_query, project(key_kernel, key_bias),
        project(value_kernel, value_bias), key_position, value_position,
        NAIVE)
  cell_height, cell_width = _cell_size(height, width, grid_height, grid_width)
  _check_positions(key_position, value_position,
                   NUM_NEIGHBORS * cell_height * cell_width, num_heads,
                   head_dim)
  query = superpixel_query * tf.cast(1.0 / np.sqrt(head_dim), dtype)
  # [B, Hs, Ws, h*w, C]
  pixel_blocks = _to_blocks(pixel_features, cell_height, cell_width)
  # Slot s of block j holds superpixel j - o_s. The queries brought to the
  # pixel features: K q [B, Hs, Ws, 9*N, C], and q . b_k [B, Hs, Ws, 9, N].
  seeing_key_queries = tf.reshape(
      _neighbor_grids(tf.einsum('byxnd,cnd->byxnc', query, key_kernel),
                      sign=-1),
      [-1, grid_height, grid_width, NUM_NEIGHBORS * num_heads, channels])
  seeing_bias_logits = _neighbor_grids(
      tf.einsum('byxnd,nd->byxn', query, key_bias), sign=-1)
  # [B, Hs, Ws, h*w, 9, N]: one [h*w, C] x [C, 9*N] product per block.
  logits = tf.reshape(
      tf.matmul(pixel_blocks, seeing_key_queries, transpose_b=True),
      [-1, grid_height, grid_width, cell_height * cell_width, NUM_NEIGHBORS,
       num_heads])
  logits += seeing_bias_logits[:, :, :, tf.newaxis]
  logits += _position_logits(query, key_position)
  exp_logits, sums = _superpixel_softmax_terms(logits)
  # sum_p exp * x_p per superpixel, [B, Hs, Ws, N, C], then V per head.
  block_features = tf.matmul(
      tf.reshape(exp_logits, [-1, grid_height, grid_width,
                              cell_height * cell_width,
                              NUM_NEIGHBORS * num_heads]),
      pixel_blocks, transpose_a=True)  # [B, Hs, Ws, 9*N, C]
  weighted_features = _sum_over_seeing_blocks(tf.reshape(
      block_features,
      [-1, grid_height, grid_width, NUM_NEIGHBORS, num_heads, channels]))
  outputs = tf.einsum('byxnc,cnd->byxnd', weighted_features, value_kernel)
  outputs += _position_values(exp_logits, value_position)
  return outputs / sums[..., tf.newaxis] + value_bias


def projected_pixel_update(pixel_features, query_kernel, query_bias,
                           superpixel_key, superpixel_value, output_kernel,
                           output_bias, key_position=None, value_position=None,
                           implementation=NAIVE):
  """`pixel_update` with affine pixel queries and output projection.

  The queries are q_p = x_p Q + b_q (split into N heads of D channels); the
  result is the heads' updates, concatenated, times the output kernel O plus
  its bias: the pixel path of a dual-path layer up to the residual.

  NAIVE projects all pixels, runs `pixel_update` (NAIVE) and projects the
  result. EFFICIENT never projects the pixels: per head and neighbour slot,
  (x_p Q + b_q) . k = x_p . (Q k) + b_q . k and (sum_s a_s v_s) O =
  sum_s a_s (v_s O), so Q and O are applied to the Hs*Ws superpixel keys and
  values (and the 9 position embeddings) instead, and each block's h*w
  pixel features meet the 9 neighbouring C-channel keys and values
  directly. Same function, float32 round-off apart.

  Args:
    pixel_features: [batch, Hs*h, Ws*w, C].
    query_kernel: [C, N*D]; query_bias: [N*D].
    superpixel_key, superpixel_value: [batch, Hs, Ws, N, D].
    output_kernel: [N*D, C_out]; output_bias: [C_out].
    key_position, value_position: optional [9, N, D], see `pixel_update`.
    implementation: NAIVE or EFFICIENT.

  Returns:
    [batch, Hs*h, Ws*w, C_out].
  """
  implementation = normalize_implementation(implementation)
  pixel_features, superpixel_key, superpixel_value = _to_tensors(
      pixel_features, superpixel_key, superpixel_value)
  height, width, channels = _static_dims(pixel_features, 1, 2, 3)
  grid_height, grid_width, num_heads, head_dim = _static_dims(
      superpixel_key, 1, 2, 3, 4)
  dtype = pixel_features.dtype
  query_kernel = _head_kernel(query_kernel, channels, num_heads, head_dim,
                              dtype, 'query_kernel')
  query_bias = _head_bias(query_bias, num_heads, head_dim, dtype, 'query_bias')
  output_kernel = tf.cast(output_kernel, dtype)
  if output_kernel.shape[0] != num_heads * head_dim:
    raise ValueError(f'output_kernel has shape {output_kernel.shape}; '
                     f'expected [{num_heads * head_dim}, C_out].')
  out_channels = output_kernel.shape[1]
  # [N, D, C_out]
  output_kernel = tf.reshape(output_kernel, [num_heads, head_dim,
                                             out_channels])
  output_bias = tf.cast(output_bias, dtype)
  if implementation == NAIVE:
    query = tf.einsum('byxc,cnd->byxnd', pixel_features,
                      query_kernel) + query_bias
    update = pixel_update(query, superpixel_key, superpixel_value,
                          key_position, value_position, NAIVE)
    return tf.einsum('byxnd,ndc->byxc', update, output_kernel) + output_bias
  cell_height, cell_width = _cell_size(height, width, grid_height, grid_width)
  _check_shape('superpixel_value', superpixel_value,
               [grid_height, grid_width, num_heads, head_dim])
  scale = tf.cast(1.0 / np.sqrt(head_dim), dtype)
  # Keys plus their slot's position embedding, brought to the pixel
  # features, per head and slot (slot s of cell j is superpixel j + o_s):
  # Q k / sqrt(D) [B, Hs, Ws, N, 9, C] and b_q . k / sqrt(D)
  # [B, Hs, Ws, N, 9]; the values times O, [B, Hs, Ws, N, 9, C_out].
  key_features = _neighbor_grids(
      tf.einsum('byxnd,cnd->byxnc', superpixel_key * scale, query_kernel),
      axis=4)
  key_biases = _neighbor_grids(
      tf.einsum('byxnd,nd->byxn', superpixel_key * scale, query_bias), axis=4)
  value_features = _neighbor_grids(
      tf.einsum('byxnd,ndc->byxnc', superpixel_value, output_kernel), axis=4)
  _check_positions(key_position, value_position, NUM_NEIGHBORS, num_heads,
                   head_dim)
  if key_position is not None:
    key_position = tf.cast(key_position, dtype) * scale
    key_features += tf.einsum('snd,cnd->nsc', key_position, query_kernel)
    key_biases += tf.einsum('snd,nd->ns', key_position, query_bias)
  if value_position is not None:
    value_features += tf.einsum('snd,ndc->nsc',
                                tf.cast(value_position, dtype), output_kernel)
  block_shape = [-1, grid_height, grid_width]
  # [B, Hs, Ws, h*w, C]
  pixel_blocks = _to_blocks(pixel_features, cell_height, cell_width)
  # [B, Hs, Ws, h*w, N, 9]: one [h*w, C] x [C, N*9] product per block.
  logits = tf.matmul(
      pixel_blocks,
      tf.reshape(key_features, block_shape + [num_heads * NUM_NEIGHBORS,
                                              channels]),
      transpose_b=True)
  logits = tf.reshape(logits, block_shape + [
      cell_height * cell_width, num_heads, NUM_NEIGHBORS])
  logits += key_biases[:, :, :, tf.newaxis]
  weights = _neighbor_slot_softmax(logits)
  # [B, Hs, Ws, h*w, C_out]: one [h*w, N*9] x [N*9, C_out] product per block.
  outputs = tf.matmul(
      tf.reshape(weights, block_shape + [cell_height * cell_width,
                                         num_heads * NUM_NEIGHBORS]),
      tf.reshape(value_features, block_shape + [num_heads * NUM_NEIGHBORS,
                                                out_channels]))
  return _from_blocks(outputs, cell_height, cell_width) + output_bias


def _head_kernel(kernel, channels, num_heads, head_dim, dtype, name):
  """A Dense kernel [C, N*D] as [C, N, D] in `dtype`."""
  kernel = tf.cast(kernel, dtype)
  if kernel.shape.as_list() != [channels, num_heads * head_dim]:
    raise ValueError(f'{name} has shape {kernel.shape}; expected '
                     f'[{channels}, {num_heads * head_dim}].')
  return tf.reshape(kernel, [channels, num_heads, head_dim])


def _head_bias(bias, num_heads, head_dim, dtype, name):
  """A Dense bias [N*D] as [N, D] in `dtype`."""
  bias = tf.cast(bias, dtype)
  if bias.shape.as_list() != [num_heads * head_dim]:
    raise ValueError(f'{name} has shape {bias.shape}; expected '
                     f'[{num_heads * head_dim}].')
  return tf.reshape(bias, [num_heads, head_dim])


# NAIVE: the paper's 9x duplication.


def _superpixel_update_naive(query, key, value, key_position, value_position,
                             cell_height, cell_width):
  """Eq. (3) by copying each pixel to the 9 superpixels that see it."""
  grid_height, grid_width, num_heads, head_dim = _static_dims(query, 1, 2, 3, 4)
  # [batch, Hs, Ws, 9*h*w, N, D]: every pixel key/value copied 9 times.
  neighbor_keys = _gather_neighborhood_pixels(key, cell_height, cell_width)
  neighbor_values = _gather_neighborhood_pixels(value, cell_height, cell_width)
  if key_position is not None:
    neighbor_keys += tf.cast(key_position, key.dtype)
  if value_position is not None:
    neighbor_values += tf.cast(value_position, value.dtype)
  # [batch, Hs, Ws, N, 9*h*w]
  logits = tf.einsum('byxnd,byxpnd->byxnp', query, neighbor_keys)
  # [Hs, Ws, 9*h*w]: a pixel is valid when its cell is inside the grid.
  valid = np.repeat(_neighbor_valid_mask_np(grid_height, grid_width),
                    cell_height * cell_width, axis=-1)
  valid = tf.constant(valid[np.newaxis, :, :, np.newaxis, :])
  weights = _masked_softmax(logits, valid)
  # [batch, Hs, Ws, N, D]
  return tf.einsum('byxnp,byxpnd->byxnd', weights, neighbor_values)


def _gather_neighborhood_pixels(pixels, cell_height, cell_width):
  """[B, Hs*h, Ws*w, N, D] -> [B, Hs, Ws, 9*h*w, N, D], zeros outside."""
  height, width, num_heads, head_dim = _static_dims(pixels, 1, 2, 3, 4)
  grid_height, grid_width = height // cell_height, width // cell_width
  # [B, Hs, h, Ws, w, N, D] -> [B, Hs, Ws, h, w, N, D]
  blocks = tf.reshape(pixels, [-1, grid_height, cell_height, grid_width,
                               cell_width, num_heads, head_dim])
  blocks = tf.transpose(blocks, [0, 1, 3, 2, 4, 5, 6])
  # [B, Hs, Ws, 9, h, w, N, D]: slot s of cell i holds the block of i + o_s.
  neighbors = _neighbor_grids(blocks)
  return tf.reshape(neighbors, [
      -1, grid_height, grid_width,
      NUM_NEIGHBORS * cell_height * cell_width, num_heads, head_dim])


def _pixel_update_naive(query, key, value, key_position, value_position):
  """Eq. (4) by copying each superpixel to every pixel that sees it."""
  height, width, num_heads, head_dim = _static_dims(query, 1, 2, 3, 4)
  grid_height, grid_width = _static_dims(key, 1, 2)
  channels = num_heads * head_dim
  # [batch, H, W, 9, N, D]: each superpixel copied to 9*h*w pixels.
  neighbor_keys = tf.reshape(
      gather_neighbors(tf.reshape(key, [-1, grid_height, grid_width, channels]),
                       height, width, NAIVE),
      [-1, height, width, NUM_NEIGHBORS, num_heads, head_dim])
  neighbor_values = tf.reshape(
      gather_neighbors(
          tf.reshape(value, [-1, grid_height, grid_width, channels]),
          height, width, NAIVE),
      [-1, height, width, NUM_NEIGHBORS, num_heads, head_dim])
  if key_position is not None:
    neighbor_keys += tf.cast(key_position, key.dtype)
  if value_position is not None:
    neighbor_values += tf.cast(value_position, value.dtype)
  # [batch, H, W, N, 9]
  logits = tf.einsum('byxnd,byxsnd->byxns', query, neighbor_keys)
  valid = _neighbor_superpixel_ids_np(
      height, width, grid_height, grid_width) >= 0
  valid = tf.constant(valid[np.newaxis, :, :, np.newaxis, :])
  weights = _masked_softmax(logits, valid)
  # [batch, H, W, N, D]
  return tf.einsum('byxns,byxsnd->byxnd', weights, neighbor_values)


def _neighbor_slot_softmax(logits):
  """Softmax over the 9 neighbour slots of block logits [B, Hs, Ws, ..., 9].

  Slot s of cell j is superpixel j + o_s; slots outside the grid get
  exactly 0. The logits have rank 6 (two axes between the grid and slots).
  """
  grid_height, grid_width = _static_dims(logits, 1, 2)
  valid = _neighbor_valid_mask_np(grid_height, grid_width)
  return _masked_softmax(logits, tf.constant(
      valid[np.newaxis, :, :, np.newaxis, np.newaxis, :]))


def _masked_softmax(logits, valid):
  """Softmax over the last axis giving exactly 0 where `valid` is False.

  Args:
    logits: a float tensor.
    valid: a bool tensor broadcastable to `logits`, with at least one True
      entry along the last axis (the centre cell always is).
  """
  masked = tf.where(valid, logits,
                    tf.cast(masked_logit(logits.dtype), logits.dtype))
  # The CPU softmax kernel takes rank <= 5: softmax over rows of a matrix.
  weights = tf.reshape(
      tf.nn.softmax(tf.reshape(masked, [-1, masked.shape[-1]]), axis=-1),
      tf.shape(masked))
  return tf.where(valid, weights, tf.zeros_like(weights))


# EFFICIENT: pixel-centric block computation.


def _superpixel_update_efficient(query, key, value, key_position,
                                 value_position, cell_height, cell_width):
  """Eq. (3) without copying pixels: per-block partial softmax sums.

  Pixel block j (the h*w pixels of cell j) is seen by superpixel j - o_s
  through slot s. Logits L[j, s, p] pair block j's pixel p with that
  superpixel. The softmax of superpixel i runs over L[i + o_s, s, :] for the
  9 slots s; it is computed from per-block maxima, sums of exponentials and
  weighted sums of values, each shifted from block i + o_s back to cell i
  (`_superpixel_softmax_terms`).
  """
  # [B, Hs, Ws, h*w, N, D]
  key_blocks = _to_blocks(key, cell_height, cell_width)
  value_blocks = _to_blocks(value, cell_height, cell_width)
  # [B, Hs, Ws, 9, N, D]: slot s of block j holds superpixel j - o_s.
  seeing_queries = _neighbor_grids(query, sign=-1)
  # [B, Hs, Ws, h*w, 9, N]
  logits = tf.einsum('byxsnd,byxpnd->byxpsn', seeing_queries, key_blocks)
  logits += _position_logits(query, key_position)
  exp_logits, sums = _superpixel_softmax_terms(logits)
  # [B, Hs, Ws, N, D]
  outputs = _sum_over_seeing_blocks(
      tf.einsum('byxpsn,byxpnd->byxsnd', exp_logits, value_blocks))
  outputs += _position_values(exp_logits, value_position)
  return outputs / sums[..., tf.newaxis]


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
  num_heads, head_dim = _static_dims(position, 1, 2)
  return tf.reshape(tf.cast(position, dtype),
                    [NUM_NEIGHBORS, -1, num_heads, head_dim])


def _superpixel_softmax_terms(logits):
  """The unnormalised softmax of equation (3), from per-block logits.

  Args:
    logits: [B, Hs, Ws, h*w, 9, N]; slot s of block j pairs the block's
      pixels with superpixel j - o_s.

  Returns:
    (exp_logits [B, Hs, Ws, h*w, 9, N]: exp(logit - the maximum of the
    superpixel the slot points at), exactly 0 at slots pointing outside the
    grid; sums [B, Hs, Ws, N]: each superpixel's sum of them over its 9*h*w
    pixels).
  """
  grid_height, grid_width = _static_dims(logits, 1, 2)
  dtype = logits.dtype
  valid = _neighbor_valid_mask_np(grid_height, grid_width)
  # [Hs, Ws, 9]: block j, slot s points at a superpixel inside the grid.
  seen_by_valid = tf.constant(valid[:, :, ::-1].copy())
  valid = tf.constant(valid)
  masked = tf.cast(masked_logit(dtype), dtype)

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
  max_at_blocks = _neighbor_grids(superpixel_max, sign=-1)[:, :, :,
                                                            tf.newaxis]
  shifted_logits = tf.where(
      seen_by_valid[tf.newaxis, :, :, tf.newaxis, :, tf.newaxis],
      logits - max_at_blocks, masked)
  exp_logits = tf.exp(shifted_logits)
  # Per-block partial sums [B, Hs, Ws, 9, N], shifted to their superpixels.
  return exp_logits, _sum_over_seeing_blocks(
      tf.reduce_sum(exp_logits, axis=3))


def _sum_over_seeing_blocks(block_terms):
  """[B, Hs, Ws, 9, ...] per-block terms -> [B, Hs, Ws, ...] per superpixel.

  Slot s of block j belongs to superpixel j - o_s; superpixel i adds slot s
  of block i + o_s over the 9 slots.
  """
  return tf.reduce_sum(_shift_slots(block_terms), axis=3)


def _pixel_update_efficient(query, key, value, key_position, value_position,
                            cell_height, cell_width):
  """Eq. (4) on pixel blocks against the 9 shifted superpixel grids."""
  dtype = query.dtype
  # [B, Hs, Ws, h*w, N, D]
  query_blocks = _to_blocks(query, cell_height, cell_width)
  # [B, Hs, Ws, 9, N, D]: slot s of cell j holds superpixel j + o_s.
  neighbor_keys = _neighbor_grids(key)
  neighbor_values = _neighbor_grids(value)
  # [B, Hs, Ws, N, h*w, 9]
  logits = tf.einsum('byxpnd,byxsnd->byxnps', query_blocks, neighbor_keys)
  if key_position is not None:
    logits += tf.einsum('byxpnd,snd->byxnps', query_blocks,
                        tf.cast(key_position, dtype))
  weights = _neighbor_slot_softmax(logits)
  # [B, Hs, Ws, h*w, N, D]
  outputs = tf.einsum('byxnps,byxsnd->byxpnd', weights, neighbor_values)
  if value_position is not None:
    outputs += tf.einsum('byxnps,snd->byxpnd', weights,
                         tf.cast(value_position, dtype))
  return _from_blocks(outputs, cell_height, cell_width)


def _to_blocks(pixels, cell_height, cell_width):
  """[B, Hs*h, Ws*w, ...] -> [B, Hs, Ws, h*w, ...] (one copy, not 9)."""
  height, width = _static_dims(pixels, 1, 2)
  rest = pixels.shape[3:].as_list()
  grid_height, grid_width = height // cell_height, width // cell_width
  blocks = tf.reshape(pixels, [-1, grid_height, cell_height, grid_width,
                               cell_width] + rest)
  blocks = tf.transpose(blocks, [0, 1, 3, 2, 4] + list(range(5, 5 + len(rest))))
  return tf.reshape(blocks, [-1, grid_height, grid_width,
                             cell_height * cell_width] + rest)


def _from_blocks(blocks, cell_height, cell_width):
  """[B, Hs, Ws, h*w, ...] -> [B, Hs*h, Ws*w, ...]."""
  grid_height, grid_width = _static_dims(blocks, 1, 2)
  rest = blocks.shape[4:].as_list()
  pixels = tf.reshape(blocks, [-1, grid_height, grid_width, cell_height,
                               cell_width] + rest)
  pixels = tf.transpose(pixels, [0, 1, 3, 2, 4] + list(range(5, 5 + len(rest))))
  return tf.reshape(pixels, [-1, grid_height * cell_height,
                             grid_width * cell_width] + rest)


# Shared helpers.


def _neighbor_grids(grid, sign=1, axis=3):
  """The 9 shifted copies of a grid, zero-padded at the border.

  Args:
    grid: [B, Hs, Ws, ...].
    sign: +1: slot s of cell i holds grid[i + o_s]; -1: grid[i - o_s].
    axis: where the slot axis goes in the result.

  Returns:
    [B, Hs, Ws, 9, ...] (for axis=3).
  """
  grid_height, grid_width = _static_dims(grid, 1, 2)
  rest = grid.shape[3:].as_list()
  before, after = rest[:axis - 3], rest[axis - 3:]
  # [Hs, Ws, 9]: the padded-grid cell each slot of each cell reads.
  cells = _padded_neighbor_cells(grid_height, grid_width, sign)
  # Rows of the padded grid seen as [B, cells * prod(before), prod(after)].
  repeats = int(np.prod(before))
  rows = (cells[:, :, np.newaxis, :] * repeats +
          np.arange(repeats)[:, np.newaxis])
  shifted = _gather_padded_rows(grid, rows.reshape(-1), repeats)
  return tf.reshape(shifted,
                    [-1, grid_height, grid_width] + before + [NUM_NEIGHBORS] +
                    after)


def _shift_slots(slotted, sign=1):
  """Brings slot s of cell i + sign * o_s to cell i, slot by slot.

  Args:
    slotted: [B, Hs, Ws, 9, ...].
    sign: +1 or -1.

  Returns:
    [B, Hs, Ws, 9, ...] where slot s of cell i is slot s of cell
    i + sign * o_s of the input (zeros where that is outside the grid).
  """
  grid_height, grid_width = _static_dims(slotted, 1, 2)
  cells = _padded_neighbor_cells(grid_height, grid_width, sign)
  rows = cells * NUM_NEIGHBORS + np.arange(NUM_NEIGHBORS)
  shifted = _gather_padded_rows(slotted, rows.reshape(-1), NUM_NEIGHBORS)
  return tf.reshape(shifted, [-1, grid_height, grid_width] +
                    slotted.shape[3:].as_list())


def _padded_neighbor_cells(grid_height, grid_width, sign):
  """numpy [Hs, Ws, 9]: flat index, in the grid padded by one cell on each
  side, of cell i + sign * o_s for every cell i and slot s."""
  offsets = np.array(NEIGHBOR_OFFSETS)
  rows = np.arange(grid_height)[:, np.newaxis, np.newaxis] + 1 + (
      sign * offsets[:, 0])
  cols = np.arange(grid_width)[np.newaxis, :, np.newaxis] + 1 + (
      sign * offsets[:, 1])
  return rows * (grid_width + 2) + cols


def _gather_padded_rows(grid, rows, repeats):
  """Rows of `grid` zero-padded by one cell, seen as [B, cells*repeats, R].

  One gather writes the shifted copies directly (on CPU about twice as fast
  as 9 slices and a stack, which copy twice).
  """
  rank = len(grid.shape)
  padded = tf.pad(grid, [[0, 0], [1, 1], [1, 1]] + [[0, 0]] * (rank - 3))
  row_length = int(np.prod(grid.shape[3:].as_list())) // repeats
  return tf.gather(tf.reshape(padded, [tf.shape(grid)[0], -1, row_length]),
                   tf.constant(rows, tf.int32), axis=1)


def _neighbor_valid_mask_np(grid_height, grid_width):
  """numpy bool [Hs, Ws, 9], see `neighbor_valid_mask`."""
  rows = np.arange(grid_height)[:, np.newaxis]
  cols = np.arange(grid_width)[np.newaxis, :]
  slots = []
  for dy, dx in NEIGHBOR_OFFSETS:
    slots.append((rows + dy >= 0) & (rows + dy < grid_height) &
                 (cols + dx >= 0) & (cols + dx < grid_width))
  return np.stack(slots, axis=-1)


def _neighbor_superpixel_ids_np(height, width, grid_height, grid_width):
  """numpy int32 [H, W, 9], see `neighbor_superpixel_ids`."""
  cell_height, cell_width = _cell_size(height, width, grid_height, grid_width)
  cell_rows = (np.arange(height) // cell_height)[:, np.newaxis]
  cell_cols = (np.arange(width) // cell_width)[np.newaxis, :]
  slots = []
  for dy, dx in NEIGHBOR_OFFSETS:
    rows, cols = cell_rows + dy, cell_cols + dx
    inside = ((rows >= 0) & (rows < grid_height) &
              (cols >= 0) & (cols < grid_width))
    slots.append(np.where(inside, rows * grid_width + cols, -1))
  return np.stack(slots, axis=-1).astype(np.int32)


def _cell_size(height, width, grid_height, grid_width):
  """Pixels (h, w) per superpixel cell; the sizes must divide."""
  if (grid_height <= 0 or grid_width <= 0 or height % grid_height or
      width % grid_width):
    raise ValueError(
        f'A {height}x{width} pixel map does not split into a '
        f'{grid_height}x{grid_width} superpixel grid: the pixel size must be '
        'a positive multiple of the grid size (check the superpixel grid and '
        'hypercolumn stride in the model config).')
  return height // grid_height, width // grid_width


def _to_tensors(*tensors, dtype=None):
  """Converts the non-None `tensors` to tensors of the first one's dtype."""
  converted = []
  for tensor in tensors:
    if tensor is not None:
      tensor = tf.convert_to_tensor(tensor, dtype=dtype)
      dtype = tensor.dtype
    converted.append(tensor)
  return converted


def _static_dims(tensor, *axes):
  """Static sizes of `axes` of `tensor` (they must be known)."""
  dims = []
  for axis in axes:
    size = tensor.shape[axis]
    assert size is not None, (
        f'Axis {axis} of {tensor.shape} must have a static size.')
    dims.append(int(size))
  return dims


def _check_positions(key_position, value_position, slots, num_heads,
                     head_dim):
  """Checks optional relative position tables: [slots, N, D] each."""
  for name, position in (('key_position', key_position),
                         ('value_position', value_position)):
    if position is not None:
      _check_shape(name, position, [slots, num_heads, head_dim],
                   has_batch=False)


def _check_shape(name, tensor, expected, has_batch=True):
  """Raises ValueError if `tensor`'s (non-batch) shape is not `expected`."""
  shape = tensor.shape.as_list()
  actual = shape[1:] if has_batch else shape
  if actual != list(expected):
    raise ValueError(
        f'{name} has shape {shape}; expected '
        f'{"[batch, " if has_batch else "["}'
        f'{", ".join(str(d) for d in expected)}] to match the other inputs.')
