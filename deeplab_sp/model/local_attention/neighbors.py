"""The 3x3 neighbourhoods of a regular superpixel grid (arXiv 2309.16889).

Sec. III-B and Fig. 3 of the paper: superpixel i exchanges information with
the pixels of the 3x3 block of grid cells centred on its cell, and a pixel
with the 9 superpixels of the 3x3 block centred on its own cell. This module
describes those neighbourhoods (slot numbering, validity at the border,
absolute superpixel ids) and the tensor reshapes both implementations of
the local attention share. The numpy functions (`*_np`) are the definitions;
the TensorFlow ones are their constants, gathers and sums.

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

from deeplab_sp.model.kernels import portable_ops
from deeplab_sp.model.kernels import xla_islands

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


def neighbor_valid_mask(grid_height, grid_width):
  """Which of the 9 neighbour slots of each cell lie inside the grid.

  Args:
    grid_height: Hs, number of superpixel rows.
    grid_width: Ws, number of superpixel columns.

  Returns:
    A bool tf.Tensor [Hs, Ws, 9].
  """
  return tf.constant(neighbor_valid_mask_np(grid_height, grid_width))


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


def masked_softmax(logits, valid):
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
  if portable_ops.is_enabled():
    # The same values (the weights are finite): the converters would store
    # zeros_like's zeros, of the weights' size, as a constant.
    return weights * tf.cast(valid, weights.dtype)
  return tf.where(valid, weights, tf.zeros_like(weights))


# Shifted copies of a grid: the 9 neighbours of every cell at once.


def neighbor_grids(grid, sign=1, axis=3):
  """The 9 shifted copies of a grid, zero-padded at the border.

  Args:
    grid: [B, Hs, Ws, ...].
    sign: +1: slot s of cell i holds grid[i + o_s]; -1: grid[i - o_s].
    axis: where the slot axis goes in the result.

  Returns:
    [B, Hs, Ws, 9, ...] (for axis=3).
  """
  compile_gradient = xla_islands.enabled()

  @tf.custom_gradient
  def shifted_copies(grid):
    shifted = _neighbor_grids(grid, sign, axis)

    def gradient(upstream):
      # Cell j receives slot s of cell j - sign * o_s, for the 9 slots.
      upstream = tf.reshape(  # Static sizes.
          upstream, [-1] + shifted.shape[1:].as_list())
      with xla_islands.as_traced(compile_gradient):
        return _sum_over_slots(upstream, -sign, axis)
    return shifted, gradient

  return shifted_copies(grid)


def _neighbor_grids(grid, sign, axis):
  """`neighbor_grids` without its gradient (the same values and ops)."""
  grid_height, grid_width = static_dims(grid, 1, 2)
  rest = grid.shape[3:].as_list()
  before, after = rest[:axis - 3], rest[axis - 3:]
  repeats = int(np.prod(before))
  rows = _padded_rows(grid_height, grid_width, sign, repeats, of_slots=False)
  slotted_shape = ([-1, grid_height, grid_width] + before + [NUM_NEIGHBORS] +
                   after)
  return tf.reshape(_gather_padded_rows(grid, rows, repeats), slotted_shape)


def sum_over_slots(slotted, sign=1, axis=3):
  """Sums slot s of cell i + sign * o_s over the 9 slots, for every cell i.

  The transpose of `neighbor_grids`: a cell collects what its 9 shifted
  copies received (zero from outside the grid).

  Args:
    slotted: [B, Hs, Ws, ..., 9, ...], the slot axis at `axis`.
    sign: +1 or -1.
    axis: the slot axis.

  Returns:
    `slotted` without its slot axis.
  """
  compile_gradient = xla_islands.enabled()

  @tf.custom_gradient
  def summed(slotted):
    def gradient(upstream):
      # The plain form, not neighbor_grids with its own custom gradient: a
      # SavedModel stores the gradient function of a custom gradient, but
      # not the custom gradients inside it (every load of an export warned
      # about them). Only second-order gradients differ in form.
      with xla_islands.as_traced(compile_gradient):
        return _neighbor_grids(upstream, -sign, axis)
    return _sum_over_slots(slotted, sign, axis), gradient

  return summed(slotted)


def _sum_over_slots(slotted, sign, axis):
  """`sum_over_slots` without its gradient.

  In graphs with XLA islands on (kernels/xla_islands.py), XLA fuses 9
  border-clipped slices and their sum into one pass over `slotted`, faster
  on CPU than the sum of the gathered padded rows, which writes and reads
  two more copies of it (docs/performance.md, "Training step"). The gather
  is the form without XLA (eager calls; the SavedModel, TFLite and ONNX
  exports).
  """
  if xla_islands.enabled() and not tf.executing_eagerly():
    return _sum_of_clipped_slices(slotted, sign=sign, axis=axis)
  grid_height, grid_width = static_dims(slotted, 1, 2)
  rest = slotted.shape[3:].as_list()
  repeats = int(np.prod(rest[:axis - 3]))
  rows = _padded_rows(grid_height, grid_width, sign, repeats, of_slots=True)
  gathered = _gather_padded_rows(slotted, rows, repeats * NUM_NEIGHBORS)
  return tf.reduce_sum(
      tf.reshape(gathered, [-1, grid_height, grid_width] + rest), axis=axis)


@xla_islands.fused
def _sum_of_clipped_slices(slotted, sign, axis):
  """`_sum_over_slots` as 9 slices, each clipped to the grid and padded."""
  grid_height, grid_width = static_dims(slotted, 1, 2)
  pieces = []
  for slot, (dy, dx) in enumerate(NEIGHBOR_OFFSETS):
    dy, dx = sign * dy, sign * dx
    # Cell i reads cell i + (dy, dx): the slot's cells inside the grid,
    # moved by (-dy, -dx).
    piece = tf.gather(slotted, slot, axis=axis)[
        :, max(0, dy):grid_height + min(0, dy),
        max(0, dx):grid_width + min(0, dx)]
    pieces.append(tf.pad(piece, [[0, 0], [max(0, -dy), max(0, dy)],
                                 [max(0, -dx), max(0, dx)]] +
                         [[0, 0]] * (piece.shape.rank - 3)))
  return tf.add_n(pieces)


def shift_slots(slotted, sign=1):
  """Brings slot s of cell i + sign * o_s to cell i, slot by slot.

  Args:
    slotted: [B, Hs, Ws, 9, ...].
    sign: +1 or -1.

  Returns:
    [B, Hs, Ws, 9, ...] where slot s of cell i is slot s of cell
    i + sign * o_s of the input (zeros where that is outside the grid).
  """
  grid_height, grid_width = static_dims(slotted, 1, 2)
  shape = [-1, grid_height, grid_width] + slotted.shape[3:].as_list()

  def shift(values, sign):
    values = tf.reshape(values, shape)  # Static sizes (of the gradient too).
    rows = _padded_rows(grid_height, grid_width, sign, 1, of_slots=True)
    shifted = _gather_padded_rows(values, rows, NUM_NEIGHBORS)
    return tf.reshape(shifted, shape)

  @tf.custom_gradient
  def shifted_slots(slotted):
    # The transpose of a shift is the opposite shift.
    return shift(slotted, sign), lambda upstream: shift(upstream, -sign)

  return shifted_slots(slotted)


def _padded_rows(grid_height, grid_width, sign, repeats, of_slots):
  """numpy flat indices of the rows that `_gather_padded_rows` gathers.

  The grid padded by one cell is seen as [B, cells * repeats, R] (or
  [B, cells * repeats * 9, R] with its 9 slots, if `of_slots`): slot s of
  cell i reads the `repeats` rows of padded cell i + sign * o_s (their
  slot s, if `of_slots`). Ordered cell, repeat, slot.
  """
  cells = _padded_neighbor_cells(grid_height, grid_width, sign)
  rows = (cells[:, :, np.newaxis, :] * repeats +
          np.arange(repeats)[:, np.newaxis])
  if of_slots:
    rows = rows * NUM_NEIGHBORS + np.arange(NUM_NEIGHBORS)
  return rows.reshape(-1)


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

  One gather writes the shifted copies directly; 9 slices and a stack would
  copy every value twice. The grid is padded as [B, Hs, Ws, repeats * R]
  (TFLite pads at most 5 axes). Its gradients are such gathers too (see the
  callers): TensorFlow's own gradient of a gather is a scatter-add, several
  times slower on CPU.
  """
  grid_height, grid_width = static_dims(grid, 1, 2)
  values = int(np.prod(grid.shape[3:].as_list()))
  batch = tf.shape(grid)[0]
  padded = tf.pad(tf.reshape(grid, [batch, grid_height, grid_width, values]),
                  [[0, 0], [1, 1], [1, 1], [0, 0]])
  return tf.gather(tf.reshape(padded, [batch, -1, values // repeats]),
                   tf.constant(rows, tf.int32), axis=1)


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
