"""deeplab_sp.utils.tf_startup: TensorFlow's start-up noise hidden by default.

Each case runs a fresh interpreter: the module acts when it is imported,
before TensorFlow loads.
"""

import os
import subprocess
import sys

_PROGRAM = '''
from deeplab_sp.utils import tf_startup
import tensorflow as tf
tf.constant(1.0) + 1.0  # Starts the runtime (its start-up lines).
tf.get_logger().warning('a line of the tensorflow logger')
print('level', tf_startup.os.environ['TF_CPP_MIN_LOG_LEVEL'])
print('quiet child', tf_startup.child_environment(False)[
    'TF_CPP_MIN_LOG_LEVEL'])
print('verbose child', tf_startup.child_environment(True)[
    'TF_CPP_MIN_LOG_LEVEL'])
'''


def _run(level=None):
  env = {key: value for key, value in os.environ.items()
         if key != 'TF_CPP_MIN_LOG_LEVEL'}
  if level is not None:
    env['TF_CPP_MIN_LOG_LEVEL'] = level
  result = subprocess.run([sys.executable, '-c', _PROGRAM], env=env,
                          capture_output=True, text=True, timeout=300,
                          check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout, result.stderr


def test_quiet_by_default_and_verbose_for_children():
  stdout, stderr = _run()
  assert 'level 2' in stdout
  assert 'quiet child 2' in stdout and 'verbose child 0' in stdout
  # No INFO or WARNING line of TensorFlow's C++ runtime.
  runtime_lines = [line for line in stderr.splitlines()
                   if ' I tensorflow/' in line or ' W tensorflow/' in line]
  assert not runtime_lines, runtime_lines
  # A line of the tensorflow logger is printed once (absl's handler only).
  assert stderr.count('a line of the tensorflow logger') == 1, stderr
  assert 'WARNING:tensorflow:' not in stderr


def test_the_users_level_wins():
  stdout, _ = _run('1')
  assert 'level 1' in stdout
  assert 'quiet child 1' in stdout and 'verbose child 1' in stdout
