"""GELU in the form that is fastest on CPU, and in portable forms.

The hypercolumn MLPs (arXiv 2309.16889, Sec. III-A) apply a GELU to the
largest tensors of the decoder; the feed-forward blocks of the tokenization
and the classifier apply one to the small superpixel tensors. Each
function takes the model's kernel profile (profile.py): in a PORTABLE
model (the ONNX and TFLite exports) both take the form those runtimes have
as a built-in op.
"""

import functools

import tensorflow as tf
import tf_keras

from deeplab_sp.model.kernels import profile
from deeplab_sp.model.kernels import xla_islands

_INVERSE_SQRT_2 = 0.7071067811865476


def gelu(features, kernels: profile.KernelProfile):
  """The exact GELU, x * Phi(x), in the form of `kernels`.

  CPU forms: x * (1 + erf(x / sqrt(2))) / 2, an XLA island in graphs where
  the profile has them; tf.nn.gelu(approximate=False) evaluates it through
  erfc, whose CPU kernel is slower than erf's on the hypercolumn's large
  tensors. The forms differ by float32 round-off (at most ~1e-6 absolute,
  in the far negative tail where GELU is ~0).
  """
  features = tf.convert_to_tensor(features)
  if kernels.portable:
    return portable_gelu(features)
  if kernels.cpu_forms:
    return _erf_gelu(features, use_xla=kernels.xla_islands)
  return tf.nn.gelu(features, approximate=False)


@xla_islands.fused
def _erf_gelu(features):
  return features * (0.5 + 0.5 * tf.math.erf(
      features * tf.cast(_INVERSE_SQRT_2, features.dtype)))


def keras_gelu(features, kernels: profile.KernelProfile):
  """tf_keras' 'gelu' activation: tf.nn.gelu(approximate=False).

  The activation of the feed-forward blocks, as the models were trained
  with it; the portable form in a PORTABLE model.
  """
  features = tf.convert_to_tensor(features)
  if kernels.portable:
    return portable_gelu(features)
  return tf.nn.gelu(features, approximate=False)


def activation(function, kernels: profile.KernelProfile, name: str
              ) -> tf_keras.layers.Activation:
  """A Keras Activation layer of `function` (gelu, keras_gelu) in the form
  of `kernels`."""
  return tf_keras.layers.Activation(
      functools.partial(function, kernels=kernels), name=name)


def portable_gelu(features):
  """The exact GELU as 0.5 * x * (1 + erf(x / sqrt(2))).

  The operand order matters: it is the pattern the TFLite converter turns
  into its built-in GELU op (it has no Erf op; our CPU form above does not
  match), and ONNX has Erf.
  """
  features = tf.convert_to_tensor(features)
  inverse_sqrt_2 = tf.cast(_INVERSE_SQRT_2, features.dtype)
  return 0.5 * features * (1.0 + tf.math.erf(features * inverse_sqrt_2))
