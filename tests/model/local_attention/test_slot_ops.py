"""Tests of deeplab_sp.model.local_attention.slot_ops: the shifted grids.

The shifted copies of a grid that both implementations rest on, and their
transposes, against numpy, with their custom gradients: eagerly, in graphs
with the XLA islands compiled, and in graphs traced without them (as the
exports trace them).
"""

import functools

import numpy as np
import pytest
import tensorflow as tf

from deeplab_sp.model.kernels import xla_islands
from deeplab_sp.model.local_attention import neighbors
from deeplab_sp.model.local_attention import slot_ops


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
    concrete = tf.function(function).get_concrete_function()
    if not with_xla:
      assert not xla_islands.compiled_functions(concrete.graph.as_graph_def())
    return concrete
  return traced


_MODES = ('eager', 'graph', 'graph without XLA')


def _uses_xla(mode):
  """The `use_xla` of the slot operations in `mode` (the model's
  kernels.xla_islands: False in the SavedModel's profile)."""
  return mode != 'graph without XLA'


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
        lambda g, axis=axis: slot_ops.neighbor_grids(
            g, sign, axis, use_xla=_uses_xla(mode)), grid,
        tf.constant(np.moveaxis(cotangent, 3, axis)))
    expected = np.moveaxis(_reference_shift(grid.numpy(), sign), 3, axis)
    np.testing.assert_array_equal(shifted, expected)
    # d loss / d grid[i] = sum over slots s of cotangent[i - sign * o_s, s].
    adjoint = _reference_shift(cotangent, -sign, slot_of=3).sum(axis=3)
    np.testing.assert_allclose(gradient, adjoint, rtol=1e-6, atol=1e-6)
  shifted, gradient = value_and_gradient(
      lambda s: slot_ops.shift_slots(s, sign), slotted,
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
        mode, lambda s, axis=axis: slot_ops.sum_over_slots(
            s, sign, axis, use_xla=_uses_xla(mode)),
        slotted, tf.constant(cotangent))
    expected = _reference_shift(np.moveaxis(slotted.numpy(), axis, 3), sign,
                                slot_of=3).sum(axis=3)
    np.testing.assert_allclose(summed, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(
        gradient, np.moveaxis(_reference_shift(cotangent, -sign), 3, axis))
  if mode == 'graph':  # The values above were XLA's.
    assert xla_islands.compiled_functions(tf.function(
        slot_ops.sum_over_slots).get_concrete_function(
            slotted, sign, axis).graph.as_graph_def())
