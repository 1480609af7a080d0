"""Tests of the DeepLabV3+ baseline (Model Garden layers) and its builder."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import tiny_experiment
from deeplab_sp.model import builder
from deeplab_sp.model import deeplabv3plus
from deeplab_sp.model import geometry as geometry_lib

_META = 'DEEPLABV3PLUS'


@pytest.fixture(scope='module')
def model():
  tf.keras.utils.set_random_seed(4)
  return builder.build_model(
      tiny_experiment.model_options(meta_architecture=_META), 5, (64, 96))


def test_levels_are_log2_of_the_strides():
  assert [deeplabv3plus.level(s) for s in (2, 4, 8, 16, 32)] == [1, 2, 3, 4, 5]
  with pytest.raises(AssertionError):
    deeplabv3plus.level(12)


def test_builder_wires_aspp_and_decoder_to_the_endpoints(model):
  assert isinstance(model, deeplabv3plus.DeepLabV3Plus)
  assert model.COMPONENTS == ('encoder', 'aspp', 'decoder')
  # Only the endpoints it reads: the low-level one and the ASPP input.
  assert model.encoder.endpoint_strides == (4, 32)
  config = model.aspp.get_config()
  assert config['level'] == 5
  assert list(config['dilation_rates']) == [1, 2, 3]
  assert config['num_filters'] == 16
  head = model.decoder.get_config()
  assert (head['feature_fusion'], head['level'], head['low_level']) == (
      'deeplabv3plus', 5, 2)
  assert (head['low_level_num_filters'], head['num_filters'],
          head['num_convs'], head['num_classes']) == (4, 16, 2, 5)
  assert model.count_params() == sum(
      getattr(model, name).count_params() for name in model.COMPONENTS)


def test_parameter_counts_are_deeplabv3plus_by_hand(model):
  bn = 4  # gamma, beta, moving mean and variance per channel.
  c_in, c, low_in, low, classes = 32, 16, 8, 4, 5  # FAST widths, 5 classes.
  aspp = (c_in * c + bn * c                     # 1x1 branch.
          + 3 * (9 * c_in * c + bn * c)         # Three atrous 3x3 branches.
          + c_in * c + bn * c                   # Image pooling branch.
          + 5 * c * c + bn * c)                 # Projection of the concat.
  decoder = (low_in * low + bn * low            # Low-level 1x1 projection.
             + 9 * (c + low) * c + bn * c       # 3x3 on the concat.
             + 9 * c * c + bn * c               # Second 3x3.
             + c * classes + classes)           # 1x1 classifier.
  assert model.aspp.count_params() == aspp
  assert model.decoder.count_params() == decoder


def test_default_atrous_rates_are_chen_et_als_halved():
  options = tiny_experiment.model_options(meta_architecture=_META)
  del options.deeplabv3plus.atrous_rates[:]
  assert builder.deeplabv3plus.atrous_rates(options.deeplabv3plus) == (3, 6, 9)


def test_outputs_are_the_upsampled_decoder_logits(model):
  images = tf.random.stateless_uniform((2, 64, 96, 3), (1, 2), 0, 255)
  outputs = model(images, training=False)
  assert set(outputs) == {'semantic_logits'}
  logits = outputs['semantic_logits']
  assert logits.shape == (2, 64, 96, 5) and logits.dtype == tf.float32
  endpoints = model.encoder(images, training=False)
  assert endpoints[4].shape == (2, 16, 24, 8)    # Stage 2: 2 * base width.
  assert endpoints[32].shape == (2, 2, 3, 32)    # Stage 5: 8 * base width.
  by_level = {'2': endpoints[4], '5': endpoints[32]}
  context = model.aspp(by_level, training=False)
  assert context['5'].shape == (2, 2, 3, 16)
  coarse = model.decoder((by_level, context), training=False)
  assert coarse.shape == (2, 16, 24, 5)
  np.testing.assert_allclose(
      logits.numpy(), tf.image.resize(coarse, (64, 96)).numpy(),
      rtol=1e-5, atol=1e-5)


def test_low_level_stride_from_the_config():
  model = builder.build_model(
      tiny_experiment.model_options({'deeplabv3plus.low_level_stride': 8},
                                    meta_architecture=_META), 3, (64, 64))
  assert model.encoder.endpoint_strides == (8, 32)
  assert model.decoder.get_config()['low_level'] == 3
  assert model(tf.zeros((1, 64, 64, 3)))['semantic_logits'].shape == (
      1, 64, 64, 3)


def test_wrong_input_size_is_a_clear_error(model):
  with pytest.raises(geometry_lib.GeometryError,
                     match=r'64x80 is not a multiple of 32.*64x96'):
    model(tf.zeros((1, 64, 80, 3)))
  with pytest.raises(geometry_lib.GeometryError, match='where ASPP runs'):
    builder.model_geometry(
        tiny_experiment.model_options(meta_architecture=_META), (100, 128))


def test_sync_batchnorm_reaches_the_model_garden_layers():
  options = tiny_experiment.model_options({'encoder.sync_batchnorm': True},
                                          meta_architecture=_META)
  model = builder.build_model(options, 3, (32, 32))
  batch_norms = [layer for layer in model._flatten_layers()  # pylint: disable=protected-access
                 if isinstance(layer, tf_keras.layers.BatchNormalization)]
  in_decoder = [layer for layer in model.decoder._flatten_layers()  # pylint: disable=protected-access
                if isinstance(layer, tf_keras.layers.BatchNormalization)]
  in_aspp = [layer for layer in model.aspp._flatten_layers()  # pylint: disable=protected-access
             if isinstance(layer, tf_keras.layers.BatchNormalization)]
  assert in_decoder and in_aspp
  assert all(layer.synchronized for layer in batch_norms)


def test_one_training_step_reaches_every_component(model):
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


def _initial_kernels(seed):
  tf_keras.utils.set_random_seed(seed)
  built = builder.build_model(
      tiny_experiment.model_options(meta_architecture=_META), 5, (64, 64))
  return {name: [v.numpy() for v in getattr(built, name).trainable_variables
                 if 'kernel' in v.name]
          for name in built.COMPONENTS}


def test_initialisation_follows_the_training_seed():
  # The trainer seeds with tf_keras.utils.set_random_seed; the Model
  # Garden's ASPP and decoder must draw their kernels from it like the
  # encoder, or training seeds would only change the data order.
  first, again, second = (_initial_kernels(s) for s in (1, 1, 2))
  for name in first:
    assert first[name], name
    for a, b, c in zip(first[name], again[name], second[name]):
      np.testing.assert_array_equal(a, b)
      assert not np.array_equal(a, c), name
