"""The hypercolumn's sampled projection equals projecting, then resizing."""

import numpy as np
import pytest
import tensorflow as tf

from deeplab_sp.model import hypercolumn


def _mlp(hidden_channels=8, input_channels=5):
  """An endpoint MLP: nonlinear with a hidden layer, or linear (0).

  Its biases are random (not Keras' zeros), so the affine output layer's
  bias is part of what must commute with the resize.
  """
  projection = hypercolumn.EndpointProjection(6, hidden_channels)
  projection(tf.zeros((1, 1, 1, input_channels)))
  for variable in projection.trainable_variables:
    if 'bias' in variable.name or 'beta' in variable.name:
      variable.assign(tf.random.normal(variable.shape))
  return projection


def _reference(projection, features, size):
  return tf.image.resize(projection(features), size, method='bilinear')


@pytest.mark.parametrize('hidden_channels', [8, 0])
@pytest.mark.parametrize('in_size,out_size', [
    ((16, 32), (4, 8)),    # factor 4: the stride-2 endpoint at stride 8
    ((24, 16), (3, 2)),    # factor 8
    ((8, 12), (4, 6)),     # factor 2: hidden at full size, output after
    ((12, 12), (4, 4)),    # odd factor 3: the same
    ((8, 8), (8, 8)),      # no resize
    ((4, 8), (16, 32)),    # upsampling: output before the resize
])
def test_equals_project_then_resize(in_size, out_size, hidden_channels):
  tf.random.set_seed(3)
  features = tf.random.normal((2, *in_size, 5))
  projection = _mlp(hidden_channels)
  expected = _reference(projection, features, out_size)
  actual = hypercolumn.project_and_resize(projection, features, out_size)
  assert actual.shape == (2, *out_size, 6)
  np.testing.assert_allclose(actual.numpy(), expected.numpy(),
                             rtol=1e-5, atol=1e-5)


def test_gradients_equal_project_then_resize():
  tf.random.set_seed(4)
  features = tf.random.normal((1, 16, 24, 5))
  projection = _mlp()
  weights = tf.random.normal((1, 4, 6, 6))
  gradients = []
  for fn in (lambda: _reference(projection, features, (4, 6)),
             lambda: hypercolumn.project_and_resize(projection, features,
                                                    (4, 6))):
    with tf.GradientTape() as tape:
      tape.watch(features)
      loss = tf.reduce_sum(fn() * weights)
    gradients.append(tape.gradient(
        loss, [features] + projection.trainable_variables))
  for expected, actual in zip(*gradients):
    np.testing.assert_allclose(actual.numpy(), expected.numpy(),
                               rtol=1e-4, atol=1e-5)


def test_layer_sums_resized_projections_and_position_embedding():
  tf.random.set_seed(5)
  layer = hypercolumn.Hypercolumn((2, 8, 32), channels=6, output_stride=8,
                                  mlp_hidden_channels=8)
  endpoints = {stride: tf.random.normal((1, 128 // stride, 256 // stride, 3))
               for stride in (2, 8, 32)}
  actual = layer(endpoints, (128, 256))
  expected = layer.position_embedding(tf.add_n([
      _reference(projection, endpoints[stride], (16, 32))
      for stride, projection in zip(layer.endpoint_strides,
                                    layer._projections)]))  # pylint: disable=protected-access
  np.testing.assert_allclose(actual.numpy(), expected.numpy(),
                             rtol=1e-5, atol=1e-5)
