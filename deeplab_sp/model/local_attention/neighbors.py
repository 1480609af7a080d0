"""The 3x3 neighbourhoods of a regular superpixel grid (arXiv 2309.16889).

Sec. III-B and Fig. 3 of the paper: superpixel i exchanges information with
the pixels of the 3x3 block of grid cells centred on its cell, and a pixel
with the 9 superpixels of the 3x3 block centred on its own cell. This module
describes those neighbourhoods (slot numbering, validity at the border,
absolute superpixel ids), the masked softmax and the reshapes of pixel
maps into cell blocks that both implementations of the local attention
share. The numpy functions (`*_np`) are the definitions; the TensorFlow ones
are their constants and masks. The shifted copies of a grid, which carry
their own gradients, are in slot_ops.py.

Neighbour slots. The 9 neighbours of a cell are numbered by their offset
(dy, dx) from it, row-major over dy, dx in (-1, 0, 1): slot 0 is (-1, -1),
slot 4 the cell itself, slot 8 (+1, +1) (`NEIGHBOR_OFFSETS`). The 9*h*w
pixels of a superpixel's neighbourhood are numbered slot-major, then by pixel
within the cell, row-major.

Borders. Neighbours outside the grid do not exist. They are masked out of
every softmax and receive a weight of exactly 0 (never attended to as
zeros). Logits handed to a caller carry `masked_logit(dtype)` at such slots:
half the most negative finite value of the dtype. It is finite (so bilinear
resizing and 0 * logit stay finite and gradients never see inf or NaN), yet
exp(masked - max) underflows to exactly 0 in every float type, including
after a cast of float16/bfloat16 logits to float32. Casting float32 masked
logits to float16 turns them into -inf; softmax still gives exactly 0 there.

Sizes. Every function takes static spatial sizes that divide (H = Hs * h,
W = Ws * w): the model checks its input geometry once
(deeplab_sp/model/geometry.py), so nothing here checks it again.
"""

import numpy as np
import tensorflow as tf


# Offsets (dy, dx) of the 9 neighbour slots of a cell, row-major.
NEIGHBOR_OFFSETS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
NUM_NEIGHBORS = len(NEIGHBOR_OFFSETS)  # The 3x3 block of the paper, Fig. 3.
CENTER_SLOT = NEIGHBOR_OFFSETS.index((0, 0))

# Masked logits are this fraction of the dtype's most negative finite value
# (see the module docstring).
_MASKED_LOGIT_FRACTION = 0.5


def masked_logit(dtype):
  """The finite logit put at out-of-grid neighbour slots, for `dtype`."""
  return _MASKED_LOGIT_FRACTION * tf.as_dtype(dtype).min


def cell_size(height, width, grid_height, grid_width):
  """Pixels (h, w) per superpixel cell of an H x W map on an Hs x Ws grid."""
  assert height % grid_height == 0 and width % grid_width == 0, (
      'The model checks its geometry (model/geometry.py) before this.')
  return height // grid_height, width // grid_width


def static_dims(tensor, *axes):
  """Static sizes of `axes` of `tensor` (they must be known)."""
  dims = []
  for axis in axes:
    size = tensor.shape[axis]
    assert size is not None, (
        f'Axis {axis} of {tensor.shape} must have a static size.')
    dims.append(int(size))
  return dims


# Which neighbours exist.


def neighbor_valid_mask_np(grid_height, grid_width):
  """numpy bool [Hs, Ws, 9]: slot s of cell i lies inside the grid."""
  rows = np.arange(grid_height)[:, np.newaxis]
  cols = np.arange(grid_width)[np.newaxis, :]
  slots = []
  for dy, dx in NEIGHBOR_OFFSETS:
    slots.append((rows + dy >= 0) & (rows + dy < grid_height) &
                 (cols + dx >= 0) & (cols + dx < grid_width))
  return np.stack(slots, axis=-1)


