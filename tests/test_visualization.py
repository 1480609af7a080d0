"""Tests of deeplab_sp.visualization (numpy and TF variants)."""

import numpy as np
import pytest
import tensorflow as tf

from deeplab_sp import visualization

COLORMAP = ((10, 20, 30), (40, 50, 60), (70, 80, 90))


def test_colorize_label_map():
  labels = np.array([[0, 1], [2, 255]])
  colored = visualization.colorize_label_map(labels, COLORMAP)
  assert colored.dtype == np.uint8
  np.testing.assert_array_equal(
      colored, [[[10, 20, 30], [40, 50, 60]], [[70, 80, 90], [0, 0, 0]]])
  np.testing.assert_array_equal(
      visualization.colorize_label_map_tf(labels[np.newaxis], COLORMAP)[0],
      colored)


def test_colorize_rejects_ids_without_colour():
  with pytest.raises(ValueError, match=r'\[3\]'):
    visualization.colorize_label_map(np.array([[0, 3]]), COLORMAP)
  with pytest.raises(ValueError, match='height, width'):
    visualization.colorize_label_map(np.zeros([1, 2, 2], int), COLORMAP)


IDS = np.array([[0, 0, 1],
                [0, 0, 1],
                [2, 2, 3]])
BOUNDARY = np.array([[False, True, False],
                     [True, True, True],
                     [False, True, False]])


def test_superpixel_boundaries():
  np.testing.assert_array_equal(visualization.superpixel_boundaries(IDS),
                                BOUNDARY)
  np.testing.assert_array_equal(
      visualization.superpixel_boundaries_tf(tf.constant(IDS[np.newaxis]))[0],
      BOUNDARY)


def test_overlay_boundaries():
  image = np.full([3, 3, 3], 7, np.uint8)
  overlay = visualization.overlay_boundaries(image, IDS, color=(1, 2, 3))
  np.testing.assert_array_equal(overlay[BOUNDARY], [[1, 2, 3]] * 5)
  np.testing.assert_array_equal(overlay[~BOUNDARY], [[7, 7, 7]] * 4)
  assert (image == 7).all()  # Input untouched.
  overlay_tf = visualization.overlay_boundaries_tf(
      tf.constant(image[np.newaxis], tf.float32), IDS[np.newaxis],
      color=(1, 2, 3))
  np.testing.assert_array_equal(overlay_tf[0], overlay)
  with pytest.raises(ValueError, match='size of ids'):
    visualization.overlay_boundaries(image[:2], IDS)
