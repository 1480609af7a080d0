"""GELU in the form that is fastest on CPU.

The hypercolumn MLPs (arXiv 2309.16889, Sec. III-A) apply a GELU to the
largest tensors of the decoder.
"""

import tensorflow as tf

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
  return features * (0.5 + 0.5 * tf.math.erf(
      features * tf.cast(_INVERSE_SQRT_2, features.dtype)))
