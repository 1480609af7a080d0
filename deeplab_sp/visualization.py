"""Visualisation of label maps and superpixels (paper Fig. 4 style).

numpy functions for tools (predict.py) and TF counterparts (suffix `_tf`,
batched, graph-compatible) for image summaries:

  colorize_label_map: train ids [H, W] -> colour image with a dataset's
    colormap (DatasetInfo.colormap); IGNORE_LABEL pixels are black.
  superpixel_boundaries: hard superpixel ids [H, W] -> bool mask of pixels
    whose right or lower neighbour belongs to another superpixel.
  overlay_boundaries: draws that mask in one colour on an image.
"""

from typing import Sequence

import numpy as np
import tensorflow as tf

from deeplab_sp.data import dataset_info

# Colour of superpixel boundaries (yellow, as in the paper's Fig. 4).
BOUNDARY_COLOR = (255, 255, 0)
# Colour of IGNORE_LABEL pixels.
IGNORE_COLOR = (0, 0, 0)
# Label values are looked up in a table of this many colours (uint8 ids).
_TABLE_SIZE = 256


def _color_table(colormap: Sequence[Sequence[int]]) -> np.ndarray:
  """uint8 [256, 3]: colormap for ids 0..K-1, IGNORE_COLOR elsewhere."""
  colormap = np.asarray(colormap, np.int64)
  if colormap.ndim != 2 or colormap.shape[1] != 3 or len(colormap) > (
      dataset_info.IGNORE_LABEL):
    raise ValueError('colormap must be a sequence of at most '
                     f'{dataset_info.IGNORE_LABEL} (r, g, b) triples, got '
                     f'shape {colormap.shape}.')
  if colormap.min(initial=0) < 0 or colormap.max(initial=0) > 255:
    raise ValueError('colormap values must be in 0..255.')
  table = np.tile(np.asarray(IGNORE_COLOR, np.uint8), [_TABLE_SIZE, 1])
  table[:len(colormap)] = colormap.astype(np.uint8)
  return table


def colorize_label_map(labels: np.ndarray,
                       colormap: Sequence[Sequence[int]]) -> np.ndarray:
  """Colours a label map.

  Args:
    labels: int [height, width], train ids 0..len(colormap)-1 or
      IGNORE_LABEL.
    colormap: one (r, g, b) per train id.

  Returns:
    uint8 [height, width, 3].

  Raises:
    ValueError: if labels is not 2-D or holds an id without a colour.
  """
  labels = np.asarray(labels)
  if labels.ndim != 2:
    raise ValueError(f'labels must be [height, width], got {labels.shape}.')
  table = _color_table(colormap)
  valid = (labels >= 0) & ((labels < len(colormap)) |
                           (labels == dataset_info.IGNORE_LABEL))
  if not valid.all():
    bad = np.unique(labels[~valid])[:5].tolist()
    raise ValueError(f'labels hold ids {bad} outside 0..{len(colormap) - 1} '
                     f'and {dataset_info.IGNORE_LABEL} (ignore); use the '
                     'colormap of the dataset the model was trained on.')
  return table[labels.astype(np.int64)]


def superpixel_boundaries(ids: np.ndarray) -> np.ndarray:
  """bool [height, width]: true where the right or lower neighbour differs.

  Args:
    ids: int [height, width] hard superpixel ids.
  """
  ids = np.asarray(ids)
  if ids.ndim != 2:
    raise ValueError(f'ids must be [height, width], got {ids.shape}.')
  mask = np.zeros(ids.shape, bool)
  mask[:, :-1] |= ids[:, :-1] != ids[:, 1:]
  mask[:-1, :] |= ids[:-1, :] != ids[1:, :]
  return mask


def overlay_boundaries(image: np.ndarray, ids: np.ndarray,
                       color: Sequence[int] = BOUNDARY_COLOR) -> np.ndarray:
  """Draws superpixel boundaries on an image.

  Args:
    image: uint8 [height, width, 3].
    ids: int [height, width] hard superpixel ids of the same size.
    color: (r, g, b) of the boundary pixels.

  Returns:
    uint8 [height, width, 3]; a copy, `image` is not modified.
  """
  image = np.asarray(image)
  ids = np.asarray(ids)
  if image.ndim != 3 or image.shape[-1] != 3 or image.shape[:2] != ids.shape:
    raise ValueError(f'image {image.shape} must be [height, width, 3] with '
                     f'the size of ids {ids.shape}.')
  output = np.array(image, np.uint8, copy=True)
  output[superpixel_boundaries(ids)] = np.asarray(color, np.uint8)
  return output


def colorize_label_map_tf(labels: tf.Tensor,
                          colormap: Sequence[Sequence[int]]) -> tf.Tensor:
  """int [batch, height, width] -> uint8 [batch, height, width, 3].

  Ids without a colour (outside 0..K-1) are drawn in IGNORE_COLOR.
  """
  table = tf.constant(_color_table(colormap))
  labels = tf.cast(labels, tf.int32)
  in_table = tf.logical_and(labels >= 0, labels < _TABLE_SIZE)
  labels = tf.where(in_table, labels, dataset_info.IGNORE_LABEL)
  return tf.gather(table, labels)


def superpixel_boundaries_tf(ids: tf.Tensor) -> tf.Tensor:
  """int [batch, height, width] -> bool [batch, height, width]."""
  right = tf.not_equal(ids[:, :, :-1], ids[:, :, 1:])
  right = tf.pad(right, [[0, 0], [0, 0], [0, 1]])
  down = tf.not_equal(ids[:, :-1, :], ids[:, 1:, :])
  down = tf.pad(down, [[0, 0], [0, 1], [0, 0]])
  return tf.logical_or(right, down)


def overlay_boundaries_tf(images: tf.Tensor, ids: tf.Tensor,
                          color: Sequence[int] = BOUNDARY_COLOR) -> tf.Tensor:
  """Images [batch, height, width, 3] (uint8, or float 0..255) -> uint8."""
  if images.dtype != tf.uint8:
    images = tf.cast(tf.clip_by_value(tf.cast(images, tf.float32), 0.0, 255.0),
                     tf.uint8)
  mask = superpixel_boundaries_tf(ids)[..., tf.newaxis]
  return tf.where(mask, tf.constant(color, tf.uint8), images)
