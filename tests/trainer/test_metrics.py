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
