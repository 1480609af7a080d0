"""Every kernel profile computes the same model: values, gradients and
checkpoints are interchangeable between them."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import tiny_experiment
from deeplab_sp.model import builder
from deeplab_sp.model.kernels import profile
from deeplab_sp.model.kernels import xla_islands

_SIZE = (64, 64)
_OVERRIDES = {
    'hypercolumn.output_stride': 8,
    'hypercolumn.mlp_hidden_channels': 8,
    'superpixel_tokenization.num_layers': 1,
    'superpixel_tokenization.grid_height': 2,
    'superpixel_tokenization.grid_width': 2,
    'superpixel_tokenization.ffn_channels': 16,
    'superpixel_classifier.num_layers': 1,
    'superpixel_classifier.num_heads': 2,
}


def _models(meta_architecture='SP_TRANSFORMER'):
  """The model under every profile, with the CPU model's weights."""
  options = tiny_experiment.model_options(
      _OVERRIDES if meta_architecture == 'SP_TRANSFORMER' else {},
      meta_architecture=meta_architecture)
  tf_keras.utils.set_random_seed(7)
  models = {name: builder.build_model(options, 5, _SIZE, kernels=kernels)
            for name, kernels in profile.PROFILES.items()}
  weights = models['cpu'].get_weights()
  for model in models.values():
    model.set_weights(weights)
  return models


def test_profiles_are_named_and_the_default_is_cpu_without_accelerators():
  assert set(profile.PROFILES) == {'stock', 'cpu', 'serving', 'portable'}
  assert profile.get('portable') is profile.PORTABLE
  assert profile.get(profile.STOCK) is profile.STOCK
  if not tf.config.list_logical_devices('GPU'):
    assert profile.get(None) is profile.CPU
  with pytest.raises(ValueError, match='stock, cpu, serving, portable'):
    profile.get('fast')


@pytest.mark.parametrize('meta_architecture',
                         ('SP_TRANSFORMER', 'HYPERCOLUMN_PIXEL_CLASSIFIER'))
def test_every_profile_gives_the_same_outputs_and_gradients(
    meta_architecture):
  models = _models(meta_architecture)
  images = tf.random.stateless_uniform((2, *_SIZE, 3), (1, 2), 0, 255)

  @tf.function
  def values_and_gradients(model, images):
    with tf.GradientTape() as tape:
      outputs = model(images, training=True)
      loss = tf.reduce_sum(outputs['semantic_logits'] ** 2)
    return outputs, tape.gradient(loss, model.trainable_variables)

  results = {name: values_and_gradients(model, images)
             for name, model in models.items()}
  reference_outputs, reference_gradients = results['cpu']
  scale = max(float(tf.reduce_max(tf.abs(g))) for g in reference_gradients)
  for name, (outputs, gradients) in results.items():
    np.testing.assert_allclose(outputs['semantic_logits'].numpy(),
                               reference_outputs['semantic_logits'].numpy(),
                               rtol=1e-4, atol=1e-4, err_msg=name)
    for variable, a, b in zip(models[name].trainable_variables, gradients,
                              reference_gradients):
      np.testing.assert_allclose(a.numpy() / scale, b.numpy() / scale,
                                 atol=2e-5, err_msg=f'{name} {variable.name}')


def test_a_checkpoint_of_one_profile_restores_into_another(tmp_path):
  models = _models()
  prefix = tf.train.Checkpoint(model=models['cpu']).write(
      str(tmp_path / 'ckpt'))
  options = tiny_experiment.model_options(_OVERRIDES)
  tf_keras.utils.set_random_seed(8)  # Other initial weights.
  stock = builder.build_model(options, 5, _SIZE, kernels=profile.STOCK)
  tf.train.Checkpoint(model=stock).read(prefix).assert_consumed()
  # The same variables in the same order (Keras numbers their names per
  # process, so names of unnamed layers differ between two builds).
  assert len(stock.variables) == len(models['cpu'].variables)
  for a, b in zip(stock.variables, models['cpu'].variables):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_only_the_cpu_profile_traces_xla_islands():
  images = tf.TensorSpec((1, *_SIZE, 3))
  for name, model in _models().items():
    graph = tf.function(lambda x, m=model: m(x, training=False)
                       ).get_concrete_function(images).graph.as_graph_def()
    assert bool(xla_islands.compiled_functions(graph)) == (name == 'cpu'), name
    assert model.kernels is profile.PROFILES[name]
