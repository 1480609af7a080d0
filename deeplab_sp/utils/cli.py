"""Command-line entry points: the user's input errors as one line.

The tools check their input and raise ValueError (experiment.ConfigError is
one), FileNotFoundError, FileExistsError or PermissionError with a message
that names the file or field and the fix. The filesystem's own errors are
the user's too: any OSError (read-only or missing directory, a directory
where a file is expected, a full disk) and the errors TensorFlow's gfile
raises for the same causes (NotFoundError, PermissionDeniedError,
FailedPreconditionError). Two TensorFlow errors are the user's by their
message: a ResourceExhaustedError of a full disk (the message names the
file), and an InvalidArgumentError of a failed tf.debugging.Assert of the
project's checks of the user's data (USER_ASSERTIONS: label values outside
the dataset's range, a label map of another size than its image, ...),
whose message says the fix. `main_with_clear_errors` prints such an error as
one line `tool: message`, without a traceback (absl's `--v=1` logs it too),
and exits with status 1. Any other exception is a bug and keeps its
traceback.

`define_config_override` defines the --config_override flag of every tool
that takes --config_file, with one help text.
"""

import functools
import re
import sys
from typing import Optional

from absl import flags
from absl import logging

# Errors whose message is written for the user (bad input, not a bug).
# OSError covers FileNotFoundError, FileExistsError, PermissionError,
# IsADirectoryError, NotADirectoryError and ENOSPC (disk full).
USER_ERRORS = (ValueError, OSError)

# TensorFlow's gfile errors of the same causes, by name under tf.errors.
_TENSORFLOW_USER_ERRORS = ('NotFoundError', 'PermissionDeniedError',
                           'FailedPreconditionError')

# How the messages of the project's tf.debugging.Assert checks of the user's
# records begin (deeplab_sp/data/preprocessing.py map_labels,
# check_sizes_match and the evaluation crop; deeplab_sp/data/input_pipeline.py
# the missing label). A failed one is bad data, and its message says the fix;
# any other failed assertion may be a bug and keeps its traceback.
USER_ASSERTIONS = ('Label map of image ', 'The label map of image ',
                   'Evaluation image ', 'TFRecord shard ')
_ASSERTION = 'assertion failed:'


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


def assertion_text(error: BaseException) -> Optional[str]:
  """The text of a failed tf.debugging.Assert in `error`, or None.

  TensorFlow prints the assertion's data as `[message] [value] ...`, with
  quotes escaped; this gives `message [value] ...`.
  """
  message = getattr(error, 'message', None) or str(error)
  for line in message.splitlines():
    if _ASSERTION not in line:
      continue
    text = line.split(_ASSERTION, 1)[1].strip()
    if text.startswith('['):
      first, _, rest = text[1:].partition('] ')
      if not rest:
        first = first.removesuffix(']')
      text = f'{first} {rest}'.strip()
    return text.replace("\\'", "'").replace('\\"', '"')
  return None


def _tensorflow_line(error: BaseException, fragment: str) -> str:
  """The line of a TensorFlow error holding `fragment`, undecorated."""
  message = getattr(error, 'message', None) or str(error)
  lines = [line.strip() for line in message.splitlines() if fragment in line]
  line = lines[0] if lines else one_line_message(error)
  # Without the op's decorations: `{{function_node ...}}`, `[Op:...]`.
  line = re.sub(r'\{\{function_node [^}]*\}\}\s*', '', line)
  return re.sub(r'\s*\[Op:[^\]]*\]$', '', line).strip()


def _tensorflow_user_message(error: BaseException) -> Optional[str]:
  """The one line of a TensorFlow error that is the user's, or None."""
  tensorflow = sys.modules.get('tensorflow')
  if tensorflow is None:
    return None
  if isinstance(error, tensorflow.errors.ResourceExhaustedError):
    from deeplab_sp.utils import io  # pylint: disable=g-import-not-at-top
    if io.is_disk_full(error):
      # TensorFlow's file systems say `<path>; <strerror>`.
      message = getattr(error, 'message', None) or str(error)
      fragment = next(text for text in io.DISK_FULL_TEXTS if text in message)
      return (f'{_tensorflow_line(error, fragment)}: free space on that disk '
              'or write to another directory, then rerun.')
  if isinstance(error, tensorflow.errors.InvalidArgumentError):
    text = assertion_text(error)
    if text is not None and text.startswith(USER_ASSERTIONS):
      return text
  return None


def user_error_message(error: BaseException,
                       extra_errors=()) -> Optional[str]:
  """The one line to print for a user error; None for a bug."""
  if isinstance(error, user_errors(extra_errors)):
    return one_line_message(error)
  return _tensorflow_user_message(error)


def main_with_clear_errors(tool_name, main, extra_errors=()):
  """Wraps an absl `main(argv)`: user errors -> `tool: message`, exit 1."""

  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except BaseException as e:  # pylint: disable=broad-except
      message = user_error_message(e, extra_errors)
      if message is None:
        raise
      logging.vlog(1, 'Traceback of the error below:', exc_info=True)
      print(f'{tool_name}: {message}', file=sys.stderr)
      return 1

  return wrapped


# The flags define_config_override defines belong to the tool that calls
# it, so that its --help lists them (absl lists the main module's flags).
flags.disclaim_key_flags()

CONFIG_OVERRIDE_HELP = (
    'Text-format ExperimentOptions fields that replace the config file\'s '
    '(repeatable, applied in order; repeated fields are replaced whole), '
    'e.g. --config_override=\'eval_dataset_options { file_pattern: '
    '"data/camvid/test-*.tfrecord" }\'.')


def define_config_override(extra_help: str = '') -> flags.FlagHolder:
  """Defines --config_override, the same on every tool with --config_file.

  The Model Garden's --params_override for the text-proto configs; its
  value goes to experiment.load_experiment(..., overrides=...).

  Args:
    extra_help: what the flag means for this tool in particular, appended
      to the shared help text.

  Returns:
    The flag's holder; its value is the list of fragments.
  """
  help_text = CONFIG_OVERRIDE_HELP
  if extra_help:
    help_text += ' ' + extra_help
  return flags.DEFINE_multi_string('config_override', [], help_text)
