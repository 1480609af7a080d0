"""The train.py command line: help, and clear errors before any work."""

import subprocess
import sys

from conftest import REPO_ROOT

TRAIN = str(REPO_ROOT / 'deeplab_sp' / 'trainer' / 'train.py')
# Seconds a CLI call may take (TensorFlow import included).
TIMEOUT = 120


def _run(*args):
  return subprocess.run([sys.executable, *args], capture_output=True,
                        text=True, timeout=TIMEOUT, cwd=str(REPO_ROOT))


def test_help_lists_the_flags():
  result = _run(TRAIN, '--help')
  # absl's --help prints the usage and exits with status 1.
  assert 'Trains and/or evaluates' in result.stdout, result.stderr[-2000:]
  for flag in ('--config_file', '--mode', '--model_dir', '--num_gpus',
               '--master', 'continuous_eval'):
    assert flag in result.stdout


def test_missing_config_file_is_a_clear_error(tmp_path):
  result = _run('-m', 'deeplab_sp.trainer.train',
                f'--config_file={tmp_path}/nope.textproto',
                f'--model_dir={tmp_path}')
  assert result.returncode != 0
  assert 'nope.textproto does not exist' in result.stderr
  assert not list(tmp_path.iterdir())
