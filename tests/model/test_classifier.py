"""Tests of the superpixel classifier (Sec. III-C)."""

import numpy as np
import tensorflow as tf
import tf_keras

from deeplab_sp.model import classifier


def test_classifier_round_trips_its_config():
  layer = classifier.SuperpixelClassifier(7, 2, 2, 16, 0, 0.0)
  clone = type(layer).from_config(layer.get_config())
  assert clone.get_config() == layer.get_config()


def test_logits_per_superpixel_with_global_context():
  tf_keras.utils.set_random_seed(5)
  layer = classifier.SuperpixelClassifier(7, 1, 2, 16, 32)
  superpixels = tf.random.stateless_normal((2, 3, 4, 12), (1, 2))
  logits = layer(superpixels).numpy()
  assert logits.shape == (2, 3, 4, 7)
  # Self-attention is global: changing one superpixel changes them all.
  changed = superpixels.numpy()
  changed[:, 0, 0] += 1.0
  assert np.all(np.any(layer(changed).numpy() != logits, axis=-1))
