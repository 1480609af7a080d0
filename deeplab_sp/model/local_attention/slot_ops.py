"""Shifted copies of a superpixel grid, with their own gradients.

Both implementations of the local attention meet a cell's 9 neighbours
(neighbors.py: slot s of cell i is the cell i + o_s, o_s =
neighbors.NEIGHBOR_OFFSETS[s]) through these operations on grids
[B, Hs, Ws, ...] and slotted grids [B, Hs, Ws, 9, ...]:

  * `neighbor_grids`: the 9 shifted copies of a grid, zero-padded at the
    border;
  * `sum_over_slots`: its transpose, each cell summing what its 9 shifted
    copies received;
  * `shift_slots`: slot s of cell i + sign * o_s brought to cell i.

Each is one gather of the rows of the grid padded by one cell (the sum, in
graphs with XLA islands, one fused pass over 9 clipped slices), and the
gradient of each is again one of them, as a custom gradient: TensorFlow's
own gradient of a gather is a scatter-add, several times slower on CPU.
"""

import numpy as np
import tensorflow as tf

from deeplab_sp.model.kernels import xla_islands
from deeplab_sp.model.local_attention import neighbors

NUM_NEIGHBORS = neighbors.NUM_NEIGHBORS


def neighbor_grids(grid, sign=1, axis=3, use_xla=True):
  """The 9 shifted copies of a grid, zero-padded at the border.

  Args:
    grid: [B, Hs, Ws, ...].
    sign: +1: slot s of cell i holds grid[i + o_s]; -1: grid[i - o_s].
    axis: where the slot axis goes in the result.
    use_xla: the model's kernels.xla_islands (its gradient's sum).

  Returns:
    [B, Hs, Ws, 9, ...] (for axis=3).
  """

  @tf.custom_gradient
  def shifted_copies(grid):
    shifted = _neighbor_grids(grid, sign, axis)

    def gradient(upstream):
      # Cell j receives slot s of cell j - sign * o_s, for the 9 slots.
      upstream = tf.reshape(  # Static sizes.
          upstream, [-1] + shifted.shape[1:].as_list())
      return _sum_over_slots(upstream, -sign, axis, use_xla)
    return shifted, gradient

  return shifted_copies(grid)


def _neighbor_grids(grid, sign, axis):
  """`neighbor_grids` without its gradient (the same values and ops)."""
  grid_height, grid_width = neighbors.static_dims(grid, 1, 2)
  rest = grid.shape[3:].as_list()
  before, after = rest[:axis - 3], rest[axis - 3:]
  repeats = int(np.prod(before))
  rows = _padded_rows(grid_height, grid_width, sign, repeats, of_slots=False)
  slotted_shape = ([-1, grid_height, grid_width] + before + [NUM_NEIGHBORS] +
                   after)
  return tf.reshape(_gather_padded_rows(grid, rows, repeats), slotted_shape)


def sum_over_slots(slotted, sign=1, axis=3, use_xla=True):
  """Sums slot s of cell i + sign * o_s over the 9 slots, for every cell i.

  The transpose of `neighbor_grids`: a cell collects what its 9 shifted
  copies received (zero from outside the grid).

  Args:
    slotted: [B, Hs, Ws, ..., 9, ...], the slot axis at `axis`.
    sign: +1 or -1.
    axis: the slot axis.
    use_xla: the model's kernels.xla_islands.

  Returns:
    `slotted` without its slot axis.
  """

  @tf.custom_gradient
  def summed(slotted):
    def gradient(upstream):
      # The plain form, not neighbor_grids with its own custom gradient: a
      # SavedModel stores the gradient function of a custom gradient, but
      # not the custom gradients inside it (every load of an export warned
      # about them). Only second-order gradients differ in form.
      return _neighbor_grids(upstream, -sign, axis)
    return _sum_over_slots(slotted, sign, axis, use_xla), gradient

  return summed(slotted)


def _sum_over_slots(slotted, sign, axis, use_xla):
  """`sum_over_slots` without its gradient.

  In graphs with XLA islands on (kernels/xla_islands.py), XLA fuses 9
  border-clipped slices and their sum into one pass over `slotted`, faster
  on CPU than the sum of the gathered padded rows, which writes and reads
  two more copies of it (docs/performance.md, "Training step"). The gather
  is the form without XLA (eager calls; the SavedModel, TFLite and ONNX
  exports).
  """
  if use_xla and not tf.executing_eagerly():
    return _sum_of_clipped_slices(slotted, sign=sign, axis=axis, use_xla=True)
  grid_height, grid_width = neighbors.static_dims(slotted, 1, 2)
  rest = slotted.shape[3:].as_list()
  repeats = int(np.prod(rest[:axis - 3]))
  rows = _padded_rows(grid_height, grid_width, sign, repeats, of_slots=True)
  gathered = _gather_padded_rows(slotted, rows, repeats * NUM_NEIGHBORS)
  return tf.reduce_sum(
      tf.reshape(gathered, [-1, grid_height, grid_width] + rest), axis=axis)


@xla_islands.fused
def _sum_of_clipped_slices(slotted, sign, axis):
  """`_sum_over_slots` as 9 slices, each clipped to the grid and padded."""
  grid_height, grid_width = neighbors.static_dims(slotted, 1, 2)
  pieces = []
  for slot, (dy, dx) in enumerate(neighbors.NEIGHBOR_OFFSETS):
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
  grid_height, grid_width = neighbors.static_dims(slotted, 1, 2)
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
  offsets = np.array(neighbors.NEIGHBOR_OFFSETS)
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
  grid_height, grid_width = neighbors.static_dims(grid, 1, 2)
  values = int(np.prod(grid.shape[3:].as_list()))
  batch = tf.shape(grid)[0]
  padded = tf.pad(tf.reshape(grid, [batch, grid_height, grid_width, values]),
                  [[0, 0], [1, 1], [1, 1], [0, 0]])
  return tf.gather(tf.reshape(padded, [batch, -1, values // repeats]),
                   tf.constant(rows, tf.int32), axis=1)
