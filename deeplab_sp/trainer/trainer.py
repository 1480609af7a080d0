"""The orbit StandardTrainer of the SP-Transformer.

One training step: forward pass, top-k% cross-entropy on the dense logits
(loss.py), gradients, and one step of the split AdamW (optimizer.py), under
any tf.distribute strategy. Each replica's loss is its images' share of the
mean over the GLOBAL batch (loss.global_batch_mean), so the summed gradients
equal those of the global-batch loss whatever the number of replicas.
"""

import datetime
import math
import time
from typing import Callable, Dict, Optional, Tuple

from absl import logging
import numpy as np
import orbit
import tensorflow as tf
import tf_keras

from deeplab_sp.model.kernels import profile
from deeplab_sp.trainer import loss as loss_lib
from deeplab_sp.trainer import optimizer as optimizer_lib
from deeplab_sp.trainer import preemption
from deeplab_sp.trainer import summaries
from deeplab_sp.protos import trainer_pb2


class NonFiniteLossError(RuntimeError):
  """Training produced a NaN/Inf loss or weight."""


NON_FINITE_HINT = (
    'Training stopped and no checkpoint was written. Try lowering '
    'trainer_options.base_learning_rate, setting '
    'trainer_options.gradient_clip_norm (e.g. 1.0), a longer warmup_steps, or '
    'mixed_precision: "none" if float16 is used; then rerun (training resumes '
    'from the last finite checkpoint).')


def check_finite_weights(model: tf_keras.Model) -> None:
  """Raises NonFiniteLossError if any model weight is NaN or Inf."""
  for variable in model.variables:
    if variable.dtype.is_floating and not np.all(
        np.isfinite(variable.numpy())):
      raise NonFiniteLossError(
          f'Weight {variable.name} is not finite. {NON_FINITE_HINT}')


