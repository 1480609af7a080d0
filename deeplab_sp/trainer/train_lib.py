"""Runs an experiment: train, eval, train_and_eval or continuous_eval.

Wires the model (deeplab_sp.model.builder), the input pipeline
(deeplab_sp.data.input_pipeline), the split AdamW, the orbit Trainer and
Evaluator, and a tf.train.CheckpointManager in
`<model_dir>/<experiment_name>/` under an orbit.Controller. Training resumes
from the latest checkpoint of the experiment; otherwise the model is
initialised from trainer_options.initial_checkpoint (if set).
"""

import contextlib
import os
from typing import Callable, Optional

from absl import logging
import orbit
import tensorflow as tf
import tf_keras

from deeplab_sp import config as config_lib
from deeplab_sp.data import dataset_info
from deeplab_sp.protos import config_pb2
from deeplab_sp.trainer import evaluator as evaluator_lib
from deeplab_sp.trainer import optimizer as optimizer_lib
from deeplab_sp.trainer import trainer as trainer_lib

MODES = config_lib.MODES
# Seconds between polls for a new checkpoint in continuous_eval.
CHECKPOINT_POLL_SECONDS = 2

_MIXED_PRECISION_POLICIES = {'none': 'float32', 'float16': 'mixed_float16',
                             'bfloat16': 'mixed_bfloat16'}


def experiment_dir(model_dir: str, options: config_pb2.ExperimentOptions
                  ) -> str:
  return os.path.join(model_dir, options.experiment_name)


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


def check_class_counts(options: config_pb2.ExperimentOptions,
                       mode: str) -> int:
  """Returns the class count; raises ConfigError if the datasets disagree."""
  names = {}
  if mode in config_lib.TRAIN_MODES:
    names['train_dataset_options.dataset'] = (
        options.train_dataset_options.dataset)
  if mode in config_lib.EVAL_MODES:
    names['eval_dataset_options.dataset'] = options.eval_dataset_options.dataset
  counts = {field: dataset_info.get_dataset_info(name).num_classes
            for field, name in names.items()}
  if len(set(counts.values())) != 1:
    raise config_lib.ConfigError(
        f'The datasets disagree on the number of classes: {counts} (datasets '
        f'{names}). Train and evaluate on datasets with the same label '
        'space.')
  return next(iter(counts.values()))


def _default_model_fn(options, num_classes):
  from deeplab_sp.model import builder  # pylint: disable=g-import-not-at-top
  return builder.build_model(options.model_options, num_classes,
                             input_size=config_lib.model_input_size(options))


def _default_dataset_fn(dataset_options, is_training, input_context=None):
  from deeplab_sp.data import input_pipeline  # pylint: disable=g-import-not-at-top
  return input_pipeline.build_dataset(dataset_options, is_training,
                                      input_context)


def _first_local_batch(dataset_fn, dataset_options, is_training, count):
  """One batch (first `count` images) for image summaries, or None."""
  if count <= 0:
    return None
  batch = next(iter(dataset_fn(dataset_options, is_training, None)))
  return {key: value[:count] for key, value in batch.items()
          if key in ('image', 'label')}


def _initial_checkpoint_fn(model, path: str) -> Callable[[], None]:
  def init_fn():
    if not path:
      return
    prefix = path
    if tf.io.gfile.isdir(path):
      prefix = tf.train.latest_checkpoint(path)
      if prefix is None:
        raise FileNotFoundError(
            f'trainer_options.initial_checkpoint {path} is a directory '
            'without checkpoints; point it at a checkpoint prefix.')
    logging.info('Initialising the model from %s.', prefix)
    with _explained_restore_errors(prefix, 'trainer_options.initial_checkpoint'):
      # The whole model must come from it (optimizer state may not).
      tf.train.Checkpoint(model=model).read(
          prefix).assert_existing_objects_matched()
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
        f'config: {str(e).rstrip(".")}. It was written for another model (encoder, widths, '
        'superpixel grid or number of classes): use the config it was trained '
        'with, or a new --model_dir / experiment_name for this one.') from e


def _build_model(model: tf_keras.Model, input_size) -> None:
  """Creates the variables (one forward pass on zeros), so a checkpoint is
  restored, and checked against the model, before the first step."""
  if not model.built:
    model(tf.zeros([1, input_size[0], input_size[1], 3]), training=False)


