"""End-to-end tests of run_experiment with the stand-in model and data.

The stand-in (tests/trainer/trainer_testing.py) has the SPTransformer's
output dict and `encoder` attribute; the loop, loss, optimiser, checkpoints,
evaluation and summaries are the real ones.
"""

import gc
import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
from orbit import controller as orbit_controller
import pytest
import tensorflow as tf
import tf_keras
from tensorflow.python.checkpoint import checkpoint as tf_checkpoint

from deeplab_sp.trainer import eval_augmentation
from deeplab_sp.trainer import evaluator as evaluator_lib
from deeplab_sp.trainer import metrics
from deeplab_sp.trainer import preemption
from deeplab_sp.trainer import train_lib
from deeplab_sp.trainer import trainer as trainer_lib
from deeplab_sp.utils import lock
from conftest import REPO_ROOT
import trainer_testing


def _scalars(directory, tag):
  values = {}
  for path in tf.io.gfile.glob(os.path.join(directory, 'events.*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag == tag:
          values[event.step] = float(tf.make_ndarray(value.tensor))
  return [values[step] for step in sorted(values)]


def _run(options, mode, model_dir, model_fn=trainer_testing.stand_in_model_fn):
  return train_lib.run_experiment(trainer_testing.experiment(options, mode),
                                  str(model_dir), model_fn=model_fn,
                                  dataset_fn=trainer_testing.make_dataset_fn())


def test_training_lowers_loss_and_eval_json_matches_confusion(tmp_path):
  options = trainer_testing.tiny_options(steps=30)
  options.trainer_options.save_summaries_steps = 5
  results = _run(options, 'train_and_eval', tmp_path)
  exp_dir = tmp_path / 'test_experiment'
  losses = _scalars(str(exp_dir / 'train'), 'loss')
  assert len(losses) == 6
  assert losses[-1] < 0.7 * losses[0], losses
  assert sorted(f for f in os.listdir(exp_dir) if f.endswith('.index')) == [
      'ckpt-10.index', 'ckpt-15.index', 'ckpt-20.index', 'ckpt-25.index',
      'ckpt-30.index']
  with open(exp_dir / 'eval_results.json') as f:
    saved = json.load(f)
  assert saved == results
  assert saved['step'] == 30 and saved['num_images'] == 16
  assert set(saved['per_class_iou']) >= {'road', 'bicycle'}
  assert _scalars(str(exp_dir / 'eval'), 'miou')[-1] == pytest.approx(
      saved['miou'])
  assert tf.io.gfile.glob(str(exp_dir / 'train_images' / 'events.*'))

  # The JSON equals what the confusion matrix of the restored model gives.
  model = trainer_testing.StandInModel(19)
  dataset = trainer_testing.make_dataset_fn()(options.eval_dataset_options,
                                            False)
  model(next(iter(dataset))['image'])
  tf.train.Checkpoint(model=model).read(
      str(exp_dir / 'ckpt-30')).expect_partial()
  confusion = metrics.ConfusionMatrix(19)
  for batch in dataset:
    confusion.update(batch['label'], tf.argmax(
        model(batch['image'])['semantic_logits'], -1))
  expected = metrics.metrics_from_confusion_matrix(confusion.result())
  assert saved['miou'] == pytest.approx(expected.miou, abs=1e-6)
  assert saved['pixel_accuracy'] == pytest.approx(expected.pixel_accuracy,
                                                  abs=1e-6)


def test_resume_continues_from_the_last_checkpoint(tmp_path):
  options = trainer_testing.tiny_options(steps=10)
  _run(options, 'train', tmp_path)
  exp_dir = tmp_path / 'test_experiment'
  assert tf.train.latest_checkpoint(str(exp_dir)).endswith('ckpt-10')
  options.trainer_options.training_number_of_steps = 20
  options.trainer_options.warmup_steps = 0
  _run(options, 'train', tmp_path)
  assert tf.train.latest_checkpoint(str(exp_dir)).endswith('ckpt-20')
  # Only 10 more steps ran: the loss summaries start after step 10.
  steps = []
  for path in tf.io.gfile.glob(str(exp_dir / 'train' / 'events.*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      if any(v.tag == 'loss' for v in event.summary.value):
        steps.append(event.step)
  assert sorted(steps) == [5, 10, 15, 20]
  reader = tf.train.load_checkpoint(str(exp_dir / 'ckpt-20'))
  step_keys = [k for k in reader.get_variable_to_shape_map()
               if k.startswith('optimizer/iter')]
  assert step_keys and reader.get_tensor(step_keys[0]) == 20


class _NaNModel(trainer_testing.StandInModel):

  def call(self, images, training=False):
    outputs = super().call(images, training)
    outputs['semantic_logits'] = outputs['semantic_logits'] * np.nan
    return outputs


def test_nan_loss_stops_training_without_a_checkpoint(tmp_path):
  options = trainer_testing.tiny_options(steps=10)
  with pytest.raises(trainer_lib.NonFiniteLossError,
                     match='learning_rate.*gradient_clip_norm'):
    _run(options, 'train', tmp_path,
         model_fn=lambda experiment: _NaNModel(experiment.num_classes))
  assert tf.train.latest_checkpoint(str(tmp_path / 'test_experiment')) is None


def test_checkpoint_manager_refuses_non_finite_weights(tmp_path):
  model = trainer_testing.StandInModel(3)
  model(tf.zeros([1, 4, 4, 3]))
  manager = trainer_lib.FiniteCheckpointManager(
      tf.train.Checkpoint(model=model), str(tmp_path), max_to_keep=1,
      model=model, trainer=None)
  manager.save()
  model.classifier.bias.assign([0.0, np.inf, 0.0])
  with pytest.raises(trainer_lib.NonFiniteLossError, match='classifier'):
    manager.save()
  assert len(tf.io.gfile.glob(str(tmp_path / '*.index'))) == 1


def test_unwritable_model_dir_fails_before_work(tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a directory')
  calls = []
  with pytest.raises(PermissionError, match='--model_dir'):
    train_lib.run_experiment(
        trainer_testing.experiment(trainer_testing.tiny_options(), 'train'),
        str(blocker / 'sub'), model_fn=lambda *args: calls.append(args))
  assert not calls


def test_eval_mode_without_checkpoint_explains(tmp_path):
  with pytest.raises(FileNotFoundError, match='train first'):
    _run(trainer_testing.tiny_options(), 'eval', tmp_path)


def test_continuous_eval_stops_after_the_last_checkpoint(tmp_path):
  options = trainer_testing.tiny_options(steps=10)
  _run(options, 'train', tmp_path)
  options.evaluator_options.continuous_eval_timeout_seconds = 60
  start = time.time()
  results = _run(options, 'continuous_eval', tmp_path)
  assert time.time() - start < 30  # Did not wait for the timeout.
  assert results['step'] == 10
  with open(tmp_path / 'test_experiment' / 'eval_results.json') as f:
    assert json.load(f)['step'] == 10
  # eval mode evaluates the latest checkpoint once, with the same result.
  assert _run(options, 'eval', tmp_path) == results


def test_bfloat16_mixed_precision_trains(tmp_path):
  options = trainer_testing.tiny_options(steps=5)
  options.trainer_options.mixed_precision = 'bfloat16'
  try:
    _run(options, 'train', tmp_path)
  finally:
    tf_keras.mixed_precision.set_global_policy('float32')
  reader = tf.train.load_checkpoint(
      tf.train.latest_checkpoint(str(tmp_path / 'test_experiment')))
  dtypes = reader.get_variable_to_dtype_map()
  kernel = [k for k in dtypes if 'classifier/kernel/.ATTRIBUTES' in k]
  assert kernel and dtypes[kernel[0]] == tf.float32  # float32 master weights


def test_float16_trains_with_a_checkpointed_loss_scale(tmp_path):
  options = trainer_testing.tiny_options(steps=5)
  options.trainer_options.mixed_precision = 'float16'
  try:
    _run(options, 'train', tmp_path)
  finally:
    tf_keras.mixed_precision.set_global_policy('float32')
  exp_dir = tmp_path / 'test_experiment'
  assert _scalars(str(exp_dir / 'train'), 'loss_scale') == [2.0**15]
  reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(exp_dir)))
  keys = reader.get_variable_to_shape_map()
  scale_key = [k for k in keys if k.startswith('loss_scale/scale')]
  assert scale_key and reader.get_tensor(scale_key[0]) == 2.0**15
  kernel = [k for k in keys if 'classifier/kernel/.ATTRIBUTES' in k]
  assert np.all(np.isfinite(reader.get_tensor(kernel[0])))


def test_xla_training_step_matches_the_plain_one(tmp_path):
  weights = []
  for use_xla in (False, True):
    options = trainer_testing.tiny_options(steps=5)
    options.trainer_options.use_xla = use_xla
    options.trainer_options.save_image_summaries_steps = 0
    _run(options, 'train', tmp_path / str(use_xla))
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(
        str(tmp_path / str(use_xla) / 'test_experiment')))
    weights.append({k: reader.get_tensor(k)
                    for k in reader.get_variable_to_shape_map()
                    if k.startswith('model/') and 'OPTIMIZER' not in k})
  assert weights[0].keys() == weights[1].keys() and weights[0]
  for key in weights[0]:
    np.testing.assert_allclose(weights[1][key], weights[0][key], rtol=1e-4,
                               atol=1e-5, err_msg=key)


def test_resuming_with_a_different_class_count_is_a_clear_error(tmp_path):
  options = trainer_testing.tiny_options(steps=5)
  _run(options, 'train', tmp_path)
  options.trainer_options.training_number_of_steps = 10
  with pytest.raises(ValueError, match='does not fit the model.*new '
                     '--model_dir'):
    _run(options, 'train', tmp_path,
         model_fn=lambda experiment: trainer_testing.StandInModel(3))
  assert tf.train.latest_checkpoint(
      str(tmp_path / 'test_experiment')).endswith('ckpt-5')


def test_initial_checkpoint_must_hold_the_whole_model(tmp_path):
  # A checkpoint of the encoder alone is not a whole model.
  encoder_only = trainer_testing.StandInModel(19)
  encoder_only.encoder(tf.zeros([1, 16, 16, 3]))
  prefix = tf.train.Checkpoint(model=tf.train.Checkpoint(
      encoder=encoder_only.encoder)).write(str(tmp_path / 'partial'))
  options = trainer_testing.tiny_options(steps=5)
  options.trainer_options.initial_checkpoint = prefix
  options.trainer_options.initial_checkpoint_parts = (
      options.trainer_options.ALL)
  with pytest.raises(ValueError, match='initial_checkpoint.*does not fit'):
    _run(options, 'train', tmp_path / 'run')


def test_rerunning_a_finished_experiment_only_evaluates(tmp_path,
                                                       monkeypatch):
  options = trainer_testing.tiny_options(steps=5)
  first = _run(options, 'train_and_eval', tmp_path)
  exp_dir = tmp_path / 'test_experiment'
  mtime = os.path.getmtime(exp_dir / 'ckpt-5.index')
  # TF warns (when the restore is garbage-collected) about every checkpoint
  # value that was never used: here the optimizer state, as no step runs.
  # Restores of earlier tests (a failed one holds unused values) are
  # collected first, so that only this run's warnings are counted.
  gc.collect()
  warnings = []
  monkeypatch.setattr(tf_checkpoint.logging, 'warning',
                      lambda message, *args: warnings.append(message))
  second = _run(options, 'train_and_eval', tmp_path)
  gc.collect()
  assert second == first and second['step'] == 5
  assert os.path.getmtime(exp_dir / 'ckpt-5.index') == mtime
  assert sorted(p.name for p in exp_dir.glob('*.index')) == ['ckpt-5.index']
  assert not [m for m in warnings if 'could not be found' in m], warnings[:3]


def test_progress_line_every_log_steps(tmp_path, monkeypatch):
  options = trainer_testing.tiny_options(steps=20)
  options.trainer_options.steps_per_loop = 5
  options.trainer_options.log_steps = 10
  logged_steps = []

  def record(message, *args):
    if message.startswith('step %d: loss'):
      logged_steps.append(args[0])

  monkeypatch.setattr(trainer_lib.logging, 'info', record)
  _run(options, 'train', tmp_path)
  # The first loop reports (the run has started), then each multiple of 10.
  assert logged_steps == [5, 10, 20]


def test_each_evaluation_appends_a_history_line(tmp_path):
  options = trainer_testing.tiny_options(steps=10)
  options.trainer_options.steps_per_loop = 5
  options.evaluator_options.eval_interval_steps = 5
  before = time.time()
  results = _run(options, 'train_and_eval', tmp_path)
  exp_dir = tmp_path / 'test_experiment'
  lines = (exp_dir / 'eval_history.jsonl').read_text().splitlines()
  history = [json.loads(line) for line in lines]
  assert [entry['step'] for entry in history] == [5, 10]
  for entry in history:
    assert set(entry) >= {'step', 'miou', 'per_class_iou', 'pixel_accuracy',
                          'wall_time'}
    assert before <= entry['wall_time'] <= time.time()
  assert history[-1]['miou'] == results['miou']
  assert history[-1]['per_class_iou'] == results['per_class_iou']
  assert evaluator_lib.read_history(str(exp_dir)) == history
  # Evaluating again (the experiment is finished) appends one more line.
  _run(options, 'eval', tmp_path)
  assert len((exp_dir / 'eval_history.jsonl').read_text().splitlines()) == 3


def test_training_writes_the_config_as_text_once(tmp_path):
  options = trainer_testing.tiny_options(steps=10)
  _run(options, 'train', tmp_path)
  texts = []
  directory = tmp_path / 'test_experiment' / 'train'
  for path in tf.io.gfile.glob(str(directory / 'events.*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag == 'config':
          texts.append((event.step, tf.make_ndarray(value.tensor).item()))
  assert len(texts) == 1 and texts[0][0] == 0
  assert b'training_number_of_steps: 10' in texts[0][1]


def test_progress_line_has_speed_and_eta(tmp_path, monkeypatch):
  options = trainer_testing.tiny_options(steps=10)
  options.trainer_options.steps_per_loop = 5
  options.trainer_options.log_steps = 5
  lines = []

  def record(message, *args):
    if message.startswith('step %d: loss'):
      lines.append(message % args)

  monkeypatch.setattr(trainer_lib.logging, 'info', record)
  _run(options, 'train', tmp_path)
  assert len(lines) == 2
  assert all(re.search(r'[\d.e+]+ steps/s, ETA \d+:\d\d:\d\d$', line)
             for line in lines), lines
  assert lines[-1].endswith('ETA 0:00:00')


def test_orbit_lines_are_logged_not_printed(tmp_path, capsys, caplog):
  options = trainer_testing.tiny_options(steps=5)
  options.evaluator_options.eval_interval_steps = 5
  stdout = sys.stdout
  orbit_attributes = dict(vars(orbit_controller))
  with caplog.at_level(logging.INFO):
    print('before the run')
    _run(options, 'train_and_eval', tmp_path)
    print('after the run')
  # Nothing of orbit's module was replaced, not even for the run.
  assert vars(orbit_controller).keys() == orbit_attributes.keys()
  assert all(vars(orbit_controller)[name] is value
             for name, value in orbit_attributes.items())
  # orbit logs each line and also prints it; the log copy is kept.
  logged = [record.getMessage() for record in caplog.records]
  for line in ('train | step:', ' eval | step:', 'saved checkpoint to'):
    assert any(message.startswith(line) for message in logged), (line,
                                                                  logged)
  out = capsys.readouterr().out
  for line in ('train | step:', ' eval | step:', 'saved checkpoint to',
               'restoring', 'restored'):
    assert line not in out, out
  # Everything else printed still reaches stdout, which is restored.
  assert out.splitlines() == ['before the run', 'after the run'], out
  assert sys.stdout is stdout


def test_only_orbit_controller_prints_are_dropped(capsys):
  # While a run filters stdout, output from anywhere else (even text that
  # looks like orbit's) still reaches it; orbit.controller's print does not.
  with train_lib._orbit_lines_logged_once():  # pylint: disable=protected-access
    print('train | step: 5 | not orbit')
    orbit_controller._log('train | step: 6 | orbit')  # pylint: disable=protected-access
    with train_lib._orbit_lines_logged_once():  # pylint: disable=protected-access
      sys.stdout.write('nested\n')
  print('after')
  assert capsys.readouterr().out.splitlines() == [
      'train | step: 5 | not orbit', 'nested', 'after']


def test_importing_train_lib_leaves_orbit_controller_unchanged():
  # A fresh interpreter: orbit.controller's attributes before and after
  # train_lib is imported (and orbit's own _log is what it calls).
  script = textwrap.dedent("""
      from orbit import controller
      before = dict(vars(controller))
      from deeplab_sp.trainer import train_lib
      after = dict(vars(controller))
      assert before.keys() == after.keys(), set(before) ^ set(after)
      changed = [k for k in before if before[k] is not after[k]]
      assert not changed, changed
      assert controller._log.__module__ == 'orbit.controller'
      assert controller._log.__code__.co_filename == controller.__file__
      print('unchanged')
      """)
  result = subprocess.run([sys.executable, '-c', script], capture_output=True,
                          text=True, timeout=300, check=False,
                          cwd=str(REPO_ROOT))
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip() == 'unchanged'


def test_eval_averages_the_configured_scales_and_flipped_images(tmp_path):
  # Crops of 32: the 4x4 grid at stride 4 takes 16 and 48 (scales 0.5, 1.5).
  options = trainer_testing.tiny_options(steps=5, crop=32)
  _run(options, 'train', tmp_path)
  options.evaluator_options.eval_scales[:] = [0.5, 1.5]
  options.evaluator_options.add_flipped_images = True
  results = _run(options, 'eval', tmp_path)
  exp_dir = tmp_path / 'test_experiment'
  assert results['test_time_augmentation'] == {
      'eval_scales': [0.5, 1.5], 'add_flipped_images': True}
  # The results are those of the augmented predictions of the checkpoint.
  model = trainer_testing.StandInModel(19)
  dataset = trainer_testing.make_dataset_fn()(options.eval_dataset_options,
                                            False)
  model(next(iter(dataset))['image'])
  tf.train.Checkpoint(model=model).read(
      str(exp_dir / 'ckpt-5')).expect_partial()
  augmentation = eval_augmentation.EvalAugmentation((0.5, 1.5), True)
  confusion = metrics.ConfusionMatrix(19)
  for batch in dataset:
    scores, _ = augmentation(model, batch['image'])
    confusion.update(batch['label'], tf.argmax(scores, -1))
  expected = metrics.metrics_from_confusion_matrix(confusion.result())
  assert results['miou'] == pytest.approx(expected.miou, abs=1e-6)
  assert results['mean_class_accuracy'] == pytest.approx(
      expected.mean_class_accuracy, abs=1e-6)
  # TensorBoard has the mean class accuracy and per-class accuracies.
  assert _scalars(str(exp_dir / 'eval'), 'mean_class_accuracy') == [
      pytest.approx(results['mean_class_accuracy'])]
  road = results['per_class_accuracy']['road']
  assert _scalars(str(exp_dir / 'eval'), 'accuracy/road') == [
      pytest.approx(road)]


@pytest.fixture
def sigterm_is_caught():
  """SIGTERM is ignored around the test (run_experiment installs its own
  handler): a missing handler fails the test instead of killing pytest."""
  previous = signal.signal(signal.SIGTERM, lambda *args: None)
  yield
  signal.signal(signal.SIGTERM, previous)


def test_sigterm_stops_at_the_loop_boundary_with_a_checkpoint(
    tmp_path, monkeypatch, sigterm_is_caught):
  del sigterm_is_caught  # Used for its effect.
  options = trainer_testing.tiny_options(steps=100)
  options.trainer_options.steps_per_loop = 1
  options.trainer_options.save_summaries_steps = 1
  end_loop = trainer_lib.Trainer.train_loop_end

  def end_loop_then_sigterm(self):
    if int(self.optimizer.iterations.numpy()) == 7:
      os.kill(os.getpid(), signal.SIGTERM)
    return end_loop(self)

  monkeypatch.setattr(trainer_lib.Trainer, 'train_loop_end',
                      end_loop_then_sigterm)
  with pytest.raises(preemption.TrainingPreempted) as error:
    _run(options, 'train', tmp_path)
  exp_dir = tmp_path / 'test_experiment'
  assert error.value.step == 7
  assert error.value.checkpoint == str(exp_dir / 'ckpt-7')
  # Saved at the signalled step, between the periodic ones (1, 6, 11...).
  assert sorted(p.name for p in exp_dir.glob('*.index')) == [
      'ckpt-1.index', 'ckpt-6.index', 'ckpt-7.index']
  assert not (exp_dir / lock.LOCK_FILENAME).exists()
  assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL


def test_sigterm_during_an_evaluation_stops_before_the_next_loop(
    tmp_path, monkeypatch, sigterm_is_caught):
  del sigterm_is_caught  # Used for its effect.
  options = trainer_testing.tiny_options(steps=100)
  options.evaluator_options.eval_interval_steps = 5
  options.evaluator_options.num_vis_images = 0
  evaluate = evaluator_lib.Evaluator.evaluate

  def evaluate_then_sigterm(self, num_steps):
    result = evaluate(self, num_steps)
    os.kill(os.getpid(), signal.SIGTERM)
    return result

  monkeypatch.setattr(evaluator_lib.Evaluator, 'evaluate',
                      evaluate_then_sigterm)
  with pytest.raises(preemption.TrainingPreempted) as error:
    _run(options, 'train_and_eval', tmp_path)
  assert error.value.step == 5
  exp_dir = tmp_path / 'test_experiment'
  assert tf.train.latest_checkpoint(str(exp_dir)) == str(exp_dir / 'ckpt-5')
  assert not (exp_dir / lock.LOCK_FILENAME).exists()
