"""Runs an experiment: train, eval, train_and_eval or continuous_eval.

Wires the model (deeplab_sp.model.builder), the input pipeline
(deeplab_sp.data.input_pipeline), the split AdamW, the orbit Trainer and
Evaluator, and a tf.train.CheckpointManager in
`<model_dir>/<experiment_name>/` under an orbit.Controller. Training resumes
from the latest checkpoint of the experiment; otherwise the parts of the
model trainer_options.initial_checkpoint_parts names are initialised from
trainer_options.initial_checkpoint (if set; initial_checkpoint.py). Training
writes the experiment's config as the TensorBoard text summary `config` of
`train/` when it starts (at the step it starts from).
"""

import contextlib
import functools
import inspect
import os
import sys
from typing import Callable, Optional

from absl import logging
from google.protobuf import text_format
import orbit
from orbit import controller as orbit_controller
import tensorflow as tf
import tf_keras

from deeplab_sp import experiment as experiment_lib
from deeplab_sp.data import input_pipeline
from deeplab_sp.data import record_errors
from deeplab_sp.model import builder
from deeplab_sp.trainer import checkpoints
from deeplab_sp.trainer import eval_augmentation
from deeplab_sp.trainer import evaluator as evaluator_lib
from deeplab_sp.trainer import initial_checkpoint
from deeplab_sp.trainer import optimizer as optimizer_lib
from deeplab_sp.trainer import preemption
from deeplab_sp.trainer import trainer as trainer_lib
from deeplab_sp.utils import io
from deeplab_sp.utils import lock

MODES = experiment_lib.MODES


class _WithoutOrbitPrints:
  """sys.stdout minus what orbit.controller itself writes there.

  Every write passes through to `stream`, except those made directly by
  code of the orbit.controller module: its print() copies of the progress
  lines it has just logged (the only thing that module prints). The caller
  is told by its frame's module, not by the text, so no other output
  (ours, TensorFlow's, a user's print) is ever dropped.
  """

  def __init__(self, stream):
    self._stream = stream

  def write(self, text: str) -> int:
    frame = inspect.currentframe()
    caller = frame.f_back if frame is not None else None
    if (caller is not None and
        caller.f_globals.get('__name__') == orbit_controller.__name__):
      return len(text)
    return self._stream.write(text)

  def __getattr__(self, name):
    return getattr(self._stream, name)


@contextlib.contextmanager
def _orbit_lines_logged_once():
  """Runs orbit.Controller calls with each of its lines on the console once.

  orbit.Controller reports each line (`train | step: ...`, ` eval | step:
  ...`, `saved checkpoint to ...`, `restoring ...`) both to the absl log
  and with print(), and offers no option to turn the print off, so a
  terminal showed every line twice. The log copy (with its time and source)
  is kept; the printed copy is dropped by a sys.stdout that passes
  everything else through (_WithoutOrbitPrints). This uses only public
  interfaces: orbit's module is neither modified nor reimplemented (its
  Controller keeps doing the restoring, checkpointing, summaries,
  evaluation and preemption stops), and orbit's own lines are recognised
  by where they come from rather than by their wording.

  Unlike contextlib.redirect_stdout it nests (an inner use, or a run in
  another thread, finds the filter in place and leaves it) and restores
  sys.stdout only if it is still the filter, so runs ending out of order
  never leave a stale stream behind.
  """
  stream = sys.stdout
  if stream is None or isinstance(stream, _WithoutOrbitPrints):
    yield
    return
  sink = _WithoutOrbitPrints(stream)
  sys.stdout = sink
  try:
    yield
  finally:
    if sys.stdout is sink:
      sys.stdout = stream


# Seconds between polls for a new checkpoint in continuous_eval.
CHECKPOINT_POLL_SECONDS = 2


def experiment_dir(model_dir: str, experiment: experiment_lib.Experiment
                  ) -> str:
  return os.path.join(model_dir, experiment.name)


def check_writable(directory: str) -> None:
  """Creates `directory` and checks a file can be written there.

  Raises:
    PermissionError: naming the directory and the fix.
  """
  probe = os.path.join(directory, f'.write_probe-{os.getpid()}')
  try:
    tf.io.gfile.makedirs(directory)
    with tf.io.gfile.GFile(probe, 'w') as f:
      f.write('ok')
    tf.io.gfile.remove(probe)
  except (tf.errors.OpError, OSError) as e:
    raise PermissionError(
        f'Cannot write to the experiment directory {directory} ({e}). Pass a '
        '--model_dir you can write to (or fix its permissions / gs:// '
        'credentials).') from e


