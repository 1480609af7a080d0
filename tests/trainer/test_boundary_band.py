"""The band around class boundaries, against a per-pixel numpy definition."""

import json

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from deeplab_sp.trainer import boundary_band
from deeplab_sp.trainer import evaluator as evaluator_lib
from deeplab_sp.trainer import metrics as metrics_lib

IGNORE = 255


def _band_numpy(labels, width):
  """The module docstring's definition, pixel by pixel."""
  batch, height, width_px = labels.shape
  boundary = np.zeros(labels.shape, bool)
  for b in range(batch):
    for y in range(height):
      for x in range(width_px):
        if labels[b, y, x] == IGNORE:
          continue
        window = labels[b, max(y - 1, 0):y + 2, max(x - 1, 0):x + 2]
        boundary[b, y, x] = np.any((window != IGNORE) &
                                   (window != labels[b, y, x]))
  band = np.zeros(labels.shape, bool)
  for b, y, x in zip(*np.nonzero(boundary)):
    band[b, max(y - width, 0):y + width + 1,
         max(x - width, 0):x + width + 1] = True
  return band & (labels != IGNORE)


@pytest.mark.parametrize('width', [1, 2, 3])
def test_band_mask_is_the_definition(width):
  rng = np.random.default_rng(width)
  # Blocky regions (so that interiors exist), some ignored pixels.
  blocks = rng.integers(0, 4, [2, 4, 5])
  labels = np.kron(blocks, np.ones([4, 4], np.int64))[:, :15, :18]
  labels[rng.random(labels.shape) < 0.05] = IGNORE
  band = boundary_band.band_mask(tf.constant(labels, tf.int32), width, IGNORE)
  np.testing.assert_array_equal(band.numpy(), _band_numpy(labels, width))
  assert 0 < band.numpy().sum() < (labels != IGNORE).sum()


def test_a_border_with_the_ignore_label_is_no_boundary():
  labels = np.full([1, 6, 6], 2)
  labels[0, :, 3:] = IGNORE
  band = boundary_band.band_mask(tf.constant(labels, tf.int32), 1, IGNORE)
  assert not band.numpy().any()
  labels[0, :, 5] = 1  # One class boundary, across the ignored column 4:
  # no two labelled pixels of different classes are 8-neighbours.
  assert not boundary_band.band_mask(
      tf.constant(labels, tf.int32), 1, IGNORE).numpy().any()
  labels[0, :, 3] = 2
  labels[0, :, 4] = 1
  band = boundary_band.band_mask(tf.constant(labels, tf.int32), 1, IGNORE)
  # Boundary pixels at columns 3 and 4; the band adds columns 2 and 5.
  np.testing.assert_array_equal(band.numpy()[0, 0], [0, 0, 1, 1, 1, 1])


def test_band_and_interior_split_the_confusion_matrix():
  rng = np.random.default_rng(0)
  labels = np.kron(rng.integers(0, 3, [2, 3, 3]), np.ones([5, 5], np.int64))
  labels[rng.random(labels.shape) < 0.1] = IGNORE
  predictions = np.where(rng.random(labels.shape) < 0.8, labels % 3,
                         rng.integers(0, 3, labels.shape))
  whole = metrics_lib.ConfusionMatrix(3)
  parts = boundary_band.BoundaryBandConfusion(3, 2, IGNORE)
  whole.update(tf.constant(labels), tf.constant(predictions))
  parts.update(tf.constant(labels), tf.constant(predictions))
  np.testing.assert_array_equal(
      parts.band.result() + parts.interior.result(), whole.result())
  band = _band_numpy(labels, 2)
  assert parts.band.result().sum() == band.sum()
  with pytest.raises(ValueError, match='>= 1 pixel'):
    boundary_band.BoundaryBandConfusion(3, 0, IGNORE)


class _Shifted(tf_keras.Model):
  """Predicts the label map shifted one pixel right: wrong at boundaries."""

  def __init__(self, labels):
    super().__init__()
    self.labels = tf.constant(labels)

  def call(self, images, training=False):
    index = tf.cast(images[:, 0, 0, 0], tf.int32)
    labels = tf.gather(self.labels, index)
    shifted = tf.concat([labels[:, :, :1], labels[:, :, :-1]], axis=2)
    return {'semantic_logits': tf.one_hot(shifted, 2)}


def test_evaluator_reports_the_band_and_the_interior(tmp_path):
  labels = np.zeros([2, 8, 8], np.int32)
  labels[:, :, 4:] = 1
  images = np.stack([np.full([8, 8, 3], i, np.float32) for i in (0, 1)])
  dataset = tf.data.Dataset.from_tensor_slices(
      {'image': images, 'label': labels}).batch(2)
  evaluator = evaluator_lib.Evaluator(
      tf.distribute.get_strategy(), _Shifted(labels), dataset, ['a', 'b'],
      tf.Variable(3, dtype=tf.int64), experiment_dir=str(tmp_path),
      superpixel_metrics=False, boundary_band_pixels=1)
  scalars = evaluator.evaluate(tf.constant(-1))
  section = evaluator.last_results[boundary_band.SECTION]
  assert section['width_pixels'] == 1
  # Every error (column 4) is in the band (columns 2-5); the interior is
  # perfect.
  assert section['interior']['miou'] == 1.0
  assert section['band']['num_valid_pixels'] == 2 * 8 * 4
  assert section['band']['pixel_accuracy'] == pytest.approx(3 / 4)
  assert (section['band']['num_valid_pixels'] +
          section['interior']['num_valid_pixels']) == 2 * 8 * 8
  assert scalars['boundary_band/interior_miou'] == pytest.approx(1.0)
  history = (tmp_path / evaluator_lib.EVAL_HISTORY_FILENAME).read_text()
  assert json.loads(history.splitlines()[-1])[boundary_band.SECTION] == (
      section)
