"""Killing training mid-run and rerunning it resumes from the last checkpoint.

Issue 5, item 8. The run is a subprocess (tests/trainer/distributed_runner.py
with the stand-in model) killed with SIGKILL once its first checkpoint
exists; the same command then ends at the configured step.
"""

import os
import pathlib
import re
import subprocess
import sys
import time

import pytest
import tensorflow as tf

RUNNER = str(pathlib.Path(__file__).with_name('distributed_runner.py'))
# Long enough that the first run is still training when it is killed.
TOTAL_STEPS = 600
# Seconds allowed for the first checkpoint to appear / a run to finish.
TIMEOUT = 240


@pytest.mark.slow
def test_kill_and_rerun_resumes_and_finishes(tmp_path):
  exp_dir = tmp_path / 'test_experiment'
  command = [sys.executable, RUNNER, 'single', str(tmp_path), '',
             str(TOTAL_STEPS)]
  env = dict(os.environ)
  env.pop('TF_CONFIG', None)
  first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
  deadline = time.time() + TIMEOUT
  try:
    while tf.train.latest_checkpoint(str(exp_dir)) is None:
      assert first.poll() is None, 'the first run ended before a checkpoint'
      assert time.time() < deadline, 'no checkpoint appeared'
      time.sleep(0.2)
  finally:
    first.kill()
    first.wait()
  killed_at = int(re.search(r'ckpt-(\d+)$',
                            tf.train.latest_checkpoint(str(exp_dir)))[1])
  assert 0 < killed_at < TOTAL_STEPS

  second = subprocess.run(command, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT)
  output = second.stdout + second.stderr
  assert second.returncode == 0, output[-3000:]
  resumed = re.search(r'Resumed from \S+ckpt-(\d+) \(step (\d+)\)', output)
  assert resumed, output[-3000:]
  assert int(resumed[1]) == int(resumed[2]) >= killed_at
  assert tf.train.latest_checkpoint(str(exp_dir)).endswith(
      f'ckpt-{TOTAL_STEPS}')
