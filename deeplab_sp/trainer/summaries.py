"""TF image summaries: input, prediction, ground truth, superpixel boundaries.

TF (graph-compatible) counterparts of deeplab_sp.utils.visualization, so the
trainer can build summary images without leaving TensorFlow.
"""

from typing import Sequence

import numpy as np
import tensorflow as tf

from deeplab_sp.data import dataset_info

# Colour drawn on superpixel boundaries (yellow, as in the paper's figures).
BOUNDARY_COLOR = (255, 255, 0)
# Colour of ignored ground-truth pixels.
IGNORE_COLOR = (0, 0, 0)


def colorize(labels: tf.Tensor, colormap: Sequence[Sequence[int]]) -> tf.Tensor:
  """int [batch, height, width] -> uint8 [batch, height, width, 3]."""
  table = np.zeros([256, 3], np.uint8)
  table[:len(colormap)] = np.asarray(colormap, np.uint8)[:256]
  table[dataset_info.IGNORE_LABEL] = IGNORE_COLOR
  labels = tf.clip_by_value(tf.cast(labels, tf.int32), 0, 255)
  return tf.gather(tf.constant(table), labels)


def boundaries(ids: tf.Tensor) -> tf.Tensor:
  """bool [batch, height, width]: pixel differs from its right/lower neighbour."""
  right = tf.not_equal(ids[:, :, :-1], ids[:, :, 1:])
  right = tf.pad(right, [[0, 0], [0, 0], [0, 1]])
  down = tf.not_equal(ids[:, :-1, :], ids[:, 1:, :])
  down = tf.pad(down, [[0, 0], [0, 1], [0, 0]])
  return tf.logical_or(right, down)


def overlay_boundaries(images: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
  """Draws superpixel boundaries on float [b, h, w, 3] 0..255 images -> uint8."""
  images = tf.cast(tf.clip_by_value(images, 0.0, 255.0), tf.uint8)
  color = tf.constant(BOUNDARY_COLOR, tf.uint8)
  mask = boundaries(ids)[..., tf.newaxis]
  return tf.where(mask, color, images)


def write_image_summaries(prefix: str, images: tf.Tensor, labels: tf.Tensor,
                          outputs, colormap, step: int,
                          max_outputs: int) -> None:
  """Writes the four image summaries to the default summary writer."""
  predictions = tf.argmax(outputs['semantic_logits'], axis=-1,
                          output_type=tf.int32)
  tf.summary.image(f'{prefix}/input',
                   tf.cast(tf.clip_by_value(images, 0.0, 255.0), tf.uint8),
                   step=step, max_outputs=max_outputs)
  tf.summary.image(f'{prefix}/prediction', colorize(predictions, colormap),
                   step=step, max_outputs=max_outputs)
  tf.summary.image(f'{prefix}/ground_truth', colorize(labels, colormap),
                   step=step, max_outputs=max_outputs)
  tf.summary.image(f'{prefix}/superpixels',
                   overlay_boundaries(images, outputs['superpixel_ids']),
                   step=step, max_outputs=max_outputs)
