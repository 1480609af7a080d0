"""Command-line entry points: the user's input errors as one line.

The tools check their input and raise ValueError (experiment.ConfigError is
one), FileNotFoundError, FileExistsError or PermissionError with a message
that names the file or field and the fix. The filesystem's own errors are
the user's too: any OSError (read-only or missing directory, a directory
where a file is expected, a full disk) and the errors TensorFlow's gfile
raises for the same causes (NotFoundError, PermissionDeniedError,
FailedPreconditionError). `main_with_clear_errors` prints such an error as
one line `tool: message`, without a traceback (absl's `--v=1` logs it too),
and exits with status 1. Any other exception is a bug and keeps its
traceback.
"""

import functools
import sys

from absl import logging

# Errors whose message is written for the user (bad input, not a bug).
# OSError covers FileNotFoundError, FileExistsError, PermissionError,
# IsADirectoryError, NotADirectoryError and ENOSPC (disk full).
USER_ERRORS = (ValueError, OSError)

# TensorFlow's gfile errors of the same causes, by name under tf.errors.
_TENSORFLOW_USER_ERRORS = ('NotFoundError', 'PermissionDeniedError',
                           'FailedPreconditionError')


def user_errors(extra_errors=()) -> tuple:
  """USER_ERRORS, TensorFlow's filesystem errors and `extra_errors`."""
  errors = USER_ERRORS + tuple(extra_errors)
  # Only a tool that imported TensorFlow can raise its errors; the others
  # (tools/build_protos.py) do not pay for importing it.
  tensorflow = sys.modules.get('tensorflow')
  if tensorflow is not None:
    errors += tuple(getattr(tensorflow.errors, name)
                    for name in _TENSORFLOW_USER_ERRORS)
  return errors


def one_line_message(error: BaseException) -> str:
  """The error's message on one line.

  A TensorFlow error gives the first line of its message (the rest is the
  op's context); other messages keep every line, joined by spaces, so that
  a fix given at the end is not lost.
  """
  message = getattr(error, 'message', None)
  if isinstance(message, str) and message.strip():
    return message.strip().splitlines()[0]
  lines = [line.strip() for line in str(error).strip().splitlines()]
  return ' '.join(line for line in lines if line) or type(error).__name__


def main_with_clear_errors(tool_name, main, extra_errors=()):
  """Wraps an absl `main(argv)`: user errors -> `tool: message`, exit 1."""

  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except BaseException as e:  # pylint: disable=broad-except
      if not isinstance(e, user_errors(extra_errors)):
        raise
      logging.vlog(1, 'Traceback of the error below:', exc_info=True)
      print(f'{tool_name}: {one_line_message(e)}', file=sys.stderr)
      return 1

  return wrapped
