"""Local pixel-superpixel attention of the Superpixel Transformer.

The local terms of the SP-Transformer (Zhu et al., "Superpixel Transformers
for Efficient Semantic Segmentation", arXiv 2309.16889), as functions of
tensors with static spatial shapes (eager, `tf.function`, XLA; any batch;
float32, float16, bfloat16):

  * `superpixel_update`: the attention term of equation (3), each superpixel
    attending to the 9*h*w pixels of the 3x3 block of cells around it, with
    the pixels' keys and values given as affine maps of their features;
  * `pixel_update`: the attention term of equation (4), each pixel attending
    to the 9 superpixels of the 3x3 block around its own cell, with the
    pixels' queries and the output projection given as affine maps;
  * `superpixel_attention`, `pixel_attention`: the same attentions on keys
    and values already computed;
  * `association_logits`: the dot products I_p . S_i of equation (5);
  * `combine_neighbors`: the weighted sum of equation (6);
  * `gather_neighbors` and the neighbourhood descriptions of neighbors.py
    (`neighbor_valid_mask`, `neighbor_superpixel_ids`, `where_inside_grid`,
    `masked_logit`, `NEIGHBOR_OFFSETS`);
  * `to_cell_order`, `from_cell_order`: pixel maps with each cell's pixels
    contiguous, which `superpixel_update` and `pixel_update` take and give
    with `pixels_in_cell_order=True` (EFFICIENT then skips its per-call
    conversions to cell blocks).

Every function takes `implementation`, a plain value: NAIVE (naive.py, the
paper's 9x duplication, the reference) or EFFICIENT (efficient.py, the same
function without the copies, equal forward and backward to float32
round-off). Slot numbering and border masking: see neighbors.py.

Shapes: B batch, Hs x Ws superpixel grid, h x w pixels per cell (H = Hs*h,
W = Ws*w), N heads of D channels, C feature channels. The sizes must divide;
the model checks that once (deeplab_sp/model/geometry.py).
"""

from typing import NamedTuple

import tensorflow as tf

from deeplab_sp.model.local_attention import efficient
from deeplab_sp.model.local_attention import naive
from deeplab_sp.model.local_attention import neighbors
from deeplab_sp.model.local_attention.neighbors import CENTER_SLOT
from deeplab_sp.model.local_attention.neighbors import from_cell_order
from deeplab_sp.model.local_attention.neighbors import masked_logit
from deeplab_sp.model.local_attention.neighbors import NEIGHBOR_OFFSETS
from deeplab_sp.model.local_attention.neighbors import neighbor_superpixel_ids
from deeplab_sp.model.local_attention.neighbors import neighbor_valid_mask
from deeplab_sp.model.local_attention.neighbors import NUM_NEIGHBORS
from deeplab_sp.model.local_attention.neighbors import to_cell_order
from deeplab_sp.model.local_attention.neighbors import where_inside_grid

NAIVE = 'NAIVE'
EFFICIENT = 'EFFICIENT'
IMPLEMENTATIONS = (NAIVE, EFFICIENT)
_FORMS = {NAIVE: naive, EFFICIENT: efficient}


class Affine(NamedTuple):
  """An affine map x -> x K + b over the last axis, e.g. a Dense layer.

  Attributes:
    kernel: K, [C_in, C_out].
    bias: b, [C_out].
  """
  kernel: tf.Tensor
  bias: tf.Tensor


def normalize_implementation(implementation: str) -> str:
  """Returns NAIVE or EFFICIENT for a name in any case.

  Raises:
    ValueError: for anything else (proto enum values are converted to names
      by the model builder, not here).
  """
  name = implementation.upper() if isinstance(implementation, str) else None
  if name not in IMPLEMENTATIONS:
    raise ValueError(
        f'Unknown local attention implementation {implementation!r}: use one '
        f'of {IMPLEMENTATIONS} (the LocalAttentionImplementation enum of '
        'protos/model.proto: NAIVE = 0, EFFICIENT = 1).')
  return name


def _form(implementation):
  return _FORMS[normalize_implementation(implementation)]


