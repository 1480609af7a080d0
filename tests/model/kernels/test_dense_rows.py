"""on_rows applies a per-position layer to the rows of a matrix."""

import numpy as np
import tensorflow as tf
import tf_keras

from deeplab_sp.model.kernels import dense_rows


def test_on_rows_equals_the_layer_and_keeps_static_shapes():
  dense = tf_keras.layers.Dense(5, activation='gelu')
  features = tf.random.stateless_normal((2, 3, 4, 6), (1, 2))
  np.testing.assert_allclose(dense_rows.on_rows(dense, features).numpy(),
                             dense(features).numpy(), rtol=1e-5, atol=1e-6)
  matrix = features[0, 0]
  np.testing.assert_array_equal(dense_rows.on_rows(dense, matrix),
                                dense(matrix))
  # In a graph with an unknown batch, the other sizes stay static.
  graph = tf.function(
      lambda x: dense_rows.on_rows(dense, x)).get_concrete_function(
          tf.TensorSpec([None, 3, 4, 6]))
  assert graph.structured_outputs.shape.as_list() == [None, 3, 4, 5]
