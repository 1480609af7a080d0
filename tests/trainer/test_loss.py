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


def _top_k_reference(labels, logits, top_k_percent):
  """The loss as tf.math.top_k defines it, and its gradient: per image the
  mean of its k largest valid pixel losses (sorted; ties to the lower
  index)."""
  logits = tf.constant(logits)
  with tf.GradientTape() as tape:
    tape.watch(logits)
    per_image = []
    for image_labels, image_logits in zip(labels, tf.unstack(logits)):
      flat_labels = image_labels.reshape(-1)
      valid = flat_labels != 255
      pixel_loss = tf.nn.sparse_softmax_cross_entropy_with_logits(
          labels=np.where(valid, flat_labels, 0),
          logits=tf.reshape(image_logits, [flat_labels.size, -1]))
      k = int(np.ceil(valid.sum() * top_k_percent / 100.0))
      top, _ = tf.math.top_k(tf.where(valid, pixel_loss, -1.0), k=k)
      per_image.append(tf.reduce_mean(top))
    total = tf.add_n(per_image)
  return np.array([float(p) for p in per_image]), tape.gradient(
      total, logits).numpy()


@pytest.mark.parametrize('in_graph', (False, True))
def test_same_pixels_as_top_k_with_ties_at_the_boundary(in_graph):
  # Image 0: 20 pixels, k = 4 at 20%: 3 pixels of larger loss, then 5
  # pixels of exactly equal loss (same logits, same label) of which top_k
  # keeps the first one only. Image 1: random, 2 pixels ignored.
  rng = np.random.RandomState(3)
  logits = rng.normal(size=[2, 4, 5, 3]).astype(np.float32)
  labels = rng.randint(0, 3, size=[2, 4, 5]).astype(np.int32)
  logits[0] = [0.0, 0.0, 3.0]
  labels[0] = 2  # Small losses everywhere...
  labels[0].flat[[2, 9, 17]] = 0  # ...three large ones...
  logits[0].reshape(20, 3)[[5, 6, 11, 13, 19]] = [0.0, 1.0, 0.0]
  labels[0].flat[[5, 6, 11, 13, 19]] = 2  # ...and five equal middle ones.
  labels[1].flat[[0, 7]] = 255
  expected, expected_gradient = _top_k_reference(labels, logits, 20.0)

  def loss_and_gradient():
    logits_tensor = tf.constant(logits)
    with tf.GradientTape() as tape:
      tape.watch(logits_tensor)
      per_image = loss.per_image_top_k_cross_entropy(labels, logits_tensor,
                                                     20.0)
      total = tf.reduce_sum(per_image)
    return per_image, tape.gradient(total, logits_tensor)

  call = tf.function(loss_and_gradient) if in_graph else loss_and_gradient
  per_image, gradient = call()
  np.testing.assert_allclose(per_image.numpy(), expected, rtol=1e-6)
  np.testing.assert_allclose(gradient.numpy(), expected_gradient, rtol=1e-5,
                             atol=1e-7)
  # Of the five tied pixels only pixel 5 (the lowest index) is kept.
  kept = np.any(gradient.numpy()[0].reshape(20, 3) != 0, axis=-1)
  assert list(np.flatnonzero(kept)) == [2, 5, 9, 17]


@pytest.mark.parametrize('in_graph', (False, True))
def test_hardest_pixels_order_every_float_as_top_k_does(in_graph):
  # Negative values, both zeros, infinities and many ties; k from 0 to all.
  rng = np.random.RandomState(4)
  values = rng.choice(
      np.array([-np.inf, -3.5, -1e-30, -0.0, 0.0, 1e-30, 0.25, 2.0, 7.0,
                np.inf], np.float32), size=[3, 40])
  valid = rng.uniform(size=[3, 40]) > 0.2
  num_valid = valid.sum(axis=1)
  hardest = lambda *args: loss._hardest_pixels(*args, use_xla=True)
  select = tf.function(hardest) if in_graph else hardest
  for k in (np.zeros(3), np.ones(3), num_valid // 3, num_valid):
    k = k.astype(np.int32)
    kept = select(tf.constant(values), tf.constant(valid),
                  tf.constant(k)).numpy()
    for image in range(3):
      # top_k's order of all the values, then the valid ones in it.
      order = tf.math.top_k(tf.constant(values[image]), k=40).indices
      order = [i for i in order.numpy() if valid[image][i]]
      assert sorted(np.flatnonzero(kept[image])) == sorted(order[:k[image]])
