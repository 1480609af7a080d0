"""The faster LayerNormalization equals tf_keras' (values, gradients, vars)."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from deeplab_sp.model.kernels import layer_norm
from deeplab_sp.model.kernels import profile
from deeplab_sp.model.kernels import xla_islands


def _pair(shape, epsilon, kernels=profile.CPU):
  """Our layer and tf_keras', with the same random gamma and beta."""
  ours = layer_norm.LayerNormalization(epsilon=epsilon, kernels=kernels,
                                       name='norm')
  theirs = tf_keras.layers.LayerNormalization(epsilon=epsilon, name='norm')
  ours.build(shape)
  theirs.build(shape)
  rng = np.random.default_rng(0)
  for variable in ('gamma', 'beta'):
    value = rng.normal(size=shape[-1:]).astype(np.float32)
    getattr(ours, variable).assign(value)
    getattr(theirs, variable).assign(value)
  return ours, theirs


@pytest.mark.parametrize('in_graph', (False, True))
@pytest.mark.parametrize('shape', ((2, 5, 7, 16), (3, 10, 16), (40, 16)))
@pytest.mark.parametrize('epsilon', (1e-3, 1e-5))
def test_matches_tf_keras_values_and_gradients(epsilon, shape, in_graph):
  ours, theirs = _pair(shape, epsilon)
  # An offset mean and a spread of scales, as residual streams have.
  x = tf.constant(np.random.default_rng(1).normal(
      3.0, 2.0, size=shape).astype(np.float32))
  cotangent = tf.constant(np.random.default_rng(2).normal(
      size=shape).astype(np.float32))

  def values_and_gradients(layer):
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = layer(x)
      loss = tf.reduce_sum(y * cotangent)
    return [y] + tape.gradient(loss, [x, layer.gamma, layer.beta])

  results = []
  for layer in (ours, theirs):
    # In a tf.function grappler rewrites the graph (see the next test).
    call = tf.function(values_and_gradients) if in_graph else (
        values_and_gradients)
    results.append(call(layer))
  for a, b in zip(*results):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5)
  assert [v.name for v in ours.weights] == [v.name for v in theirs.weights]


def _optimized_op_types(layer, shape):
  """The op types of the graph TensorFlow runs for layer(x), x of `shape`."""
  with tf.Graph().as_default():
    x = tf.compat.v1.placeholder(tf.float32, shape)
    y = layer(x)
    with tf.compat.v1.Session() as session:
      session.run(tf.compat.v1.global_variables_initializer())
      metadata = tf.compat.v1.RunMetadata()
      session.run(y, {x: np.ones(shape, np.float32)},
                  options=tf.compat.v1.RunOptions(
                      output_partition_graphs=True),
                  run_metadata=metadata)
  return {node.op for graph in metadata.partition_graphs
          for node in graph.node}


@pytest.mark.skipif(not layer_norm.fused_kernel_available(),
                    reason='oneDNN is off (TF_ENABLE_ONEDNN_OPTS=0 or not '
                    'an x86 build): no fused layer norm kernel')
@pytest.mark.parametrize('shape', ((2, 4, 6, 16), (2, 24, 16), (48, 16)))
def test_static_shapes_run_as_one_fused_kernel_on_cpu(shape):
  # The point of the layer: with static shapes tf_keras' layer runs as
  # separate ops, ours as oneDNN's single layer norm kernel.
  ours = layer_norm.LayerNormalization(epsilon=1e-5, kernels=profile.CPU)
  op_types = _optimized_op_types(ours, shape)
  assert '_MklLayerNorm' in op_types
  assert not op_types & {'FusedBatchNormV3', '_MklNativeFusedBatchNormV3',
                         'Mean', 'Rsqrt'}
  theirs = tf_keras.layers.LayerNormalization(epsilon=1e-3)
  assert '_MklLayerNorm' not in _optimized_op_types(theirs, shape)


def _values_and_gradients_graph(layer, shape):
  """(GraphDef, op types including its functions') of layer's values and
  gradients (inputs, gamma, beta) traced for inputs of `shape`."""

  def values_and_gradients(x):
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = layer(x)
    return y, tape.gradient(y, [x, layer.gamma, layer.beta])

  graph = tf.function(values_and_gradients).get_concrete_function(
      tf.TensorSpec(shape)).graph.as_graph_def()
  return graph, {node.op for node in graph.node} | {
      node.op for function in graph.library.function
      for node in function.node_def}


@pytest.mark.skipif(not layer_norm.fused_kernel_available(),
                    reason='oneDNN is off: the direct formula is used')
def test_the_fusable_form_has_its_own_gradient():
  # Batch norm's gradient (FusedBatchNormGradV3 over `rows` channels, then
  # the reductions of gamma's and beta's gradients) is replaced by one XLA
  # function; the values are checked against tf_keras above.
  ours = layer_norm.LayerNormalization(epsilon=1e-5, kernels=profile.CPU)
  ours.build((64, 16))
  graph, op_types = _values_and_gradients_graph(ours, (64, 16))
  assert 'FusedBatchNormV3' in op_types  # The forward stays fusable.
  assert 'FusedBatchNormGradV3' not in op_types
  assert xla_islands.compiled_functions(graph)
  # Without XLA islands (the SavedModel's profile), the gradient has none.
  serving = layer_norm.LayerNormalization(epsilon=1e-5,
                                          kernels=profile.SERVING)
  serving.build((64, 16))
  graph, op_types = _values_and_gradients_graph(serving, (64, 16))
  assert 'FusedBatchNormGradV3' not in op_types
  assert not xla_islands.compiled_functions(graph)


@pytest.mark.skipif(layer_norm.fused_kernel_available(),
                    reason='oneDNN is on: the fused kernel is used')
def test_without_onednn_the_direct_formula_is_compiled_by_xla():
  # The fusable pattern is a batch norm of `rows` channels without oneDNN,
  # many times slower forward and backward: the layer avoids it.
  ours = layer_norm.LayerNormalization(epsilon=1e-5, kernels=profile.CPU)
  ours.build((64, 16))
  graph, op_types = _values_and_gradients_graph(ours, (64, 16))
  assert len(xla_islands.compiled_functions(graph)) >= 2  # With gradient.
  assert not op_types & {'FusedBatchNormV3', 'FusedBatchNormGradV3'}
  serving = layer_norm.LayerNormalization(epsilon=1e-5,
                                          kernels=profile.SERVING)
  serving.build((64, 16))  # The SavedModel's graph: plain ops.
  graph = tf.function(serving).get_concrete_function(
      tf.TensorSpec((64, 16))).graph.as_graph_def()
  assert not xla_islands.compiled_functions(graph)


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


def test_portable_form_equals_tf_keras_without_placeholders():
  shape = (3, 10, 16)
  ours, theirs = _pair(shape, 1e-5, profile.PORTABLE)
  x = tf.constant(np.random.default_rng(1).normal(
      3.0, 2.0, size=shape).astype(np.float32))
  traced = tf.function(ours).get_concrete_function(
      tf.TensorSpec(shape, tf.float32))
  portable = traced(x)
  # The fusable form's hidden row count would be an input of an ONNX graph.
  types = {op.type for op in traced.graph.get_operations()}
  assert 'PlaceholderWithDefault' not in types
  assert 'FusedBatchNormV3' not in types
  np.testing.assert_allclose(portable.numpy(), theirs(x).numpy(), rtol=1e-5,
                             atol=1e-5)
