"""Tests of the streaming confusion matrix and mIoU."""

import math

import numpy as np
import tensorflow as tf

from deeplab_sp.trainer import metrics


def test_hand_made_predictions_match_hand_computed_miou():
  # 4 classes; class 3 appears in neither labels nor predictions.
  labels = np.array([[[0, 0, 1, 1], [2, 2, 255, 0]]])
  preds = np.array([[[0, 1, 1, 1], [2, 0, 3, 0]]])
  # Pixel (1, 2) is ignored. Confusion (rows gt): 0->0 x2, 0->1 x1, 1->1 x2,
  # 2->2 x1, 2->0 x1.
  # IoU0 = 2 / (3 + 3 - 2) = 0.5; IoU1 = 2 / (2 + 3 - 2) = 2/3;
  # IoU2 = 1 / (2 + 1 - 1) = 0.5; class 3 absent (the ignored pixel's
  # prediction 3 does not count).
  cm = metrics.ConfusionMatrix(4)
  cm.update(tf.constant(labels[:, :1]), tf.constant(preds[:, :1]))
  cm.update(tf.constant(labels[:, 1:]), tf.constant(preds[:, 1:]))  # Streams.
  expected_matrix = np.array([[2, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0],
                              [0, 0, 0, 0]])
  np.testing.assert_array_equal(cm.result(), expected_matrix)
  result = metrics.metrics_from_confusion_matrix(cm.result())
  assert result.per_class_iou[:3] == [0.5, 2 / 3, 0.5]
  assert result.per_class_iou[3] is None
  assert math.isclose(result.miou, (0.5 + 2 / 3 + 0.5) / 3)
  assert result.pixel_accuracy == 5 / 7
  assert result.num_valid_pixels == 7
  table = metrics.per_class_table(result, ['a', 'b', 'c', 'd'])
  assert 'absent' in table and '55.56' in table
  cm.reset()
  assert cm.result().sum() == 0


def test_class_only_predicted_has_zero_iou():
  result = metrics.metrics_from_confusion_matrix(np.array([[1, 1], [0, 0]]))
  assert result.per_class_iou == [0.5, 0.0]
  assert result.miou == 0.25


def test_update_compiles_with_xla_and_matches_eager():
  labels = tf.constant([[[0, 2, 255], [1, 1, 0]]])
  predictions = tf.constant([[[0, 1, 2], [1, 0, 0]]])
  eager = metrics.ConfusionMatrix(3)
  eager.update(labels, predictions)
  compiled = metrics.ConfusionMatrix(3)
  tf.function(compiled.update, jit_compile=True)(labels, predictions)
  expected = np.array([[2, 0, 0], [1, 1, 0], [0, 1, 0]])
  np.testing.assert_array_equal(eager.result(), expected)
  np.testing.assert_array_equal(compiled.result(), expected)


def test_per_class_and_mean_class_accuracy_of_a_hand_made_matrix():
  # Rows = ground truth. Class 3 is only predicted (on 1 pixel of class 2):
  # its IoU is 0, its accuracy undefined (absent from the ground truth).
  matrix = np.array([[3, 1, 0, 0],
                     [2, 2, 0, 0],
                     [0, 0, 4, 1],
                     [0, 0, 0, 0]])
  result = metrics.metrics_from_confusion_matrix(matrix)
  # Accuracy = TP / ground-truth pixels: 3/4, 2/4, 4/5.
  assert result.per_class_accuracy == [3 / 4, 2 / 4, 4 / 5, None]
  assert result.mean_class_accuracy == (3 / 4 + 2 / 4 + 4 / 5) / 3
  # IoU 3 / (4 + 5 - 3), 2 / (4 + 3 - 2), 4 / (5 + 4 - 4), 0 / 1.
  assert result.per_class_iou == [3 / 6, 2 / 5, 4 / 5, 0.0]
  assert result.pixel_accuracy == 9 / 13
  assert metrics.per_class_accuracy_dict(result, ['a', 'b', 'c', 'd']) == {
      'a': 0.75, 'b': 0.5, 'c': 0.8, 'd': None}


def test_accuracy_of_the_streamed_matrix_excludes_ignore_pixels():
  labels = tf.constant([[[0, 0, 1, 255], [1, 1, 255, 255]]])
  predictions = tf.constant([[[0, 1, 1, 0], [0, 1, 1, 1]]])
  cm = metrics.ConfusionMatrix(3)
  cm.update(labels, predictions)
  result = metrics.metrics_from_confusion_matrix(cm.result())
  # Class 0: 1 of 2 right; class 1: 2 of 3; class 2 never labelled.
  assert result.per_class_accuracy == [1 / 2, 2 / 3, None]
  assert result.mean_class_accuracy == (1 / 2 + 2 / 3) / 2
  assert result.num_valid_pixels == 5


def test_no_labelled_pixel_gives_nan_means():
  result = metrics.metrics_from_confusion_matrix(np.zeros([2, 2]))
  assert result.per_class_accuracy == [None, None]
  assert math.isnan(result.mean_class_accuracy)
  assert math.isnan(result.miou)


def test_table_has_iou_and_accuracy_columns():
  result = metrics.metrics_from_confusion_matrix(
      np.array([[1, 1, 0], [0, 2, 0], [0, 1, 0]]))
  # IoU: 1/2, 2/4, 0/1; accuracy: 1/2, 2/2, 0/1; pixel accuracy 3/5.
  lines = metrics.per_class_table(result, ['road', 'car', 'sky']).splitlines()
  assert lines[0] == 'class            IoU (%)  acc. (%)'
  assert lines[2] == 'road               50.00     50.00'
  assert lines[3] == 'car                50.00    100.00'
  assert lines[4] == 'sky                 0.00      0.00'
  assert lines[6] == 'mIoU               33.33'
  assert lines[7] == 'mean class acc.    50.00'
  assert lines[8] == 'pixel acc.         60.00'
  absent = metrics.metrics_from_confusion_matrix(np.array([[1, 1], [0, 0]]))
  assert metrics.per_class_table(absent, ['a', 'b']).splitlines()[3] == (
      'b                   0.00    absent')
