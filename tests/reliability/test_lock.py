"""One writer per experiment directory: the lock of deeplab_sp/utils/lock.py."""

import json
import os
import socket
import subprocess
import sys

import pytest
import reliability_helpers as helpers

from deeplab_sp.trainer import train_lib
from deeplab_sp.utils import lock


def _write_lock(directory, pid, host=None):
  os.makedirs(directory, exist_ok=True)
  info = {'pid': pid, 'host': host or socket.gethostname(),
          'start_time': '2026-01-01T00:00:00Z', 'command': 'train.py other'}
  path = os.path.join(directory, lock.LOCK_FILENAME)
  with open(path, 'w') as f:
    json.dump(info, f)
  return path


@pytest.fixture
def live_process():
  process = subprocess.Popen([sys.executable, '-c',
                              'import time; time.sleep(60)'])
  yield process.pid
  process.kill()
  process.wait()


def test_second_trainer_is_refused_naming_the_holder(tmp_path, live_process):
  exp_dir = tmp_path / 'exp'
  path = _write_lock(exp_dir, live_process)
  before = helpers.snapshot(tmp_path)
  with pytest.raises(lock.LockHeldError) as error:
    lock.acquire(str(exp_dir))
  message = str(error.value)
  assert f'pid {live_process}' in message
  assert socket.gethostname() in message
  assert path in message and 'stop that process' in message
  assert isinstance(error.value, FileExistsError)  # One line in the CLIs.
  assert helpers.snapshot(tmp_path) == before  # The holder's lock is kept.


def test_lock_is_exclusive_and_released_on_exception(tmp_path):
  exp_dir = str(tmp_path / 'exp')
  with pytest.raises(RuntimeError):
    with lock.experiment_lock(exp_dir) as info:
      assert info['pid'] == os.getpid()
      content = json.loads(open(os.path.join(exp_dir, '.lock')).read())
      assert content['host'] == socket.gethostname()
      assert content['command'] and content['start_time']
      # Our own pid holds it: a second acquisition (another trainer
      # object in this process) is refused too.
      with pytest.raises(lock.LockHeldError):
        lock.acquire(exp_dir)
      raise RuntimeError('boom')
  assert not os.listdir(exp_dir)  # Released; no temporary left.


def test_stale_lock_of_a_dead_local_process_is_taken_over(tmp_path, caplog):
  exp_dir = tmp_path / 'exp'
  dead = helpers.dead_pid()
  _write_lock(exp_dir, dead)
  with lock.experiment_lock(str(exp_dir)) as info:
    content = json.loads((exp_dir / '.lock').read_text())
    assert content['pid'] == os.getpid() == info['pid']
  assert f'stale lock' in caplog.text and f'pid {dead}' in caplog.text
  assert not (exp_dir / '.lock').exists()


def test_lock_naming_our_pid_from_an_earlier_process_is_taken_over(tmp_path):
  # A restarted container may give the new trainer the old one's pid.
  exp_dir = tmp_path / 'exp'
  _write_lock(exp_dir, os.getpid())
  with lock.experiment_lock(str(exp_dir)) as info:
    content = json.loads((exp_dir / '.lock').read_text())
    assert content['start_time'] == info['start_time'] != '2026-01-01T00:00:00Z'


def test_lock_of_another_host_is_not_taken_over(tmp_path):
  exp_dir = tmp_path / 'exp'
  path = _write_lock(exp_dir, helpers.dead_pid(), host='other-host.example')
  before = helpers.snapshot(tmp_path)
  with pytest.raises(lock.LockHeldError) as error:
    lock.acquire(str(exp_dir))
  assert 'other-host.example' in str(error.value)
  assert f'delete {path}' in str(error.value)
  assert helpers.snapshot(tmp_path) == before


def test_run_experiment_refuses_before_any_work(tmp_path, live_process):
  options = helpers.options(tmp_path / 'data')
  exp_dir = train_lib.experiment_dir(
      str(tmp_path / 'runs'), helpers.experiment(options))
  _write_lock(exp_dir, live_process)
  before = helpers.snapshot(tmp_path)
  for mode in ('train', 'train_and_eval'):
    with pytest.raises(lock.LockHeldError, match=f'pid {live_process}'):
      train_lib.run_experiment(
          helpers.experiment(options, mode), str(tmp_path / 'runs'))
  assert helpers.snapshot(tmp_path) == before


def test_train_cli_prints_one_line_naming_the_holder(tmp_path, live_process):
  options = helpers.options(tmp_path / 'data')
  config = tmp_path / 'config.textproto'
  from google.protobuf import text_format  # pylint: disable=g-import-not-at-top
  config.write_text(text_format.MessageToString(options))
  helpers.write_records(tmp_path / 'data', num_shards=1)
  exp_dir = train_lib.experiment_dir(
      str(tmp_path / 'runs'), helpers.experiment(options))
  _write_lock(exp_dir, live_process)
  before = helpers.snapshot(tmp_path)
  result = helpers.run_tool([
      'deeplab_sp/trainer/train.py', f'--config_file={config}',
      '--mode=train', f'--model_dir={tmp_path / "runs"}'])
  helpers.assert_one_line_error(result, 'train', f'pid {live_process}',
                                socket.gethostname())
  assert helpers.snapshot(tmp_path) == before
