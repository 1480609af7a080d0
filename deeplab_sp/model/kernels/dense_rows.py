"""Per-position layers applied to features seen as a [rows, C] matrix.

The Dense layers of the hypercolumn MLPs, the tokenization (arXiv
2309.16889, Sec. III-A, III-B) and the classifier's feed-forward blocks act
on every pixel or superpixel alone. `on_rows` presents them a matrix, the
form that CPU backends run as one fused kernel.
"""

import tensorflow as tf


def on_rows(function, features):
  """`function` of [..., C] features seen as a [rows, C] matrix.

  On a matrix a Dense layer is one MatMul that grappler fuses with its
  BiasAdd (and a following GELU or ReLU) into one oneDNN kernel on CPU; on a
  [B, ..., C] tensor it is a tensordot whose bias and activation are
  separate passes. `function` must act on each row alone (Dense, layer
  norm, activations, dropout).
  """
  if not features.shape or features.shape.rank == 2:
    return function(features)
  result = function(tf.reshape(features, [-1, features.shape[-1]]))
  shape = tf.concat([tf.shape(features)[:-1], tf.shape(result)[-1:]], axis=0)
  reshaped = tf.reshape(result, shape)
  reshaped.set_shape(features.shape[:-1].concatenate(result.shape[-1:]))
  return reshaped
