"""The faster LayerNormalization equals tf_keras' (values, gradients, vars)."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from deeplab_sp.model.layers import layer_norm


def _pair(shape, epsilon):
  """Our layer and tf_keras', with the same random gamma and beta."""
  ours = layer_norm.LayerNormalization(epsilon=epsilon, name='norm')
  theirs = tf_keras.layers.LayerNormalization(epsilon=epsilon, name='norm')
  ours.build(shape)
  theirs.build(shape)
  rng = np.random.default_rng(0)
  for variable in ('gamma', 'beta'):
    value = rng.normal(size=shape[-1:]).astype(np.float32)
    getattr(ours, variable).assign(value)
    getattr(theirs, variable).assign(value)
  return ours, theirs


@pytest.mark.parametrize('epsilon', (1e-3, 1e-5))
def test_matches_tf_keras_values_and_gradients(epsilon):
  shape = (2, 5, 7, 16)
  ours, theirs = _pair(shape, epsilon)
  # An offset mean and a spread of scales, as residual streams have.
  x = tf.constant(np.random.default_rng(1).normal(
      3.0, 2.0, size=shape).astype(np.float32))
  cotangent = tf.constant(np.random.default_rng(2).normal(
      size=shape).astype(np.float32))
  results = []
  for layer in (ours, theirs):
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = layer(x)
      loss = tf.reduce_sum(y * cotangent)
    results.append([y] + tape.gradient(loss, [x, layer.gamma, layer.beta]))
  for a, b in zip(*results):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5)
  assert [v.name for v in ours.weights] == [v.name for v in theirs.weights]


def test_mixed_precision_matches_tf_keras():
  tf_keras.mixed_precision.set_global_policy('mixed_float16')
  try:
    ours, theirs = _pair((3, 8), 1e-5)
    x = tf.constant(np.random.default_rng(3).normal(
        size=(3, 8)).astype(np.float16))
    y_ours, y_theirs = ours(x), theirs(x)
  finally:
    tf_keras.mixed_precision.set_global_policy('float32')
  assert y_ours.dtype == y_theirs.dtype == tf.float16
  np.testing.assert_allclose(y_ours.numpy().astype(np.float32),
                             y_theirs.numpy().astype(np.float32), atol=2e-3)


def test_other_axes_are_refused():
  with pytest.raises(ValueError, match='last axis only'):
    layer_norm.LayerNormalization(axis=1)
