"""Tests of the learning-rate schedule and the split AdamW."""

import contextlib
import logging

import numpy as np
import tensorflow as tf
import tf_keras
from official.modeling.optimization import legacy_adamw

from deeplab_sp.protos import trainer_pb2
from deeplab_sp.trainer import optimizer


def _options(**kwargs):
  options = trainer_pb2.TrainerOptions(
      training_number_of_steps=100, base_learning_rate=1.0, warmup_steps=10,
      poly_learning_power=0.9, poly_end_learning_rate=0.0)
  for key, value in kwargs.items():
    setattr(options, key, value)
  return options


def test_warmup_then_poly_decay():
  schedule = optimizer.build_learning_rate_schedule(_options(), 0.1)
  np.testing.assert_allclose(schedule(0).numpy(), 0.0)
  # Linear ramp to the poly value at the end of warm-up (Model Garden's
  # LinearWarmup): 0.1 * (1 - 10/100)^0.9 at step 10.
  at_warmup_end = 0.1 * 0.9**0.9
  np.testing.assert_allclose(schedule(5).numpy(), 0.5 * at_warmup_end,
                             rtol=1e-5)
  np.testing.assert_allclose(schedule(10).numpy(), at_warmup_end, rtol=1e-5)
  np.testing.assert_allclose(schedule(50).numpy(), 0.1 * 0.5**0.9, rtol=1e-5)
  np.testing.assert_allclose(schedule(100).numpy(), 0.0, atol=1e-7)


def test_backbone_update_is_exactly_multiplier_times_head_update():
  # Adam's first step moves each weight by lr * sign(g) (eps aside); with the
  # split optimizer the encoder moves 0.1x as far even though its gradient
  # is 1000x larger, which gradient scaling could never achieve.
  options = _options(warmup_steps=0, weight_decay=0.0,
                     backbone_learning_rate_multiplier=0.1,
                     learning_rate_policy='constant', base_learning_rate=0.01)
  opt = optimizer.SplitOptimizer(options)
  head = tf.Variable([1.0, 1.0], name='head/kernel')
  encoder = tf.Variable([1.0, 1.0], name='encoder/kernel')
  opt.apply_gradients([(tf.constant([1.0, -1.0]), head),
                       (tf.constant([1000.0, -1000.0]), encoder)],
                      backbone_variables=[encoder])
  np.testing.assert_allclose(1.0 - head.numpy(), [0.01, -0.01], rtol=1e-4)
  np.testing.assert_allclose(1.0 - encoder.numpy(), [0.001, -0.001],
                             rtol=1e-4)
  assert int(opt.main.iterations) == int(opt.backbone.iterations) == 1


def test_weight_decay_skips_norms_biases_and_position_embeddings():
  options = _options(warmup_steps=0, weight_decay=0.5,
                     learning_rate_policy='constant', base_learning_rate=0.1)
  opt = optimizer.SplitOptimizer(options)
  names = ['dense/kernel', 'dense/bias', 'layer_norm/gamma',
           'position_embedding/embeddings']
  variables = [tf.Variable([2.0], name=n) for n in names]
  opt.apply_gradients([(tf.zeros([1]), v) for v in variables],
                      backbone_variables=[])
  values = [float(v.numpy()[0]) for v in variables]
  # Zero gradient: only decay moves a weight: 2 - 0.1 * 0.5 * 2 = 1.9.
  np.testing.assert_allclose(values, [1.9, 2.0, 2.0, 2.0], rtol=1e-6)


def test_gradient_clipping_is_global_over_both_groups():
  options = _options(warmup_steps=0, weight_decay=0.0, optimizer='sgd',
                     momentum=0.0, learning_rate_policy='constant',
                     base_learning_rate=1.0, gradient_clip_norm=1.0,
                     backbone_learning_rate_multiplier=1.0)
  opt = optimizer.SplitOptimizer(options)
  a = tf.Variable([0.0], name='a')
  b = tf.Variable([0.0], name='b')
  opt.apply_gradients([(tf.constant([3.0]), a), (tf.constant([4.0]), b)],
                      backbone_variables=[b])
  np.testing.assert_allclose([a.numpy()[0], b.numpy()[0]], [-0.6, -0.8],
                             rtol=1e-6)
  assert isinstance(opt.main, tf_keras.optimizers.legacy.SGD)


def _apply_in_function(opt, grads_and_vars, backbone_variables):
  """One apply_gradients inside a tf.function, as in the trainer."""
  tf.function(lambda: opt.apply_gradients(
      grads_and_vars, backbone_variables=backbone_variables))()


