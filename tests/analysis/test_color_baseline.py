"""Tests of deeplab_sp.analysis.color_baseline: the colour-only floor."""

import numpy as np

from deeplab_sp.analysis import color_baseline
from deeplab_sp.data import synthetic
from deeplab_sp.data import tfrecord_format


def test_color_baseline_is_low_on_synthetic(tmp_path):
  synthetic.write_dataset(str(tmp_path), 60, 20, 64, 64, seed=0)
  result = color_baseline.evaluate_color_baseline(
      str(tmp_path / 'train-*'), str(tmp_path / 'val-*'))
  assert result['miou'] <= 0.40
  assert set(result['per_class_iou']) == set(synthetic.CLASS_NAMES)


def test_color_baseline_is_perfect_when_colour_decides(tmp_path):
  # Each class its own colour: the lookup must find it exactly.
  colors = np.array([[10, 10, 10], [200, 0, 0], [0, 200, 0]], np.uint8)
  rng = np.random.default_rng(0)
  for split in ('train', 'val'):
    path = tmp_path / f'{split}-00000-of-00001.tfrecord'
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    with tf.io.TFRecordWriter(str(path)) as writer:
      for index in range(3):
        label = rng.integers(0, 3, [8, 8]).astype(np.uint8)
        writer.write(tfrecord_format.make_example(
            tfrecord_format.encode_image_png(colors[label]), 'png',
            f'{split}{index}', 8, 8,
            tfrecord_format.encode_label_png(label)).SerializeToString())
  result = color_baseline.evaluate_color_baseline(
      str(tmp_path / 'train-*'), str(tmp_path / 'val-*'))
  assert result['miou'] == 1.0
  assert result['per_class_iou']['pole'] is None
