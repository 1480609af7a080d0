"""The training benchmark's child processes: one measurement each.

On CPU, the training benchmark (train_benchmark.py) measures the peak
memory of each forward + backward pass, and times each implementation's two
steps, in a fresh process of their own: a whole step at the Cityscapes
geometry holds several GiB, and TensorFlow's allocators keep what they free,
so the measurements do not fit in one process of a small machine, and the
resident-set growth of a call is only its own in a fresh process
(peak_memory.py). The parent runs

  python -m deeplab_sp.analysis.train_child '<JSON of a ChildRequest>'

(`run_in_child`); the child stops itself once its resident set passes the
request's limit (peak_memory.guard_resident_set), which the parent reports
as peak_memory.MemoryLimitExceeded, and otherwise prints its records, a
list of StepTiming or one PeakMemory, as JSON (dataclasses.asdict) in
peak_memory's result line.
"""

import contextlib
import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
from typing import List, Optional

from absl import logging
import tf_keras

from deeplab_sp import experiment as experiment_lib
from deeplab_sp.analysis import peak_memory
from deeplab_sp.analysis import timing
from deeplab_sp.analysis import train_measurements as measurements
from deeplab_sp.analysis import train_settings as settings_lib
from deeplab_sp.analysis import train_setup

CHILD_MODULE = 'deeplab_sp.analysis.train_child'
STEP_TIMING, PEAK_MEMORY = 'step_timing', 'peak_memory'
# The child's result line and its exit status at the memory limit: the
# protocol of peak_memory's guarded children, which this one follows.
RESULT_PREFIX = peak_memory.RESULT_PREFIX
LIMIT_EXIT_CODE = peak_memory.LIMIT_EXIT_CODE
# The resident-set growth of a call is only its tensors' when every large
# allocation is mapped and unmapped (peak_memory.py); no GPU: it measures
# the CPU.
_PEAK_MEMORY_ENV = dict(
    MALLOC_MMAP_THRESHOLD_=str(peak_memory.MMAP_THRESHOLD_BYTES),
    TF_ENABLE_ONEDNN_OPTS='0', CUDA_VISIBLE_DEVICES='-1')


@dataclasses.dataclass
class ChildRequest:
  """What one child process measures.

  Attributes:
    task: STEP_TIMING (the encoder's step and the whole step, round-robin)
      or PEAK_MEMORY (the resident-set growth of one forward + backward).
    options: the ExperimentOptions, text format.
    implementation: NAIVE or EFFICIENT.
    height, width, batch: the input.
    policy: the tf_keras mixed-precision policy of the model.
    part, precision: PEAK_MEMORY's part and precision (measurements).
    num_warmup, num_runs: STEP_TIMING's (timing.round_robin).
    limit_bytes: the most resident memory the child may use; None: no
      limit.
  """
  task: str
  options: str
  implementation: str
  height: int
  width: int
  batch: int
  policy: str
  part: Optional[str] = None
  precision: Optional[str] = None
  num_warmup: int = 0
  num_runs: int = 0
  limit_bytes: Optional[int] = None


def time_steps(experiment: experiment_lib.Experiment, implementation: str,
               policy: str, size, batch: int, num_warmup: int, num_runs: int,
               limit_bytes: Optional[int]) -> List[measurements.StepTiming]:
  """The encoder's step and the whole step, timed in a child process.

  Alone in a fresh process, each implementation's step is timed with its
  own encoder step (their per-round ratio is 'total_over_encoder'), and a
  step that does not fit stops at the limit instead of the machine.

  Raises:
    peak_memory.MemoryLimitExceeded: the step does not fit.
  """
  request = ChildRequest(
      STEP_TIMING, train_setup.options_text(experiment), implementation,
      size[0], size[1], batch, policy, num_warmup=num_warmup,
      num_runs=num_runs, limit_bytes=_limit(limit_bytes))
  result = run_in_child(request, what=f'The {implementation} step')
  return [measurements.StepTiming(**t) for t in result['step_timings']]


