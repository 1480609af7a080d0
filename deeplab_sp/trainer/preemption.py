"""SIGTERM (preemption): stop training at a step boundary, with a checkpoint.

Schedulers and spot/preemptible machines send SIGTERM, then SIGKILL after a
grace period. While `watch` is active in the main thread, the first SIGTERM
only sets a flag (`StopWatcher.requested`): the trainer stops at the next
step boundary (the end of the running loop of steps_per_loop steps, or
before the next loop when an evaluation is running), saves a checkpoint at
that step, releases the experiment's lock and raises TrainingPreempted; the
command line exits with EXIT_CODE after one log line. Rerunning the same
command resumes from that checkpoint.

It is ended anyway, without a checkpoint of the current step, by
  - a second SIGTERM: the default action of the signal (the first one
    restores it), so it works while TensorFlow runs a long op;
  - the deadline (`deadline_seconds` after the first SIGTERM): a timer
    thread ends the process with FORCED_EXIT_CODE, as if killed by SIGTERM.
Both leave the lock behind; the next trainer on this host takes it over
(its process is gone; deeplab_sp/utils/lock.py).

Single-process training only (one machine, any number of local devices):
the workers of a multi-worker job would each stop at their own boundary.
"""

import contextlib
import os
import signal
import threading
from typing import Iterator, Optional

from absl import logging

# sysexits.h EX_TEMPFAIL: "a temporary failure; the user is invited to
# retry". Not 0, so a scheduler does not count the run as finished.
EXIT_CODE = 75
# A process killed by SIGTERM, as a shell reports it.
FORCED_EXIT_CODE = 128 + signal.SIGTERM
# Seconds from the first SIGTERM to the forced end.
DEFAULT_DEADLINE_SECONDS = 300.0


class StopRequested(Exception):
  """Raised at a step boundary after a SIGTERM (caught by the trainer)."""


class TrainingPreempted(Exception):
  """Training stopped on SIGTERM after saving a checkpoint.

  Attributes:
    step: the step it stopped at.
    checkpoint: the checkpoint saved at `step` (rerunning resumes from it).
  """

  def __init__(self, step: int, checkpoint: Optional[str]):
    super().__init__(
        f'Stopped on SIGTERM at step {step}; the checkpoint {checkpoint} '
        'holds that step. Rerun the same command to resume.')
    self.step = step
    self.checkpoint = checkpoint


class StopWatcher:
  """Whether a SIGTERM asked training to stop (see the module docstring)."""

  def __init__(self, deadline_seconds: float = DEFAULT_DEADLINE_SECONDS):
    self.deadline_seconds = deadline_seconds
    self._requested = threading.Event()
    self._timer: Optional[threading.Timer] = None

  def requested(self) -> bool:
    return self._requested.is_set()

  def raise_if_requested(self) -> None:
    """Raises StopRequested after a SIGTERM (call at step boundaries)."""
    if self.requested():
      raise StopRequested()

  def handle(self, signum=signal.SIGTERM, frame=None) -> None:
    """The SIGTERM handler: sets the flag and starts the deadline."""
    del frame  # Unused.
    if self._requested.is_set():
      return
    self._requested.set()
    # The next SIGTERM terminates at once (the signal's default action).
    signal.signal(signum, signal.SIG_DFL)
    self._timer = threading.Timer(self.deadline_seconds, self._force_exit)
    self._timer.daemon = True
    self._timer.start()
    logging.warning(
        'SIGTERM: stopping at the end of the current training loop with a '
        'checkpoint (another SIGTERM, or %g s, ends the process at once).',
        self.deadline_seconds)

  def _force_exit(self) -> None:
    logging.error('SIGTERM deadline of %g s passed: ending the process '
                  'without a checkpoint of the current step.',
                  self.deadline_seconds)
    logging.flush()
    os._exit(FORCED_EXIT_CODE)  # pylint: disable=protected-access

  def cancel(self) -> None:
    if self._timer is not None:
      self._timer.cancel()


@contextlib.contextmanager
def watch(deadline_seconds: float = DEFAULT_DEADLINE_SECONDS
         ) -> Iterator[StopWatcher]:
  """Handles SIGTERM in the block (main thread only; elsewhere it never
  stops) and restores the previous handler after it."""
  watcher = StopWatcher(deadline_seconds)
  if threading.current_thread() is not threading.main_thread():
    yield watcher
    return
  previous = signal.signal(signal.SIGTERM, watcher.handle)
  try:
    yield watcher
  finally:
    signal.signal(signal.SIGTERM, previous)
    watcher.cancel()
