"""The interface of a local attention form: `LocalAttention`.

A form computes the local terms of the SP-Transformer (equations 3-6 of
arXiv 2309.16889) on tensors with static spatial shapes. The public methods
of `LocalAttention` take what the layers hold (tensors or arrays of any
float dtype, Dense layers or `Affine` maps with flat kernels), convert them
once to tensors of one dtype and per-head affine maps, and hand them to the
form's `_`-methods. The forms are naive.Naive (the paper's 9x duplication,
the reference) and efficient.Efficient (the same function without the
copies).

Pixel order. The pixel maps of `superpixel_update` and `pixel_update` are
in the form's pixel order (`to_pixel_order`): image order for NAIVE, each
cell's pixels contiguous for EFFICIENT, which then reads them as cell blocks
without a transpose. The other operations of a tokenization layer act on
each pixel alone, so a chain of layers converts once at each end. The maps
of `association_logits` and `combine_neighbors` are in image order.

Shapes: B batch, Hs x Ws superpixel grid, h x w pixels per cell (H = Hs*h,
W = Ws*w), N heads of D channels, C feature channels.
"""

import abc
from typing import NamedTuple

import tensorflow as tf

from deeplab_sp.model.kernels import profile
from deeplab_sp.model.local_attention import neighbors


class Affine(NamedTuple):
  """An affine map x -> x K + b over the last axis, e.g. a Dense layer.

  Attributes:
    kernel: K, [C_in, C_out].
    bias: b, [C_out].
  """
  kernel: tf.Tensor
  bias: tf.Tensor


