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

import tensorflow as tf

from deeplab_sp.data import dataset_info
from deeplab_sp.model.kernels import xla_islands

# Paper Sec. IV-A: the loss keeps the 20% hardest pixels.
DEFAULT_TOP_K_PERCENT = 20.0


def per_image_top_k_cross_entropy(
    labels: tf.Tensor,
    logits: tf.Tensor,
    top_k_percent: float = DEFAULT_TOP_K_PERCENT,
    ignore_label: int = dataset_info.IGNORE_LABEL,
    use_xla: bool = True) -> tf.Tensor:
  """Per image, the mean cross-entropy of its top-k% hardest valid pixels.

  Of an image with n valid pixels, the ceil(k / 100 * n) pixels with the
  largest cross-entropy are kept and their losses averaged (of equal
  losses, those of the lower pixel indices, as tf.math.top_k orders them).
  An image without valid pixels has loss 0.

  Args:
    labels: int [batch, height, width] train ids; `ignore_label` is skipped.
    logits: float [batch, height, width, num_classes] unnormalised scores.
    top_k_percent: percentage in (0, 100] of valid pixels kept.
    ignore_label: label value excluded from the loss.
    use_xla: compile the selection of the hardest pixels with XLA (the
      model's kernels.xla_islands).

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
    # Every valid pixel: no selection needed.
    total = tf.reduce_sum(tf.where(valid, pixel_loss, 0.0), axis=1)
    return tf.math.divide_no_nan(total, tf.cast(num_valid, tf.float32))
  fraction = top_k_percent / 100.0
  k = tf.cast(tf.math.ceil(tf.cast(num_valid, tf.float32) * fraction),
              tf.int32)  # [B]
  keep = _hardest_pixels(tf.stop_gradient(pixel_loss), valid, k,
                         use_xla=use_xla)
  total = tf.reduce_sum(tf.where(keep, pixel_loss, 0.0), axis=1)
  return tf.math.divide_no_nan(total, tf.cast(k, tf.float32))


# Bits of a float32 besides its sign.
_MAGNITUDE_BITS = 0x7fffffff


@xla_islands.fused
def _hardest_pixels(losses, valid, k):
  """bool [B, N]: per image, its k largest `losses` among the valid pixels.

  The same pixels as tf.math.top_k over the valid losses: the k largest,
  and of equal losses those of the lower indices. Found without sorting
  (top_k sorts on CPU, one image at a time, seconds at the input resolution
  of Cityscapes): the k-th largest loss is found bit by bit in 32 counting
  passes over the image, then the pixels above it are kept, and the first
  of the pixels equal to it, as many as k still needs.

  Args:
    losses: float32 [B, N].
    valid: bool [B, N].
    k: int32 [B], at most the number of valid pixels of each image.
  """
  # Float order as integer order: -0.0 as +0.0; negative floats (their
  # magnitude bits reversed) below the positive ones; all shifted to
  # [0, 2^32) in int64, and invalid pixels at -1, below every loss.
  losses = tf.where(tf.equal(losses, 0.0), tf.zeros_like(losses), losses)
  bits = tf.bitcast(losses, tf.int32)
  keys = tf.where(bits < 0, tf.bitwise.bitwise_xor(bits, _MAGNITUDE_BITS),
                  bits)
  keys = tf.cast(keys, tf.int64) + 2**31
  keys = tf.where(valid, keys, tf.constant(-1, tf.int64))
  k = k[:, tf.newaxis]
  # The largest threshold t with at least k keys >= t: the k-th largest key.
  threshold = tf.zeros_like(keys[:, :1])
  for bit in range(31, -1, -1):
    candidate = tf.bitwise.bitwise_or(threshold,
                                      tf.constant(1 << bit, tf.int64))
    count = tf.reduce_sum(tf.cast(keys >= candidate, tf.int32), axis=1,
                          keepdims=True)
    threshold = tf.where(count >= k, candidate, threshold)
  above = keys > threshold
  ties = tf.equal(keys, threshold)
  # Of the ties, the first k - (number above) in pixel order.
  needed = k - tf.reduce_sum(tf.cast(above, tf.int32), axis=1, keepdims=True)
  tie_rank = tf.cumsum(tf.cast(ties, tf.int32), axis=1, exclusive=True)
  return above | (ties & (tie_rank < needed))


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
