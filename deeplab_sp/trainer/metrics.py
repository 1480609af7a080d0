"""Streaming confusion matrix and mIoU (the Cityscapes benchmark's definition).

mIoU = mean over classes c of TP_c / (TP_c + FP_c + FN_c), accumulated over
the whole split (not averaged per image); pixel accuracy = sum TP / number of
valid pixels. A class that appears neither in the ground truth nor in the
predictions of the whole split has an undefined IoU: it is reported as
absent (None) and excluded from the mean, never counted as 0 or 1.
"""

import dataclasses
from typing import Dict, Optional, Sequence

import numpy as np
import tensorflow as tf

from deeplab_sp.data import dataset_info


class ConfusionMatrix(tf.Module):
  """A [num_classes, num_classes] int64 confusion matrix, rows = ground truth.

  Works under a distribution strategy: `update` adds a replica's batch to a
  SUM-aggregated variable.
  """

  def __init__(self, num_classes: int,
               ignore_label: int = dataset_info.IGNORE_LABEL,
               name: str = 'confusion_matrix'):
    super().__init__(name=name)
    self.num_classes = num_classes
    self.ignore_label = ignore_label
    self.matrix = tf.Variable(
        tf.zeros([num_classes, num_classes], tf.int64), trainable=False,
        synchronization=tf.VariableSynchronization.ON_READ,
        aggregation=tf.VariableAggregation.SUM, name='matrix')

  def update(self, labels: tf.Tensor, predictions: tf.Tensor) -> None:
    """Adds a batch. labels, predictions: int [batch, height, width]."""
    labels = tf.reshape(tf.cast(labels, tf.int64), [-1])
    predictions = tf.reshape(tf.cast(predictions, tf.int64), [-1])
    # Ignored pixels get weight 0 (static shapes, so it compiles for TPU).
    valid = tf.not_equal(labels, self.ignore_label)
    labels = tf.where(valid, labels, tf.zeros_like(labels))
    batch_matrix = tf.math.confusion_matrix(
        labels, predictions, num_classes=self.num_classes,
        weights=tf.cast(valid, tf.int64), dtype=tf.int64)
    self.matrix.assign_add(batch_matrix)

  def reset(self) -> None:
    self.matrix.assign(tf.zeros_like(self.matrix))

  def result(self) -> np.ndarray:
    return np.asarray(tf.convert_to_tensor(self.matrix).numpy())


@dataclasses.dataclass
class SegmentationMetrics:
  """Metrics of one split.

  Attributes:
    miou: mean IoU over present classes (NaN if no class is present).
    per_class_iou: IoU per class, None for absent classes.
    pixel_accuracy: correctly classified valid pixels / valid pixels.
    num_valid_pixels: pixels with a label other than ignore.
  """
  miou: float
  per_class_iou: Sequence[Optional[float]]
  pixel_accuracy: float
  num_valid_pixels: int


def metrics_from_confusion_matrix(matrix: np.ndarray) -> SegmentationMetrics:
  """Computes mIoU, per-class IoU and pixel accuracy from a confusion matrix.

  Args:
    matrix: [num_classes, num_classes] counts, rows = ground truth, columns =
      prediction.
  """
  matrix = np.asarray(matrix, dtype=np.float64)
  true_positives = np.diag(matrix)
  ground_truth = matrix.sum(axis=1)
  predicted = matrix.sum(axis=0)
  union = ground_truth + predicted - true_positives
  per_class = [float(tp / u) if u > 0 else None
               for tp, u in zip(true_positives, union)]
  present = [iou for iou in per_class if iou is not None]
  miou = float(np.mean(present)) if present else float('nan')
  total = matrix.sum()
  accuracy = float(true_positives.sum() / total) if total > 0 else float('nan')
  return SegmentationMetrics(miou=miou, per_class_iou=per_class,
                             pixel_accuracy=accuracy,
                             num_valid_pixels=int(total))


def per_class_table(metrics: SegmentationMetrics,
                    class_names: Sequence[str]) -> str:
  """A printable per-class IoU table ('absent' for undefined IoUs)."""
  width = max([len('class')] + [len(name) for name in class_names])
  lines = [f'{"class":<{width}}  IoU (%)', '-' * (width + 9)]
  for name, iou in zip(class_names, metrics.per_class_iou):
    value = 'absent' if iou is None else f'{100.0 * iou:6.2f}'
    lines.append(f'{name:<{width}}  {value}')
  lines.append('-' * (width + 9))
  lines.append(f'{"mIoU":<{width}}  {100.0 * metrics.miou:6.2f}')
  lines.append(f'{"pixel acc.":<{width}}  {100.0 * metrics.pixel_accuracy:6.2f}')
  return '\n'.join(lines)


def per_class_dict(metrics: SegmentationMetrics,
                   class_names: Sequence[str]) -> Dict[str, Optional[float]]:
  return dict(zip(class_names, metrics.per_class_iou))
