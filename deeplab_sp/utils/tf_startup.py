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

It also installs absl's log handler on Python's root logger now, as
absl.app.run would later: TensorFlow gives its `tensorflow` logger a handler
of its own when the root logger has none at the time the logger is made
(during the import), and that logger also propagates to the root, so each
of its lines (`INFO:tensorflow:...`) was printed twice, once per handler.
This module imports nothing heavy (os and absl.logging).
"""

import os

from absl import logging

LOG_LEVEL_VARIABLE = 'TF_CPP_MIN_LOG_LEVEL'
QUIET_LEVEL = '2'
VERBOSE_LEVEL = '0'

# The user's own setting (None: not set), read before the default is set.
USER_LEVEL = os.environ.get(LOG_LEVEL_VARIABLE)
os.environ.setdefault(LOG_LEVEL_VARIABLE, QUIET_LEVEL)
logging.use_absl_handler()


def child_environment(verbose: bool) -> dict:
  """The environment of a subprocess: verbose shows TensorFlow's lines.

  The user's own TF_CPP_MIN_LOG_LEVEL always wins.
  """
  environment = dict(os.environ)
  if USER_LEVEL is None:
    environment[LOG_LEVEL_VARIABLE] = VERBOSE_LEVEL if verbose else QUIET_LEVEL
  return environment
