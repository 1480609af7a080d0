"""Streaming confusion matrix and mIoU (the Cityscapes benchmark's definition).

mIoU = mean over classes c of TP_c / (TP_c + FP_c + FN_c), accumulated over
the whole split (not averaged per image); pixel accuracy = sum TP / number of
valid pixels. A class that appears neither in the ground truth nor in the
predictions of the whole split has an undefined IoU: it is reported as
absent (None) and excluded from the mean, never counted as 0 or 1.

Per-class accuracy (the class's recall) = TP_c / (TP_c + FN_c), over the
same whole-split matrix, and mean class accuracy is its mean over the
classes present in the ground truth: the "class average" accuracy that the
road-scene benchmarks (CamVid / SegNet) report beside the pixel ("global")
accuracy. A class absent from the ground truth has an undefined accuracy
(None, excluded from the mean) even if it was predicted: its false
positives lower its IoU, not its accuracy. Ignore pixels count nowhere.
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
    per_class_accuracy: TP / ground-truth pixels per class (recall), None
      for classes absent from the ground truth.
    mean_class_accuracy: mean of per_class_accuracy over the classes
      present in the ground truth (NaN if none is).
  """
  miou: float
  per_class_iou: Sequence[Optional[float]]
  pixel_accuracy: float
  num_valid_pixels: int
  per_class_accuracy: Sequence[Optional[float]]
  mean_class_accuracy: float


def metrics_from_confusion_matrix(matrix: np.ndarray) -> SegmentationMetrics:
  """Computes the SegmentationMetrics of a confusion matrix.

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
  class_accuracy = [float(tp / gt) if gt > 0 else None
                    for tp, gt in zip(true_positives, ground_truth)]
  in_ground_truth = [value for value in class_accuracy if value is not None]
  mean_class_accuracy = (float(np.mean(in_ground_truth)) if in_ground_truth
                         else float('nan'))
  return SegmentationMetrics(miou=miou, per_class_iou=per_class,
                             pixel_accuracy=accuracy,
                             num_valid_pixels=int(total),
                             per_class_accuracy=class_accuracy,
                             mean_class_accuracy=mean_class_accuracy)


def _percent(value: Optional[float]) -> str:
  """A fraction as a 6-wide percentage; 'absent' for None."""
  return 'absent' if value is None else f'{100.0 * value:6.2f}'


def per_class_table(metrics: SegmentationMetrics,
                    class_names: Sequence[str]) -> str:
  """A printable table: IoU and accuracy (recall) per class, then the means.

  'absent' marks an undefined value (see the module docstring: a class
  absent from the ground truth has no accuracy, one absent from both the
  ground truth and the predictions no IoU either).
  """
  summary = ('mIoU', 'mean class acc.', 'pixel acc.')
  width = max([len('class')] + [len(name) for name in class_names] +
              [len(name) for name in summary])
  rule = '-' * (width + 19)
  lines = [f'{"class":<{width}}  IoU (%)  acc. (%)', rule]
  for name, iou, accuracy in zip(class_names, metrics.per_class_iou,
                                 metrics.per_class_accuracy):
    lines.append(f'{name:<{width}}  {_percent(iou):>7}  '
                 f'{_percent(accuracy):>8}')
  lines.append(rule)
  for name, value in zip(summary, (metrics.miou, metrics.mean_class_accuracy,
                                   metrics.pixel_accuracy)):
    lines.append(f'{name:<{width}}  {100.0 * value:7.2f}')
  return '\n'.join(lines)


def per_class_dict(metrics: SegmentationMetrics,
                   class_names: Sequence[str]) -> Dict[str, Optional[float]]:
  """{class name: IoU (None: absent)}."""
  return dict(zip(class_names, metrics.per_class_iou))


def per_class_accuracy_dict(metrics: SegmentationMetrics,
                            class_names: Sequence[str]
                           ) -> Dict[str, Optional[float]]:
  """{class name: accuracy (None: absent from the ground truth)}."""
  return dict(zip(class_names, metrics.per_class_accuracy))