def _default_model_fn(experiment: experiment_lib.Experiment):
  return builder.build_model(experiment.options.model_options,
                             experiment.num_classes,
                             input_size=experiment.input_size)


def _default_dataset_fn(dataset_options, is_training, input_context=None):
  return input_pipeline.build_dataset(dataset_options, is_training,
                                      input_context)


def _first_local_batch(dataset_fn, dataset_options, is_training, count):
  """One batch (first `count` images) for image summaries, or None."""
  if count <= 0:
    return None
  batch = next(iter(dataset_fn(dataset_options, is_training, None)))
  return {key: value[:count] for key, value in batch.items()
          if key in ('image', 'label')}


def _initial_checkpoint_fn(model, trainer_options) -> Callable[[], None]:
  """Initialises the parts trainer_options.initial_checkpoint_parts names
  from trainer_options.initial_checkpoint (initial_checkpoint.py)."""
  def init_fn():
    if not trainer_options.initial_checkpoint:
      return
    prefix = initial_checkpoint.resolve(trainer_options.initial_checkpoint)
    initial_checkpoint.restore(model, prefix,
                               trainer_options.initial_checkpoint_parts)
  return init_fn


@contextlib.contextmanager
def _explained_restore_errors(path: str, source: str):
  """Re-raises a checkpoint that does not fit the model as a clear error.

  Does nothing when `path` is None (no checkpoint is read).
  """
  if path is None:
    yield
    return
  try:
    yield
  except (AssertionError, ValueError, tf.errors.OpError) as e:
    raise ValueError(
        f'The checkpoint {path} ({source}) does not fit the model of this '
        f'config: {str(e).rstrip(".")}. It was written for another model '
        '(encoder, widths, superpixel grid or number of classes): use the '
        'config it was trained with, or a new --model_dir / experiment_name '
        'for this one.') from e


def _build_model(model: tf_keras.Model, input_size) -> None:
  """Creates the variables (one forward pass on zeros), so a checkpoint is
  restored, and checked against the model, before the first step."""
  if not model.built:
    model(tf.zeros([1, input_size[0], input_size[1], 3]), training=False)


def run_experiment(experiment: experiment_lib.Experiment,
                   model_dir: str,
                   strategy: Optional[tf.distribute.Strategy] = None,
                   model_fn=None,
                   dataset_fn=None,
                   restore_previous_checkpoint_on_error: bool = False,
                   preemption_deadline_seconds: float = (
                       preemption.DEFAULT_DEADLINE_SECONDS)
                  ) -> dict:
  """Runs the experiment in the mode it was loaded for.

  Training modes (on the chief) hold the experiment directory's writer lock
  (deeplab_sp/utils/lock.py) while they run, then remove what killed runs
  left there (temporary files, `ckpt-N_temp/` directories) and verify the
  checkpoint they resume from (deeplab_sp/trainer/checkpoints.py). Called
  from the main thread, they stop on SIGTERM at a step boundary with a
  checkpoint of that step (deeplab_sp/trainer/preemption.py).

  The evaluation-only modes (eval, continuous_eval) take no lock: they
  only read checkpoints, and continuous_eval is meant to run beside the
  trainer. What they write cannot be damaged by a concurrent writer:
  eval_results.json is replaced atomically (the last evaluation wins) and
  every TensorBoard writer creates its own event file.

  Args:
    experiment, model_dir, strategy, model_fn, dataset_fn: see
      _run_experiment.
    restore_previous_checkpoint_on_error: when the latest checkpoint is
      damaged, resume from the newest intact older one (else: an error
      naming it).
    preemption_deadline_seconds: after a SIGTERM, end the process anyway
      after this many seconds (preemption.StopWatcher).

  Returns:
    The last eval results (or {}).

  Raises:
    lock.LockHeldError: another trainer writes to the experiment directory.
    checkpoints.DamagedCheckpointError: a damaged checkpoint, by name.
    record_errors.DamagedRecordError: a damaged shard or image, by name.
    preemption.TrainingPreempted: stopped on SIGTERM, after saving a
      checkpoint and releasing the lock.
  """
  mode = experiment.mode
  strategy = strategy or tf.distribute.get_strategy()
  datasets = []
  if mode in experiment_lib.TRAIN_MODES:
    datasets.append(experiment.options.train_dataset_options)
  if mode in experiment_lib.EVAL_MODES:
    datasets.append(experiment.options.eval_dataset_options)
  run = functools.partial(_run_experiment, experiment, model_dir, strategy,
                          model_fn, dataset_fn)
  if (mode not in experiment_lib.TRAIN_MODES or
      not strategy.extended.should_checkpoint):
    with record_errors.explain_data_errors(datasets):
      return run()
  exp_dir = experiment_dir(model_dir, experiment)
  check_writable(exp_dir)
  try:
    with lock.experiment_lock(exp_dir, purpose='train'):
      # With the lock held no other process writes here: whatever temporary
      # is left was left by a killed run.
      io.remove_stale_temporaries(exp_dir)
      checkpoints.remove_stale_temp_dirs(exp_dir)
      checkpoints.check_latest_checkpoint(
          exp_dir, restore_previous=restore_previous_checkpoint_on_error)
      with record_errors.explain_data_errors(datasets), preemption.watch(
          preemption_deadline_seconds) as watcher:
        return run(stop_watcher=watcher)
  except preemption.TrainingPreempted as e:
    # Logged once the lock is released.
    logging.warning('Stopped on SIGTERM at step %d: saved %s and released '
                    'the lock; rerun the same command to resume.', e.step,
                    e.checkpoint)
    raise


