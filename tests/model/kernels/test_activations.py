"""The erf form of GELU equals tf.nn.gelu's exact GELU."""

import numpy as np
import tensorflow as tf

from deeplab_sp.model.kernels import activations


def test_gelu_matches_tf_nn_gelu_values_and_gradients():
  x = tf.constant(np.linspace(-12.0, 12.0, 4001).astype(np.float32))
  results = []
  for function in (activations.gelu,
                   lambda t: tf.nn.gelu(t, approximate=False)):
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = function(x)
    results.append((y.numpy(), tape.gradient(y, x).numpy()))
  (y_ours, dy_ours), (y_tf, dy_tf) = results
  np.testing.assert_allclose(y_ours, y_tf, rtol=1e-5, atol=2e-6)
  np.testing.assert_allclose(dy_ours, dy_tf, rtol=1e-5, atol=2e-6)


def test_gelu_keeps_half_precision():
  x = tf.constant([-1.0, 0.0, 2.0], tf.float16)
  y = activations.gelu(x)
  assert y.dtype == tf.float16
  np.testing.assert_allclose(y.numpy(), [-0.1587, 0.0, 1.9545], atol=2e-3)
