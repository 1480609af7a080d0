"""Tests of deeplab_sp.model.local_attention.neighbors: the 3x3 neighbourhoods.

Slot numbering, border validity and superpixel ids (checked by hand), and
the shifted grids both implementations rest on (against numpy, with their
gradients).
"""

import functools

import numpy as np
import pytest
import tensorflow as tf

from deeplab_sp.model.kernels import xla_islands
from deeplab_sp.model.local_attention import neighbors


def test_neighbor_valid_mask_hand_checked():
  mask = neighbors.neighbor_valid_mask(2, 3).numpy()
  assert mask.shape == (2, 3, 9) and mask.dtype == bool
  # Top-left cell: only (0, 0), (0, +1), (+1, 0), (+1, +1) exist.
  np.testing.assert_array_equal(
      mask[0, 0], [False, False, False, False, True, True, False, True, True])
  # Bottom-middle cell: no row below.
  np.testing.assert_array_equal(
      mask[1, 1], [True, True, True, True, True, True, False, False, False])
  # A 1x1 grid has only its centre.
  np.testing.assert_array_equal(
      neighbors.neighbor_valid_mask(1, 1).numpy()[0, 0],
      np.arange(9) == neighbors.CENTER_SLOT)


def test_neighbor_superpixel_ids_hand_checked():
  # 2x3 grid, 1x2 pixels per cell: a 2x6 map.
  ids = neighbors.neighbor_superpixel_ids(2, 6, 2, 3).numpy()
  assert ids.shape == (2, 6, 9) and ids.dtype == np.int32
  # Pixel (0, 3) is in cell (0, 1) = id 1.
  np.testing.assert_array_equal(ids[0, 3], [-1, -1, -1, 0, 1, 2, 3, 4, 5])
  # Pixel (1, 5) is in cell (1, 2) = id 5.
  np.testing.assert_array_equal(ids[1, 5], [1, 2, -1, 4, 5, -1, -1, -1, -1])
  # Every pixel of a cell has the same neighbours.
  np.testing.assert_array_equal(ids[1, 0], ids[1, 1])


def _reference_shift(grid, sign, slot_of=None):
  """numpy: out[b, i, s] = grid[b, i + sign * o_s] (or its slot s when
  `slot_of` is 3, as shift_slots), 0 outside the grid; slots on axis 3."""
  batch, gh, gw = grid.shape[:3]
  rest = grid.shape[4:] if slot_of is not None else grid.shape[3:]
  out = np.zeros((batch, gh, gw, neighbors.NUM_NEIGHBORS) + rest,
                 grid.dtype)
  for i in range(gh):
    for j in range(gw):
      for slot, (dy, dx) in enumerate(neighbors.NEIGHBOR_OFFSETS):
        r, c = i + sign * dy, j + sign * dx
        if 0 <= r < gh and 0 <= c < gw:
          out[:, i, j, slot] = (grid[:, r, c] if slot_of is None else
                                grid[:, r, c, slot])
  return out


def _runner(mode):
  """How a test function runs: eagerly, in a graph, or in a graph traced
  without XLA islands (as the SavedModel export traces it)."""
  if mode == 'eager':
    return lambda function: function
  with_xla = mode == 'graph'

  def traced(function):
    with xla_islands.as_traced(with_xla):
      concrete = tf.function(function).get_concrete_function()
    if not with_xla:
      assert not xla_islands.compiled_functions(concrete.graph.as_graph_def())
    return concrete
  return traced


_MODES = ('eager', 'graph', 'graph without XLA')


def _value_and_gradient(mode, function, inputs, output_cotangent):
  def call():
    with tf.GradientTape() as tape:
      tape.watch(inputs)
      outputs = function(inputs)
      loss = tf.reduce_sum(outputs * output_cotangent)
    return outputs, tape.gradient(loss, inputs)
  return [t.numpy() for t in _runner(mode)(call)()]


