"""Tests of model/kernels/resize.py."""

import numpy as np
import pytest
import tensorflow as tf

from deeplab_sp.model.kernels import resize


@pytest.mark.parametrize('size', [(3, 5), (12, 20)])
def test_equals_tf_image_resize(size):
  images = tf.random.stateless_normal([2, 6, 10, 4], seed=(1, 2))
  np.testing.assert_array_equal(
      resize.bilinear(images, size),
      tf.image.resize(images, size, method='bilinear'))


def test_bfloat16_keeps_its_dtype_and_compiles_with_its_gradient():
  images = tf.cast(tf.random.stateless_normal([1, 4, 4, 2], seed=(3, 4)),
                   tf.bfloat16)

  @tf.function(jit_compile=True)
  def value_and_gradient(images):
    with tf.GradientTape() as tape:
      tape.watch(images)
      # A bfloat16 op after the resize: its gradient meets the resize's.
      resized = resize.bilinear(images, (8, 8)) * images[0, 0, 0, 0]
      loss = tf.reduce_sum(tf.cast(resized, tf.float32))
    return resized, tape.gradient(loss, images)

  resized, gradient = value_and_gradient(images)
  assert resized.dtype == tf.bfloat16
  assert gradient.dtype == tf.bfloat16
  expected = tf.image.resize(tf.cast(images, tf.float32), (8, 8)) * tf.cast(
      images[0, 0, 0, 0], tf.float32)
  np.testing.assert_allclose(tf.cast(resized, tf.float32), expected,
                             rtol=1e-2)
