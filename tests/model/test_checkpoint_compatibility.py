"""Checkpoints written before the model package was reorganised still load.

tests/testdata/pre_redesign/ holds a tf.train.Checkpoint(model=...) of the
shipped tiny model (configs/synthetic/sp_transformer_tiny.textproto, 5
classes, 128x128, EFFICIENT local attention) and the outputs that model gave
on two fixed images. The model built by today's code must restore every
value of it and give the same outputs, with either local attention
implementation (they compute the same function).
"""

import pathlib

import numpy as np
import pytest
import tensorflow as tf

import tiny_experiment
from deeplab_sp.model import builder
from deeplab_sp.protos import model_pb2

TESTDATA = pathlib.Path(__file__).resolve().parents[1] / 'testdata' / (
    'pre_redesign')


@pytest.mark.parametrize('implementation', ('EFFICIENT', 'NAIVE'))
def test_pre_redesign_checkpoint_restores_and_gives_the_same_outputs(
    implementation):
  value = model_pb2.LocalAttentionImplementation.Value(implementation)
  options = tiny_experiment.model_options({
      'superpixel_tokenization.implementation': value,
      'superpixel_association.implementation': value,
  }, fast=False)
  model = builder.build_model(options, num_classes=5, input_size=(128, 128))
  tf.train.Checkpoint(model=model).read(
      str(TESTDATA / 'tiny_model')).assert_consumed()
  expected = np.load(TESTDATA / 'expected.npz')
  outputs = model(tf.constant(expected['images']), training=False)
  np.testing.assert_allclose(outputs['semantic_logits'].numpy(),
                             expected['semantic_logits'], rtol=0, atol=1e-5)
  np.testing.assert_array_equal(outputs['superpixel_ids'].numpy(),
                                expected['superpixel_ids'])
