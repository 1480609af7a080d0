"""Tests of the encoders (backbones) and their pretrained weights."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import tiny_experiment
from deeplab_sp.model import builder
from deeplab_sp.model import encoders


def test_resnet50_loads_keras_applications_weights(tmp_path):
  reference = tf_keras.applications.ResNet50(
      include_top=False, weights=None, input_shape=(None, None, 3))
  path = str(tmp_path / 'resnet50_notop.h5')
  reference.save_weights(path)
  encoder = encoders.build_encoder('resnet50')
  images = tf.random.stateless_uniform((1, 64, 64, 3), (4, 4), 0, 255)
  encoder(images)
  encoder.load_pretrained_weights(path)
  endpoints = encoder(images, training=False)
  preprocessed = tf_keras.applications.resnet50.preprocess_input(images)
  layer_names = {2: 'conv1_relu', 8: 'conv3_block4_out',
                 32: 'conv5_block3_out'}
  probe = tf_keras.Model(reference.input,
                         [reference.get_layer(n).output
                          for n in layer_names.values()])
  expected = probe(preprocessed, training=False)
  for stride, value in zip(layer_names, expected):
    np.testing.assert_array_equal(endpoints[stride].numpy(), value.numpy())


def test_missing_or_wrong_weight_files_are_clear_errors(tmp_path):
  encoder = encoders.build_encoder('tiny_convnet', tiny_convnet_base_channels=4)
  encoder(tf.zeros((1, 32, 32, 3)))
  with pytest.raises(FileNotFoundError, match='Nothing is downloaded'):
    encoder.load_pretrained_weights(str(tmp_path / 'missing.h5'))
  other = encoders.build_encoder('tiny_convnet', tiny_convnet_base_channels=8)
  other(tf.zeros((1, 32, 32, 3)))
  path = str(tmp_path / 'other.h5')
  other.backbone.save_weights(path)
  with pytest.raises(ValueError, match='does not fit encoder'):
    encoder.load_pretrained_weights(path)
  with pytest.raises(ValueError, match='Unknown encoder'):
    encoders.build_encoder('vgg16')


def test_encoder_checkpoint_round_trip(tmp_path):
  source = encoders.build_encoder('tiny_convnet', tiny_convnet_base_channels=4)
  images = tf.random.stateless_uniform((1, 32, 32, 3), (5, 5), 0, 255)
  source(images)
  prefix = tf.train.Checkpoint(encoder=source).write(str(tmp_path / 'enc'))
  target = encoders.build_encoder('tiny_convnet', tiny_convnet_base_channels=4)
  target(images)
  target.load_pretrained_weights(prefix)
  for stride, value in source(images, training=False).items():
    np.testing.assert_array_equal(target(images, training=False)[stride],
                                  value)


def test_synchronized_resnet50_keeps_its_variables_and_weight_file(tmp_path):
  reference = encoders.build_encoder('resnet50')
  images = tf.random.stateless_uniform((1, 64, 64, 3), (5, 5), 0, 255)
  reference(images)
  path = str(tmp_path / 'resnet50_notop.h5')
  reference.backbone.save_weights(path)
  encoder = encoders.build_encoder('resnet50')
  assert encoders.synchronize_batch_norm(encoder) == 53  # Every BN layer.
  encoder(images)
  assert ([v.name for v in encoder.variables] ==
          [v.name for v in reference.variables])
  encoder.load_pretrained_weights(path)
  synced = encoder(images, training=False)
  expected = reference(images, training=False)
  for stride in expected:
    np.testing.assert_allclose(synced[stride].numpy(),
                               expected[stride].numpy(), rtol=1e-4, atol=1e-4)


def test_sync_batchnorm_option_switches_the_models_batch_norms():
  models = {}
  for sync in (False, True):
    tf_keras.backend.clear_session()  # The same automatic layer names.
    options = tiny_experiment.model_options({'encoder.sync_batchnorm': sync})
    models[sync] = builder.build_model(options, 5, (64, 64))
  batch_norms = {
      sync: [layer for layer in model._flatten_layers()  # pylint: disable=protected-access
             if isinstance(layer, tf_keras.layers.BatchNormalization)]
      for sync, model in models.items()}
  assert batch_norms[True] and all(l.synchronized for l in batch_norms[True])
  assert not any(l.synchronized for l in batch_norms[False])
  assert ([v.name for v in models[True].variables] ==
          [v.name for v in models[False].variables])


def test_convnext_drop_path_is_a_linear_ramp_over_the_blocks():
  # model.proto: keep probability 1.0 at the first block, ramped linearly to
  # drop_path_keep_prob at the last (DeepLab2's ConvNeXt).
  encoder = encoders.build_encoder('convnext_large', drop_path_keep_prob=0.8)
  rates = [layer.drop_path_rate for layer in encoder.backbone.layers
           if hasattr(layer, 'drop_path_rate')]
  num_blocks = sum(encoders._CONVNEXT_LARGE_DEPTHS)  # pylint: disable=protected-access
  # The first block (rate 0) has no stochastic-depth layer.
  np.testing.assert_allclose(
      rates, np.linspace(0.0, 0.2, num_blocks)[1:], rtol=1e-6)


@pytest.mark.parametrize('name,strides,channels', [
    ('tiny_convnet', (2, 4, 8, 16, 32), (4, 8, 16, 32, 32)),
    ('resnet50', (4, 16), (256, 1024)),
])
def test_other_endpoints_on_request(name, strides, channels):
  encoder = encoders.build_encoder(name, tiny_convnet_base_channels=4,
                                   endpoint_strides=strides)
  assert encoder.endpoint_strides == strides
  endpoints = encoder(tf.zeros((1, 64, 96, 3)), training=False)
  assert sorted(endpoints) == list(strides)
  for stride, width in zip(strides, channels):
    assert endpoints[stride].shape == (1, 64 // stride, 96 // stride, width)


def test_tiny_convnet_endpoints_share_one_backbone():
  default = encoders.build_encoder('tiny_convnet', tiny_convnet_base_channels=4)
  other = encoders.build_encoder('tiny_convnet', tiny_convnet_base_channels=4,
                                 endpoint_strides=(4, 32))
  images = tf.random.stateless_uniform((1, 64, 64, 3), (6, 6), 0, 255)
  default(images)
  other(images)
  # The same variables (a checkpoint of one encoder loads in the other).
  assert ([v.shape for v in default.variables] ==
          [v.shape for v in other.variables])
  other.backbone.set_weights(default.backbone.get_weights())
  np.testing.assert_allclose(other(images, training=False)[32].numpy(),
                             default(images, training=False)[32].numpy(),
                             rtol=1e-6)
  assert default._endpoint_model is default.backbone  # pylint: disable=protected-access


def test_unknown_endpoint_stride_is_a_clear_error():
  with pytest.raises(ValueError, match=r'no endpoint at stride\(s\) \[64\]'):
    encoders.build_encoder('tiny_convnet', endpoint_strides=(4, 64))
  assert encoders.ENDPOINT_STRIDES['convnext_large'] == (4, 8, 16, 32)
  for name, strides in encoders.DEFAULT_ENDPOINT_STRIDES.items():
    assert set(strides) <= set(encoders.ENDPOINT_STRIDES[name])
    assert max(strides) == encoders.OUTPUT_STRIDE
