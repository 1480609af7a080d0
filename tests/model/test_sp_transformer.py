"""Tests of the whole SP-Transformer (Fig. 2) built from ModelOptions."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import tiny_experiment
from deeplab_sp.model import builder
from deeplab_sp.model import geometry as geometry_lib
from deeplab_sp.model.kernels import recompute
from deeplab_sp.protos import model_pb2


def _options(implementation='NAIVE', grid=(4, 4)):
  """The tiny model with a grid x grid of cells, 1 classifier layer."""
  value = model_pb2.LocalAttentionImplementation.Value(implementation)
  return tiny_experiment.model_options({
      'hypercolumn.mlp_hidden_channels': 0,
      'superpixel_tokenization.grid_height': grid[0],
      'superpixel_tokenization.grid_width': grid[1],
      'superpixel_tokenization.implementation': value,
      'superpixel_classifier.num_layers': 1,
      'superpixel_classifier.num_heads': 2,
      'superpixel_association.implementation': value,
  })


@pytest.mark.parametrize('size,stride,grid,hypercolumn', [
    ((1024, 2048), 8, (32, 64), (128, 256)),   # Cityscapes (Table I).
    ((640, 640), 4, (40, 40), (160, 160)),     # ADE20K (Table II).
])
def test_output_shapes_at_paper_geometries(size, stride, grid, hypercolumn):
  options = tiny_experiment.model_options({
      'hypercolumn.channels': 8,
      'hypercolumn.output_stride': stride,
      'hypercolumn.mlp_hidden_channels': 0,
      'superpixel_tokenization.grid_height': grid[0],
      'superpixel_tokenization.grid_width': grid[1],
      'superpixel_tokenization.num_layers': 1,
      'superpixel_tokenization.channels': 8,
      'superpixel_classifier.num_layers': 1,
      'superpixel_classifier.num_heads': 2,
      'superpixel_classifier.channels': 8,
  })
  model = builder.build_model(options, num_classes=19, input_size=size)
  outputs = model(tf.zeros((1, *size, 3)), training=False)
  assert outputs['semantic_logits'].shape == (1, *size, 19)
  assert outputs['semantic_logits'].dtype == tf.float32
  assert outputs['superpixel_logits'].shape == (1, *grid, 19)
  assert outputs['association'].shape == (1, *size, 9)
  assert outputs['superpixel_ids'].shape == (1, *size)
  assert outputs['superpixel_ids'].dtype == tf.int32
  geometry = geometry_lib.compute_geometry(size, stride, *grid)
  assert (geometry.hypercolumn_height,
          geometry.hypercolumn_width) == hypercolumn
  tokens = model.tokenization(tf.zeros((1, *hypercolumn, 8)))
  assert tokens[0].shape == (1, *grid, 8)
  assert tokens[1].shape == (1, *hypercolumn, 8)


@pytest.fixture(scope='module')
def small_model():
  tf_keras.utils.set_random_seed(0)
  options = _options()
  options.superpixel_tokenization.num_layers = 1
  return builder.build_model(options, num_classes=5, input_size=(64, 64))


def test_naive_and_efficient_models_agree():
  tf_keras.utils.set_random_seed(2)
  naive, efficient = (
      builder.build_model(_options(implementation, grid=(2, 4)),
                          num_classes=3, input_size=(32, 64))
      for implementation in ('NAIVE', 'EFFICIENT'))
  efficient.set_weights(naive.get_weights())
  images = tf.random.stateless_uniform((2, 32, 64, 3), (9, 9), 0, 255)
  expected = naive(images, training=False)
  actual = efficient(images, training=False)
  for key in ('semantic_logits', 'association', 'superpixel_logits'):
    np.testing.assert_allclose(actual[key], expected[key], rtol=1e-4,
                               atol=1e-5)


def test_wrong_input_size_is_a_clear_error(small_model):
  with pytest.raises(ValueError, match=r'multiple of 16x16.*built for 64x64'):
    small_model(tf.zeros((1, 60, 64, 3)))
  with pytest.raises(geometry_lib.GeometryError, match='not divisible'):
    builder.build_model(_options(), 5, input_size=(72, 64))


def test_other_multiple_of_the_geometry_works(small_model):
  # Built for 64x64 (h = w = 4); 32x96 gives h = 2, w = 6.
  outputs = small_model(tf.zeros((1, 32, 96, 3)), training=False)
  assert outputs['semantic_logits'].shape == (1, 32, 96, 5)


def test_xla_forward_and_training_step(small_model):
  images = tf.random.stateless_uniform((2, 64, 64, 3), (1, 1), 0, 255)
  labels = tf.random.stateless_uniform((2, 64, 64), (2, 2), 0, 5, tf.int32)
  optimizer = tf_keras.optimizers.SGD(0.1)

  @tf.function(jit_compile=True)
  def forward(images):
    return small_model(images, training=False)['semantic_logits']

  @tf.function(jit_compile=True)
  def train_step(images, labels):
    with tf.GradientTape() as tape:
      logits = small_model(images, training=True)['semantic_logits']
      loss = tf.reduce_mean(
          tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    grads = tape.gradient(loss, small_model.trainable_variables)
    optimizer.apply_gradients(zip(grads, small_model.trainable_variables))
    return loss

  np.testing.assert_allclose(forward(images),
                             small_model(images)['semantic_logits'],
                             rtol=1e-4, atol=1e-4)
  first = train_step(images, labels)
  assert np.isfinite(first.numpy())
  for _ in range(3):
    last = train_step(images, labels)
  assert last.numpy() < first.numpy()


def test_local_attention_implementation_from_the_proto_enum():
  convert = builder.sp_transformer.local_attention_implementation
  assert convert(model_pb2.NAIVE) == convert(0) == 'NAIVE'
  assert convert(model_pb2.EFFICIENT) == convert(1) == 'EFFICIENT'
  for bad in (2, -1, None, True, 'NAIVE'):
    with pytest.raises(ValueError, match='NAIVE = 0, EFFICIENT = 1'):
      convert(bad)


def test_recomputing_in_backward_keeps_loss_and_gradients(monkeypatch):
  segments = []
  original = recompute.in_backward

  def in_backward(function, tensors):
    segments.append(function.__name__)
    return original(function, tensors)
  monkeypatch.setattr(recompute, 'in_backward', in_backward)
  tf_keras.utils.set_random_seed(3)
  options = _options(implementation='EFFICIENT')
  assert options.recompute_in_backward  # The default.
  model = builder.build_model(options, num_classes=5, input_size=(64, 64))
  assert model.recompute_in_backward
  images = tf.random.stateless_uniform((2, 64, 64, 3), (3, 1), 0, 255)
  labels = tf.random.stateless_uniform((2, 64, 64), (3, 2), 0, 5, tf.int32)

  def loss_and_gradients():
    with tf.GradientTape() as tape:
      outputs = model(images, training=True)
      loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
          labels, outputs['semantic_logits']))
    return (loss, outputs['superpixel_ids'],
            tape.gradient(loss, model.trainable_variables))

  recomputed = tf.function(loss_and_gradients)()
  assert segments == ['hypercolumn', 'association']
  # Not in inference.
  model(images, training=False)
  assert len(segments) == 2
  model.recompute_in_backward = False
  stored = tf.function(loss_and_gradients)()
  assert len(segments) == 2
  np.testing.assert_allclose(recomputed[0], stored[0], rtol=1e-6)
  np.testing.assert_array_equal(recomputed[1], stored[1])
  assert len(recomputed[2]) == len(model.trainable_variables)
  for grad, expected, variable in zip(recomputed[2], stored[2],
                                      model.trainable_variables):
    assert grad is not None, variable.name
    scale = float(tf.reduce_max(tf.abs(expected))) + 1e-12
    np.testing.assert_allclose(grad, expected, rtol=0, atol=1e-5 * scale,
                               err_msg=variable.name)
