"""Tests of the SP-Transformer model (deeplab_sp.model.builder)."""

from google.protobuf import text_format
import numpy as np
import tensorflow as tf

from deeplab_sp.model import builder
from deeplab_sp.protos import config_pb2

_TINY_CONFIG = 'configs/synthetic/sp_transformer_tiny.textproto'
_NUM_CLASSES = 6


def _tiny_model_options():
  with open(_TINY_CONFIG) as f:
    options = text_format.Parse(f.read(), config_pb2.ExperimentOptions())
  return options.model_options


def test_output_shapes_and_association():
  model = builder.build_model(_tiny_model_options(), _NUM_CLASSES, (128, 128))
  images = tf.random.stateless_uniform([2, 128, 128, 3], (1, 2), 0, 255)
  outputs = model(images, training=False)
  assert outputs['semantic_logits'].shape == (2, 128, 128, _NUM_CLASSES)
  assert outputs['semantic_logits'].dtype == tf.float32
  assert outputs['superpixel_logits'].shape == (2, 8, 8, _NUM_CLASSES)
  assert outputs['association'].shape == (2, 128, 128, 9)
  assert outputs['superpixel_ids'].shape == (2, 128, 128)
  association = outputs['association'].numpy()
  assert association.min() >= 0.0
  np.testing.assert_allclose(association.sum(-1), 1.0, atol=1e-5)
  # Top-left cell (16x16 image pixels): the 5 slots outside the grid
  # (dy = -1 or dx = -1) get no weight.
  for slot in (0, 1, 2, 3, 6):
    assert association[:, :16, :16, slot].max() == 0.0
  ids = outputs['superpixel_ids'].numpy()
  assert ids.min() >= 0 and ids.max() < 64


def test_bad_input_size_raises():
  model = builder.build_model(_tiny_model_options(), _NUM_CLASSES, (128, 128))
  try:
    model(tf.zeros([1, 120, 128, 3]))
  except ValueError as error:
    assert 'multiple of 32' in str(error)
  else:
    raise AssertionError('expected a ValueError')


def test_xla_train_step():
  model = builder.build_model(_tiny_model_options(), _NUM_CLASSES, (64, 64))
  images = tf.random.stateless_uniform([1, 64, 64, 3], (3, 4), 0, 255)
  labels = tf.zeros([1, 64, 64], tf.int32)
  model(images)

  @tf.function(jit_compile=True)
  def step(images, labels):
    with tf.GradientTape() as tape:
      logits = model(images, training=True)['semantic_logits']
      loss = tf.reduce_mean(
          tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    grads = tape.gradient(loss, model.trainable_variables)
    for var, grad in zip(model.trainable_variables, grads):
      var.assign_sub(0.01 * grad)
    return loss

  loss = step(images, labels)
  assert np.isfinite(loss.numpy())