@_orbit_lines_logged_once()
def _run_experiment(experiment: experiment_lib.Experiment,
                    model_dir: str,
                    strategy: Optional[tf.distribute.Strategy] = None,
                    model_fn=None,
                    dataset_fn=None,
                    stop_watcher: Optional[preemption.StopWatcher] = None
                   ) -> dict:
  """Runs the experiment in the mode it was loaded for (no lock).

  Returns the last eval results (or {}).

  Args:
    experiment: the Experiment, loaded for its mode (one of MODES).
    model_dir: root directory; outputs go to model_dir/experiment_name.
    strategy: tf.distribute strategy (default: the default strategy).
    model_fn: experiment -> model; default build_model.
    dataset_fn: (dataset_options, is_training, input_context) ->
      tf.data.Dataset; default input_pipeline.build_dataset.
    stop_watcher: training stops at a step boundary once it is requested.

  Raises:
    PermissionError: before any work starts (the experiment is already
      validated).
    trainer.NonFiniteLossError: when the loss or weights become NaN/Inf.
    preemption.TrainingPreempted: stopped (stop_watcher) after saving a
      checkpoint of the step.
  """
  mode = experiment.mode
  if mode not in MODES:
    raise ValueError(f'The experiment was loaded for mode {mode!r}; load it '
                     f'for one of {MODES} to run it.')
  options = experiment.options
  strategy = strategy or tf.distribute.get_strategy()
  model_fn = model_fn or _default_model_fn
  dataset_fn = dataset_fn or _default_dataset_fn
  exp_dir = experiment_dir(model_dir, experiment)
  if mode in experiment_lib.TRAIN_MODES or strategy.extended.should_checkpoint:
    check_writable(exp_dir)
  trainer_options = options.trainer_options
  info = experiment.dataset

  if trainer_options.random_seed:
    tf_keras.utils.set_random_seed(trainer_options.random_seed)
  tf_keras.mixed_precision.set_global_policy(
      experiment.keras_mixed_precision_policy)

  with strategy.scope():
    model = model_fn(experiment)
    _build_model(model, experiment.input_size)
    # float16 needs dynamic loss scaling (its range underflows small
    # gradients); bfloat16 has float32's range and needs none.
    optimizer = optimizer_lib.SplitOptimizer(
        trainer_options,
        dynamic_loss_scale=trainer_options.mixed_precision == 'float16')
    global_step = optimizer.iterations

  def summary_dir(name):
    # Only the chief of a multi-worker job writes summaries (None: none).
    if not strategy.extended.should_checkpoint:
      return None
    return os.path.join(exp_dir, name)

  trainer = None
  if mode in experiment_lib.TRAIN_MODES:
    train_options = options.train_dataset_options
    train_dataset = strategy.distribute_datasets_from_function(
        lambda ctx: dataset_fn(train_options, True, ctx))
    train_vis = None
    if trainer_options.save_image_summaries_steps > 0:
      train_vis = _first_local_batch(dataset_fn, train_options, True, 4)
    trainer = trainer_lib.Trainer(
        strategy, model, optimizer, train_dataset, trainer_options,
        colormap=info.colormap, vis_batch=train_vis,
        image_summary_dir=summary_dir('train_images'),
        stop_requested=stop_watcher.requested if stop_watcher else None)

  evaluator = None
  if mode in experiment_lib.EVAL_MODES:
    eval_options = options.eval_dataset_options
    eval_dataset = strategy.distribute_datasets_from_function(
        lambda ctx: dataset_fn(eval_options, False, ctx))
    num_vis = options.evaluator_options.num_vis_images
    evaluator = evaluator_lib.Evaluator(
        strategy, model, eval_dataset, info.class_names, global_step,
        experiment_dir=(exp_dir if options.evaluator_options.save_results_json
                        else None),
        colormap=info.colormap,
        vis_batch=_first_local_batch(dataset_fn, eval_options, False, num_vis),
        image_summary_dir=summary_dir('eval_images'),
        num_vis_images=num_vis,
        superpixel_metrics=options.evaluator_options.superpixel_metrics,
        augmentation=eval_augmentation.EvalAugmentation.from_options(
            options.evaluator_options),
        boundary_band_pixels=options.evaluator_options.boundary_band_pixels)

  trackables = dict(model=model, optimizer=optimizer.main,
                    backbone_optimizer=optimizer.backbone)
  if optimizer.loss_scale is not None:
    trackables['loss_scale'] = optimizer.loss_scale
  checkpoint = trainer_lib.ExperimentCheckpoint(**trackables)
  # Non-chief workers of a multi-worker job write to a scratch directory.
  ckpt_dir = exp_dir
  if not strategy.extended.should_checkpoint:
    task = strategy.cluster_resolver.task_id
    ckpt_dir = os.path.join(exp_dir, f'.worker_{task}_scratch')
  checkpoint_manager = trainer_lib.FiniteCheckpointManager(
      checkpoint, directory=ckpt_dir,
      max_to_keep=trainer_options.num_checkpoints_to_keep,
      step_counter=global_step,
      checkpoint_interval=trainer_options.save_checkpoints_steps,
      init_fn=_initial_checkpoint_fn(model, trainer_options),
      model=model, trainer=trainer)

  # With a trainer, the Controller restores the latest checkpoint (or runs
  # init_fn) here, inside the strategy's scope.
  with _explained_restore_errors(checkpoint_manager.latest_checkpoint,
                                 'the latest of the experiment directory'):
    controller = orbit.Controller(
        strategy=strategy, trainer=trainer, evaluator=evaluator,
        global_step=global_step,
        steps_per_loop=trainer_options.steps_per_loop,
        checkpoint_manager=checkpoint_manager if trainer else None,
        summary_interval=trainer_options.save_summaries_steps,
        summary_dir=summary_dir('train'),
        eval_summary_dir=summary_dir('eval'))
  total_steps = trainer_options.training_number_of_steps
  if trainer is not None and summary_dir('train'):
    _write_config_summary(summary_dir('train'), experiment,
                          int(global_step.numpy()))
  if trainer is not None:
    _resume_deterministic_input(trainer, strategy, dataset_fn,
                                options.train_dataset_options,
                                int(global_step.numpy()))

  try:
    if mode == 'train':
      _restore(checkpoint_manager, global_step)
      controller.train(steps=total_steps)
      _save_final(checkpoint_manager, global_step)
    elif mode == 'train_and_eval':
      _restore(checkpoint_manager, global_step)
      if int(global_step.numpy()) >= total_steps:
        # A finished experiment (e.g. rerun after its end): evaluate the
        # final checkpoint again rather than do nothing.
        controller.evaluate(steps=-1)
      else:
        controller.train_and_evaluate(
            train_steps=total_steps, eval_steps=-1,
            eval_interval=options.evaluator_options.eval_interval_steps)
      _save_final(checkpoint_manager, global_step)
  except preemption.StopRequested:
    # At a step boundary: the checkpoint manager saved this step, unless
    # the stop came before a loop (during an evaluation).
    _save_final(checkpoint_manager, global_step)
    raise preemption.TrainingPreempted(  # pylint: disable=raise-missing-from
        int(global_step.numpy()), checkpoint_manager.latest_checkpoint)
  if mode == 'eval':
    latest = checkpoints.latest_checkpoint(exp_dir)
    if latest is None:
      raise FileNotFoundError(
          f'No checkpoint in {exp_dir}; train first (--mode=train) or pass '
          'the --model_dir that holds the experiment.')
    checkpoints.verify_or_explain(latest, flag=None)
    with _explained_restore_errors(latest, '--mode=eval'):
      checkpoint.read(latest).expect_partial()
    controller.evaluate(steps=-1)
  elif mode == 'continuous_eval':
    _continuous_eval(controller, checkpoint, exp_dir, global_step,
                     total_steps,
                     options.evaluator_options.continuous_eval_timeout_seconds)
  return evaluator.last_results if evaluator else {}


