"""Top-k% hardest-pixel softmax cross-entropy (paper Sec. IV-A).

The SP-Transformer is trained with a softmax cross-entropy on the dense
(input-resolution) semantic logits, averaged over only the k% valid pixels
with the largest loss ("hard pixel mining", k = 20 in the paper). Pixels with
the ignore label never contribute.
"""

import tensorflow as tf

from deeplab_sp.data import dataset_info

# Paper Sec. IV-A: the loss keeps the 20% hardest pixels.
DEFAULT_TOP_K_PERCENT = 20.0


def top_k_cross_entropy(labels: tf.Tensor,
                        logits: tf.Tensor,
                        top_k_percent: float = DEFAULT_TOP_K_PERCENT,
                        ignore_label: int = dataset_info.IGNORE_LABEL
                       ) -> tf.Tensor:
  """Mean cross-entropy of the top-k% hardest valid pixels of a batch.

  The k% is taken over the valid pixels of the whole (per-replica) batch:
  ceil(k / 100 * num_valid) pixels with the largest cross-entropy are kept
  and their losses averaged. With no valid pixel the loss is 0.

  Args:
    labels: int [batch, height, width] train ids; `ignore_label` is skipped.
    logits: float [batch, height, width, num_classes] unnormalised scores.
    top_k_percent: percentage in (0, 100] of valid pixels kept.
    ignore_label: label value excluded from the loss.

  Returns:
    A float32 scalar.
  """
  if not 0.0 < top_k_percent <= 100.0:
    raise ValueError(f'top_k_percent must be in (0, 100], got {top_k_percent};'
                     ' set trainer_options.top_k_percent_pixels accordingly.')
  logits = tf.cast(logits, tf.float32)
  num_classes = tf.shape(logits)[-1]
  labels = tf.reshape(tf.cast(labels, tf.int32), [-1])  # [N]
  logits = tf.reshape(logits, [-1, num_classes])  # [N, K]
  valid = tf.not_equal(labels, ignore_label)
  safe_labels = tf.where(valid, labels, tf.zeros_like(labels))
  pixel_loss = tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=safe_labels, logits=logits)  # [N]
  # Invalid pixels get -1 so they sort after every valid loss (losses >= 0).
  pixel_loss = tf.where(valid, pixel_loss, -tf.ones_like(pixel_loss))
  num_valid = tf.reduce_sum(tf.cast(valid, tf.int32))
  k = tf.cast(tf.math.ceil(tf.cast(num_valid, tf.float32) *
                           (top_k_percent / 100.0)), tf.int32)
  k = tf.minimum(k, num_valid)
  top_losses, _ = tf.math.top_k(pixel_loss, k=k, sorted=False)  # [k]
  return tf.math.divide_no_nan(tf.reduce_sum(top_losses),
                               tf.cast(k, tf.float32))
