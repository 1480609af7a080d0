"""Tests of model/kernels/recompute.py."""

import numpy as np
import tensorflow as tf
import tf_keras

from deeplab_sp.model.kernels import recompute


def _layers():
  tf_keras.utils.set_random_seed(0)
  hidden = tf_keras.layers.Dense(8, activation='gelu')
  output = tf_keras.layers.Dense(3)
  inputs = tf.random.stateless_normal([5, 4], seed=(1, 2))
  output(hidden(inputs))  # Builds the variables before in_backward.
  return hidden, output, inputs


def _value_and_gradients(recomputed):
  hidden, output, inputs = _layers()
  variables = hidden.trainable_variables + output.trainable_variables

  def segment(x):
    return output(hidden(x))

  @tf.function
  def step(x):
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = (recompute.in_backward(segment, [x]) if recomputed
           else segment(x))
      loss = tf.reduce_sum(y * y)
    return y, tape.gradient(loss, [x] + variables)

  graph = step.get_concrete_function(inputs).graph
  return step(inputs), graph


def _count_ops(graph, op_type):
  count = sum(op.type == op_type for op in graph.get_operations())
  for function in graph.as_graph_def().library.function:
    count += sum(node.op == op_type for node in function.node_def)
  return count


def test_values_and_gradients_equal_the_plain_call():
  (plain, plain_grads), _ = _value_and_gradients(recomputed=False)
  (value, grads), _ = _value_and_gradients(recomputed=True)
  # The same ops; graph rewrites (oneDNN's MatMul + bias + GELU fusion)
  # may group them differently in the two graphs: float32 round-off.
  np.testing.assert_allclose(value, plain, rtol=1e-6, atol=1e-7)
  assert len(grads) == len(plain_grads) == 5
  for grad, plain_grad in zip(grads, plain_grads):
    assert grad is not None
    np.testing.assert_allclose(grad, plain_grad, rtol=1e-6, atol=1e-7)


def test_the_backward_pass_runs_the_segment_again():
  # Forward MatMuls: 2. The plain gradient adds 2 per layer (inputs and
  # kernel); recomputing adds the 2 forward ones once more.
  _, plain = _value_and_gradients(recomputed=False)
  _, recomputed = _value_and_gradients(recomputed=True)
  assert _count_ops(recomputed, 'MatMul') == _count_ops(plain, 'MatMul') + 2