def run_experiment(options: config_pb2.ExperimentOptions,
                   mode: str,
                   model_dir: str,
                   strategy: Optional[tf.distribute.Strategy] = None,
                   model_fn=None,
                   dataset_fn=None) -> dict:
  """Runs `mode` for the experiment; returns the last eval results (or {}).

  Args:
    options: a validated ExperimentOptions.
    mode: one of MODES.
    model_dir: root directory; outputs go to model_dir/experiment_name.
    strategy: tf.distribute strategy (default: the default strategy).
    model_fn: (options, num_classes) -> model; default build_model.
    dataset_fn: (dataset_options, is_training, input_context) ->
      tf.data.Dataset; default input_pipeline.build_dataset.

  Raises:
    ConfigError, PermissionError: before any work starts.
    trainer.NonFiniteLossError: when the loss or weights become NaN/Inf.
  """
  if mode not in MODES:
    raise ValueError(f'--mode={mode} is unknown; use one of {MODES}.')
  strategy = strategy or tf.distribute.get_strategy()
  model_fn = model_fn or _default_model_fn
  dataset_fn = dataset_fn or _default_dataset_fn
  exp_dir = experiment_dir(model_dir, options)
  num_classes = check_class_counts(options, mode)
  if mode in config_lib.TRAIN_MODES or strategy.extended.should_checkpoint:
    check_writable(exp_dir)
  trainer_options = options.trainer_options
  info_name = (options.train_dataset_options.dataset
               if mode in config_lib.TRAIN_MODES
               else options.eval_dataset_options.dataset)
  info = dataset_info.get_dataset_info(info_name)

  if trainer_options.random_seed:
    tf_keras.utils.set_random_seed(trainer_options.random_seed)
  policy = _MIXED_PRECISION_POLICIES.get(trainer_options.mixed_precision)
  if policy is None:
    raise config_lib.ConfigError(
        f'trainer_options.mixed_precision {trainer_options.mixed_precision!r}'
        f' is unknown; use one of {sorted(_MIXED_PRECISION_POLICIES)}.')
  tf_keras.mixed_precision.set_global_policy(policy)

  with strategy.scope():
    model = model_fn(options, num_classes)
    _build_model(model, config_lib.model_input_size(options))
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
  if mode in config_lib.TRAIN_MODES:
    train_options = options.train_dataset_options
    train_dataset = strategy.distribute_datasets_from_function(
        lambda ctx: dataset_fn(train_options, True, ctx))
    train_vis = None
    if trainer_options.save_image_summaries_steps > 0:
      train_vis = _first_local_batch(dataset_fn, train_options, True, 4)
    trainer = trainer_lib.Trainer(
        strategy, model, optimizer, train_dataset, trainer_options,
        colormap=info.colormap, vis_batch=train_vis,
        image_summary_dir=summary_dir('train_images'))

  evaluator = None
  if mode in config_lib.EVAL_MODES:
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
        superpixel_metrics=options.evaluator_options.superpixel_metrics)

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
      init_fn=_initial_checkpoint_fn(model, trainer_options.initial_checkpoint),
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

  if mode == 'train':
    _restore(checkpoint_manager)
    controller.train(steps=total_steps)
    _save_final(checkpoint_manager, global_step)
  elif mode == 'train_and_eval':
    _restore(checkpoint_manager)
    if int(global_step.numpy()) >= total_steps:
      # A finished experiment (e.g. rerun after its end): evaluate the final
      # checkpoint again rather than do nothing.
      controller.evaluate(steps=-1)
    else:
      controller.train_and_evaluate(
          train_steps=total_steps, eval_steps=-1,
          eval_interval=options.evaluator_options.eval_interval_steps)
    _save_final(checkpoint_manager, global_step)
  elif mode == 'eval':
    latest = tf.train.latest_checkpoint(exp_dir)
    if latest is None:
      raise FileNotFoundError(
          f'No checkpoint in {exp_dir}; train first (--mode=train) or pass '
          'the --model_dir that holds the experiment.')
    with _explained_restore_errors(latest, '--mode=eval'):
      checkpoint.read(latest).expect_partial()
    controller.evaluate(steps=-1)
  else:
    _continuous_eval(controller, checkpoint, exp_dir, global_step,
                     total_steps,
                     options.evaluator_options.continuous_eval_timeout_seconds)
  return evaluator.last_results if evaluator else {}


def _restore(checkpoint_manager) -> None:
  """Logs where training resumes (the Controller restored it)."""
  path = checkpoint_manager.latest_checkpoint
  if path:
    logging.info('Resumed from %s (step %d).', path,
                 int(checkpoint_manager._step_counter.numpy()))  # pylint: disable=protected-access


def _save_final(checkpoint_manager, global_step) -> None:
  step = int(global_step.numpy())
  if checkpoint_manager.latest_checkpoint != os.path.join(
      checkpoint_manager.directory, f'ckpt-{step}'):
    checkpoint_manager.save(checkpoint_number=step, check_interval=False)


def _continuous_eval(controller, checkpoint, exp_dir, global_step,
                     total_steps, timeout_seconds) -> None:
  """Evaluates each new checkpoint; stops after the last one or a timeout."""
  for path in tf.train.checkpoints_iterator(
      exp_dir, min_interval_secs=CHECKPOINT_POLL_SECONDS,
      timeout=timeout_seconds):
    with _explained_restore_errors(path, '--mode=continuous_eval'):
      checkpoint.read(path).expect_partial()
    logging.info('Evaluating %s (step %d).', path, int(global_step.numpy()))
    controller.evaluate(steps=-1)
    if int(global_step.numpy()) >= total_steps:
      logging.info('Evaluated the last checkpoint (step %d); done.',
                   total_steps)
      return
  logging.info('No new checkpoint for %d s; stopping.', timeout_seconds)