@pytest.mark.parametrize('mode', _MODES)
@pytest.mark.parametrize('shape', ((2, 3, 4), (2, 1, 1, 3), (1, 3, 2, 2, 5)))
@pytest.mark.parametrize('sign', (1, -1))
def test_shifted_grids_values_and_gradients(shape, sign, mode):
  # The EFFICIENT forms rest on these two gathers; the gradient is the
  # adjoint: the cotangents of the shifted copies summed back to the cells
  # (both have custom gradients, in eager mode and in graphs alike).
  rng = np.random.default_rng(5)
  grid = tf.constant(rng.normal(size=shape).astype(np.float32))
  slotted_shape = shape[:3] + (neighbors.NUM_NEIGHBORS,) + shape[3:]
  slotted = tf.constant(rng.normal(size=slotted_shape).astype(np.float32))
  cotangent = rng.normal(size=slotted_shape).astype(np.float32)
  value_and_gradient = functools.partial(_value_and_gradient, mode)

  for axis in range(3, len(shape) + 1):
    shifted, gradient = value_and_gradient(
        lambda g, axis=axis: neighbors.neighbor_grids(g, sign, axis), grid,
        tf.constant(np.moveaxis(cotangent, 3, axis)))
    expected = np.moveaxis(_reference_shift(grid.numpy(), sign), 3, axis)
    np.testing.assert_array_equal(shifted, expected)
    # d loss / d grid[i] = sum over slots s of cotangent[i - sign * o_s, s].
    adjoint = _reference_shift(cotangent, -sign, slot_of=3).sum(axis=3)
    np.testing.assert_allclose(gradient, adjoint, rtol=1e-6, atol=1e-6)
  shifted, gradient = value_and_gradient(
      lambda s: neighbors.shift_slots(s, sign), slotted,
      tf.constant(cotangent))
  np.testing.assert_array_equal(
      shifted, _reference_shift(slotted.numpy(), sign, slot_of=3))
  np.testing.assert_allclose(
      gradient, _reference_shift(cotangent, -sign, slot_of=3), rtol=1e-6,
      atol=1e-6)


@pytest.mark.parametrize('mode', _MODES)
@pytest.mark.parametrize('shape', ((2, 3, 4), (1, 1, 2, 3), (1, 3, 2, 2, 5)))
@pytest.mark.parametrize('sign', (1, -1))
def test_sum_over_slots_values_and_gradients(shape, sign, mode):
  # The transpose of neighbor_grids: XLA's sliced form in graphs, the
  # gathered rows eagerly and without XLA; the gradient is neighbor_grids.
  rng = np.random.default_rng(6)
  for axis in range(3, len(shape) + 1):
    slotted_shape = shape[:axis] + (neighbors.NUM_NEIGHBORS,) + shape[axis:]
    slotted = tf.constant(rng.normal(size=slotted_shape).astype(np.float32))
    cotangent = rng.normal(size=shape).astype(np.float32)
    summed, gradient = _value_and_gradient(
        mode, lambda s, axis=axis: neighbors.sum_over_slots(s, sign, axis),
        slotted, tf.constant(cotangent))
    expected = _reference_shift(np.moveaxis(slotted.numpy(), axis, 3), sign,
                                slot_of=3).sum(axis=3)
    np.testing.assert_allclose(summed, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(
        gradient, np.moveaxis(_reference_shift(cotangent, -sign), 3, axis))
  if mode == 'graph':  # The values above were XLA's.
    assert xla_islands.compiled_functions(tf.function(
        neighbors.sum_over_slots).get_concrete_function(
            slotted, sign, axis).graph.as_graph_def())


@pytest.mark.parametrize('cell_height,cell_width', ((1, 3), (2, 2), (3, 1)))
def test_cell_order_holds_each_cell_contiguously(cell_height, cell_width):
  grid_height, grid_width, channels = 2, 3, 4
  pixels = np.arange(
      2 * grid_height * cell_height * grid_width * cell_width * channels,
      dtype=np.float32).reshape(2, grid_height * cell_height,
                                grid_width * cell_width, channels)
  ordered = neighbors.to_cell_order(tf.constant(pixels), cell_height,
                                    cell_width)
  assert ordered.shape == pixels.shape
  # Memory order: cells row-major, then each cell's pixels row-major.
  expected = [pixels[b, y * cell_height + r, x * cell_width + c]
              for b in range(2) for y in range(grid_height)
              for x in range(grid_width) for r in range(cell_height)
              for c in range(cell_width)]
  np.testing.assert_array_equal(
      ordered.numpy().reshape(-1, channels), np.stack(expected))
  np.testing.assert_array_equal(
      neighbors.from_cell_order(ordered, cell_height, cell_width).numpy(),
      pixels)
