"""The encoder resnet50_model_garden starts from Model Garden checkpoints.

The field's ImageNet ResNet-50 checkpoints are the Model Garden's
(official.vision): its image-classification runs write
tf.train.Checkpoint(model=model, **model.checkpoint_items), the backbone at
the root. Here such a checkpoint is written from official's own ResNet-50
with random (seeded) values, and the encoder must restore it exactly.
"""

import numpy as np
from official.vision.modeling import classification_model
from official.vision.modeling.backbones import resnet
from official.vision.ops import preprocess_ops
import pytest
import tensorflow as tf
import tf_keras

import tiny_experiment
from deeplab_sp import experiment
from deeplab_sp.model import builder
from deeplab_sp.model import encoders

NAME = encoders.MODEL_GARDEN_RESNET50
ALL_STRIDES = (2, 4, 8, 16, 32)
SIZE = 64


def _randomise(model: tf_keras.Model, seed: int) -> None:
  """Seeded values for every variable, BatchNorm statistics included."""
  for i, variable in enumerate(model.variables):
    shape, name = variable.shape, variable.name
    seed_pair = (seed, i)
    if 'moving_variance' in name or 'gamma' in name:
      value = tf.random.stateless_uniform(shape, seed_pair, 0.5, 1.5)
    elif 'kernel' in name:
      fan_in = int(np.prod(shape[:-1]))
      value = tf.random.stateless_normal(shape, seed_pair) / np.sqrt(fan_in)
    else:  # beta, moving_mean, biases.
      value = 0.1 * tf.random.stateless_normal(shape, seed_pair)
    variable.assign(tf.cast(value, variable.dtype))


def _imagenet_resnet50() -> resnet.ResNet:
  # The Model Garden's ImageNet ResNet-50 config (resnet_imagenet): its
  # BatchNorm epsilon is that of the checkpoints.
  return resnet.ResNet(model_id=50, norm_momentum=0.9, norm_epsilon=1e-5)


@pytest.fixture(scope='module')
def field_checkpoint(tmp_path_factory):
  """(checkpoint prefix, the official ResNet-50 it holds as `backbone`)."""
  backbone = _imagenet_resnet50()
  _randomise(backbone, seed=11)
  model = classification_model.ClassificationModel(
      backbone, num_classes=10,
      input_specs=tf_keras.layers.InputSpec(shape=[None, None, None, 3]))
  # As the Model Garden's trainer writes it (official/core/base_trainer.py).
  checkpoint = tf.train.Checkpoint(model=model, **model.checkpoint_items)
  prefix = checkpoint.write(str(tmp_path_factory.mktemp('mg') / 'ckpt-1'))
  return prefix, backbone


@pytest.fixture(scope='module')
def loaded_encoder(field_checkpoint):
  encoder = encoders.build_encoder(NAME, endpoint_strides=ALL_STRIDES)
  encoder.load_pretrained_weights(field_checkpoint[0])
  return encoder


def _images():
  return tf.random.stateless_uniform((2, SIZE, SIZE, 3), (3, 9), 0, 256,
                                     dtype=tf.int32)


def test_model_garden_checkpoint_restores_exactly(field_checkpoint,
                                                  loaded_encoder):
  _, reference = field_checkpoint
  assert len(loaded_encoder.backbone.variables) == len(reference.variables)
  for restored, expected in zip(loaded_encoder.backbone.variables,
                                reference.variables):
    np.testing.assert_array_equal(restored.numpy(), expected.numpy(),
                                  err_msg=restored.name)
  images = tf.cast(_images(), tf.float32)
  endpoints = loaded_encoder(images, training=False)
  assert sorted(endpoints) == list(ALL_STRIDES)
  # The reference's own endpoints ({level: features}, stride 2**level) and
  # its stem before the max pooling, on the same normalised input.
  inputs = loaded_encoder.preprocess(images)
  expected = {2 ** int(level): value for level, value in
              reference(inputs, training=False).items()}
  pool = [layer for layer in reference.layers
          if isinstance(layer, tf_keras.layers.MaxPool2D)][0]
  expected[2] = tf_keras.Model(reference.input, pool.input)(inputs,
                                                            training=False)
  widths = {2: 64, 4: 256, 8: 512, 16: 1024, 32: 2048}
  for stride in ALL_STRIDES:
    assert endpoints[stride].shape == (2, SIZE // stride, SIZE // stride,
                                       widths[stride])
    np.testing.assert_array_equal(endpoints[stride].numpy(),
                                  expected[stride].numpy(),
                                  err_msg=f'stride {stride}')


