"""AdamW with polynomial decay, linear warm-up and a backbone LR multiplier.

Recipe of the paper (arXiv 2309.16889, Sec. IV-A): AdamW, weight decay 0.05,
poly learning-rate schedule with linear warm-up, and the encoder (backbone)
trained with 0.1x the learning rate. Built from `official.modeling`
(`legacy_adamw.AdamWeightDecay`, `lr_schedule.LinearWarmup`).

Backbone multiplier: Adam normalises the gradient, so scaling the encoder's
gradients by 0.1 would NOT scale its update. We therefore build TWO
optimizers with identical hyper-parameters whose schedules differ only by the
multiplier: one for `model.encoder` variables, one for all others. The
decoupled weight decay of AdamWeightDecay is proportional to the learning
rate, so it is scaled consistently. Both optimizers step once per training
step, so their `iterations` stay equal.

Weight decay is not applied to normalisation weights (gamma/beta/`norm`),
biases and position embeddings (matched by variable name, see
NO_WEIGHT_DECAY_PATTERNS).
"""

import contextlib
import logging as std_logging
from typing import Sequence, Tuple

from absl import logging
import tensorflow as tf
import tf_keras
from official.modeling.optimization import legacy_adamw
from official.modeling.optimization import lr_schedule

from deeplab_sp.protos import trainer_pb2
from deeplab_sp.utils import private_apis

# Variable-name regexes (re.search) excluded from weight decay: biases,
# normalisation scales/offsets and position embeddings (paper Sec. IV-A);
# 'position' also covers the model's per-layer key/value position terms
# (e.g. cross_attention_0/pixel_key_position).
NO_WEIGHT_DECAY_PATTERNS = ('bias', 'norm', 'gamma', 'beta', 'position',
                            'pos_embed')


def build_learning_rate_schedule(
    options: trainer_pb2.TrainerOptions, multiplier: float = 1.0
) -> tf_keras.optimizers.schedules.LearningRateSchedule:
  """Linear warm-up to `base * multiplier`, then poly decay (or constant).

  After warm-up, lr(step) = (base - end) * multiplier * (1 - step /
  steps)^power + end * multiplier (the poly decay counts from step 0, as in
  DeepLab); during warm-up the rate rises linearly from 0 to lr(warmup)
  (official.modeling's LinearWarmup).
  """
  peak = options.base_learning_rate * multiplier
  if options.learning_rate_policy == 'poly':
    after_warmup = tf_keras.optimizers.schedules.PolynomialDecay(
        initial_learning_rate=peak,
        decay_steps=options.training_number_of_steps,
        end_learning_rate=options.poly_end_learning_rate * multiplier,
        power=options.poly_learning_power)
  elif options.learning_rate_policy == 'constant':
    after_warmup = peak
  else:
    raise ValueError(
        f'trainer_options.learning_rate_policy '
        f'{options.learning_rate_policy!r} is unknown; use "poly" or '
        '"constant".')
  if options.warmup_steps <= 0:
    if isinstance(after_warmup, float):
      return tf_keras.optimizers.schedules.PolynomialDecay(
          peak, 1, peak, power=1.0)
    return after_warmup
  return lr_schedule.LinearWarmup(after_warmup,
                                  warmup_steps=options.warmup_steps,
                                  warmup_learning_rate=0.0)


# The line AdamWeightDecay logs when it is built ('AdamWeightDecay
# gradient_clip_norm=%f'), matched on its format string.
_ADAMW_CLIP_MESSAGE_PREFIX = 'AdamWeightDecay gradient_clip_norm='