class Trainer(orbit.StandardTrainer):
  """Trains `model` on `train_dataset` with `optimizer`.

  Args:
    strategy: the tf.distribute strategy the model was built under.
    model: SPTransformer-like tf_keras.Model returning the output dict and
      having an `encoder` attribute.
    optimizer: a SplitOptimizer.
    train_dataset: a distributed dataset of {'image', 'label', ...}.
    options: the TrainerOptions.
    colormap: colours of the classes for image summaries.
    vis_batch: one local (non-distributed) batch for image summaries, or None.
    image_summary_dir: where training image summaries are written.
    stop_requested: () -> whether to stop before the next loop of
      steps_per_loop steps (preemption.StopWatcher.requested).
  """

  def __init__(self, strategy: tf.distribute.Strategy,
               model: tf_keras.Model,
               optimizer: optimizer_lib.SplitOptimizer,
               train_dataset,
               options: trainer_pb2.TrainerOptions,
               colormap=None,
               vis_batch: Optional[Dict[str, tf.Tensor]] = None,
               image_summary_dir: Optional[str] = None,
               stop_requested: Optional[Callable[[], bool]] = None):
    self.strategy = strategy
    self.stop_requested = stop_requested or (lambda: False)
    self.model = model
    self.optimizer = optimizer
    self.options = options
    self.colormap = colormap
    self.vis_batch = vis_batch
    self._image_writer = (tf.summary.create_file_writer(image_summary_dir)
                          if image_summary_dir and vis_batch else None)
    with strategy.scope():
      self.train_loss = tf_keras.metrics.Mean('loss', dtype=tf.float32)
    # Mean loss of the last training loop; None until a loop has run.
    self.last_loss: Optional[float] = None
    # Step of the last progress line (trainer_options.log_steps).
    self._last_logged_step: Optional[int] = None
    # (time, step) the speed of the next progress line is measured from.
    self._speed_since: Optional[Tuple[float, int]] = None
    # trainer_options.use_xla compiles the forward and backward pass; the
    # cross-replica gradient sum and the optimizer step stay outside XLA.
    self._gradients_fn = (
        tf.function(self._loss_and_gradients, jit_compile=True)
        if options.use_xla else self._loss_and_gradients)
    trainer_options = orbit.StandardTrainerOptions(
        use_tf_function=True, use_tf_while_loop=True)
    super().__init__(train_dataset, trainer_options)

  def train_loop_begin(self) -> None:
    # A SIGTERM during an evaluation (train_and_eval) stops here, before
    # another loop starts.
    if self.stop_requested():
      raise preemption.StopRequested()
    self.train_loss.reset_state()
    if self._speed_since is None:
      self._speed_since = (time.time(),
                           int(self.optimizer.iterations.numpy()))

  def _speed_and_eta(self, step: int) -> str:
    """', 12.3 steps/s, ETA 0:01:40' since the last progress line."""
    now = time.time()
    since_time, since_step = self._speed_since or (now, step)
    self._speed_since = (now, step)
    if step <= since_step or now <= since_time:
      return ''
    # Includes the first loop's tracing and compilation: the first line's
    # speed is low, the next ones measure the steps alone.
    rate = (step - since_step) / (now - since_time)
    remaining = max(self.options.training_number_of_steps - step, 0)
    eta = datetime.timedelta(seconds=round(remaining / rate))
    return f', {rate:.3g} steps/s, ETA {eta}'

  def _loss_and_gradients(self, images, labels, global_batch_size):
    """Forward and backward pass of one replica's batch.

    Args:
      images: float32 [batch, height, width, 3].
      labels: int32 [batch, height, width].
      global_batch_size: float32 scalar, the images of this step over all
        replicas.

    Returns:
      (gradients of the trainable variables, this replica's share of the
      loss). The gradients are of the share (times the loss scale with
      float16), so their sum over replicas is the gradient of the
      global-batch loss; the shares sum to that loss.
    """
    num_replicas = self.strategy.num_replicas_in_sync
    with tf.GradientTape() as tape:
      outputs = self.model(images, training=True)
      per_image = loss_lib.per_image_top_k_cross_entropy(
          labels, outputs['semantic_logits'],
          self.options.top_k_percent_pixels,
          # The model's kernel profile says whether XLA islands are used.
          use_xla=profile.get(getattr(self.model, 'kernels',
                                      None)).xla_islands)
      share = loss_lib.global_batch_mean(per_image, global_batch_size)
      if self.model.losses:
        # Weight regularisers are the same on every replica: 1/n each.
        share += tf.add_n([tf.cast(l, tf.float32)
                           for l in self.model.losses]) / num_replicas
      scaled = self.optimizer.scale_loss(share)
    return tape.gradient(scaled, self.model.trainable_variables), share

  def replica_gradients(self, batch):
    """Gradients and loss share of one replica's batch (replica context).

    Args:
      batch: this replica's {'image', 'label', ...}.

    Returns:
      See _loss_and_gradients.
    """
    # Summed over replicas: exact also when the replicas' batches differ.
    global_batch_size = tf.distribute.get_replica_context().all_reduce(
        tf.distribute.ReduceOp.SUM,
        tf.cast(tf.shape(batch['label'])[0], tf.float32))
    return self._gradients_fn(batch['image'], batch['label'],
                              global_batch_size)

  def replica_step(self, batch) -> None:
    """One replica's whole training step (replica context).

    Forward and backward pass, both optimizers' updates and the loss metric:
    what a TPU compiles as one program (trainer/tpu_compat.py compiles this
    method to check that it can).

    Args:
      batch: this replica's {'image', 'label', ...}.
    """
    grads, share = self.replica_gradients(batch)
    self.optimizer.apply_gradients(
        list(zip(grads, self.model.trainable_variables)),
        backbone_variables=self.model.encoder.trainable_variables)
    # The metric averages over replicas: n shares average to their sum.
    self.train_loss.update_state(share * self.strategy.num_replicas_in_sync)

  def train_step(self, iterator) -> None:
    """Runs one distributed training step on the next batch."""
    self.strategy.run(self.replica_step, args=(next(iterator),))

  def train_loop_end(self) -> Dict[str, float]:
    """Checks the loss is finite and returns the scalars to summarise."""
    loss = float(self.train_loss.result().numpy())
    self.last_loss = loss
    step = int(self.optimizer.iterations.numpy())
    if not math.isfinite(loss):
      raise NonFiniteLossError(
          f'The training loss is {loss} at step {step}. {NON_FINITE_HINT}')
    learning_rate = float(self.optimizer.learning_rate().numpy())
    log_every = max(self.options.log_steps, 1)
    if (self._last_logged_step is None or
        step // log_every > self._last_logged_step // log_every):
      logging.info('step %d: loss %.4f, learning rate %.3g%s', step, loss,
                   learning_rate, self._speed_and_eta(step))
      self._last_logged_step = step
    self._maybe_write_images(step)
    scalars = {'loss': loss, 'learning_rate': learning_rate}
    if self.optimizer.loss_scale is not None:
      scalars['loss_scale'] = float(self.optimizer.loss_scale.scale.numpy())
    return scalars

  def _maybe_write_images(self, step: int) -> None:
    every = self.options.save_image_summaries_steps
    if not self._image_writer or every <= 0:
      return
    if step % every and step != self.options.training_number_of_steps:
      return
    outputs = self.model(self.vis_batch['image'], training=False)
    with self._image_writer.as_default():
      summaries.write_image_summaries(
          'train', self.vis_batch['image'], self.vis_batch['label'], outputs,
          self.colormap, step, max_outputs=4)
    self._image_writer.flush()


class ExperimentCheckpoint(tf.train.Checkpoint):
  """The experiment's checkpoint, whose restore() expects unused values.

  orbit resumes through CheckpointManager.restore_or_initialize(), which
  drops the restore status. The optimizer state in the file is only used
  once training creates the optimizer's slots; when it never does (a
  finished experiment run again, which only evaluates), TF logs one warning
  per unused value when the status is collected: hundreds of lines.
  expect_partial() only silences them; values still restore into variables
  created later, and restore errors (a shape mismatch) still raise.
  """

  def restore(self, save_path, options=None):
    return super().restore(save_path, options=options).expect_partial()


class FiniteCheckpointManager(tf.train.CheckpointManager):
  """A CheckpointManager that refuses to save non-finite weights or loss.

  orbit.Controller calls save() with check_interval after every training
  loop (saving when the checkpoint interval has passed): after a SIGTERM
  (the trainer's stop_requested), that call saves at the current step
  whatever the interval and raises preemption.StopRequested. The saves at
  the end of training (check_interval False) just save.
  """

  def __init__(self, *args, model: tf_keras.Model, trainer: Optional[Trainer],
               **kwargs):
    super().__init__(*args, **kwargs)
    self._model = model
    self._trainer = trainer

  def save(self, checkpoint_number=None, check_interval=True, options=None):
    last_loss = self._trainer.last_loss if self._trainer else None
    if last_loss is not None and not math.isfinite(last_loss):
      raise NonFiniteLossError(
          f'The last training loss is {last_loss}. '
          f'{NON_FINITE_HINT}')
    check_finite_weights(self._model)
    stop = (check_interval and self._trainer is not None and
            self._trainer.stop_requested())
    path = super().save(checkpoint_number=checkpoint_number,
                        check_interval=check_interval and not stop,
                        options=options)
    if stop:
      raise preemption.StopRequested()
    return path
