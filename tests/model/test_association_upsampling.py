"""Tests of deeplab_sp/model/association_upsampling.py (per-superpixel
bilinear upsampling of the association logits) and of its option."""

import numpy as np
import pytest
import tensorflow as tf

from deeplab_sp.model import association
from deeplab_sp.model import association_upsampling
from deeplab_sp.model import builder
from deeplab_sp.model import local_attention
from deeplab_sp.model.local_attention import neighbors
from deeplab_sp.protos import model_pb2

OFFSETS = neighbors.NEIGHBOR_OFFSETS

# (Hh, Wh, H, W, Hs, Ws): stride 4 with 2x2 hypercolumn pixels per cell
# (every source pair straddles a border somewhere), stride 2 with 4x3, and
# the paper's ratio (4x4 hypercolumn pixels per cell) at stride 8.
GEOMETRIES = [(4, 6, 16, 24, 2, 3), (8, 9, 16, 18, 2, 3),
              (8, 8, 64, 64, 2, 2)]


def _taps(low, high):
  """tf.image.resize's bilinear sources: (q0, q1, w0, w1) per output."""
  position = np.clip((np.arange(high) + 0.5) * low / high - 0.5, 0, low - 1)
  first = np.floor(position).astype(int)
  return (first, np.minimum(first + 1, low - 1), 1 - (position - first),
          position - first)