def test_loss_scaled_step_equals_unscaled_step():
  # SGD: its step is proportional to the gradient, so a missing unscaling
  # would show (Adam's would not: it is invariant to the gradient scale).
  options = _options(warmup_steps=0, optimizer='sgd', momentum=0.0,
                     learning_rate_policy='constant', base_learning_rate=0.01)
  plain = optimizer.SplitOptimizer(options)
  scaled = optimizer.SplitOptimizer(options, dynamic_loss_scale=True)
  scale = float(scaled.loss_scale.scale.numpy())
  assert scale == 2.0**15
  assert float(scaled.scale_loss(tf.constant(2.0))) == 2.0 * scale
  gradient = tf.constant([0.5, -2.0])
  a = tf.Variable([1.0, 1.0], name='a/kernel')
  b = tf.Variable([1.0, 1.0], name='b/kernel')
  _apply_in_function(plain, [(gradient, a)], [])
  _apply_in_function(scaled, [(gradient * scale, b)], [])
  np.testing.assert_allclose(a.numpy(), [0.995, 1.02], rtol=1e-6)
  np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-6)
  assert int(scaled.loss_scale.good_steps.numpy()) == 1


def test_non_finite_gradient_skips_the_step_and_halves_the_scale():
  options = _options(warmup_steps=0, learning_rate_policy='constant',
                     base_learning_rate=0.01)
  opt = optimizer.SplitOptimizer(options, dynamic_loss_scale=True)
  head = tf.Variable([1.0, 1.0], name='head/kernel')
  encoder = tf.Variable([1.0, 1.0], name='encoder/kernel')
  _apply_in_function(opt, [(tf.constant([np.inf, 1.0]), head),
                           (tf.constant([1.0, 1.0]), encoder)], [encoder])
  # Both groups skip (the finiteness check is joint), both counters step.
  np.testing.assert_array_equal(head.numpy(), [1.0, 1.0])
  np.testing.assert_array_equal(encoder.numpy(), [1.0, 1.0])
  assert int(opt.main.iterations) == int(opt.backbone.iterations) == 1
  assert float(opt.loss_scale.scale.numpy()) == 2.0**14
  # A finite step applies again.
  _apply_in_function(opt, [(tf.constant([1.0, 1.0]), head),
                           (tf.constant([1.0, 1.0]), encoder)], [encoder])
  assert head.numpy()[0] < 1.0 and encoder.numpy()[0] < 1.0
  assert int(opt.main.iterations) == int(opt.backbone.iterations) == 2


def test_loss_scale_grows_after_finite_steps_and_never_drops_below_one():
  scale = optimizer.DynamicLossScale(initial_scale=2.0, growth_steps=2)
  scale.update(tf.constant(True))
  assert float(scale.scale.numpy()) == 2.0
  scale.update(tf.constant(True))
  assert float(scale.scale.numpy()) == 4.0
  assert int(scale.good_steps.numpy()) == 0
  for _ in range(4):
    scale.update(tf.constant(False))
  assert float(scale.scale.numpy()) == 1.0


@contextlib.contextmanager
def _absl_messages():
  """The messages absl's logger emits at INFO within the block.

  A handler on absl's own logger, not pytest's caplog on the root: earlier
  tests in the same process (the trainer's) may have stopped absl's logger
  from propagating or raised its level.
  """
  logger = logging.getLogger('absl')
  records = []
  handler = logging.Handler(logging.INFO)
  handler.emit = records.append
  level = logger.level
  logger.addHandler(handler)
  logger.setLevel(logging.INFO)
  try:
    yield records
  finally:
    logger.removeHandler(handler)
    logger.setLevel(level)


def _messages(records):
  return [record.getMessage() for record in records]


def test_clip_norm_is_logged_once_as_applied():
  with _absl_messages() as records:
    optimizer.SplitOptimizer(_options(optimizer='adamw',
                                      gradient_clip_norm=1.5))
  messages = _messages(records)
  # Each AdamWeightDecay would log its own (unused) clip norm of 0.
  assert not [m for m in messages if 'AdamWeightDecay gradient_clip_norm' in m]
  clip = [m for m in messages if 'clip' in m]
  assert len(clip) == 1 and 'global norm of 1.5' in clip[0], messages


def test_clip_message_filter_is_removed_after_building():
  optimizer.SplitOptimizer(_options(optimizer='adamw'))
  assert not logging.getLogger('absl').filters
  with _absl_messages() as records:
    legacy_adamw.AdamWeightDecay(gradient_clip_norm=2.0)
  assert 'AdamWeightDecay gradient_clip_norm=2.000000' in _messages(records)
