"""Tests of deeplab_sp.model.local_attention.neighbors: the 3x3 neighbourhoods.

Slot numbering, border validity and superpixel ids (checked by hand), and
the cell order of pixel maps. The shifted grids are in test_slot_ops.py.
"""

import numpy as np
import pytest
import tensorflow as tf

from deeplab_sp.model.local_attention import neighbors


def test_neighbor_valid_mask_hand_checked():
  mask = neighbors.neighbor_valid_mask_np(2, 3)
  assert mask.shape == (2, 3, 9) and mask.dtype == bool
  # Top-left cell: only (0, 0), (0, +1), (+1, 0), (+1, +1) exist.
  np.testing.assert_array_equal(
      mask[0, 0], [False, False, False, False, True, True, False, True, True])
  # Bottom-middle cell: no row below.
  np.testing.assert_array_equal(
      mask[1, 1], [True, True, True, True, True, True, False, False, False])
  # A 1x1 grid has only its centre.
  np.testing.assert_array_equal(
      neighbors.neighbor_valid_mask_np(1, 1)[0, 0],
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
