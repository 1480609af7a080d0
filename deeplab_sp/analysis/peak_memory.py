"""Peak memory of one call, measured honestly on CPU and GPU.

Used by the benchmark to compare the memory of the two local attention
implementations of the SP-Transformer's tokenization (arXiv 2309.16889,
Sec. III-B: the paper's form copies every pixel 9 times).

CPU. `tf.config.experimental.get_memory_info` reports nothing on CPU
(TF 2.20 returns zeros), so the peak is measured as the growth of the
resident set of a fresh subprocess: it builds the call, runs it once to
trace and compile it, resets the kernel's peak-RSS counter
(`/proc/self/clear_refs`), runs it again and reads the new peak (`VmHWM`)
minus the resident size just before. The subprocess runs with glibc's
`MALLOC_MMAP_THRESHOLD_` fixed at 64 KiB and oneDNN off
(`TF_ENABLE_ONEDNN_OPTS=0`: oneDNN's CPU allocator pools memory), so that
every large tensor is mapped on allocation and unmapped when freed (no
allocator caching hides it); the kernels may differ from a timed run, the
tensors do not. The figure therefore includes the tensors that are live at
the same time during the call (intermediates and outputs), not the inputs
or weights, which exist before. TF's inter-op parallelism decides which
intermediates coexist, so repeated measurements vary. It needs Linux;
elsewhere the peak is None. The subprocess sees no GPU
(CUDA_VISIBLE_DEVICES=-1): it measures the CPU.

Memory limit. A call may need more memory than the machine has (the paper's
form of a whole training step at the Cityscapes geometry needs tens of GiB).
Rather than let the kernel's out-of-memory killer pick a process to kill,
the subprocess can watch its own resident set and stop when it passes a
limit (by default, the memory available when it starts):
`rss_growth_in_subprocess` then raises MemoryLimitExceeded.

GPU. The allocator's own peak (`get_memory_info`), in this process.
"""

import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Optional

from absl import logging
import tensorflow as tf

from deeplab_sp.analysis import timing

# The subprocess maps every allocation of at least this many bytes (glibc
# mallopt M_MMAP_THRESHOLD), see the module docstring.
MMAP_THRESHOLD_BYTES = 64 * 1024
RESULT_PREFIX = 'PEAK_MEMORY_RESULT '
# Memory left to the rest of the machine by the default limit.
_LIMIT_MARGIN_BYTES = 512 * 2**20
# How often the subprocess checks its resident set against the limit.
_GUARD_INTERVAL_SECONDS = 0.01
# The subprocess's exit status when it stopped at the limit.
LIMIT_EXIT_CODE = 75
_GUARD_PROGRAM = ('from deeplab_sp.analysis import peak_memory\n'
                  'peak_memory.guard_resident_set({limit})\n')


class MemoryLimitExceeded(RuntimeError):
  """The measured call needs more memory than the limit allows."""

  def __init__(self, message: str, limit_bytes: int):
    super().__init__(message)
    self.limit_bytes = limit_bytes


def available_bytes() -> Optional[int]:
  """The memory the kernel can give new work now (MemAvailable), or None."""
  try:
    with open('/proc/meminfo') as meminfo:
      for line in meminfo:
        if line.startswith('MemAvailable:'):
          return 1024 * int(line.split()[1])
  except OSError:
    pass
  return None


def default_limit_bytes() -> Optional[int]:
  """The available memory less a margin for the rest of the machine."""
  available = available_bytes()
  return None if available is None else max(
      available - _LIMIT_MARGIN_BYTES, 0)


def rss_growth_in_subprocess(program: str, argument: str,
                             limit_bytes: Optional[int] = None
                            ) -> Optional[int]:
  """Runs `python -c program argument`, which must call `report_rss_growth`.

  Args:
    program: the subprocess's Python program.
    argument: its one argument.
    limit_bytes: the most resident memory the subprocess may use; None: the
      memory available now, less a margin (see the module docstring).

  Returns:
    The peak bytes it reports, or None where /proc is missing (not Linux).

  Raises:
    MemoryLimitExceeded: the subprocess reached the limit (or was killed,
      as the kernel does when memory runs out).
    RuntimeError: if the subprocess fails otherwise.
  """
  if not os.path.exists('/proc/self/clear_refs'):
    logging.warning('Peak memory needs Linux /proc; reporting None.')
    return None
  # oneDNN's CPU allocator pools memory (RSS would not grow again after the
  # warm-up call); the plain TF allocator mallocs and frees each tensor.
  result = guarded_subprocess(
      program, argument, limit_bytes,
      env=dict(MALLOC_MMAP_THRESHOLD_=str(MMAP_THRESHOLD_BYTES),
               TF_ENABLE_ONEDNN_OPTS='0', CUDA_VISIBLE_DEVICES='-1'),
      what='The measured call')
  return int(result['peak_bytes'])


