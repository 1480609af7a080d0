"""One writer per experiment directory: a lock file naming its holder.

Two trainers writing checkpoints into the same experiment directory corrupt
each other's checkpoint list and resume from each other's steps. A trainer
therefore holds `<experiment_dir>/.lock` while it runs: a small JSON file
with the holder's pid, host, start time and command line.

  - Creation is atomic on local disks: the content is written to a
    temporary file that is hard-linked to the lock's name (link() fails if
    the name exists), or, where links are unsupported, created with
    O_CREAT | O_EXCL. A reader never sees a half-written lock.
  - A second trainer is refused with one line naming the holder (pid, host,
    start, command) and the fix (LockHeldError, a FileExistsError).
  - A lock whose holder ran on this host and is no longer alive (a killed
    trainer), or was taken before the machine booted, or names this
    process's pid without being held by it (a restarted container reusing
    pids), is stale: it is taken over with a log line. Take-overs are
    serialised by an flock() on the experiment directory, so two trainers
    starting together cannot both take over the same stale lock.
    A lock of another host is never taken over (its pid means nothing
    here): the message says to delete it if that trainer is gone.
  - The lock is released (deleted, if it is still ours) when the block
    ends, also on an exception. A SIGKILL leaves it behind: stale, above.

On gs:// and other non-local filesystems there is no exclusive create: the
lock is best effort (check, then write), which still refuses a second
trainer started after the first one's lock is visible.
"""

import contextlib
import errno
import json
import os
import socket
import sys
import time
from typing import Iterator, Optional

from absl import logging
import tensorflow as tf

from deeplab_sp.utils import io

LOCK_FILENAME = '.lock'
# Lock files this process holds: a lock naming our own pid that is not in
# here was left by an earlier process that had the same pid (a restarted
# container often reuses its pids).
_HELD = set()


class LockHeldError(FileExistsError):
  """Another live process holds the experiment directory's lock."""


def _is_local(path: str) -> bool:
  return '://' not in path


def _holder_info(purpose: str) -> dict:
  return {
      'pid': os.getpid(),
      'host': socket.gethostname(),
      'start_time': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
      'start_epoch': time.time(),
      'command': ' '.join(sys.argv),
      'purpose': purpose,
  }


def _read(path: str) -> Optional[dict]:
  """The lock's content; {} if unreadable; None if there is no lock."""
  try:
    with tf.io.gfile.GFile(path, 'r') as f:
      text = f.read()
  except tf.errors.NotFoundError:
    return None
  try:
    info = json.loads(text)
    return info if isinstance(info, dict) else {}
  except ValueError:
    return {}


def _describe(info: dict) -> str:
  return (f"pid {info.get('pid', '?')} on host {info.get('host', '?')}, "
          f"started {info.get('start_time', '?')}, command: "
          f"{info.get('command', '?')!r}")


def _boot_time() -> float:
  """When this machine booted (seconds since the epoch); 0 if unknown."""
  try:
    with open('/proc/stat') as f:
      for line in f:
        if line.startswith('btime '):
          return float(line.split()[1])
  except OSError:
    pass
  return 0.0


def _is_stale(info: dict, path: str) -> bool:
  """A lock of this host whose process is gone (never another host's)."""
  try:
    pid = int(info.get('pid', 0))
    start = float(info.get('start_epoch', 0))
  except (TypeError, ValueError):
    return False
  if info.get('host') != socket.gethostname():
    return False
  if pid == os.getpid():
    return path not in _HELD  # An earlier process with our pid.
  # Taken before this machine booted: its pid now names another process.
  return not io.process_is_alive(pid) or 0 < start < _boot_time()


def _create_local(path: str, content: str) -> bool:
  """Creates `path` with `content` atomically; False if it exists."""
  temporary = io.temporary_name(path)
  with open(temporary, 'w') as f:
    f.write(content)
  try:
    os.link(temporary, path)
    return True
  except FileExistsError:
    return False
  except OSError:
    # No hard links on this filesystem: an exclusive create instead.
    try:
      descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(descriptor, 'w') as f:
      f.write(content)
    return True
  finally:
    os.remove(temporary)


def _create(path: str, content: str) -> bool:
  if _is_local(path):
    return _create_local(path, content)
  if tf.io.gfile.exists(path):  # Best effort: no exclusive create on gs://.
    return False
  io.write_atomically(path, content)
  return True


@contextlib.contextmanager
def _takeover_guard(path: str) -> Iterator[None]:
  """Serialises take-overs of a stale lock among local processes.

  An flock() on the experiment directory itself: it leaves no file behind
  and is released by the kernel if the process dies.
  """
  if not _is_local(path):
    yield
    return
  import fcntl  # pylint: disable=g-import-not-at-top
  descriptor = os.open(os.path.dirname(path) or '.', os.O_RDONLY)
  try:
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    yield
  finally:
    os.close(descriptor)  # Releases the flock.


def _refusal(path: str, info: dict, purpose: str) -> LockHeldError:
  if not info:
    holder = 'an unknown process (the lock file is unreadable)'
  else:
    holder = _describe(info)
  same_host = info.get('host') == socket.gethostname()
  fix = ('stop that process first' if same_host else
         'stop that process first (or, if it is no longer running on '
         f'{info.get("host", "its host")}, delete {path})')
  if not info:
    fix = f'if no other trainer uses this directory, delete {path}'
  return LockHeldError(
      f'Cannot {purpose}: the experiment directory {os.path.dirname(path)} '
      f'is in use by {holder} (lock {path}). Only one trainer may write to '
      f'an experiment directory: {fix}, or use another --model_dir or '
      'experiment_name.')


def acquire(directory: str, purpose: str = 'train') -> dict:
  """Takes the lock of `directory`; returns its content (our info).

  Raises:
    LockHeldError: a live process holds it, or one on another host.
  """
  tf.io.gfile.makedirs(directory)
  path = os.path.join(directory, LOCK_FILENAME)
  info = _holder_info(purpose)
  content = json.dumps(info, indent=1)
  if _create(path, content):
    _HELD.add(path)
    return info
  with _takeover_guard(path):
    holder = _read(path)
    if holder is None:  # Released in the meantime.
      if _create(path, content):
        _HELD.add(path)
        return info
      holder = _read(path) or {}
    if not _is_stale(holder, path):
      raise _refusal(path, holder, purpose)
    logging.warning('Taking over the stale lock %s of %s (that process is no '
                    'longer running).', path, _describe(holder))
    tf.io.gfile.remove(path)
    if not _create(path, content):
      raise _refusal(path, _read(path) or {}, purpose)
  _HELD.add(path)
  return info


def release(directory: str, info: dict) -> None:
  """Deletes the lock of `directory` if it is still the one `info` took."""
  path = os.path.join(directory, LOCK_FILENAME)
  _HELD.discard(path)
  holder = _read(path)
  if holder and holder.get('pid') == info['pid'] and holder.get(
      'start_time') == info['start_time'] and holder.get(
          'host') == info['host']:
    tf.io.gfile.remove(path)
  elif holder is not None:
    logging.warning('Not releasing %s: it is no longer ours (%s).', path,
                    _describe(holder))


@contextlib.contextmanager
def experiment_lock(directory: str, purpose: str = 'train') -> Iterator[dict]:
  """Holds the lock of `directory` for the block (see the module docstring).

  Raises:
    LockHeldError: a live process holds the lock.
  """
  info = acquire(directory, purpose)
  try:
    yield info
  finally:
    release(directory, info)
