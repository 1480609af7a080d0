"""train.py end to end on the generated dataset, with the real model.

A tiny generated dataset (tools/build_synthetic_data.py) and the tiny
experiment (tests/tiny_experiment.py); train.py is started as a subprocess,
killed (SIGKILL) once its first checkpoint exists, and rerun with the same
command: the rerun resumes from that checkpoint, ends at the configured
step, lowers the loss and writes eval_results.json. This is the project's
kill-and-resume test (the real command line, data and model).
"""

import json
import os
import re
import subprocess
import sys
import time

import pytest
import tensorflow as tf
from google.protobuf import text_format

from conftest import REPO_ROOT
from deeplab_sp import experiment as experiment_lib
import tiny_experiment

pytest.importorskip('deeplab_sp.data.input_pipeline',
                    reason='the input pipeline has not landed yet')

TRAIN = str(REPO_ROOT / 'deeplab_sp' / 'trainer' / 'train.py')
BUILD_DATA = str(REPO_ROOT / 'tools' / 'build_synthetic_data.py')
# Image side of the tiny dataset, total steps, checkpoint interval.
SIZE = 64
STEPS = 40
CHECKPOINT_STEPS = 4
# Seconds allowed for one subprocess (data building or training).
TIMEOUT = 300


def _environment():
  env = dict(os.environ)
  env.pop('TF_CONFIG', None)
  return env


def _build_data(data_dir):
  result = subprocess.run(
      [sys.executable, BUILD_DATA, f'--output_dir={data_dir}',
       '--num_train=16', '--num_val=8', f'--height={SIZE}', f'--width={SIZE}',
       '--seed=3'], capture_output=True, text=True, timeout=TIMEOUT,
      cwd=str(REPO_ROOT), env=_environment())
  assert result.returncode == 0, result.stderr[-3000:]


def _write_config(path, data_dir):
  """The tiny experiment at FAST widths, 64x64 crops and a 4x4 grid."""
  overrides = {
      'experiment_name': 'e2e',
      'model_options.superpixel_tokenization.grid_height': 4,
      'model_options.superpixel_tokenization.grid_width': 4,
      'model_options.superpixel_tokenization.num_layers': 1,
      'model_options.superpixel_classifier.num_layers': 1,
      'model_options.superpixel_classifier.num_heads': 2,
      'trainer_options.training_number_of_steps': STEPS,
      'trainer_options.base_learning_rate': 0.005,
      'trainer_options.warmup_steps': 2,
      'trainer_options.save_checkpoints_steps': CHECKPOINT_STEPS,
      'trainer_options.steps_per_loop': CHECKPOINT_STEPS,
      'trainer_options.log_steps': CHECKPOINT_STEPS,
      'trainer_options.save_summaries_steps': CHECKPOINT_STEPS,
      'trainer_options.save_image_summaries_steps': 20,
      'evaluator_options.eval_interval_steps': STEPS,
      'evaluator_options.num_vis_images': 2,
  }
  for field, split in (('train_dataset_options', 'train'),
                       ('eval_dataset_options', 'val')):
    overrides[f'{field}.file_pattern'] = [os.path.join(data_dir, f'{split}-*')]
    overrides[f'{field}.batch_size'] = 4
    overrides[f'{field}.crop_size'] = [SIZE, SIZE]
  options = tiny_experiment.options(overrides, fast=True)
  experiment_lib.experiment_from_options(options, str(path), 'train_and_eval')
  path.write_text(text_format.MessageToString(options))


def _losses(summary_dir):
  values = {}
  for path in tf.io.gfile.glob(os.path.join(str(summary_dir), 'events.*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag == 'loss':
          values[event.step] = float(tf.make_ndarray(value.tensor))
  return [values[step] for step in sorted(values)]


@pytest.mark.slow
def test_train_py_killed_and_rerun_resumes_and_finishes(tmp_path):
  data_dir = tmp_path / 'data'
  _build_data(data_dir)
  config = tmp_path / 'e2e.textproto'
  _write_config(config, data_dir)
  model_dir = tmp_path / 'experiments'
  exp_dir = model_dir / 'e2e'
  command = [sys.executable, TRAIN, f'--config_file={config}',
             '--mode=train_and_eval', f'--model_dir={model_dir}']

  first = subprocess.Popen(command, cwd=str(REPO_ROOT), env=_environment(),
                           stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
  deadline = time.time() + TIMEOUT
  try:
    while tf.train.latest_checkpoint(str(exp_dir)) is None:
      assert first.poll() is None, 'the first run ended before a checkpoint'
      assert time.time() < deadline, 'no checkpoint appeared'
      time.sleep(0.1)
  finally:
    first.kill()
    first.wait()
  killed_at = int(re.search(r'ckpt-(\d+)$',
                            tf.train.latest_checkpoint(str(exp_dir)))[1])
  assert 0 < killed_at < STEPS

  second = subprocess.run(command, cwd=str(REPO_ROOT), env=_environment(),
                          capture_output=True, text=True, timeout=TIMEOUT)
  output = second.stdout + second.stderr
  assert second.returncode == 0, output[-3000:]
  resumed = re.search(r'Resumed from \S+ckpt-(\d+) \(step (\d+)\)', output)
  assert resumed, output[-3000:]
  assert int(resumed[1]) == int(resumed[2]) >= killed_at
  assert tf.train.latest_checkpoint(str(exp_dir)).endswith(f'ckpt-{STEPS}')

  losses = _losses(exp_dir / 'train')
  assert losses[-1] < losses[0], losses
  with open(exp_dir / 'eval_results.json') as f:
    results = json.load(f)
  assert results['step'] == STEPS and results['num_images'] == 8
  assert len(results['per_class_iou']) == 6  # The synthetic classes.
  assert 0.0 <= results['miou'] <= 1.0
  assert 0.0 <= results['pixel_accuracy'] <= 1.0
