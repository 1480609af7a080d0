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
elsewhere the peak is None.

GPU. The allocator's own peak (`get_memory_info`), in this process.
"""

import gc
import json
import os
import subprocess
import sys
from typing import Optional

from absl import logging
import tensorflow as tf

from deeplab_sp.analysis import timing

# The subprocess maps every allocation of at least this many bytes (glibc
# mallopt M_MMAP_THRESHOLD), see the module docstring.
MMAP_THRESHOLD_BYTES = 64 * 1024
_RESULT_PREFIX = 'PEAK_MEMORY_RESULT '


def rss_growth_in_subprocess(program: str, argument: str) -> Optional[int]:
  """Runs `python -c program argument`, which must call `report_rss_growth`.

  Returns:
    The peak bytes it reports, or None where /proc is missing (not Linux).

  Raises:
    RuntimeError: if the subprocess fails.
  """
  if not os.path.exists('/proc/self/clear_refs'):
    logging.warning('Peak memory needs Linux /proc; reporting None.')
    return None
  # oneDNN's CPU allocator pools memory (RSS would not grow again after the
  # warm-up call); the plain TF allocator mallocs and frees each tensor.
  env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(MMAP_THRESHOLD_BYTES),
             TF_ENABLE_ONEDNN_OPTS='0', TF_CPP_MIN_LOG_LEVEL='2')
  completed = subprocess.run(
      [sys.executable, '-c', program, argument],
      env=env, capture_output=True, text=True, check=False)
  for line in completed.stdout.splitlines():
    if line.startswith(_RESULT_PREFIX):
      return int(json.loads(line[len(_RESULT_PREFIX):])['peak_bytes'])
  raise RuntimeError('The peak-memory subprocess failed (exit code '
                     f'{completed.returncode}):\n{completed.stderr[-3000:]}')


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
  print(_RESULT_PREFIX + json.dumps(
      {'peak_bytes': 1024 * max(peak_kib - resident_kib, 0)}), flush=True)


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
