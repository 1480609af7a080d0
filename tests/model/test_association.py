"""Tests of the superpixel association (Sec. III-D, eq. 5-7) in the model."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import tiny_experiment
from deeplab_sp.model import association
from deeplab_sp.model import builder
from deeplab_sp.model import local_attention
from deeplab_sp.model.local_attention import neighbors
from deeplab_sp.protos import model_pb2


def _small_model_options(implementation='NAIVE'):
  """A 4x4 grid of 4x4-pixel cells at 64x64, one layer per stage."""
  value = model_pb2.LocalAttentionImplementation.Value(implementation)
  return tiny_experiment.model_options({
      'hypercolumn.mlp_hidden_channels': 0,
      'superpixel_tokenization.grid_height': 4,
      'superpixel_tokenization.grid_width': 4,
      'superpixel_tokenization.num_layers': 1,
      'superpixel_tokenization.implementation': value,
      'superpixel_classifier.num_layers': 1,
      'superpixel_classifier.num_heads': 2,
      'superpixel_association.implementation': value,
  })


@pytest.fixture(scope='module')
def small_model():
  tf_keras.utils.set_random_seed(0)
  return builder.build_model(_small_model_options(), num_classes=5,
                             input_size=(64, 64))


def test_association_is_a_distribution_over_valid_neighbors(small_model):
  images = tf.random.stateless_uniform((2, 64, 64, 3), (1, 2), 0, 255)
  outputs = small_model(images, training=False)
  association = outputs['association'].numpy()
  assert association.min() >= 0
  np.testing.assert_allclose(association.sum(-1), 1.0, atol=1e-5)
  # Border masking: slots outside the 4x4 grid get exactly zero weight.
  ids = neighbors.neighbor_superpixel_ids(64, 64, 4, 4).numpy()
  assert (ids < 0).any()
  assert np.all(association[:, ids < 0] == 0.0)
  # Hard ids are the absolute ids of valid neighbours of each pixel's cell.
  hard = outputs['superpixel_ids'].numpy()
  assert hard.min() >= 0 and hard.max() < 16
  for batch in range(2):
    assert np.all((ids == hard[batch][..., None]).any(-1))
  # ... of the most associated slot (eq. 7).
  strongest = association.argmax(-1)[..., np.newaxis]
  np.testing.assert_array_equal(
      hard, np.take_along_axis(np.broadcast_to(ids, association.shape),
                               strongest, axis=-1)[..., 0])


def test_dense_logits_are_association_weighted_superpixel_logits(small_model):
  images = tf.random.stateless_uniform((1, 64, 64, 3), (3, 4), 0, 255)
  outputs = small_model(images, training=False)
  association = outputs['association'].numpy()[0]
  superpixel_logits = outputs['superpixel_logits'].numpy()[0].reshape(16, 5)
  ids = neighbors.neighbor_superpixel_ids(64, 64, 4, 4).numpy()
  y, x = 37, 5
  expected = sum(association[y, x, s] * superpixel_logits[ids[y, x, s]]
                 for s in range(9) if ids[y, x, s] >= 0)
  np.testing.assert_allclose(outputs['semantic_logits'].numpy()[0, y, x],
                             expected, rtol=1e-5, atol=1e-5)


def test_association_round_trips_its_config():
  layer = association.SuperpixelAssociation(False, 'NAIVE')
  clone = type(layer).from_config(layer.get_config())
  assert clone.get_config() == layer.get_config()


def test_both_orders_give_distributions_and_valid_ids():
  """Paper order (upsample, then softmax) and the low-resolution order."""
  rng = np.random.default_rng(0)
  pixels = tf.constant(rng.normal(size=(1, 8, 12, 6)), tf.float32)
  superpixels = tf.constant(rng.normal(size=(1, 2, 3, 6)), tf.float32)
  logits = tf.constant(rng.normal(size=(1, 2, 3, 4)), tf.float32)
  ids = neighbors.neighbor_superpixel_ids(16, 24, 2, 3).numpy()
  for upsample_first in (True, False):
    for implementation in local_attention.IMPLEMENTATIONS:
      outputs = association.SuperpixelAssociation(
          upsample_first, implementation)(pixels, superpixels, logits,
                                          (16, 24))
      weights = outputs['association'].numpy()
      assert outputs['semantic_logits'].shape == (1, 16, 24, 4)
      np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
      assert np.all(weights[:, ids < 0] == 0.0)
      hard = outputs['superpixel_ids'].numpy()[0]
      assert np.all((ids == hard[..., None]).any(-1))


def _numpy_association(pixels, superpixels, class_logits, scale):
  """Equations (5) and (6) at the pixels' resolution, in numpy."""
  _, height, width, channels = pixels.shape
  _, grid_height, grid_width, _ = superpixels.shape
  ids = neighbors.neighbor_superpixel_ids(
      height, width, grid_height, grid_width).numpy()
  flat = superpixels[0].reshape(-1, channels)
  logits = np.einsum('hwc,hwsc->hws', pixels[0],
                     flat[np.maximum(ids, 0)]) * scale
  logits = np.where(ids >= 0, logits, -np.inf)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  classes = class_logits[0].reshape(grid_height * grid_width, -1)
  dense = np.einsum('hws,hwsk->hwk', weights, classes[np.maximum(ids, 0)])
  return weights, dense


@pytest.mark.parametrize('logit_scale', association.LOGIT_SCALES)
@pytest.mark.parametrize('implementation', local_attention.IMPLEMENTATIONS)
def test_logit_scales_match_equation_5(logit_scale, implementation):
  rng = np.random.default_rng(1)
  channels = 16
  pixels = rng.normal(size=(1, 8, 12, channels)).astype(np.float32)
  superpixels = rng.normal(size=(1, 2, 3, channels)).astype(np.float32)
  class_logits = rng.normal(size=(1, 2, 3, 4)).astype(np.float32)
  scale = 1.0 / np.sqrt(channels) if logit_scale == 'SQRT_CHANNELS' else 1.0
  weights, dense = _numpy_association(pixels, superpixels, class_logits,
                                      scale)
  for upsample_first in (True, False):
    # At the pixels' own resolution the upsampling is the identity.
    outputs = association.SuperpixelAssociation(
        upsample_first, implementation, logit_scale)(
            pixels, superpixels, class_logits, (8, 12))
    np.testing.assert_allclose(outputs['association'].numpy()[0], weights,
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(outputs['semantic_logits'].numpy()[0], dense,
                               rtol=1e-4, atol=1e-4)


def test_logit_scale_option_reaches_the_layer_and_defaults_to_the_paper():
  # Unscaled: equation (5) as the paper writes it.
  assert (model_pb2.SuperpixelAssociationOptions().logit_scale ==
          model_pb2.NONE)
  for name in association.LOGIT_SCALES:
    options = model_pb2.SuperpixelAssociationOptions(
        logit_scale=model_pb2.AssociationLogitScale.Value(name))
    assert builder.sp_transformer.build_association(options).logit_scale == name
  with pytest.raises(ValueError, match='AssociationLogitScale'):
    builder.sp_transformer.association_logit_scale(7)
