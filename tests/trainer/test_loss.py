"""Tests of the top-k% hardest-pixel cross-entropy."""

import numpy as np
import pytest
import tensorflow as tf

from deeplab_sp.trainer import loss


def _pixel_ce(labels, logits):
  logits = logits - logits.max(-1, keepdims=True)
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  return -np.take_along_axis(log_probs, labels[..., None], -1)[..., 0]


def test_top_k_matches_numpy_and_skips_ignore():
  rng = np.random.RandomState(0)
  logits = rng.normal(size=[2, 4, 5, 3]).astype(np.float32)
  labels = rng.randint(0, 3, size=[2, 4, 5]).astype(np.int32)
  labels[0, 0, :] = 255  # 5 ignored pixels -> 35 valid.
  valid = labels != 255
  ce = _pixel_ce(np.where(valid, labels, 0), logits)
  # Per image: 15 valid pixels -> k = 3; 20 valid pixels -> k = 4.
  per_image = [np.sort(ce[i][valid[i]])[::-1][:k].mean()
               for i, k in enumerate([3, 4])]
  got = loss.per_image_top_k_cross_entropy(labels, logits, top_k_percent=20.0)
  np.testing.assert_allclose(got.numpy(), per_image, rtol=1e-5)
  got = loss.top_k_cross_entropy(labels, logits, top_k_percent=20.0)
  np.testing.assert_allclose(got.numpy(), np.mean(per_image), rtol=1e-5)


def test_global_batch_mean_shares_sum_to_the_batch_mean():
  per_image = tf.constant([1.0, 2.0, 3.0, 6.0])
  shares = [loss.global_batch_mean(per_image[:1], 4),
            loss.global_batch_mean(per_image[1:], 4)]
  np.testing.assert_allclose(float(tf.add_n(shares)), 3.0)


def test_hundred_percent_weighs_images_not_pixels():
  # Image 0 has 1 valid pixel, image 1 has 4: the batch loss is the mean of
  # the two image means (DeepLab2), not the mean over the 5 pixels.
  rng = np.random.RandomState(2)
  logits = rng.normal(size=[2, 2, 2, 3]).astype(np.float32)
  labels = rng.randint(0, 3, size=[2, 2, 2]).astype(np.int32)
  labels[0].flat[1:] = 255
  valid = labels != 255
  ce = _pixel_ce(np.where(valid, labels, 0), logits)
  expected = np.mean([ce[0][valid[0]].mean(), ce[1].mean()])
  got = loss.top_k_cross_entropy(labels, logits, top_k_percent=100.0)
  np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)


def test_hundred_percent_is_mean_over_valid_pixels():
  rng = np.random.RandomState(1)
  logits = rng.normal(size=[1, 3, 3, 4]).astype(np.float32)
  labels = rng.randint(0, 4, size=[1, 3, 3]).astype(np.int32)
  labels[0, 1, 1] = 255
  valid = labels != 255
  expected = _pixel_ce(np.where(valid, labels, 0), logits)[valid].mean()
  got = loss.top_k_cross_entropy(labels, logits, top_k_percent=100.0)
  np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)


def test_ignored_pixels_get_no_gradient_and_all_ignored_is_zero():
  logits = tf.Variable(tf.random.normal([1, 2, 2, 3], seed=0))
  labels = tf.constant([[[255, 1], [255, 255]]])
  with tf.GradientTape() as tape:
    value = loss.top_k_cross_entropy(labels, logits, 50.0)
  grad = tape.gradient(value, logits).numpy()
  assert np.all(grad[0, 0, 0] == 0) and np.all(grad[0, 1] == 0)
  assert np.any(grad[0, 0, 1] != 0)
  all_ignored = tf.fill([1, 2, 2], 255)
  assert loss.top_k_cross_entropy(all_ignored, logits).numpy() == 0.0


def test_bad_percentage_raises():
  with pytest.raises(ValueError, match='top_k_percent_pixels'):
    loss.top_k_cross_entropy(tf.zeros([1, 1, 1], tf.int32),
                             tf.zeros([1, 1, 1, 2]), top_k_percent=0.0)