class _DropAdamWClipMessage(std_logging.Filter):
  """Drops AdamWeightDecay's own `gradient_clip_norm` line from the log."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return not (isinstance(record.msg, str) and
                record.msg.startswith(_ADAMW_CLIP_MESSAGE_PREFIX))


@contextlib.contextmanager
def _without_adamw_clip_message():
  """Builds AdamWeightDecay without its `gradient_clip_norm` log line.

  Each AdamWeightDecay logs its own clip norm, which is always 0 here (both
  are built with gradient_clip_norm=0.0: SplitOptimizer clips jointly over
  both), so the log said twice that there is no clipping even when there
  is. A filter on absl's logger (public: absl.logging.get_absl_logger and
  the standard logging.Filter) drops that line while the optimizers are
  built; SplitOptimizer logs the clip norm it applies instead.
  """
  absl_logger = logging.get_absl_logger()
  log_filter = _DropAdamWClipMessage()
  absl_logger.addFilter(log_filter)
  try:
    yield
  finally:
    absl_logger.removeFilter(log_filter)


def _build_one(options: trainer_pb2.TrainerOptions, multiplier: float,
               name: str) -> tf_keras.optimizers.Optimizer:
  schedule = build_learning_rate_schedule(options, multiplier)
  if options.optimizer == 'adamw':
    with _without_adamw_clip_message():
      return legacy_adamw.AdamWeightDecay(
          learning_rate=schedule,
          weight_decay_rate=options.weight_decay,
          exclude_from_weight_decay=list(NO_WEIGHT_DECAY_PATTERNS),
          gradient_clip_norm=0.0,  # Clipped jointly in SplitOptimizer.
          name=name)
  if options.optimizer == 'sgd':
    return tf_keras.optimizers.legacy.SGD(learning_rate=schedule,
                                          momentum=options.momentum,
                                          name=name)
  raise ValueError(f'trainer_options.optimizer {options.optimizer!r} is '
                   'unknown; use "adamw" or "sgd".')


# Dynamic loss scaling for float16 (Micikevicius et al., "Mixed Precision
# Training", 2018; the defaults of tf_keras' LossScaleOptimizer): start at
# 2^15, halve after a step with NaN/Inf gradients (the step is skipped),
# double after this many consecutive finite steps.
INITIAL_LOSS_SCALE = 2.0**15
LOSS_SCALE_GROWTH_STEPS = 2000


def _mirrored_variable(initial_value, dtype, name):
  """A non-trainable variable updated identically on every replica."""
  return tf.Variable(
      initial_value, dtype=dtype, trainable=False, name=name,
      synchronization=tf.VariableSynchronization.ON_WRITE,
      aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)


class DynamicLossScale(tf.Module):
  """The float16 loss scale shared by both optimizers of a SplitOptimizer.

  Attributes:
    scale: float32 scalar variable, the current loss scale (>= 1).
    good_steps: int64 scalar variable, finite steps since the last change.
  """

  def __init__(self, initial_scale: float = INITIAL_LOSS_SCALE,
               growth_steps: int = LOSS_SCALE_GROWTH_STEPS):
    super().__init__(name='dynamic_loss_scale')
    self.growth_steps = growth_steps
    self.scale = _mirrored_variable(initial_scale, tf.float32, 'scale')
    self.good_steps = _mirrored_variable(0, tf.int64, 'good_steps')

  def update(self, finite: tf.Tensor) -> None:
    """Halves the scale after a non-finite step, doubles it after growth."""
    good_steps = tf.where(finite, self.good_steps + 1,
                          tf.zeros_like(self.good_steps))
    grow = good_steps >= self.growth_steps
    scale = tf.where(finite,
                     tf.where(grow, self.scale * 2.0, self.scale),
                     tf.maximum(self.scale / 2.0, 1.0))
    self.scale.assign(scale)
    self.good_steps.assign(tf.where(grow, tf.zeros_like(good_steps),
                                    good_steps))


class _UnwrappedVariables:
  """Keeps a strategy from replacing mirrored variables by their components
  when they pass through `merge_call` (they must stay mirrored)."""

  def __init__(self, variables):
    self.value = variables


def _scale_gradient(gradient, factor):
  if isinstance(gradient, tf.IndexedSlices):
    return tf.IndexedSlices(gradient.values * factor, gradient.indices,
                            gradient.dense_shape)
  return gradient * factor


def _all_finite(gradients) -> tf.Tensor:
  values = [g.values if isinstance(g, tf.IndexedSlices) else g
            for g in gradients]
  return tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in values])


class SplitOptimizer(tf.Module):
  """Two optimizers: encoder variables at lr * multiplier, the rest at lr.

  One step (`apply_gradients`, called in a replica context):
  1. the gradients are summed over replicas (all-reduce), so everything
     below sees the global-batch gradient, identical on every replica;
  2. with float16 loss scaling they are divided by the loss scale and the
     step is skipped (both optimizers still count it) if any is NaN/Inf;
  3. optional clipping by the global norm over ALL variables;
  4. one step of `main` (non-encoder variables) and `backbone` (encoder).

  Attributes:
    main: optimizer of the non-encoder variables (its schedule is the
      reported learning rate).
    backbone: optimizer of the encoder variables.
    loss_scale: a DynamicLossScale (float16 training) or None.
  """

  def __init__(self, options: trainer_pb2.TrainerOptions,
               dynamic_loss_scale: bool = False):
    super().__init__(name='split_optimizer')
    self.main = _build_one(options, 1.0, 'optimizer')
    self.backbone = _build_one(
        options, options.backbone_learning_rate_multiplier,
        'backbone_optimizer')
    self.gradient_clip_norm = options.gradient_clip_norm
    if self.gradient_clip_norm > 0:
      logging.info('Optimizer %s: gradients clipped to a global norm of %g '
                   '(over the encoder and the other variables together).',
                   options.optimizer, self.gradient_clip_norm)
    else:
      logging.info('Optimizer %s: no gradient clipping '
                   '(trainer_options.gradient_clip_norm is 0).',
                   options.optimizer)
    self.loss_scale = DynamicLossScale() if dynamic_loss_scale else None

  @property
  def iterations(self) -> tf.Variable:
    return self.main.iterations

  def learning_rate(self) -> tf.Tensor:
    """The current (non-backbone) learning rate."""
    return private_apis.decayed_learning_rate(self.main, tf.float32)

  def scale_loss(self, loss: tf.Tensor) -> tf.Tensor:
    """Multiplies `loss` by the loss scale (identity without scaling)."""
    if self.loss_scale is None:
      return loss
    return loss * tf.cast(self.loss_scale.scale, loss.dtype)

  def apply_gradients(self, grads_and_vars: Sequence[Tuple[tf.Tensor,
                                                           tf.Variable]],
                      backbone_variables: Sequence[tf.Variable]) -> None:
    """Aggregates, unscales, clips and applies the gradients (see class doc).

    Args:
      grads_and_vars: (per-replica gradient, variable) pairs of all trainable
        variables; gradients of the loss scaled by `scale_loss`.
      backbone_variables: the encoder's variables (updated by `backbone`).
    """
    pairs = [(g, v) for g, v in grads_and_vars if g is not None]
    grads = [g for g, _ in pairs]
    variables = _UnwrappedVariables([v for _, v in pairs])
    replica_context = tf.distribute.get_replica_context()
    if replica_context is None:
      raise RuntimeError('SplitOptimizer.apply_gradients must be called in a '
                         'replica context (inside strategy.run).')
    grads = replica_context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
    finite = None
    if self.loss_scale is not None:
      inverse = 1.0 / self.loss_scale.scale
      grads = [_scale_gradient(g, tf.cast(inverse, g.dtype)) for g in grads]
      finite = _all_finite(grads)
    if self.gradient_clip_norm > 0:
      grads, _ = tf.clip_by_global_norm(grads, self.gradient_clip_norm)
    backbone_refs = {v.ref() for v in backbone_variables}

    def apply_both(grads, variables):
      main_pairs, backbone_pairs = [], []
      for g, v in zip(grads, variables.value):
        (backbone_pairs if v.ref() in backbone_refs else main_pairs).append(
            (g, v))
      self.main.apply_gradients(main_pairs,
                                experimental_aggregate_gradients=False)
      if backbone_pairs:
        self.backbone.apply_gradients(backbone_pairs,
                                      experimental_aggregate_gradients=False)
      else:
        # An optimizer with no variable still counts the step, so both
        # `iterations` counters stay equal.
        self.backbone.iterations.assign_add(1)

    if self.loss_scale is None:
      apply_both(grads, variables)
      return

    def skip_step():
      self.main.iterations.assign_add(1)
      self.backbone.iterations.assign_add(1)

    def cross_replica(strategy, grads, variables, finite):
      # The cond must run in the cross-replica context: its branch calls the
      # optimizers' own merge_call. `finite` is the same on every replica
      # (the gradients were all-reduced).
      all_finite = tf.reduce_all(
          [tf.convert_to_tensor(f)
           for f in strategy.experimental_local_results(finite)])
      self.loss_scale.update(all_finite)
      tf.cond(all_finite,
              lambda: strategy.extended.call_for_each_replica(
                  apply_both, args=(grads, variables)),
              skip_step)

    replica_context.merge_call(cross_replica,
                               args=(grads, variables, finite))
