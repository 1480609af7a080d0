"""Command-line entry points: the project's own input errors as one line.

The tools check their input and raise ValueError (config.ConfigError is
one), FileNotFoundError, FileExistsError or PermissionError with a message
that names the file or field and the fix. `main_with_clear_errors` prints
that message, without a traceback (absl's `--v=1` logs it too), and exits
with status 1. Any other exception is a bug and keeps its traceback.
"""

import functools
import sys

from absl import logging

# Errors whose message is written for the user (bad input, not a bug).
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError,
               PermissionError)


def main_with_clear_errors(tool_name, main, extra_errors=()):
  """Wraps an absl `main(argv)`: user errors -> `tool: message`, exit 1."""

  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except USER_ERRORS + tuple(extra_errors) as e:
      logging.vlog(1, 'Traceback of the error below:', exc_info=True)
      print(f'{tool_name}: {e}', file=sys.stderr)
      return 1

  return wrapped
