"""ADE20K-style scoring at the labels' original resolution."""

import numpy as np
import tensorflow as tf

from deeplab_sp.data import input_pipeline
from deeplab_sp.data import tfrecord_format
from deeplab_sp.protos import dataset_pb2
from deeplab_sp.trainer import metrics
from deeplab_sp.trainer import original_resolution


def _write_record(path, examples):
  with tf.io.TFRecordWriter(str(path)) as writer:
    for name, label in examples:
      image = np.zeros(label.shape + (3,), np.uint8)
      writer.write(tfrecord_format.make_example(
          tfrecord_format.encode_image_png(image), 'png', name,
          label.shape[0], label.shape[1],
          tfrecord_format.encode_label_png(label.astype(np.uint8)),
          'png').SerializeToString())


def _eval_batch(tmp_path, examples, batch_size):
  _write_record(tmp_path / 'val.tfrecord', examples)
  options = dataset_pb2.DatasetOptions(
      dataset='synthetic', file_pattern=[str(tmp_path / 'val.tfrecord')],
      batch_size=batch_size, crop_size=[2, 2], resize_longer_side=2,
      repeat=False)
  return next(iter(input_pipeline.build_dataset(options, False)))


def _miou(labels, predictions, num_classes=2):
  confusion = metrics.ConfusionMatrix(num_classes)
  confusion.update(labels, predictions)
  return metrics.metrics_from_confusion_matrix(confusion.result()).miou


def test_predictions_are_resized_to_the_label_not_the_label_to_them(
    tmp_path):
  # A 4x4 label whose first column is class 1; the model sees 2x2 and
  # predicts class 1 in its left column.
  label = np.zeros([4, 4], np.int32)
  label[:, 0] = 1
  batch = _eval_batch(tmp_path, [('a', label)], batch_size=1)
  assert batch['original_label'].shape == (1, 4, 4)
  np.testing.assert_array_equal(batch['original_label'][0], label)
  np.testing.assert_array_equal(batch['resized_size'][0], [2, 2])
  np.testing.assert_array_equal(batch['original_size'][0], [4, 4])
  prediction = np.array([[[1, 0], [1, 0]]], np.int32)
  logits = tf.one_hot(prediction, 2) * 5.0
  confusion = metrics.ConfusionMatrix(2)
  original_resolution.update_confusion(confusion, batch, logits)
  got = metrics.metrics_from_confusion_matrix(confusion.result()).miou
  # Nearest neighbour with aligned corners: columns 0-1 <- 0, 2-3 <- 1.
  upsampled = np.repeat(np.repeat(prediction, 2, axis=1), 2, axis=2)
  expected = _miou(label[None], upsampled)  # (4/8 + 8/12) / 2.
  np.testing.assert_allclose(got, expected)
  np.testing.assert_allclose(got, (0.5 + 8 / 12) / 2)
  # Scoring against the resized label would give another number.
  resized_label_miou = _miou(batch['label'], prediction)
  assert abs(resized_label_miou - got) > 0.1


def test_batches_of_different_sizes_and_fillers(tmp_path):
  first = np.zeros([4, 2], np.int32)  # Resized to 2x1, padded to 2x2.
  first[2:] = 1
  second = np.ones([2, 6], np.int32)  # Resized to 1x2, padded to 2x2.
  batch = _eval_batch(tmp_path, [('a', first), ('b', second)], batch_size=3)
  assert batch['original_label'].shape == (3, 4, 6)  # Padded to the largest.
  np.testing.assert_array_equal(batch['resized_size'],
                                [[2, 1], [1, 2], [2, 2]])
  # A perfect model: every original pixel is scored, and right.
  prediction = np.array([[[0, 0], [1, 1]], [[1, 1], [0, 0]], [[0, 0], [0, 0]]])
  confusion = metrics.ConfusionMatrix(2)
  original_resolution.update_confusion(confusion, batch,
                                       tf.one_hot(prediction, 2))
  matrix = confusion.result()
  np.testing.assert_array_equal(matrix, [[4, 0], [0, 4 + 12]])


def test_without_original_labels_scores_the_batch_label():
  batch = {'label': tf.constant([[[0, 1], [1, 255]]])}
  confusion = metrics.ConfusionMatrix(2)
  original_resolution.update_confusion(
      confusion, batch, tf.one_hot([[[0, 0], [1, 1]]], 2))
  np.testing.assert_array_equal(confusion.result(), [[1, 0], [1, 1]])