def test_input_normalisation_is_official_visions(loaded_encoder):
  # official.vision's input pipelines normalise the decoded uint8 image;
  # our images are the same pixels as floats in [0, 255].
  pixels = _images()
  expected = preprocess_ops.normalize_image(tf.cast(pixels, tf.uint8))
  actual = loaded_encoder.preprocess(tf.cast(pixels, tf.float32))
  np.testing.assert_allclose(actual.numpy(), expected.numpy(), atol=1e-5)


def test_config_with_the_encoder_validates_builds_and_runs(
    loaded_encoder, tmp_path):
  # A checkpoint of our encoder loads as well (the encoder's own layout).
  encoder_prefix = tf.train.Checkpoint(encoder=loaded_encoder).write(
      str(tmp_path / 'encoder'))
  options = tiny_experiment.options({
      'model_options.encoder.name': NAME,
      'model_options.encoder.pretrained_weights': encoder_prefix,
      'train_dataset_options.crop_size': [SIZE, SIZE],
      'eval_dataset_options.crop_size': [SIZE, SIZE],
  }, fast=True)
  loaded = experiment.experiment_from_options(options)
  assert loaded.input_size == (SIZE, SIZE)
  model = builder.build_model(loaded.options.model_options,
                              loaded.num_classes, loaded.input_size)
  assert model.encoder.name == NAME
  assert model.encoder.endpoint_strides == (
      encoders.DEFAULT_ENDPOINT_STRIDES[NAME])
  for restored, expected in zip(model.encoder.backbone.variables,
                                loaded_encoder.backbone.variables):
    np.testing.assert_array_equal(restored.numpy(), expected.numpy())
  outputs = model(tf.cast(_images()[:1], tf.float32), training=False)
  logits = outputs['semantic_logits']
  assert logits.shape == (1, SIZE, SIZE, loaded.num_classes)
  assert np.all(np.isfinite(logits.numpy()))
  assert outputs['superpixel_ids'].shape == (1, SIZE, SIZE)


def test_deeplab_low_level_strides_of_the_encoder_validate():
  for stride in (2, 4, 8, 16):
    experiment.experiment_from_options(tiny_experiment.options({
        'model_options.encoder.name': NAME,
        'model_options.deeplabv3plus.low_level_stride': stride,
    }, meta_architecture='DEEPLABV3PLUS'))
  with pytest.raises(experiment.ConfigError,
                     match=f'encoder {NAME} has endpoints below the ASPP '
                     'stride 32 at strides 2, 4, 8, 16'):
    experiment.experiment_from_options(tiny_experiment.options({
        'model_options.encoder.name': NAME,
        'model_options.deeplabv3plus.low_level_stride': 32,
    }, meta_architecture='DEEPLABV3PLUS'))


def _one_line_error(encoder, path, *fragments):
  with pytest.raises(ValueError) as error:
    encoder.load_pretrained_weights(path)
  message = str(error.value)
  assert '\n' not in message, message
  assert message.startswith(
      f'model_options.encoder.pretrained_weights {path}'), message
  for fragment in fragments:
    assert fragment in message, message


def test_wrong_checkpoints_are_one_line_errors(tmp_path):
  encoder = encoders.build_encoder(NAME)
  other = resnet.ResNet(model_id=18)
  # No backbone at the root: a checkpoint of a whole model.
  _one_line_error(
      encoder,
      tf.train.Checkpoint(model=other).write(str(tmp_path / 'model')),
      'has no backbone (its root holds model)',
      'tf.train.Checkpoint(backbone=resnet)')
  # A backbone, but of another network (ResNet-18).
  _one_line_error(
      encoder,
      tf.train.Checkpoint(backbone=other).write(str(tmp_path / 'r18')),
      f'its backbone does not fit encoder {NAME}', 'ResNet-50')
  # A Keras weight file is for the Keras-applications ResNet-50.
  _one_line_error(encoder, str(tmp_path / 'resnet50_notop.h5'),
                  'is a Keras weight file', 'for encoder resnet50')
  with pytest.raises(FileNotFoundError,
                     match='model_options.encoder.pretrained_weights'):
    encoder.load_pretrained_weights(str(tmp_path / 'missing'))


def test_batch_norms_synchronize_in_place():
  encoder = encoders.build_encoder(NAME)
  names = [v.name for v in encoder.variables]
  assert encoders.synchronize_batch_norm(encoder) == 53  # Every BN layer.
  assert [v.name for v in encoder.variables] == names