def _write_config_summary(directory: str,
                          experiment: experiment_lib.Experiment,
                          step: int) -> None:
  """The config as TensorBoard text (`config`), a code block in Markdown."""
  text = text_format.MessageToString(experiment.options)
  # Four spaces: a Markdown code block, so TensorBoard keeps the layout.
  markdown = (f'Config file: `{experiment.path}`\n\n' + ''.join(
      f'    {line}\n' for line in text.splitlines()))
  writer = tf.summary.create_file_writer(directory)
  with writer.as_default():
    tf.summary.text('config', markdown, step=step)
  writer.close()


def _resume_deterministic_input(trainer, strategy, dataset_fn,
                                train_options, step: int) -> None:
  """Resumes the training data where an uninterrupted run would be.

  With augmentations { deterministic: true } the training batches are a
  fixed sequence (input_pipeline.py: seeded order, augmentation seeded by
  example index). A run resumed at `step` skips the batches of the steps
  before it, so it reads what the uninterrupted run read from `step` on.
  The skipped batches are still read and augmented: resuming costs the
  input pipeline's time for `step` steps. Without deterministic the data
  is random anyway and nothing is skipped.
  """
  if step <= 0 or not train_options.augmentations.deterministic:
    return

  def skipped(context):
    # Each step takes one batch per replica fed by this input pipeline.
    per_step = max(context.num_replicas_in_sync //
                   context.num_input_pipelines, 1)
    return dataset_fn(train_options, True, context).skip(step * per_step)

  logging.info('Deterministic input: skipping the batches of steps 1-%d, '
               'which the resumed checkpoint has trained on.', step)
  trainer.train_dataset = strategy.distribute_datasets_from_function(skipped)


