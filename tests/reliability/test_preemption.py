"""Interrupted training: SIGTERM stops it with a checkpoint, and a resumed
deterministic run equals an uninterrupted one."""

import os
import shutil
import signal
import subprocess
import sys
import time

from google.protobuf import text_format
import numpy as np
import pytest
import reliability_helpers as helpers
import tensorflow as tf

from deeplab_sp.trainer import checkpoints
from deeplab_sp.trainer import preemption
from deeplab_sp.trainer import train_lib
from deeplab_sp.utils import lock

# Seconds any subprocess may take before the test fails.
TIMEOUT = 240


def _step_of(prefix):
  reader = tf.train.load_checkpoint(prefix)
  keys = [k for k in reader.get_variable_to_shape_map()
          if k.startswith('optimizer/iter')]
  return int(reader.get_tensor(keys[0]))


def _model_weights(prefix):
  reader = tf.train.load_checkpoint(prefix)
  return {key: reader.get_tensor(key)
          for key in reader.get_variable_to_shape_map()
          if key.startswith('model/') and 'OPTIMIZER_SLOT' not in key}


def _wait_for(predicate, process, what, log):
  deadline = time.time() + TIMEOUT
  while not predicate():
    if process.poll() is not None:
      pytest.fail(f'exited ({process.returncode}) before {what}:\n'
                  f'{log.read_text()[-3000:]}')
    if time.time() > deadline:
      process.kill()
      pytest.fail(f'timed out waiting for {what}')
    time.sleep(0.2)


@pytest.mark.slow
def test_sigterm_saves_the_current_step_and_releases_the_lock(tmp_path):
  helpers.write_records(tmp_path / 'data', num_shards=1)
  options = helpers.options(tmp_path / 'data', steps=10000, overrides={
      'trainer_options.steps_per_loop': 1,
      'trainer_options.save_summaries_steps': 1,
      'trainer_options.save_checkpoints_steps': 3,
  })
  config = tmp_path / 'config.textproto'
  config.write_text(text_format.MessageToString(options))
  model_dir = tmp_path / 'runs'
  exp_dir = train_lib.experiment_dir(str(model_dir),
                                     helpers.experiment(options))
  env = dict(os.environ, PYTHONPATH=str(helpers.REPO_ROOT),
             TF_CPP_MIN_LOG_LEVEL='3')
  log = tmp_path / 'stderr.txt'
  # A file, not a pipe: a full pipe would block the trainer's logging.
  with open(log, 'w') as stderr_file:
    process = subprocess.Popen(
        [sys.executable, 'deeplab_sp/trainer/train.py',
         f'--config_file={config}', '--mode=train',
         f'--model_dir={model_dir}'],
        cwd=helpers.REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
        stderr=stderr_file)
    try:
      # Training runs: a periodic checkpoint is written.
      _wait_for(lambda: tf.train.latest_checkpoint(exp_dir), process,
                'a checkpoint', log)
      assert os.path.exists(os.path.join(exp_dir, lock.LOCK_FILENAME))
      process.send_signal(signal.SIGTERM)
      signalled = int(os.path.basename(tf.train.latest_checkpoint(exp_dir))[5:])
      process.wait(timeout=TIMEOUT)
    finally:
      if process.poll() is None:
        process.kill()
  stderr = log.read_text()
  assert process.returncode == preemption.EXIT_CODE, stderr[-3000:]
  assert 'Traceback' not in stderr, stderr[-3000:]
  latest = tf.train.latest_checkpoint(exp_dir)
  step = _step_of(latest)
  periodic = [int(os.path.basename(p)[5:])
              for p in checkpoints.checkpoints_on_disk(exp_dir)]
  assert latest == os.path.join(exp_dir, f'ckpt-{step}')
  assert step >= signalled and step == max(periodic), (step, periodic)
  assert (f'Stopped on SIGTERM at step {step}: saved {latest} and released '
          'the lock; rerun the same command to resume.') in stderr
  assert 'SIGTERM: stopping at the end of the current training loop' in (
      stderr)
  assert not os.path.exists(os.path.join(exp_dir, lock.LOCK_FILENAME))
  checkpoints.verify_checkpoint(latest)