def neighbor_superpixel_ids_np(height, width, grid_height, grid_width):
  """numpy int32 [H, W, 9], see `neighbor_superpixel_ids`."""
  cell_height, cell_width = cell_size(height, width, grid_height, grid_width)
  cell_rows = (np.arange(height) // cell_height)[:, np.newaxis]
  cell_cols = (np.arange(width) // cell_width)[np.newaxis, :]
  slots = []
  for dy, dx in NEIGHBOR_OFFSETS:
    rows, cols = cell_rows + dy, cell_cols + dx
    inside = ((rows >= 0) & (rows < grid_height) &
              (cols >= 0) & (cols < grid_width))
    slots.append(np.where(inside, rows * grid_width + cols, -1))
  return np.stack(slots, axis=-1).astype(np.int32)


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
      neighbor_superpixel_ids_np(height, width, grid_height, grid_width))


def where_inside_grid(values, grid_height, grid_width, fill):
  """`values` [batch, H, W, 9] with `fill` at slots outside the grid.

  The slots outside the grid depend only on the pixel's cell, so the mask is
  broadcast over the h x w pixels of each cell ([Hs, 1, Ws, 1, 9]) instead
  of being stored per pixel.

  Args:
    values: [batch, H, W, 9].
    grid_height, grid_width: the superpixel grid.
    fill: a scalar, or one value per pixel [batch, H, W, 1].
  """
  height, width = static_dims(values, 1, 2)
  cell_height, cell_width = cell_size(height, width, grid_height, grid_width)
  cells_shape = [-1, grid_height, cell_height, grid_width, cell_width]
  cells = tf.reshape(values, cells_shape + [NUM_NEIGHBORS])
  valid = neighbor_valid_mask_np(grid_height, grid_width)
  valid = tf.constant(valid[np.newaxis, :, np.newaxis, :, np.newaxis, :])
  fill = tf.cast(fill, values.dtype)
  if fill.shape.rank:
    fill = tf.reshape(fill, cells_shape + [1])
  cells = tf.where(valid, cells, fill)
  return tf.reshape(cells, [-1, height, width, NUM_NEIGHBORS])


def masked_softmax(logits, valid, portable=False):
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
  if portable:
    # The same values (the weights are finite): the converters would store
    # zeros_like's zeros, of the weights' size, as a constant.
    return weights * tf.cast(valid, weights.dtype)
  return tf.where(valid, weights, tf.zeros_like(weights))


# Pixel maps as blocks of cells.


def to_blocks(pixels, cell_height, cell_width):
  """[B, Hs*h, Ws*w, ...] -> [B, Hs, Ws, h*w, ...] (one copy, not 9)."""
  height, width = static_dims(pixels, 1, 2)
  rest = pixels.shape[3:].as_list()
  grid_height, grid_width = height // cell_height, width // cell_width
  blocks = tf.reshape(pixels, [-1, grid_height, cell_height, grid_width,
                               cell_width] + rest)
  blocks = tf.transpose(blocks, [0, 1, 3, 2, 4] + list(range(5, 5 + len(rest))))
  return tf.reshape(blocks, [-1, grid_height, grid_width,
                             cell_height * cell_width] + rest)


def from_blocks(blocks, cell_height, cell_width):
  """[B, Hs, Ws, h*w, ...] -> [B, Hs*h, Ws*w, ...]."""
  grid_height, grid_width = static_dims(blocks, 1, 2)
  rest = blocks.shape[4:].as_list()
  pixels = tf.reshape(blocks, [-1, grid_height, grid_width, cell_height,
                               cell_width] + rest)
  pixels = tf.transpose(pixels, [0, 1, 3, 2, 4] + list(range(5, 5 + len(rest))))
  return tf.reshape(pixels, [-1, grid_height * cell_height,
                             grid_width * cell_width] + rest)


def to_cell_order(pixels, cell_height, cell_width):
  """[B, H, W, ...] -> the same shape with each cell's pixels contiguous.

  Memory holds the cells row-major, each cell's h*w pixels row-major
  inside it: `to_blocks` seen at the pixel map's shape. A chain of
  attention layers whose other operations act on each pixel alone (layer
  norms, residuals, Dense layers) can stay in this order and convert once
  at each end instead of in every layer.
  """
  return blocks_as_cells(to_blocks(pixels, cell_height, cell_width),
                         cell_height, cell_width, cell_order=True)


def from_cell_order(pixels, cell_height, cell_width):
  """The inverse of `to_cell_order`."""
  return from_blocks(
      cells_as_blocks(pixels, cell_height, cell_width, cell_order=True),
      cell_height, cell_width)


def cells_as_blocks(pixels, cell_height, cell_width, cell_order):
  """[B, H, W, ...] -> [B, Hs, Ws, h*w, ...]; a reshape if in cell order."""
  if not cell_order:
    return to_blocks(pixels, cell_height, cell_width)
  height, width = static_dims(pixels, 1, 2)
  return tf.reshape(pixels, [-1, height // cell_height, width // cell_width,
                             cell_height * cell_width] +
                    pixels.shape[3:].as_list())


def blocks_as_cells(blocks, cell_height, cell_width, cell_order):
  """The inverse of `cells_as_blocks`."""
  if not cell_order:
    return from_blocks(blocks, cell_height, cell_width)
  grid_height, grid_width = static_dims(blocks, 1, 2)
  return tf.reshape(blocks, [-1, grid_height * cell_height,
                             grid_width * cell_width] +
                    blocks.shape[4:].as_list())