def _restore(checkpoint_manager, global_step) -> None:
  """Logs where training resumes (the Controller restored it, and
  global_step, the manager's step counter, with it)."""
  path = checkpoint_manager.latest_checkpoint
  if path:
    logging.info('Resumed from %s (step %d).', path, int(global_step.numpy()))


def _save_final(checkpoint_manager, global_step) -> None:
  step = int(global_step.numpy())
  if checkpoint_manager.latest_checkpoint != os.path.join(
      checkpoint_manager.directory, f'ckpt-{step}'):
    checkpoint_manager.save(checkpoint_number=step, check_interval=False)


def _continuous_eval(controller, checkpoint, exp_dir, global_step,
                     total_steps, timeout_seconds) -> None:
  """Evaluates each new checkpoint; stops after the last one or a timeout.

  A checkpoint the trainer's rotation (num_checkpoints_to_keep) deletes
  between its listing and its restore is skipped with a log line: the
  evaluator waits for the next one.
  """
  for path in tf.train.checkpoints_iterator(
      exp_dir, min_interval_secs=CHECKPOINT_POLL_SECONDS,
      timeout=timeout_seconds):
    try:
      checkpoints.verify_or_explain(path, flag=None)
      with _explained_restore_errors(path, '--mode=continuous_eval'):
        checkpoint.read(path).expect_partial()
    except (ValueError, tf.errors.OpError):
      if not checkpoints.rotated_away(path):
        raise
      logging.warning('Skipping %s: the trainer deleted it (rotation, '
                      'trainer_options.num_checkpoints_to_keep) before it '
                      'was read; waiting for the next checkpoint.', path)
      continue
    logging.info('Evaluating %s (step %d).', path, int(global_step.numpy()))
    controller.evaluate(steps=-1)
    if int(global_step.numpy()) >= total_steps:
      logging.info('Evaluated the last checkpoint (step %d); done.',
                   total_steps)
      return
  logging.info('No new checkpoint for %d s; stopping.', timeout_seconds)