def superpixel_update(superpixel_query, pixels, key, value,
                      key_position=None, value_position=None,
                      implementation=NAIVE, pixels_in_cell_order=False):
  """Equation (3)'s attention term: superpixels attend to nearby pixels.

  Superpixel i attends to the 9*h*w pixels of the 3x3 block of cells
  centred on its cell, with keys k(I_p) = I_p K + b_k and values
  v(I_p) = I_p V + b_v; pixels of cells outside the grid are masked out of
  the softmax.

  Args:
    superpixel_query: [B, Hs, Ws, N, D] queries q(S_i) (unscaled; scaled by
      1/sqrt(D) here).
    pixels: [B, H, W, C] pixel features I_p.
    key, value: the affine maps k and v (Affine or a built Dense layer),
      kernels [C, N*D], biases [N*D].
    key_position: optional [9*h*w, N, D] relative position embedding added
      to the keys of a superpixel's neighbourhood (slot-major, then pixel
      within the cell row-major; shared by all superpixels).
    value_position: optional [9*h*w, N, D], the same for the values.
    implementation: NAIVE or EFFICIENT.
    pixels_in_cell_order: `pixels` is in `to_cell_order`'s order.

  Returns:
    [B, Hs, Ws, N, D] = sum_p softmax_p(q . k_p / sqrt(D)) v_p (no residual,
    no output projection).
  """
  superpixel_query, pixels = _to_tensors(superpixel_query, pixels)
  num_heads, head_dim = neighbors.static_dims(superpixel_query, 3, 4)
  dtype = superpixel_query.dtype
  arguments = (_per_head(key, num_heads, head_dim, dtype),
               _per_head(value, num_heads, head_dim, dtype),
               *_to_tensors(key_position, value_position, dtype=dtype))
  if normalize_implementation(implementation) == EFFICIENT:
    return efficient.superpixel_update(superpixel_query, pixels, *arguments,
                                       cell_order=pixels_in_cell_order)
  if pixels_in_cell_order:
    pixels = from_cell_order(pixels, *_cell_size(pixels, superpixel_query))
  return naive.superpixel_update(superpixel_query, pixels, *arguments)


def pixel_update(pixels, query, superpixel_key, superpixel_value, output,
                 key_position=None, value_position=None,
                 implementation=NAIVE, pixels_in_cell_order=False):
  """Equation (4)'s attention term and output map: pixels attend to superpixels.

  Pixel p attends to the 9 superpixels of the 3x3 block of cells centred on
  its own cell with queries q(I_p) = I_p Q + b_q; the heads' results,
  concatenated, go through the output map O: the pixel path of a dual-path
  layer up to its residual.

  Args:
    pixels: [B, H, W, C] pixel features I_p.
    query: the affine map q (Affine or a built Dense layer), kernel
      [C, N*D], bias [N*D].
    superpixel_key, superpixel_value: [B, Hs, Ws, N, D] keys k(S_i) and
      values v(S_i).
    output: the affine output map, kernel [N*D, C_out], bias [C_out].
    key_position, value_position: optional [9, N, D] relative position
      embeddings added to the key / value of each neighbour slot.
    implementation: NAIVE or EFFICIENT.
    pixels_in_cell_order: `pixels`, and the result, are in `to_cell_order`'s
      order.

  Returns:
    [B, H, W, C_out].
  """
  pixels, superpixel_key, superpixel_value = _to_tensors(
      pixels, superpixel_key, superpixel_value)
  num_heads, head_dim = neighbors.static_dims(superpixel_key, 3, 4)
  dtype = pixels.dtype
  output_kernel = tf.cast(output.kernel, dtype)
  output = Affine(
      tf.reshape(output_kernel, [num_heads, head_dim, output_kernel.shape[1]]),
      tf.cast(output.bias, dtype))
  arguments = (_per_head(query, num_heads, head_dim, dtype), superpixel_key,
               superpixel_value, output,
               *_to_tensors(key_position, value_position, dtype=dtype))
  if normalize_implementation(implementation) == EFFICIENT:
    return efficient.pixel_update(pixels, *arguments,
                                  cell_order=pixels_in_cell_order)
  if not pixels_in_cell_order:
    return naive.pixel_update(pixels, *arguments)
  cell_size = _cell_size(pixels, superpixel_key)
  return to_cell_order(
      naive.pixel_update(from_cell_order(pixels, *cell_size), *arguments),
      *cell_size)


def superpixel_attention(superpixel_query, pixel_key, pixel_value,
                         key_position=None, value_position=None,
                         implementation=NAIVE):
  """`superpixel_update` on keys and values already computed.

  Args:
    superpixel_query: [B, Hs, Ws, N, D] (unscaled).
    pixel_key, pixel_value: [B, H, W, N, D].
    key_position, value_position: optional [9*h*w, N, D].
    implementation: NAIVE or EFFICIENT.

  Returns:
    [B, Hs, Ws, N, D].
  """
  form = _form(implementation)
  tensors = _to_tensors(superpixel_query, pixel_key, pixel_value)
  return form.superpixel_attention(
      *tensors, *_to_tensors(key_position, value_position,
                             dtype=tensors[0].dtype))


