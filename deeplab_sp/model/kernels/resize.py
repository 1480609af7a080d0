"""Bilinear resizing that keeps its input's dtype, also in its gradient.

The hypercolumn (arXiv 2309.16889, Sec. III-A) resizes endpoints and its
position embedding, the tokenization its relative position tables.

tf.image.resize returns float32 for any input; on a bfloat16 tensor (mixed
precision) its gradient, as XLA compiles it, comes back as float32 too, and
XLA then refuses to combine it with the bfloat16 tensors before the resize
("mixed precision is disallowed"): a training step with bfloat16 compute
would not compile for a TPU. Resizing an explicit float32 copy and casting
the result back gives the same numbers (the kernel computes in float32
anyway) with a gradient of the input's dtype.
"""

import tensorflow as tf


def bilinear(images: tf.Tensor, size) -> tf.Tensor:
  """tf.image.resize(images, size, 'bilinear') in the dtype of `images`.

  Args:
    images: [B, H, W, C] or [H, W, C], any float dtype.
    size: (height, width) of the result.
  """
  resized = tf.image.resize(tf.cast(images, tf.float32), size,
                            method='bilinear')
  return tf.cast(resized, images.dtype)
