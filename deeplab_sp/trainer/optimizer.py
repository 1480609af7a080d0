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

from typing import Sequence, Tuple

import tensorflow as tf
import tf_keras
from official.modeling.optimization import legacy_adamw
from official.modeling.optimization import lr_schedule

from deeplab_sp.protos import trainer_pb2

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


def _build_one(options: trainer_pb2.TrainerOptions, multiplier: float,
               name: str) -> tf_keras.optimizers.Optimizer:
  schedule = build_learning_rate_schedule(options, multiplier)
  if options.optimizer == 'adamw':
    return legacy_adamw.AdamWeightDecay(
        learning_rate=schedule,
        weight_decay_rate=options.weight_decay,
        exclude_from_weight_decay=list(NO_WEIGHT_DECAY_PATTERNS),
        gradient_clip_norm=0.0,  # Clipped jointly in `apply_gradients`.
        name=name)
  if options.optimizer == 'sgd':
    return tf_keras.optimizers.legacy.SGD(learning_rate=schedule,
                                          momentum=options.momentum,
                                          name=name)
  raise ValueError(f'trainer_options.optimizer {options.optimizer!r} is '
                   'unknown; use "adamw" or "sgd".')


class SplitOptimizer(tf.Module):
  """Two optimizers: encoder variables at lr * multiplier, the rest at lr.

  Attributes:
    main: optimizer of the non-encoder variables (its schedule is the
      reported learning rate).
    backbone: optimizer of the encoder variables.
  """

  def __init__(self, options: trainer_pb2.TrainerOptions):
    super().__init__(name='split_optimizer')
    self.main = _build_one(options, 1.0, 'optimizer')
    self.backbone = _build_one(
        options, options.backbone_learning_rate_multiplier,
        'backbone_optimizer')
    self.gradient_clip_norm = options.gradient_clip_norm

  @property
  def iterations(self) -> tf.Variable:
    return self.main.iterations

  def learning_rate(self) -> tf.Tensor:
    """The current (non-backbone) learning rate."""
    return self.main._decayed_lr(tf.float32)  # pylint: disable=protected-access

  def apply_gradients(self, grads_and_vars: Sequence[Tuple[tf.Tensor,
                                                           tf.Variable]],
                      backbone_variables: Sequence[tf.Variable]) -> None:
    """Clips (optionally) and applies gradients; one step of both optimizers.

    Args:
      grads_and_vars: (gradient, variable) pairs of all trainable variables.
      backbone_variables: the encoder's variables (updated by `backbone`).
    """
    grads_and_vars = [(g, v) for g, v in grads_and_vars if g is not None]
    if self.gradient_clip_norm > 0:
      grads, _ = tf.clip_by_global_norm([g for g, _ in grads_and_vars],
                                        self.gradient_clip_norm)
      grads_and_vars = list(zip(grads, [v for _, v in grads_and_vars]))
    backbone_refs = {v.ref() for v in backbone_variables}
    main_pairs = [(g, v) for g, v in grads_and_vars
                  if v.ref() not in backbone_refs]
    backbone_pairs = [(g, v) for g, v in grads_and_vars
                      if v.ref() in backbone_refs]
    # An optimizer with no variable still counts the step (a dummy update
    # keeps both `iterations` counters equal).
    self.main.apply_gradients(main_pairs)
    if backbone_pairs:
      self.backbone.apply_gradients(backbone_pairs)
    else:
      self.backbone.iterations.assign_add(1)
