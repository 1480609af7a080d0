"""Hides TensorFlow's start-up noise in the command-line entry points.

TensorFlow's C++ runtime prints a dozen INFO and WARNING lines when it
loads (oneDNN, CPU instruction sets, CUDA stubs), which bury the tools' own
output. Its level is read once, from TF_CPP_MIN_LOG_LEVEL, when TensorFlow
loads, so every entry point imports this module before anything imports
TensorFlow:

    from deeplab_sp.utils import tf_startup  # First: before TensorFlow.

It sets TF_CPP_MIN_LOG_LEVEL to QUIET_LEVEL ('2': errors only) unless the
user set it: `TF_CPP_MIN_LOG_LEVEL=0 python tools/...` shows everything.
tools/main_job.py --verbose passes '0' to the steps it runs.

One line the level cannot hide: on a machine without a usable NVIDIA GPU,
TensorFlow's CUDA platform logs `E ... failed call to cuInit: ...` at
ERROR level the first time the devices are listed (once per process), and
hiding ERROR lines (level '3') would hide real errors too. So, unless the
user set a level, this module imports TensorFlow, lists the devices itself
with the process's stderr (file descriptor 2, where the C++ runtime
writes) sent to a temporary file, and writes back every line but that one.
Listing the physical devices does not start the runtime, so a tool can
still choose its devices afterwards.

It also installs absl's log handler on Python's root logger now, as
absl.app.run would later: TensorFlow gives its `tensorflow` logger a handler
of its own when the root logger has none at the time the logger is made,
and that logger also propagates to the root, so each of its lines
(`INFO:tensorflow:...`) was printed twice, once per handler.
"""

import os
import sys
import tempfile

from absl import logging

LOG_LEVEL_VARIABLE = 'TF_CPP_MIN_LOG_LEVEL'
QUIET_LEVEL = '2'
VERBOSE_LEVEL = '0'
# What the ERROR line of a failed CUDA initialisation contains.
NO_GPU_LINE_MARKER = b'failed call to cuInit'

_STDERR = 2


def list_devices_without_the_no_gpu_line() -> None:
  """Lists TensorFlow's devices; their output less the cuInit line goes on.

  The C++ runtime writes to file descriptor 2 directly, so that is what is
  redirected (to an unnamed temporary file) while the devices are listed.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  sys.stderr.flush()
  try:
    saved_stderr = os.dup(_STDERR)
  except OSError:  # No stderr (a closed descriptor): nothing to hide.
    tf.config.list_physical_devices()
    return
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), _STDERR)
    try:
      tf.config.list_physical_devices()
    finally:
      os.dup2(saved_stderr, _STDERR)
      os.close(saved_stderr)
      captured.seek(0)
      for line in captured:
        if NO_GPU_LINE_MARKER not in line:
          os.write(_STDERR, line)


# The user's own setting (None: not set), read before the default is set.
USER_LEVEL = os.environ.get(LOG_LEVEL_VARIABLE)
os.environ.setdefault(LOG_LEVEL_VARIABLE, QUIET_LEVEL)
logging.use_absl_handler()
if USER_LEVEL is None:
  list_devices_without_the_no_gpu_line()


def child_environment(verbose: bool) -> dict:
  """The environment of a subprocess: verbose shows TensorFlow's lines.

  Quiet leaves TF_CPP_MIN_LOG_LEVEL unset, for the subprocess (an entry
  point, which imports this module) to hide the noise as this process
  does: the level this module set here would read there as the user's, and
  keep the cuInit line. The user's own TF_CPP_MIN_LOG_LEVEL always wins.
  """
  environment = dict(os.environ)
  if USER_LEVEL is None:
    if verbose:
      environment[LOG_LEVEL_VARIABLE] = VERBOSE_LEVEL
    else:
      environment.pop(LOG_LEVEL_VARIABLE, None)
  return environment