def _reference(logits, image_size, grid):
  """Loops over pixels, slots and the 2x2 sources, in numpy."""
  _, low_h, low_w, _ = logits.shape
  height, width = image_size
  cell_low = (low_h // grid[0], low_w // grid[1])
  cell_high = (height // grid[0], width // grid[1])
  rows, cols = _taps(low_h, height), _taps(low_w, width)
  out = np.zeros(logits.shape[:1] + (height, width, 9))
  for y in range(height):
    for x in range(width):
      own = (y // cell_high[0], x // cell_high[1])
      for slot, (dy, dx) in enumerate(OFFSETS):
        target = (own[0] + dy, own[1] + dx)
        total, weight_sum = 0.0, 0.0
        for qy, wy in ((rows[0][y], rows[2][y]), (rows[1][y], rows[3][y])):
          for qx, wx in ((cols[0][x], cols[2][x]), (cols[1][x], cols[3][x])):
            source = (qy // cell_low[0], qx // cell_low[1])
            offset = (target[0] - source[0], target[1] - source[1])
            if max(abs(offset[0]), abs(offset[1])) > 1:
              continue  # The source does not see this superpixel.
            total += wy * wx * logits[:, qy, qx, OFFSETS.index(offset)]
            weight_sum += wy * wx
        out[:, y, x, slot] = total / weight_sum
  return out


@pytest.mark.parametrize('geometry', GEOMETRIES)
def test_matches_the_per_pixel_definition(geometry):
  low_h, low_w, height, width, grid_h, grid_w = geometry
  logits = np.random.default_rng(0).normal(
      size=(2, low_h, low_w, 9)).astype(np.float32)
  result = association_upsampling.upsample_per_superpixel(
      tf.constant(logits), (height, width), grid_h, grid_w)
  np.testing.assert_allclose(
      result.numpy(), _reference(logits, (height, width), (grid_h, grid_w)),
      rtol=1e-5, atol=1e-5)


def _superpixel_field(low_h, low_w, grid_h, grid_w):
  """Logits that depend only on the absolute superpixel: slot (dy, dx) of a
  hypercolumn pixel in cell (r, c) holds value(r + dy, c + dx)."""
  value = lambda r, c: 10.0 * r + c
  logits = np.zeros((1, low_h, low_w, 9), np.float32)
  for y in range(low_h):
    for x in range(low_w):
      r, c = y // (low_h // grid_h), x // (low_w // grid_w)
      for slot, (dy, dx) in enumerate(OFFSETS):
        logits[0, y, x, slot] = value(r + dy, c + dx)
  return logits, value


def test_a_field_of_superpixels_is_kept_exactly_where_slots_mix():
  """Per superpixel, every pixel's slot holds its own superpixel's value;
  resizing the relative slots instead mixes neighbours at cell borders."""
  low_h, low_w, height, width, grid_h, grid_w = GEOMETRIES[0]
  logits, value = _superpixel_field(low_h, low_w, grid_h, grid_w)
  per_superpixel = association_upsampling.upsample_per_superpixel(
      tf.constant(logits), (height, width), grid_h, grid_w).numpy()
  relative = tf.image.resize(logits, (height, width), 'bilinear').numpy()
  expected = np.zeros_like(per_superpixel)
  for y in range(height):
    for x in range(width):
      r, c = y // (height // grid_h), x // (width // grid_w)
      for slot, (dy, dx) in enumerate(OFFSETS):
        expected[0, y, x, slot] = value(r + dy, c + dx)
  np.testing.assert_allclose(per_superpixel, expected, atol=1e-5)
  mixed = np.abs(relative - expected).max(-1) > 1e-3
  # 16x24 pixels, cells of 8x8: the bands of width 2 around the borders.
  assert 0.2 < mixed.mean() < 0.6


def test_equals_plain_resize_inside_cells():
  """Where all sources lie in the pixel's cell, both forms agree."""
  low_h, low_w, height, width, grid_h, grid_w = GEOMETRIES[2]
  logits = np.random.default_rng(1).normal(
      size=(1, low_h, low_w, 9)).astype(np.float32)
  per_superpixel = association_upsampling.upsample_per_superpixel(
      tf.constant(logits), (height, width), grid_h, grid_w).numpy()
  relative = tf.image.resize(logits, (height, width), 'bilinear').numpy()
  # Cells of 32x32 pixels; the sources of pixels 4..27 of a cell (stride
  # 8, half-pixel centres) are in the same cell.
  inner = np.zeros(height, bool)
  for start in (0, 32):
    inner[start + 4:start + 28] = True
  np.testing.assert_allclose(per_superpixel[:, inner][:, :, inner],
                             relative[:, inner][:, :, inner], atol=1e-5)


def test_gradients_are_the_transposed_jacobian():
  """The upsampling is linear in the logits: its Jacobian's columns are the
  outputs of the unit inputs (one batch), and the gradient of any weighted
  sum of the outputs must be that Jacobian transposed times the weights."""
  low_h, low_w, height, width, grid_h, grid_w = GEOMETRIES[0]
  size = low_h * low_w * 9

  def upsample(x):
    return association_upsampling.upsample_per_superpixel(
        x, (height, width), grid_h, grid_w)

  units = tf.reshape(tf.eye(size, dtype=tf.float64),
                     (size, low_h, low_w, 9))
  jacobian = tf.reshape(upsample(units), (size, -1)).numpy()
  rng = np.random.default_rng(2)
  logits = tf.constant(rng.normal(size=(1, low_h, low_w, 9)), tf.float64)
  # Linear: the output is the Jacobian applied to the input.
  np.testing.assert_allclose(
      tf.reshape(upsample(logits), (-1,)).numpy(),
      tf.reshape(logits, (-1,)).numpy() @ jacobian, atol=1e-12)
  for _ in range(3):
    weights = tf.constant(rng.normal(size=(1, height, width, 9)), tf.float64)
    with tf.GradientTape() as tape:
      tape.watch(logits)
      total = tf.reduce_sum(upsample(logits) * weights)
    np.testing.assert_allclose(
        tf.reshape(tape.gradient(total, logits), (-1,)).numpy(),
        jacobian @ tf.reshape(weights, (-1,)).numpy(), atol=1e-12)


@pytest.mark.parametrize('upsampling', association_upsampling.UPSAMPLINGS)
def test_naive_and_efficient_agree_with_either_upsampling(upsampling):
  rng = np.random.default_rng(3)
  pixels = tf.constant(rng.normal(size=(2, 8, 12, 8)), tf.float32)
  superpixels = tf.constant(rng.normal(size=(2, 2, 3, 8)), tf.float32)
  class_logits = tf.constant(rng.normal(size=(2, 2, 3, 5)), tf.float32)
  results = []
  for implementation in local_attention.IMPLEMENTATIONS:
    layer = association.SuperpixelAssociation(
        True, implementation, upsampling=upsampling)
    with tf.GradientTape() as tape:
      tape.watch([pixels, superpixels, class_logits])
      outputs = layer(pixels, superpixels, class_logits, (32, 48))
      loss = tf.reduce_sum(outputs['semantic_logits'] ** 2)
    results.append((outputs, tape.gradient(
        loss, [pixels, superpixels, class_logits])))
  (naive, naive_grads), (efficient, efficient_grads) = results
  for key in ('semantic_logits', 'association'):
    np.testing.assert_allclose(naive[key], efficient[key], atol=1e-5)
  np.testing.assert_array_equal(naive['superpixel_ids'],
                                efficient['superpixel_ids'])
  for a, b in zip(naive_grads, efficient_grads):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
  weights = naive['association'].numpy()
  np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
  ids = neighbors.neighbor_superpixel_ids(32, 48, 2, 3).numpy()
  assert np.all(weights[:, ids < 0] == 0.0)


def test_option_reaches_the_layer_and_defaults_to_relative_slots():
  assert (model_pb2.SuperpixelAssociationOptions().upsampling ==
          model_pb2.RELATIVE_SLOTS)
  for name in association_upsampling.UPSAMPLINGS:
    options = model_pb2.SuperpixelAssociationOptions(
        upsampling=model_pb2.AssociationUpsampling.Value(name))
    layer = builder.sp_transformer.build_association(options)
    assert layer.upsampling == name
    clone = type(layer).from_config(layer.get_config())
    assert clone.upsampling == name
  with pytest.raises(ValueError, match='AssociationUpsampling'):
    builder.sp_transformer.association_upsampling_name(7)