def peak_memory_in_child(experiment: experiment_lib.Experiment,
                         implementation: str, part: str, precision: str,
                         size, batch: int, limit_bytes: Optional[int]
                        ) -> measurements.PeakMemory:
  """The resident-set growth of one forward + backward pass (CPU).

  Raises:
    peak_memory.MemoryLimitExceeded: it needs more memory than the limit.
  """
  if not os.path.exists('/proc/self/clear_refs'):
    logging.warning('Peak memory needs Linux /proc; reporting None.')
    return measurements.PeakMemory(
        implementation, part, precision, size[0], size[1], batch,
        measurements.RSS_GROWTH, peak_bytes=None)
  request = ChildRequest(
      PEAK_MEMORY, train_setup.options_text(experiment), implementation,
      size[0], size[1], batch, train_setup.POLICIES[precision], part=part,
      precision=precision, limit_bytes=_limit(limit_bytes))
  result = run_in_child(request, env=_PEAK_MEMORY_ENV,
                        what='The measured call')
  return measurements.PeakMemory(**result['peak_memory'])


def _limit(limit_bytes):
  return (peak_memory.default_limit_bytes() if limit_bytes is None
          else limit_bytes)


def run_in_child(request: ChildRequest, env: Optional[dict] = None,
                 what: str = 'The child process') -> dict:
  """Runs `python -m CHILD_MODULE request` and returns what it printed.

  Args:
    request: what to measure.
    env: environment variables set for it (on top of this process's).
    what: how errors name the work, e.g. 'The measured call'.

  Raises:
    peak_memory.MemoryLimitExceeded: the child reached request.limit_bytes
      (or was killed, as the kernel does when memory runs out).
    RuntimeError: if the child fails otherwise.
  """
  completed = subprocess.run(
      [sys.executable, '-m', CHILD_MODULE,
       json.dumps(dataclasses.asdict(request))],
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', **(env or {})),
      capture_output=True, text=True, check=False)
  result = _read_result(completed.stdout)
  if result is not None:
    return result
  limit = request.limit_bytes
  if completed.returncode in (LIMIT_EXIT_CODE, -signal.SIGKILL):
    raise peak_memory.MemoryLimitExceeded(
        f'{what} needs more than '
        + (f'{limit / 2**30:.1f} GiB (the memory available when it '
           'started)' if limit is not None else 'the memory available')
        + ('' if completed.returncode == LIMIT_EXIT_CODE else
           '; its process was killed') + '.', limit)
  raise RuntimeError(f'{what} failed in its subprocess (exit code '
                     f'{completed.returncode}):\n{completed.stderr[-3000:]}')


def _read_result(stdout: str) -> Optional[dict]:
  for line in stdout.splitlines():
    if line.startswith(RESULT_PREFIX):
      return json.loads(line[len(RESULT_PREFIX):])
  return None


# In the child.


def measure(request: ChildRequest) -> dict:
  """The child's work: {'step_timings': [...]} or {'peak_memory': {...}}."""
  tf_keras.mixed_precision.set_global_policy(request.policy)
  size = (request.height, request.width)
  setup = train_setup.TrainingSetup(
      train_setup.experiment_from_text(request.options),
      request.implementation, size, request.batch)
  if request.task == STEP_TIMING:
    parts = (settings_lib.ENCODER_STEP, settings_lib.STEP)
    rounds = timing.round_robin({p: setup.timed_part(p) for p in parts},
                                request.num_warmup, request.num_runs)
    timings = [measurements.StepTiming.from_rounds(
        rounds[part], implementation=request.implementation, part=part,
        policy=request.policy, height=request.height, width=request.width,
        batch=request.batch, in_subprocess=True) for part in parts]
    return {'step_timings': [dataclasses.asdict(t) for t in timings]}
  peak = measurements.PeakMemory(
      request.implementation, request.part, request.precision,
      request.height, request.width, request.batch, measurements.RSS_GROWTH,
      peak_bytes=_rss_growth_bytes(setup.measured_part(request.part)))
  return {'peak_memory': dataclasses.asdict(peak)}


def _rss_growth_bytes(call) -> int:
  """peak_memory.report_rss_growth's figure, read back from its output."""
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    peak_memory.report_rss_growth(call)
  return int(_read_result(printed.getvalue())['peak_bytes'])


def main(argv: List[str]) -> None:
  if len(argv) != 2:
    raise SystemExit(f'Usage: python -m {CHILD_MODULE} <JSON request> (run '
                     'by train_benchmark.py).')
  request = ChildRequest(**json.loads(argv[1]))
  if request.task not in (STEP_TIMING, PEAK_MEMORY):
    raise SystemExit(f'Unknown task {request.task!r} in the request: use '
                     f'{STEP_TIMING} or {PEAK_MEMORY}.')
  if request.limit_bytes is not None and os.path.exists('/proc/self/status'):
    peak_memory.guard_resident_set(request.limit_bytes)
  peak_memory.print_result(measure(request))


if __name__ == '__main__':
  main(sys.argv)