class LocalAttention(abc.ABC):
  """One form of the local pixel-superpixel attention.

  A layer gets one from `local_attention.get` when it is built and calls
  its methods. All forms compute the same function, forward and backward,
  from the same arguments (and so read the same variables).

  Attributes:
    name: the form's name, one of local_attention.IMPLEMENTATIONS.
    kernels: the kernel profile (kernels/profile.py) of the model it serves.
  """

  name: str

  def __init__(self, kernels: profile.KernelProfile):
    self.kernels = kernels

  def __repr__(self):
    return f'local_attention.get({self.name!r}, {self.kernels.name!r})'

  def to_pixel_order(self, pixels, cell_height, cell_width):
    """A pixel map [B, H, W, ...] in image order, in the form's order.

    Image order unless a form overrides it (and `from_pixel_order`).

    Args:
      pixels: [B, H, W, ...].
      cell_height, cell_width: h and w, the pixels per cell.

    Returns:
      [B, H, W, ...], the same values in the form's pixel order.
    """
    del cell_height, cell_width  # Image order: nothing moves.
    return pixels

  def from_pixel_order(self, pixels, cell_height, cell_width):
    """The inverse of `to_pixel_order`."""
    del cell_height, cell_width
    return pixels

  def superpixel_update(self, superpixel_query, pixels, key, value,
                        key_position=None, value_position=None):
    """Equation (3)'s attention term: superpixels attend to nearby pixels.

    Superpixel i attends to the 9*h*w pixels of the 3x3 block of cells
    centred on its cell, with keys k(I_p) = I_p K + b_k and values
    v(I_p) = I_p V + b_v; pixels of cells outside the grid are masked out of
    the softmax.

    Args:
      superpixel_query: [B, Hs, Ws, N, D] queries q(S_i) (unscaled; scaled
        by 1/sqrt(D) here).
      pixels: [B, H, W, C] pixel features I_p, in the form's pixel order.
      key, value: the affine maps k and v (Affine or a built Dense layer),
        kernels [C, N*D], biases [N*D].
      key_position: optional [9*h*w, N, D] relative position embedding added
        to the keys of a superpixel's neighbourhood (slot-major, then pixel
        within the cell row-major; shared by all superpixels).
      value_position: optional [9*h*w, N, D], the same for the values.

    Returns:
      [B, Hs, Ws, N, D] = sum_p softmax_p(q . k_p / sqrt(D)) v_p (no
      residual, no output projection).
    """
    superpixel_query, pixels = _to_tensors(superpixel_query, pixels)
    num_heads, head_dim = neighbors.static_dims(superpixel_query, 3, 4)
    dtype = superpixel_query.dtype
    return self._superpixel_update(
        superpixel_query, pixels,
        _per_head(key, num_heads, head_dim, dtype),
        _per_head(value, num_heads, head_dim, dtype),
        *_to_tensors(key_position, value_position, dtype=dtype))

  def pixel_update(self, pixels, query, superpixel_key, superpixel_value,
                   output, key_position=None, value_position=None):
    """Equation (4): pixels attend to nearby superpixels, then the output map.

    Pixel p attends to the 9 superpixels of the 3x3 block of cells centred
    on its own cell with queries q(I_p) = I_p Q + b_q; the heads' results,
    concatenated, go through the output map O: the pixel path of a
    dual-path layer up to its residual.

    Args:
      pixels: [B, H, W, C] pixel features I_p, in the form's pixel order.
      query: the affine map q (Affine or a built Dense layer), kernel
        [C, N*D], bias [N*D].
      superpixel_key, superpixel_value: [B, Hs, Ws, N, D] keys k(S_i) and
        values v(S_i).
      output: the affine output map, kernel [N*D, C_out], bias [C_out].
      key_position, value_position: optional [9, N, D] relative position
        embeddings added to the key / value of each neighbour slot.

    Returns:
      [B, H, W, C_out], in the form's pixel order.
    """
    pixels, superpixel_key, superpixel_value = _to_tensors(
        pixels, superpixel_key, superpixel_value)
    num_heads, head_dim = neighbors.static_dims(superpixel_key, 3, 4)
    dtype = pixels.dtype
    output_kernel = tf.cast(output.kernel, dtype)
    output = Affine(
        tf.reshape(output_kernel,
                   [num_heads, head_dim, output_kernel.shape[1]]),
        tf.cast(output.bias, dtype))
    return self._pixel_update(
        pixels, _per_head(query, num_heads, head_dim, dtype), superpixel_key,
        superpixel_value, output,
        *_to_tensors(key_position, value_position, dtype=dtype))

  def association_logits(self, pixel_features, superpixel_features):
    """The logits of equation (5): I_p . S_i for the 9 neighbours i of p.

    Args:
      pixel_features: [B, H, W, C], in image order.
      superpixel_features: [B, Hs, Ws, C].

    Returns:
      [B, H, W, 9] logits, `neighbors.masked_logit(dtype)` at out-of-grid
      slots.
    """
    pixel_features = tf.convert_to_tensor(pixel_features)
    superpixel_features = tf.convert_to_tensor(superpixel_features,
                                               dtype=pixel_features.dtype)
    return self._association_logits(pixel_features, superpixel_features)

  def combine_neighbors(self, weights, superpixel_values,
                        weights_are_masked=False):
    """Equation (6): Y_p = sum_{i in N(p)} Q_pi * C_i.

    Args:
      weights: [B, H, W, 9] in image order, the weight of each neighbour
        slot of each pixel (H, W multiples of Hs, Ws, at any resolution:
        pixel (y, x) is in cell (y // (H / Hs), x // (W / Ws))). Weights at
        out-of-grid slots are ignored (treated as exactly 0).
      superpixel_values: [B, Hs, Ws, C], e.g. class logits C_i.
      weights_are_masked: the caller guarantees that the weights at
        out-of-grid slots are exactly 0 (e.g. a masked softmax); a form may
        then skip masking them.

    Returns:
      [B, H, W, C].
    """
    superpixel_values = tf.convert_to_tensor(superpixel_values)
    weights = tf.cast(weights, superpixel_values.dtype)
    return self._combine_neighbors(weights, superpixel_values,
                                   weights_are_masked)

  # What a form implements, on tensors of one dtype.

  @abc.abstractmethod
  def _superpixel_update(self, query, pixels, key, value, key_position,
                         value_position):
    """`superpixel_update` with per-head Affine maps (kernels [C, N, D],
    biases [N, D]); the positions None or of the query's dtype."""

  @abc.abstractmethod
  def _pixel_update(self, pixels, query, key, value, output, key_position,
                    value_position):
    """`pixel_update` with a per-head Affine query map (kernel [C, N, D],
    bias [N, D]) and output map (kernel [N, D, C_out], bias [C_out])."""

  @abc.abstractmethod
  def _association_logits(self, pixels, superpixels):
    """`association_logits` on tensors of one dtype."""

  @abc.abstractmethod
  def _combine_neighbors(self, weights, superpixel_values,
                         weights_are_masked):
    """`combine_neighbors` on tensors of one dtype."""


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
