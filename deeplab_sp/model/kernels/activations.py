"""GELU in the form that is fastest on CPU, and in portable forms.

The hypercolumn MLPs (arXiv 2309.16889, Sec. III-A) apply a GELU to the
largest tensors of the decoder; the feed-forward blocks of the tokenization
and the classifier apply one to the small superpixel tensors. While
portable_ops are enabled (the ONNX and TFLite exports), both functions
below take the form those runtimes have as a built-in op.
"""

import tensorflow as tf

from deeplab_sp.model.kernels import portable_ops
from deeplab_sp.model.kernels import xla_islands

_INVERSE_SQRT_2 = 0.7071067811865476


@xla_islands.fused
def gelu(features):
  """The exact GELU, x * Phi(x) = x * (1 + erf(x / sqrt(2))) / 2.

  tf.nn.gelu(approximate=False) evaluates it through erfc, whose CPU kernel
  is slower than erf's on the hypercolumn's large tensors. The two forms
  differ by float32 round-off (at most ~1e-6 absolute, in the
  far negative tail where GELU is ~0).
  """
  features = tf.convert_to_tensor(features)
  if portable_ops.is_enabled():
    return portable_gelu(features)
  return features * (0.5 + 0.5 * tf.math.erf(
      features * tf.cast(_INVERSE_SQRT_2, features.dtype)))


def keras_gelu(features):
  """tf_keras' 'gelu' activation: tf.nn.gelu(approximate=False).

  The activation of the feed-forward blocks, as the models were trained
  with it; the portable form while portable_ops are enabled.
  """
  features = tf.convert_to_tensor(features)
  if portable_ops.is_enabled():
    return portable_gelu(features)
  return tf.nn.gelu(features, approximate=False)


def portable_gelu(features):
  """The exact GELU as 0.5 * x * (1 + erf(x / sqrt(2))).

  The operand order matters: it is the pattern the TFLite converter turns
  into its built-in GELU op (it has no Erf op; our CPU form above does not
  match), and ONNX has Erf.
  """
  features = tf.convert_to_tensor(features)
  inverse_sqrt_2 = tf.cast(_INVERSE_SQRT_2, features.dtype)
  return 0.5 * features * (1.0 + tf.math.erf(features * inverse_sqrt_2))
