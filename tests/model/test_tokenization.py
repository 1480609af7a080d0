"""Tests of the superpixel tokenization (Sec. III-B, eq. 3-4)."""

import numpy as np
import tensorflow as tf
import tf_keras

from deeplab_sp.model import local_attention
from deeplab_sp.model import tokenization


def test_one_layer_is_local():
  """Pixels outside superpixel i's 3x3 cells do not change S_i (eq. 3)."""
  tf_keras.utils.set_random_seed(1)
  layer = tokenization.DualPathCrossAttention(
      channels=8, num_heads=2, ffn_channels=16, pixel_ffn_channels=16)
  superpixels = tf.random.stateless_normal((1, 5, 5, 8), (5, 6))
  pixels = tf.random.stateless_normal((1, 10, 10, 8), (7, 8))  # h = w = 2.
  base_superpixels, base_pixels = layer((superpixels, pixels))
  # Perturbations vary over channels (a constant shift would be normalised
  # away by the layer norms).
  noise = tf.random.stateless_normal((1, 10, 10, 8), (1, 3))
  superpixel_noise = tf.random.stateless_normal((1, 5, 5, 8), (2, 3))
  # Superpixel (1, 1)'s neighbourhood is cells rows 0..2, cols 0..2, i.e.
  # pixels [0:6, 0:6]. Change every pixel outside it.
  outside = np.ones((1, 10, 10, 1), np.float32)
  outside[:, 0:6, 0:6] = 0
  changed_superpixels, _ = layer((superpixels, pixels + noise * outside))
  np.testing.assert_array_equal(changed_superpixels[0, 1, 1],
                                base_superpixels[0, 1, 1])
  assert not np.allclose(changed_superpixels[0, 3, 3],
                         base_superpixels[0, 3, 3])
  # Changing a pixel inside the neighbourhood does change S_(1,1).
  inside = np.zeros((1, 10, 10, 1), np.float32)
  inside[:, 5, 5] = 1
  changed_superpixels, _ = layer((superpixels, pixels + noise * inside))
  assert not np.allclose(changed_superpixels[0, 1, 1],
                         base_superpixels[0, 1, 1])
  # Pixel (0, 0) (cell (0, 0)) only sees superpixels of cells 0..1 x 0..1.
  far = np.zeros((1, 5, 5, 1), np.float32)
  far[:, 2:, :] = 1
  far[:, :, 2:] = 1
  _, changed_pixels = layer((superpixels + superpixel_noise * far, pixels))
  np.testing.assert_array_equal(changed_pixels[0, 0:2, 0:2],
                                base_pixels[0, 0:2, 0:2])


def test_tokenization_round_trips_its_config():
  layer = tokenization.SuperpixelTokenization(
      4, 8, 2, 16, 4, 32, 8, 'EFFICIENT', 0.1)
  clone = type(layer).from_config(layer.get_config())
  assert clone.get_config() == layer.get_config()


def test_implementations_agree_and_read_the_same_variables():
  """The layer calls local_attention; NAIVE and EFFICIENT share weights."""
  tf_keras.utils.set_random_seed(4)
  pixels = tf.random.stateless_normal((2, 8, 12, 6), (1, 1))
  layers = [tokenization.SuperpixelTokenization(
      2, 3, 2, 8, 2, 16, 8, implementation, name='tokenization')
            for implementation in local_attention.IMPLEMENTATIONS]
  for layer in layers:
    layer(pixels)
  layers[1].set_weights(layers[0].get_weights())
  assert ([v.name for v in layers[0].weights] ==
          [v.name for v in layers[1].weights])
  (naive_sp, naive_px), (efficient_sp, efficient_px) = (
      layer(pixels) for layer in layers)
  assert naive_sp.shape == (2, 2, 3, 8) and naive_px.shape == (2, 8, 12, 8)
  np.testing.assert_allclose(efficient_sp, naive_sp, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(efficient_px, naive_px, rtol=1e-4, atol=1e-5)


def test_one_layer_takes_image_order_by_default():
  """Called alone, a layer converts to and from its attention's pixel order
  (EFFICIENT's cell order), so both implementations agree in image order."""
  tf_keras.utils.set_random_seed(5)
  superpixels = tf.random.stateless_normal((2, 2, 3, 8), (3, 1))
  pixels = tf.random.stateless_normal((2, 4, 9, 8), (3, 2))  # h=2, w=3.
  layers = [tokenization.DualPathCrossAttention(
      8, 2, 16, 16, implementation, name='cross_attention')
            for implementation in local_attention.IMPLEMENTATIONS]
  for layer in layers:
    layer((superpixels, pixels))
  layers[1].set_weights(layers[0].get_weights())
  (naive_sp, naive_px), (efficient_sp, efficient_px) = (
      layer((superpixels, pixels)) for layer in layers)
  np.testing.assert_allclose(efficient_sp, naive_sp, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(efficient_px, naive_px, rtol=1e-4, atol=1e-5)
