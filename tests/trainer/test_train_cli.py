"""The train.py command line: help, and clear errors before any work."""

import pathlib
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

TRAIN = str(REPO_ROOT / 'deeplab_sp' / 'trainer' / 'train.py')
# Seconds a CLI call may take (TensorFlow import included).
TIMEOUT = 120


def _run(*args):
  return subprocess.run([sys.executable, *args], capture_output=True,
                        text=True, timeout=TIMEOUT, cwd=str(REPO_ROOT))


CONSOLE_SCRIPT = pathlib.Path(sys.executable).with_name('deeplab_sp_train')


@pytest.mark.parametrize('command', [
    [sys.executable, TRAIN],
    [sys.executable, '-m', 'deeplab_sp.trainer.train'],
    [str(CONSOLE_SCRIPT)],
], ids=['script', 'module', 'console_script'])
def test_help_lists_the_flags(command):
  if not pathlib.Path(command[0]).exists():
    pytest.fail(f'{command[0]} is missing; run tools/setup.sh (pip install '
                '-e .) to install the console script.')
  result = subprocess.run([*command, '--help'], capture_output=True,
                          text=True, timeout=TIMEOUT, cwd=str(REPO_ROOT))
  # absl's --help prints the usage and exits with status 1.
  assert 'Trains and/or evaluates' in result.stdout, result.stderr[-2000:]
  for flag in ('--config_file', '--mode', '--model_dir', '--num_gpus',
               '--master', 'continuous_eval'):
    assert flag in result.stdout


def test_missing_config_file_is_a_clear_error(tmp_path):
  result = _run('-m', 'deeplab_sp.trainer.train',
                f'--config_file={tmp_path}/nope.textproto',
                f'--model_dir={tmp_path}')
  assert result.returncode == 1
  assert 'nope.textproto does not exist' in result.stderr
  assert 'Traceback' not in result.stderr
  assert not list(tmp_path.iterdir())
