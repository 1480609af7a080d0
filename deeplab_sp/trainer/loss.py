"""Top-k% hardest-pixel softmax cross-entropy (paper Sec. IV-A).

The SP-Transformer is trained with a softmax cross-entropy on the dense
(input-resolution) semantic logits, averaged over only the k% valid pixels
with the largest loss ("hard pixel mining", k = 20 in the paper). Pixels with
the ignore label never contribute.

The hardest pixels are chosen per image, as in DeepLab2's
compute_average_top_k_loss (the paper's codebase): each image contributes the
mean loss of its own k% hardest valid pixels, and the loss of a batch is the
mean of these per-image losses over the GLOBAL batch (global_batch_mean).
Choosing per image makes the loss, and its gradients, independent of how the
global batch is split over replicas: the paper trains with one image per core
on 32 cores, where a per-replica top-k would instead depend on the core count.

With top_k_percent = 100 an image's loss is the mean over its valid pixels.
The batch loss is then the plain mean over the valid pixels of the batch when
every image has the same number of valid pixels; when they differ (ignored
regions, crop padding), every image weighs the same, as in DeepLab2, instead
of every pixel.
"""

import math

import tensorflow as tf

from deeplab_sp.data import dataset_info

# Paper Sec. IV-A: the loss keeps the 20% hardest pixels.
DEFAULT_TOP_K_PERCENT = 20.0


def per_image_top_k_cross_entropy(
    labels: tf.Tensor,
    logits: tf.Tensor,
    top_k_percent: float = DEFAULT_TOP_K_PERCENT,
    ignore_label: int = dataset_info.IGNORE_LABEL) -> tf.Tensor:
  """Per image, the mean cross-entropy of its top-k% hardest valid pixels.

  Of an image with n valid pixels, the ceil(k / 100 * n) pixels with the
  largest cross-entropy are kept and their losses averaged. An image without
  valid pixels has loss 0.

  Args:
    labels: int [batch, height, width] train ids; `ignore_label` is skipped.
    logits: float [batch, height, width, num_classes] unnormalised scores.
    top_k_percent: percentage in (0, 100] of valid pixels kept.
    ignore_label: label value excluded from the loss.

  Returns:
    float32 [batch], the loss of every image.
  """
  if not 0.0 < top_k_percent <= 100.0:
    raise ValueError(f'top_k_percent must be in (0, 100], got {top_k_percent};'
                     ' set trainer_options.top_k_percent_pixels accordingly.')
  logits = tf.cast(logits, tf.float32)
  num_classes = tf.shape(logits)[-1]
  batch = tf.shape(labels)[0]
  labels = tf.reshape(tf.cast(labels, tf.int32), [batch, -1])  # [B, N]
  logits = tf.reshape(logits, [batch, -1, num_classes])  # [B, N, K]
  valid = tf.not_equal(labels, ignore_label)
  safe_labels = tf.where(valid, labels, tf.zeros_like(labels))
  pixel_loss = tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=safe_labels, logits=logits)  # [B, N]
  num_valid = tf.reduce_sum(tf.cast(valid, tf.int32), axis=1)  # [B]
  if top_k_percent == 100.0:
    # Every valid pixel: no sort needed.
    total = tf.reduce_sum(tf.where(valid, pixel_loss, 0.0), axis=1)
    return tf.math.divide_no_nan(total, tf.cast(num_valid, tf.float32))
  fraction = top_k_percent / 100.0
  k = tf.cast(tf.math.ceil(tf.cast(num_valid, tf.float32) * fraction),
              tf.int32)  # [B]
  # One top_k of the largest k any image can need (static when the image
  # size is, which XLA requires); each image then keeps its own first k.
  num_pixels = labels.shape[1]
  if num_pixels is None:
    num_pixels = tf.shape(labels)[1]
    max_k = tf.cast(tf.math.ceil(tf.cast(num_pixels, tf.float32) * fraction),
                    tf.int32)
  else:
    # +1: k above is rounded in float32.
    max_k = min(num_pixels, math.ceil(num_pixels * fraction) + 1)
  # Invalid pixels get -1 so they sort after every valid loss (losses >= 0).
  pixel_loss = tf.where(valid, pixel_loss, -tf.ones_like(pixel_loss))
  top_losses, _ = tf.math.top_k(pixel_loss, k=max_k, sorted=True)  # [B, max_k]
  keep = tf.range(tf.shape(top_losses)[1])[None, :] < k[:, None]
  total = tf.reduce_sum(tf.where(keep, top_losses, 0.0), axis=1)
  return tf.math.divide_no_nan(total, tf.cast(k, tf.float32))


def global_batch_mean(per_image_losses: tf.Tensor,
                      global_batch_size: tf.Tensor) -> tf.Tensor:
  """This replica's share of the mean loss over the global batch.

  Summed over replicas, the shares are the mean over all images of the global
  batch, and so are their gradients; each replica therefore differentiates its
  share as it is, without dividing by the number of replicas.

  Args:
    per_image_losses: float32 [local_batch], from
      per_image_top_k_cross_entropy.
    global_batch_size: the number of images of the step over all replicas
      (scalar; the sum of the local batch sizes).
  """
  return tf.math.divide_no_nan(tf.reduce_sum(per_image_losses),
                               tf.cast(global_batch_size, tf.float32))


def top_k_cross_entropy(labels: tf.Tensor,
                        logits: tf.Tensor,
                        top_k_percent: float = DEFAULT_TOP_K_PERCENT,
                        ignore_label: int = dataset_info.IGNORE_LABEL
                       ) -> tf.Tensor:
  """The loss of one (whole) batch: its per-image losses averaged.

  Args:
    labels: int [batch, height, width] train ids; `ignore_label` is skipped.
    logits: float [batch, height, width, num_classes] unnormalised scores.
    top_k_percent: percentage in (0, 100] of valid pixels kept per image.
    ignore_label: label value excluded from the loss.

  Returns:
    A float32 scalar.
  """
  per_image = per_image_top_k_cross_entropy(labels, logits, top_k_percent,
                                            ignore_label)
  return global_batch_mean(per_image, tf.shape(per_image)[0])
