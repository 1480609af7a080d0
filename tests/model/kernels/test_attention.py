"""The matmul self-attention equals tf_keras' MultiHeadAttention."""

import numpy as np
import tensorflow as tf
import tf_keras

from deeplab_sp.model.kernels import attention


def test_matmul_self_attention_equals_tf_keras():
  """The classifier's attention core (matmuls) equals tf_keras' (einsums)."""
  tokens = tf.constant(np.random.default_rng(0).normal(
      size=(2, 12, 16)).astype(np.float32))
  ours = attention.MultiHeadSelfAttention(4, 4)
  theirs = tf_keras.layers.MultiHeadAttention(4, 4)
  ours(tokens, tokens)
  theirs(tokens, tokens)
  rng = np.random.default_rng(1)
  for mine, reference in zip(ours.weights, theirs.weights):
    value = rng.normal(size=reference.shape).astype(np.float32)
    mine.assign(value)
    reference.assign(value)
  def outputs_and_gradients(layer, with_scores):
    with tf.GradientTape() as tape:
      tape.watch(tokens)
      if with_scores:
        output, scores = layer(tokens, tokens, return_attention_scores=True)
      else:
        output, scores = layer(tokens, tokens), tf.zeros(())
      loss = tf.reduce_sum(output * tf.range(16, dtype=tf.float32))
    return [output, scores] + tape.gradient(loss, [tokens] + layer.weights)

  def op_types(layer):
    graph = tf.function(lambda t: layer(t, t)).get_concrete_function(
        tokens).graph
    return {op.type for op in graph.get_operations()}

  assert 'Einsum' in op_types(theirs)
  assert 'Einsum' not in op_types(ours)  # The matmul path is taken.
  for with_scores in (True, False):
    # Eagerly and in a graph (where grappler fuses the bias adds).
    for call in (outputs_and_gradients, tf.function(outputs_and_gradients)):
      mine, reference = ([t.numpy() for t in call(layer, with_scores)]
                         for layer in (ours, theirs))
      # The key bias's gradient is 0 in exact arithmetic (a constant shift
      # of each query's logits) and round-off in both: absolute tolerance
      # relative to the largest gradient.
      scale = max(np.abs(t).max() for t in reference)
      for a, b in zip(mine, reference):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * scale)
