"""mIoU near region boundaries and inside regions (a "trimap" evaluation).

Whether a model loses accuracy at the borders between regions or inside
them is the question behind comparing a superpixel decoder with per-pixel
ones: a superpixel that straddles a border mislabels a band along it, while
a weak classifier mislabels whole regions. The band is measured on the
ground truth alone, so every model is scored on the same pixels:

  boundary pixel: a labelled pixel with a labelled 8-neighbour of another
    class (a border with the ignore label is no boundary: the ignore label
    marks what is not annotated, and padding);
  band of width w: the labelled pixels within Chebyshev distance w of a
    boundary pixel (a (2w+1) x (2w+1) dilation);
  interior: every other labelled pixel.

Each part has its own confusion matrix over the whole split, with the
definitions of metrics.py (mIoU over the classes present in that part).
"""

from typing import Dict

import tensorflow as tf

from deeplab_sp.trainer import metrics as metrics_lib

SECTION = 'boundary_band'
PARTS = ('band', 'interior')


def band_mask(labels: tf.Tensor, width: int, ignore_label: int) -> tf.Tensor:
  """True at the labelled pixels within `width` of a class boundary.

  Args:
    labels: int [batch, height, width].
    width: the band's half width in pixels, >= 1.
    ignore_label: the label of unlabelled pixels.

  Returns:
    bool [batch, height, width].
  """
  labels = tf.cast(labels, tf.float32)[..., tf.newaxis]
  valid = tf.not_equal(labels, float(ignore_label))
  # Neighbourhood maximum and minimum over the labelled pixels only: the
  # ignore label is moved out of the way of each (below every class for the
  # maximum, above every class for the minimum).
  low = tf.where(valid, labels, -1.0)
  high = tf.where(valid, labels, float(ignore_label) + 1.0)
  window = dict(ksize=3, strides=1, padding='SAME')
  largest = tf.nn.max_pool2d(low, **window)
  smallest = -tf.nn.max_pool2d(-high, **window)
  boundary = tf.logical_and(valid, tf.logical_or(
      tf.greater(largest, labels), tf.less(smallest, labels)))
  near = tf.nn.max_pool2d(tf.cast(boundary, tf.float32),
                          ksize=2 * width + 1, strides=1, padding='SAME')
  return tf.logical_and(tf.greater(near, 0.0), valid)[..., 0]


class BoundaryBandConfusion(tf.Module):
  """Two confusion matrices: the band around class boundaries, the rest."""

  def __init__(self, num_classes: int, width: int, ignore_label: int):
    super().__init__(name='boundary_band')
    if width < 1:
      raise ValueError(f'The band width must be >= 1 pixel, not {width}.')
    self.width = width
    self.ignore_label = ignore_label
    self.band = metrics_lib.ConfusionMatrix(num_classes, ignore_label,
                                            name='band_confusion')
    self.interior = metrics_lib.ConfusionMatrix(num_classes, ignore_label,
                                                name='interior_confusion')

  def update(self, labels: tf.Tensor, predictions: tf.Tensor) -> None:
    """Adds a batch. labels, predictions: int [batch, height, width]."""
    labels = tf.cast(labels, tf.int32)
    in_band = band_mask(labels, self.width, self.ignore_label)
    ignore = tf.fill(tf.shape(labels), self.ignore_label)
    self.band.update(tf.where(in_band, labels, ignore), predictions)
    self.interior.update(tf.where(in_band, ignore, labels), predictions)

  def reset(self) -> None:
    self.band.reset()
    self.interior.reset()

  def results(self, class_names) -> Dict:
    """The eval_results.json section: width, and per part the metrics."""
    section = {'width_pixels': self.width}
    for part in PARTS:
      metrics = metrics_lib.metrics_from_confusion_matrix(
          getattr(self, part).result())
      section[part] = {
          'miou': metrics.miou,
          'pixel_accuracy': metrics.pixel_accuracy,
          'mean_class_accuracy': metrics.mean_class_accuracy,
          'num_valid_pixels': metrics.num_valid_pixels,
          'per_class_iou': metrics_lib.per_class_dict(metrics, class_names),
      }
    return section
