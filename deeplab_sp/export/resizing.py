"""Size handling of the serving signatures: fit, pad, and back.

The model is built for one input size (H_model, W_model). An image of any
size is resized, keeping its aspect ratio, to fit inside it (bilinear;
scale = min(H_model / h, W_model / w), up or down) and padded bottom/right
with the value the input pipeline pads with, so the model sees what it saw
in training and evaluation (`prepare`). The model's outputs are cropped to
the resized image, resized back to the image's own size (logits bilinear,
before the argmax and softmax; superpixel ids nearest neighbour) and padded
to the largest image of the batch (`restore_batch`).
"""

from typing import Sequence, Tuple

import tensorflow as tf

from deeplab_sp.data import dataset_info
from deeplab_sp.data import preprocessing

IGNORE_LABEL = dataset_info.IGNORE_LABEL
# Padding value of 'superpixel_ids' outside an image (no superpixel).
SUPERPIXEL_ID_PAD = -1


def fit_size(size: tf.Tensor, input_size: Sequence[int]) -> tf.Tensor:
  """int32 [2] image size -> int32 [2] size that fits the model input."""
  model_size = tf.constant(input_size, tf.float32)
  scale = tf.reduce_min(model_size / tf.cast(size, tf.float32))
  fitted = tf.round(tf.cast(size, tf.float32) * scale)
  return tf.cast(tf.clip_by_value(fitted, 1.0, model_size), tf.int32)


def prepare(image: tf.Tensor, input_size: Sequence[int]
           ) -> Tuple[tf.Tensor, tf.Tensor]:
  """float32 [h, w, 3] -> (padded [H_model, W_model, 3], fitted size [2])."""
  size = tf.shape(image)[:2]
  fitted = fit_size(size, input_size)
  resized = tf.cond(
      tf.reduce_all(tf.equal(fitted, size)),
      lambda: image,
      lambda: tf.image.resize(image, fitted, method='bilinear'))
  padding = tf.stack([[0, input_size[0] - fitted[0]],
                      [0, input_size[1] - fitted[1]], [0, 0]])
  padded = tf.pad(resized, padding,
                  constant_values=preprocessing.PAD_PIXEL_VALUE)
  return tf.ensure_shape(padded, [*input_size, 3]), fitted


def restore_batch(logits: tf.Tensor, ids: tf.Tensor, fitted: tf.Tensor,
                  sizes: tf.Tensor, num_classes: int,
                  include_superpixel_ids: bool, include_probabilities: bool
                 ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """The model's outputs at each image's own size, padded to the batch's.

  Args:
    logits: float32 [B, H_model, W_model, K].
    ids: int32 [B, H_model, W_model] superpixel ids (any stand-in when not
      include_superpixel_ids).
    fitted: int32 [B, 2], the size of each resized image inside the input.
    sizes: int32 [B, 2], each image's own size.
    num_classes: K.
    include_superpixel_ids: restore `ids` (else the result's ids are an
      empty stand-in).
    include_probabilities: compute the softmax (else an empty stand-in: it
      is a softmax over every pixel, not computed when not exported).

  Returns:
    (semantic int32 [B, Hmax, Wmax] padded with IGNORE_LABEL,
     superpixel ids int32 [B, Hmax, Wmax] padded with SUPERPIXEL_ID_PAD,
     probabilities float32 [B, Hmax, Wmax, K] padded with 0).
  """
  # [2]; zeros for an empty batch (whose outputs are empty).
  max_size = tf.maximum(tf.reduce_max(sizes, axis=0), 0)

  def restore(args):
    image_logits, image_ids, image_fitted, size = args
    image_logits = image_logits[:image_fitted[0], :image_fitted[1]]
    same = tf.reduce_all(tf.equal(image_fitted, size))
    image_logits = tf.cond(
        same, lambda: image_logits,
        lambda: tf.image.resize(image_logits, size, method='bilinear'))
    # [h, w, K]
    semantic = tf.argmax(image_logits, axis=-1, output_type=tf.int32)
    pad = [[0, max_size[0] - size[0]], [0, max_size[1] - size[1]]]
    semantic = tf.pad(semantic, pad, constant_values=IGNORE_LABEL)
    if include_superpixel_ids:
      image_ids = image_ids[:image_fitted[0], :image_fitted[1], tf.newaxis]
      image_ids = tf.cond(
          same, lambda: image_ids,
          lambda: tf.image.resize(image_ids, size, method='nearest'))[..., 0]
      # [h, w]
      image_ids = tf.pad(image_ids, pad, constant_values=SUPERPIXEL_ID_PAD)
    if not include_probabilities:
      return semantic, image_ids, tf.zeros([0, 0, num_classes])
    probabilities = tf.nn.softmax(image_logits, axis=-1)
    probabilities = tf.pad(probabilities, pad + [[0, 0]])
    return semantic, image_ids, probabilities

  def restore_all():
    return tf.map_fn(
        restore, (logits, ids, fitted, sizes),
        fn_output_signature=(
            tf.TensorSpec([None, None], tf.int32),
            tf.TensorSpec([None, None], tf.int32),
            tf.TensorSpec([None, None, num_classes], tf.float32)))

  def empty():
    # map_fn cannot stack zero outputs of unknown size.
    return (tf.zeros([0, 0, 0], tf.int32), tf.zeros([0, 0, 0], tf.int32),
            tf.zeros([0, 0, 0, num_classes]))

  return tf.cond(tf.equal(tf.shape(sizes)[0], 0), empty, restore_all)
