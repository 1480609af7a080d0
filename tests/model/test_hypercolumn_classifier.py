"""Tests of the hypercolumn pixel classifier baseline and its builder path."""

import numpy as np
import pytest
import tensorflow as tf

import tiny_experiment
from deeplab_sp.model import builder
from deeplab_sp.model import geometry as geometry_lib
from deeplab_sp.model import hypercolumn
from deeplab_sp.model import hypercolumn_classifier

_META = 'HYPERCOLUMN_PIXEL_CLASSIFIER'


@pytest.fixture(scope='module')
def model():
  tf.keras.utils.set_random_seed(3)
  return builder.build_model(
      tiny_experiment.model_options(meta_architecture=_META), 5, (64, 96))


def test_builder_makes_the_sp_transformers_encoder_and_hypercolumn(model):
  assert isinstance(model, hypercolumn_classifier.HypercolumnPixelClassifier)
  assert model.encoder.endpoint_strides == (2, 8, 32)
  assert isinstance(model.hypercolumn, hypercolumn.Hypercolumn)
  assert (model.hypercolumn.output_stride, model.hypercolumn.channels) == (
      4, 16)
  assert model.pixel_classifier.hidden_channels == 16
  assert model.num_classes == 5 and model.input_size == (64, 96)
  assert model.COMPONENTS == ('encoder', 'hypercolumn', 'pixel_classifier')
  assert model.count_params() == sum(
      getattr(model, name).count_params() for name in model.COMPONENTS)
  assert not builder.has_superpixels(
      tiny_experiment.model_options(meta_architecture=_META))


def test_outputs_are_the_upsampled_per_pixel_logits(model):
  images = tf.random.stateless_uniform((2, 64, 96, 3), (1, 2), 0, 255)
  outputs = model(images, training=False)
  assert set(outputs) == {'semantic_logits'}
  logits = outputs['semantic_logits']
  assert logits.shape == (2, 64, 96, 5) and logits.dtype == tf.float32
  # The components by hand: hypercolumn at stride 4, classified there.
  endpoints = model.encoder(images, training=False)
  pixels = model.hypercolumn(endpoints, (64, 96), training=False)
  assert pixels.shape == (2, 16, 24, 16)
  coarse = model.pixel_classifier(pixels, training=False)
  assert coarse.shape == (2, 16, 24, 5)
  np.testing.assert_allclose(
      logits.numpy(), tf.image.resize(coarse, (64, 96)).numpy(),
      rtol=1e-5, atol=1e-5)


def test_a_linear_classifier_when_hidden_channels_is_zero():
  model = builder.build_model(
      tiny_experiment.model_options({'pixel_classifier.hidden_channels': 0},
                                    meta_architecture=_META), 3, (32, 32))
  # One Dense: 16 hypercolumn channels x 3 classes + 3 biases.
  assert model.pixel_classifier.count_params() == 16 * 3 + 3


def test_input_multiple_is_the_encoder_and_hypercolumn_lcm():
  assert hypercolumn_classifier.input_multiple(4) == 32
  assert hypercolumn_classifier.input_multiple(64) == 64
  assert hypercolumn_classifier.input_multiple(12) == 96


def test_wrong_input_size_is_a_clear_error(model):
  with pytest.raises(geometry_lib.GeometryError,
                     match=r'48x96 is not a multiple of 32.*64x96'):
    model(tf.zeros((1, 48, 96, 3)))
  with pytest.raises(geometry_lib.GeometryError, match='not a multiple'):
    builder.create_model(
        tiny_experiment.model_options(meta_architecture=_META), 5, (40, 64))
  # Any other multiple works.
  assert model(tf.zeros((1, 32, 64, 3)))['semantic_logits'].shape == (
      1, 32, 64, 5)


def test_one_training_step_changes_every_weight_group(model):
  images = tf.random.stateless_uniform((2, 64, 96, 3), (3, 4), 0, 255)
  labels = tf.random.stateless_uniform((2, 64, 96), (5, 6), 0, 5, tf.int32)
  with tf.GradientTape() as tape:
    logits = model(images, training=True)['semantic_logits']
    loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(
        labels, logits, from_logits=True))
  gradients = tape.gradient(loss, model.trainable_variables)
  assert all(g is not None for g in gradients)
  for name in model.COMPONENTS:
    variables = {v.ref() for v in getattr(model, name).trainable_variables}
    norms = [float(tf.norm(g)) for g, v in zip(gradients,
                                               model.trainable_variables)
             if v.ref() in variables]
    assert norms and max(norms) > 0, name
