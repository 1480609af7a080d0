"""The XLA-fused tails equal the plain functions; profiles without XLA
islands trace none."""

import numpy as np
import tensorflow as tf
import tf_keras

import tiny_experiment
from deeplab_sp.model import builder
from deeplab_sp.model.kernels import activations
from deeplab_sp.model.kernels import profile
from deeplab_sp.model.kernels import xla_islands


def _model(kernels=profile.CPU):
  """A small model whose hypercolumn and association take the fused paths."""
  options = tiny_experiment.model_options({
      'hypercolumn.output_stride': 8,  # The stride-2 endpoint: factor 4.
      'hypercolumn.mlp_hidden_channels': 8,
      'superpixel_tokenization.num_layers': 1,
      'superpixel_tokenization.grid_height': 2,
      'superpixel_tokenization.grid_width': 4,
      'superpixel_classifier.num_layers': 1,
      'superpixel_classifier.num_heads': 2,
  })
  tf_keras.utils.set_random_seed(3)
  return builder.build_model(options, num_classes=5, input_size=(64, 128),
                             kernels=kernels)


def test_fused_gelu_equals_plain_values_and_gradients():
  x = tf.constant(np.random.default_rng(0).normal(
      0.0, 3.0, size=(64, 32)).astype(np.float32))

  def values_and_gradient(x):
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = activations.gelu(x, profile.CPU)
      loss = tf.reduce_sum(y * y)
    return y, tape.gradient(loss, x)

  graph_function = tf.function(values_and_gradient)
  assert xla_islands.compiled_functions(graph_function.get_concrete_function(
      x).graph.as_graph_def())
  for fused, plain in zip(graph_function(x), values_and_gradient(x)):
    np.testing.assert_allclose(fused.numpy(), plain.numpy(), rtol=1e-6,
                               atol=1e-6)


def test_profiles_without_islands_trace_no_xla():
  spec = tf.TensorSpec([4, 8])
  graph = tf.function(
      lambda x: activations.gelu(x, profile.SERVING)).get_concrete_function(
          spec).graph.as_graph_def()
  assert not xla_islands.compiled_functions(graph)
  assert 'Erf' in {node.op for node in graph.node}
  images = tf.TensorSpec((1, 64, 128, 3))
  for kernels in (profile.STOCK, profile.SERVING, profile.PORTABLE):
    model = _model(kernels)
    assert not xla_islands.compiled_functions(tf.function(
        lambda x, m=model: m(x, training=False)).get_concrete_function(
            images).graph.as_graph_def()), kernels.name


def test_model_in_a_graph_equals_the_plain_model():
  # Eagerly the model runs the plain functions; in a tf.function the
  # hypercolumn's GELU and sample mean and the association's masked
  # softmax and argmax are XLA clusters.
  model = _model()
  images = tf.random.stateless_uniform((2, 64, 128, 3), (1, 2), 0, 255)
  graph_call = tf.function(lambda images: model(images, training=False))
  assert len(xla_islands.compiled_functions(graph_call.get_concrete_function(
      images).graph.as_graph_def())) >= 3
  fused, plain = graph_call(images), model(images, training=False)
  for name in ('semantic_logits', 'association', 'superpixel_logits'):
    np.testing.assert_allclose(fused[name].numpy(), plain[name].numpy(),
                               rtol=1e-5, atol=1e-5, err_msg=name)
  np.testing.assert_array_equal(fused['superpixel_ids'].numpy(),
                                plain['superpixel_ids'].numpy())


def test_training_gradients_in_a_graph_equal_the_plain_ones():
  model = _model()
  images = tf.random.stateless_uniform((1, 64, 128, 3), (3, 4), 0, 255)

  def gradients(images):
    with tf.GradientTape() as tape:
      outputs = model(images, training=True)
      loss = tf.reduce_sum(outputs['semantic_logits'] ** 2)
    return tape.gradient(loss, model.trainable_variables)

  fused = [g.numpy() for g in tf.function(gradients)(images)]
  plain = [g.numpy() for g in gradients(images)]
  # Relative to the largest gradient: some are 0 in exact arithmetic (the
  # key biases of attention) and hold only round-off in both.
  scale = max(np.abs(g).max() for g in plain)
  for variable, a, b in zip(model.trainable_variables, fused, plain):
    np.testing.assert_allclose(a / scale, b / scale, atol=1e-5,
                               err_msg=variable.name)
