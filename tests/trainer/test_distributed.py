"""MirroredStrategy (2 logical CPUs) and MultiWorkerMirroredStrategy (2 local
workers on loopback) give the same training as one device.

Each run is a subprocess of tests/trainer/distributed_runner.py, started from
the same initial checkpoint; the final checkpoints are compared.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import trainer_testing

RUNNER = str(pathlib.Path(__file__).with_name('distributed_runner.py'))
# Seconds a runner may take before the test fails.
RUNNER_TIMEOUT = 240


def _initial_checkpoint(directory) -> str:
  model = trainer_testing.StandInModel(19)
  model(tf.zeros([1, 16, 16, 3]))
  return tf.train.Checkpoint(model=model).write(os.path.join(directory,
                                                             'init'))


def _start(strategy, model_dir, init, env=None, mixed_precision='none'):
  environment = dict(os.environ, **(env or {}))
  environment.pop('TF_CONFIG', None) if not env else None
  return subprocess.Popen(
      [sys.executable, RUNNER, strategy, str(model_dir), init, '6',
       mixed_precision],
      env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True)


def _finish(process):
  try:
    output, _ = process.communicate(timeout=RUNNER_TIMEOUT)
  except subprocess.TimeoutExpired:
    process.kill()
    output, _ = process.communicate()
    pytest.fail(f'runner timed out:\n{output[-3000:]}')
  assert process.returncode == 0 and 'DONE' in output, output[-3000:]


def _weights(checkpoint_dir):
  path = tf.train.latest_checkpoint(str(checkpoint_dir))
  assert path and path.endswith('ckpt-6'), path
  reader = tf.train.load_checkpoint(path)
  return {key: reader.get_tensor(key)
          for key in reader.get_variable_to_shape_map()
          if key.startswith('model/') and 'OPTIMIZER_SLOT' not in key}


def _losses(summary_dir):
  values = {}
  for path in tf.io.gfile.glob(os.path.join(str(summary_dir), 'events.*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag == 'loss':
          values[event.step] = float(tf.make_ndarray(value.tensor))
  return [values[step] for step in sorted(values)]


def _assert_same(reference_dir, other_dir, rtol=1e-4, atol=1e-5):
  ref_weights, weights = _weights(reference_dir), _weights(other_dir)
  assert ref_weights.keys() == weights.keys() and ref_weights
  for key in ref_weights:
    np.testing.assert_allclose(weights[key], ref_weights[key], rtol=rtol,
                               atol=atol, err_msg=key)


@pytest.mark.slow
def test_mirrored_two_cpus_equals_one_device(tmp_path):
  init = _initial_checkpoint(tmp_path)
  single = _start('single', tmp_path / 'single', init)
  _finish(single)
  mirrored = _start('mirrored', tmp_path / 'mirrored', init)
  _finish(mirrored)
  ref = tmp_path / 'single' / 'test_experiment'
  other = tmp_path / 'mirrored' / 'test_experiment'
  _assert_same(ref, other)
  np.testing.assert_allclose(_losses(other / 'train'), _losses(ref / 'train'),
                             rtol=1e-5)
  assert len(_losses(ref / 'train')) == 3


@pytest.mark.slow
def test_mirrored_float16_loss_scaling_equals_one_device(tmp_path):
  # The loss-scale decision runs in the cross-replica context; both
  # replicas apply the same (all-reduced, unscaled) step.
  init = _initial_checkpoint(tmp_path)
  single = _start('single', tmp_path / 'single', init,
                  mixed_precision='float16')
  _finish(single)
  mirrored = _start('mirrored', tmp_path / 'mirrored', init,
                    mixed_precision='float16')
  _finish(mirrored)
  ref = tmp_path / 'single' / 'test_experiment'
  other = tmp_path / 'mirrored' / 'test_experiment'
  # float16 activations round differently on per-replica batches, and Adam
  # turns that noise on near-zero gradients into ~1e-4 weight differences;
  # one skipped or doubled step would move weights by ~1e-2.
  _assert_same(ref, other, rtol=1e-2, atol=1e-3)
  np.testing.assert_allclose(_losses(other / 'train'), _losses(ref / 'train'),
                             rtol=1e-3)
  reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(other)))
  scale = [k for k in reader.get_variable_to_shape_map()
           if k.startswith('loss_scale/scale')]
  assert scale and reader.get_tensor(scale[0]) == 2.0**15


def _free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_multi_worker_two_local_workers_agree(tmp_path):
  init = _initial_checkpoint(tmp_path)
  workers = [f'127.0.0.1:{_free_port()}' for _ in range(2)]
  processes = []
  for index in range(2):
    tf_config = {'cluster': {'worker': workers},
                 'task': {'type': 'worker', 'index': index}}
    processes.append(_start('multi_worker', tmp_path / 'mw', init,
                            env={'TF_CONFIG': json.dumps(tf_config)}))
  try:
    for process in processes:
      _finish(process)
  finally:
    for process in processes:
      if process.poll() is None:
        process.kill()
  chief = tmp_path / 'mw' / 'test_experiment'
  worker = chief / '.worker_1_scratch'
  _assert_same(chief, worker)
  # Only the chief writes summaries.
  assert len(_losses(chief / 'train')) == 3
  assert not [p for p in chief.rglob('events.*') if '.worker_1' in str(p)]
  assert not (worker / 'train').exists()
  # Each worker read its own half of the data; together they make the
  # global batch of 4, so the workers agree with one device too.
  single = _start('single', tmp_path / 'single', init)
  _finish(single)
  _assert_same(tmp_path / 'single' / 'test_experiment', chief)
