"""Atomic file output: nothing half-written is ever left under a final name.

Every file the project writes for a user (records, checkpoint side files,
JSON results, PNGs, text reports) goes through this module: the content is
written to a temporary name in the same directory, then renamed over the
final name, so a reader sees the old file or the whole new one, and a killed
writer leaves only a temporary that `remove_stale_temporaries` recognises.

Temporary names are `<name>.incomplete-<pid>-<random>`: the pid says whether
the writer is still alive, the marker says the file is ours to delete.

A full disk surfaces as an OSError (ENOSPC, EDQUOT) from Python or as a
tf.errors.ResourceExhaustedError from TensorFlow's file systems; both become
a DiskFullError naming the output, so the tools print it as one line.
"""

import contextlib
import errno
import os
import re
import shutil
import uuid
from typing import Iterator, Union

import tensorflow as tf

TEMPORARY_MARKER = '.incomplete-'
_TEMPORARY_PATTERN = re.compile(
    r'^(?P<name>.+)\.incomplete-(?P<pid>\d+)-[0-9a-f]{8}$')


# errno values of a full disk or an exhausted quota, and the text TensorFlow's
# file systems put in a ResourceExhaustedError for them (strerror's).
_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
DISK_FULL_TEXTS = tuple(os.strerror(number) for number in _DISK_FULL_ERRNOS)


class DiskFullError(OSError):
  """An output could not be written: its disk is full (or over quota)."""

  def __init__(self, path: str, detail: str = ''):
    self.message = (
        f'No space left on the disk of {path}{detail}: free space there or '
        'write to another directory, then rerun.')
    super().__init__(errno.ENOSPC, self.message)

  def __str__(self) -> str:
    return self.message


def is_disk_full(error: BaseException) -> bool:
  """Whether `error` says a disk is full or a quota exhausted."""
  if isinstance(error, OSError):
    return error.errno in _DISK_FULL_ERRNOS
  # TensorFlow says RESOURCE_EXHAUSTED for out-of-memory too: only the
  # strerror text of a full disk, which its file systems append, counts.
  if isinstance(error, tf.errors.ResourceExhaustedError):
    message = getattr(error, 'message', '') or str(error)
    return any(text in message for text in DISK_FULL_TEXTS)
  return False


@contextlib.contextmanager
def disk_full_names(path: str, detail: str = '') -> Iterator[None]:
  """Re-raises a full disk inside the block as a DiskFullError naming path."""
  try:
    yield
  except DiskFullError:
    raise
  except (OSError, tf.errors.ResourceExhaustedError) as e:
    if not is_disk_full(e):
      raise
    raise DiskFullError(path, detail) from e


def temporary_name(path: str) -> str:
  """A fresh temporary name beside `path` (same directory, same device)."""
  return f'{path}{TEMPORARY_MARKER}{os.getpid()}-{uuid.uuid4().hex[:8]}'


@contextlib.contextmanager
def atomic_output(path: str) -> Iterator[str]:
  """Yields a temporary path; renames it to `path` if the block succeeds.

  On an exception the temporary file is removed and `path` is untouched.
  Works on local paths and on gs:// (through tf.io.gfile).
  """
  temporary = temporary_name(path)
  try:
    with disk_full_names(path):
      yield temporary
      tf.io.gfile.rename(temporary, path, overwrite=True)
  except BaseException:
    if tf.io.gfile.exists(temporary):
      tf.io.gfile.remove(temporary)
    raise


def write_atomically(path: str, content: Union[str, bytes]) -> None:
  """Writes `content` (text or bytes) to `path` atomically."""
  mode = 'wb' if isinstance(content, bytes) else 'w'
  with atomic_output(path) as temporary:
    with tf.io.gfile.GFile(temporary, mode) as f:
      f.write(content)


def append_line_atomically(path: str, line: str) -> None:
  """Appends one line (a newline is added) to the text file `path`.

  The old content and the new line are written to a temporary, which is
  renamed over `path`: a reader sees the file with or without the new line,
  never half of it, on a local disk and on gs:// alike (GCS objects cannot
  be appended to, and a local append of a long line may be read half
  written). Rewriting the file costs its size per call, which is fine for
  files that grow by a line per evaluation. Two processes appending at the
  same moment may lose one line (the last rename wins); the callers are one
  writer per file.
  """
  assert '\n' not in line, 'one line, without newlines'
  old = ''
  if tf.io.gfile.exists(path):
    with tf.io.gfile.GFile(path, 'r') as f:
      old = f.read()
    if old and not old.endswith('\n'):
      old += '\n'
  write_atomically(path, old + line + '\n')


def process_is_alive(pid: int) -> bool:
  """True if a process with `pid` runs on this machine."""
  if pid <= 0:
    return False
  try:
    os.kill(pid, 0)
  except OSError as e:
    return e.errno == errno.EPERM  # Alive, owned by another user.
  return True


def is_stale_temporary(filename: str) -> bool:
  """True for a temporary of ours whose (local) writer process is gone."""
  match = _TEMPORARY_PATTERN.match(os.path.basename(filename))
  return bool(match) and not process_is_alive(int(match.group('pid')))


def remove_stale_temporaries(directory: str,
                             directories: bool = False) -> list:
  """Removes temporaries left in `directory` by killed writers.

  Only names made by `temporary_name` whose writer pid is not running on
  this machine are removed; nothing else is touched. Returns their paths.

  Args:
    directory: where to look (not recursively).
    directories: remove temporary directories (e.g. a killed export's
      SavedModel, with what they hold; a symbolic link is removed, never
      followed) instead of temporary files.
  """
  if not tf.io.gfile.isdir(directory):
    return []
  removed = []
  for name in sorted(tf.io.gfile.listdir(directory)):
    name = name.rstrip('/')  # gs:// lists directories with a slash.
    path = os.path.join(directory, name)
    if not is_stale_temporary(name):
      continue
    is_directory = tf.io.gfile.isdir(path)  # Also a link to a directory.
    if directories and (is_directory or os.path.islink(path)):
      remove_tree(path)
      removed.append(path)
    elif not directories and not is_directory:
      tf.io.gfile.remove(path)
      removed.append(path)
  return removed


def remove_tree(path: str) -> None:
  """Removes a directory tree, never following symbolic links.

  tf.io.gfile.rmtree follows a link to a directory and empties its target;
  locally a link is unlinked instead and shutil.rmtree does not descend into
  links inside the tree.
  """
  if '://' in path:
    tf.io.gfile.rmtree(path)
  elif os.path.islink(path):
    os.remove(path)
  else:
    shutil.rmtree(path)