_STUCK = '''
import sys, time
from deeplab_sp.trainer import preemption
with preemption.watch(float(sys.argv[1])):
  print('ready', flush=True)
  while True:  # A step that never reaches its boundary.
    time.sleep(0.05)
'''


def _stuck_process(deadline_seconds):
  process = subprocess.Popen(
      [sys.executable, '-c', _STUCK, str(deadline_seconds)],
      cwd=helpers.REPO_ROOT, env=dict(os.environ,
                                      PYTHONPATH=str(helpers.REPO_ROOT)),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  assert process.stdout.readline() == 'ready\n', process.stderr.read()
  return process


def test_sigterm_deadline_ends_a_stuck_process():
  process = _stuck_process(1.0)
  start = time.time()
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=60)
  assert process.returncode == preemption.FORCED_EXIT_CODE, stderr
  assert 0.9 < time.time() - start < 30
  assert 'SIGTERM deadline of 1 s passed' in stderr


def test_second_sigterm_ends_a_stuck_process_at_once():
  process = _stuck_process(600.0)
  process.send_signal(signal.SIGTERM)
  # The first one is handled (logged) before the second is sent.
  while 'SIGTERM: stopping' not in process.stderr.readline():
    pass
  start = time.time()
  process.send_signal(signal.SIGTERM)
  process.wait(timeout=60)
  assert process.returncode == -signal.SIGTERM
  assert time.time() - start < 30


def _train(options, model_dir):
  train_lib.run_experiment(helpers.experiment(options, 'train'),
                           str(model_dir))
  return train_lib.experiment_dir(str(model_dir), helpers.experiment(options))


def _resume_from(exp_dir, step, model_dir):
  """A copy of `exp_dir` with the checkpoints up to `step` only."""
  target = os.path.join(str(model_dir), os.path.basename(exp_dir))
  shutil.copytree(exp_dir, target)
  kept = []
  for prefix in checkpoints.checkpoints_on_disk(target):
    if int(os.path.basename(prefix)[5:]) > step:
      for path in checkpoints.checkpoint_files(prefix):
        os.remove(path)
    else:
      kept.append(prefix)
  tf.compat.v1.train.update_checkpoint_state(
      target, kept[-1], all_model_checkpoint_paths=kept)
  return target


@pytest.mark.slow
def test_deterministic_resume_equals_the_uninterrupted_run(tmp_path,
                                                         monkeypatch):
  helpers.write_records(tmp_path / 'data', num_shards=2)
  options = helpers.options(tmp_path / 'data', steps=8, overrides={
      'train_dataset_options.augmentations.deterministic': True,
      'train_dataset_options.augmentations.seed': 3,
      'train_dataset_options.shuffle_buffer_size': 4,
      'trainer_options.num_checkpoints_to_keep': 10,
      'trainer_options.random_seed': 1,
  })
  uninterrupted = _train(options, tmp_path / 'uninterrupted')
  expected = _model_weights(os.path.join(uninterrupted, 'ckpt-8'))

  resumed = _resume_from(uninterrupted, 4, tmp_path / 'resumed')
  _train(options, tmp_path / 'resumed')
  assert _step_of(os.path.join(resumed, 'ckpt-8')) == 8
  weights = _model_weights(os.path.join(resumed, 'ckpt-8'))
  assert weights.keys() == expected.keys() and weights
  for key, value in expected.items():
    np.testing.assert_array_equal(weights[key], value, err_msg=key)

  # Control: resumed without skipping the data of steps 1-4, the run
  # trains on other batches and ends elsewhere.
  monkeypatch.setattr(train_lib, '_resume_deterministic_input',
                      lambda *args: None)
  restarted = _resume_from(uninterrupted, 4, tmp_path / 'restarted')
  _train(options, tmp_path / 'restarted')
  other = _model_weights(os.path.join(restarted, 'ckpt-8'))
  assert any(not np.allclose(other[key], value)
             for key, value in expected.items())