def guarded_subprocess(program: str, argument: str,
                       limit_bytes: Optional[int] = None,
                       env: Optional[dict] = None,
                       what: str = 'The subprocess') -> dict:
  """Runs `python -c program argument` under a resident-set limit.

  Args:
    program: the subprocess's Python program; it reports with
      `print_result`.
    argument: its one argument.
    limit_bytes: the most resident memory the subprocess may use; None: the
      memory available now, less a margin (see the module docstring). The
      limit holds on Linux only.
    env: environment variables set for it (on top of this process's).
    what: how errors name the work, e.g. 'The measured call'.

  Returns:
    The dict it printed with print_result.

  Raises:
    MemoryLimitExceeded: the subprocess reached the limit (or was killed,
      as the kernel does when memory runs out).
    RuntimeError: if the subprocess fails otherwise.
  """
  if limit_bytes is None:
    limit_bytes = default_limit_bytes()
  if limit_bytes is not None and os.path.exists('/proc/self/status'):
    program = _GUARD_PROGRAM.format(limit=int(limit_bytes)) + program
  completed = subprocess.run(
      [sys.executable, '-c', program, argument],
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', **(env or {})),
      capture_output=True, text=True, check=False)
  for line in completed.stdout.splitlines():
    if line.startswith(RESULT_PREFIX):
      return json.loads(line[len(RESULT_PREFIX):])
  if completed.returncode in (LIMIT_EXIT_CODE, -signal.SIGKILL):
    raise MemoryLimitExceeded(
        f'{what} needs more than {limit_bytes / 2**30:.1f} GiB '
        '(the memory available when it started)'
        + ('' if completed.returncode == LIMIT_EXIT_CODE else
           '; its process was killed') + '.', limit_bytes)
  raise RuntimeError(f'{what} failed in its subprocess (exit code '
                     f'{completed.returncode}):\n{completed.stderr[-3000:]}')


def print_result(result: dict) -> None:
  """In the subprocess: reports `result` (JSON) to guarded_subprocess."""
  print(RESULT_PREFIX + json.dumps(result), flush=True)


def guard_resident_set(limit_bytes: int) -> None:
  """In the subprocess: exits with LIMIT_EXIT_CODE once RSS passes a limit.

  A daemon thread polls the resident set; TensorFlow's kernels run without
  Python's global lock, so the thread runs while they allocate.
  """

  def watch():
    while True:
      if 1024 * _read_status_kib('VmRSS') > limit_bytes:
        os._exit(LIMIT_EXIT_CODE)  # pylint: disable=protected-access
      time.sleep(_GUARD_INTERVAL_SECONDS)

  threading.Thread(target=watch, daemon=True, name='rss_guard').start()


def report_rss_growth(call) -> None:
  """In the subprocess: prints the peak RSS growth of the second `call()`."""
  call()  # Trace and compile.
  timing.synchronize()
  gc.collect()
  resident_kib = _read_status_kib('VmRSS')
  with open('/proc/self/clear_refs', 'w') as clear_refs:
    clear_refs.write('5')  # Reset the peak RSS (VmHWM) to the current RSS.
  outputs = call()
  timing.synchronize()
  peak_kib = _read_status_kib('VmHWM')
  del outputs
  print_result({'peak_bytes': 1024 * max(peak_kib - resident_kib, 0)})


def gpu_peak_bytes(call, device: str = 'GPU:0') -> int:
  """Peak GPU memory of the second `call()` (in this process)."""
  call()
  timing.synchronize()
  tf.config.experimental.reset_memory_stats(device)
  before = tf.config.experimental.get_memory_info(device)['current']
  call()
  timing.synchronize()
  return tf.config.experimental.get_memory_info(device)['peak'] - before


def _read_status_kib(field):
  with open('/proc/self/status') as status:
    for line in status:
      if line.startswith(field + ':'):
        return int(line.split()[1])
  raise RuntimeError(f'{field} not in /proc/self/status')