def pixel_attention(pixel_query, superpixel_key, superpixel_value,
                    key_position=None, value_position=None,
                    implementation=NAIVE):
  """`pixel_update` on queries already computed, without output map.

  Args:
    pixel_query: [B, H, W, N, D] (unscaled).
    superpixel_key, superpixel_value: [B, Hs, Ws, N, D].
    key_position, value_position: optional [9, N, D].
    implementation: NAIVE or EFFICIENT.

  Returns:
    [B, H, W, N, D].
  """
  form = _form(implementation)
  tensors = _to_tensors(pixel_query, superpixel_key, superpixel_value)
  return form.pixel_attention(
      *tensors, *_to_tensors(key_position, value_position,
                             dtype=tensors[0].dtype))


def association_logits(pixel_features, superpixel_features,
                       implementation=NAIVE):
  """The logits of equation (5): I_p . S_i for the 9 neighbours i of p.

  Args:
    pixel_features: [B, H, W, C].
    superpixel_features: [B, Hs, Ws, C].
    implementation: NAIVE or EFFICIENT.

  Returns:
    [B, H, W, 9] logits, `masked_logit(dtype)` at out-of-grid slots.
  """
  form = _form(implementation)
  pixel_features = tf.convert_to_tensor(pixel_features)
  superpixel_features = tf.convert_to_tensor(superpixel_features,
                                             dtype=pixel_features.dtype)
  return form.association_logits(pixel_features, superpixel_features)


def combine_neighbors(weights, superpixel_values, implementation=NAIVE,
                      weights_are_masked=False):
  """Equation (6): Y_p = sum_{i in N(p)} Q_pi * C_i.

  Args:
    weights: [B, H, W, 9], the weight of each neighbour slot of each pixel
      (H, W multiples of Hs, Ws, at any resolution: pixel (y, x) is in cell
      (y // (H / Hs), x // (W / Ws))). Weights at out-of-grid slots are
      ignored (treated as exactly 0).
    superpixel_values: [B, Hs, Ws, C], e.g. class logits C_i.
    implementation: NAIVE or EFFICIENT.
    weights_are_masked: the caller guarantees that the weights at
      out-of-grid slots are exactly 0 (e.g. a masked softmax); EFFICIENT then
      skips masking them.

  Returns:
    [B, H, W, C].
  """
  form = _form(implementation)
  superpixel_values = tf.convert_to_tensor(superpixel_values)
  weights = tf.cast(weights, superpixel_values.dtype)
  return form.combine_neighbors(weights, superpixel_values,
                                weights_are_masked)


def gather_neighbors(superpixel_values, height, width, implementation=NAIVE):
  """Copies to every pixel the values of its 9 neighbouring superpixels.

  Args:
    superpixel_values: [B, Hs, Ws, C].
    height: H, a multiple of Hs.
    width: W, a multiple of Ws.
    implementation: NAIVE or EFFICIENT.

  Returns:
    [B, H, W, 9, C]; zeros at slots outside the grid.
  """
  return _form(implementation).gather_neighbors(
      tf.convert_to_tensor(superpixel_values), height, width)


def _cell_size(pixels, superpixels):
  """(h, w) of the cells of pixels [B, H, W, ...] on a grid [B, Hs, Ws, ...]."""
  return neighbors.cell_size(*neighbors.static_dims(pixels, 1, 2),
                             *neighbors.static_dims(superpixels, 1, 2))


def _per_head(affine, num_heads, head_dim, dtype):
  """An affine map [C, N*D], [N*D] as Affine([C, N, D], [N, D]) in `dtype`."""
  kernel = tf.cast(affine.kernel, dtype)
  return Affine(tf.reshape(kernel, [kernel.shape[0], num_heads, head_dim]),
                tf.reshape(tf.cast(affine.bias, dtype), [num_heads, head_dim]))


def _to_tensors(*tensors, dtype=None):
  """Converts the non-None `tensors` to tensors of the first one's dtype."""
  converted = []
  for tensor in tensors:
    if tensor is not None:
      tensor = tf.convert_to_tensor(tensor, dtype=dtype)
      dtype = tensor.dtype
    converted.append(tensor)
  return converted
