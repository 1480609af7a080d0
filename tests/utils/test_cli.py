"""deeplab_sp.utils.cli: user errors end as one line and exit status 1."""

import pytest

from deeplab_sp.utils import cli


class _Bug(RuntimeError):
  pass


def _raising(error):
  def main(argv):
    del argv
    raise error
  return main


@pytest.mark.parametrize('error', [
    ValueError('config.textproto:3: unknown field'),
    FileNotFoundError('images/a.png does not exist'),
    FileExistsError('export/1 exists; pass --overwrite'),
    PermissionError('model_dir /x is not writable'),
])
def test_user_errors_print_one_line_and_return_1(capsys, error):
  assert cli.main_with_clear_errors('tool', _raising(error))(['tool']) == 1
  assert capsys.readouterr().err == f'tool: {error}\n'


def test_extra_errors_are_user_errors(capsys):
  main = cli.main_with_clear_errors('train', _raising(_Bug('loss is nan')),
                                    extra_errors=(_Bug,))
  assert main(['train']) == 1
  assert capsys.readouterr().err == 'train: loss is nan\n'


def test_other_errors_keep_their_traceback():
  main = cli.main_with_clear_errors('tool', _raising(_Bug('a bug')))
  with pytest.raises(_Bug):
    main(['tool'])


def test_return_value_passes_through():
  assert cli.main_with_clear_errors('tool', lambda argv: 0)(['tool']) == 0


def _os_error(number, path):
  import errno  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  return OSError(getattr(errno, number), os.strerror(getattr(errno, number)),
                 path)


@pytest.mark.parametrize('error', [
    _os_error('ENOSPC', 'out/eval_results.json'),
    _os_error('EROFS', '/read-only/x'),
    IsADirectoryError(21, 'Is a directory', 'images'),
    NotADirectoryError(20, 'Not a directory', 'a_file/sub'),
])
def test_filesystem_errors_are_one_line(capsys, error):
  assert cli.main_with_clear_errors('tool', _raising(error))(['tool']) == 1
  err = capsys.readouterr().err
  assert err == f'tool: {error}\n'
  assert err.count('\n') == 1


@pytest.mark.parametrize('name', ['NotFoundError', 'PermissionDeniedError',
                                  'FailedPreconditionError'])
def test_gfile_errors_are_one_line(capsys, name):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  error = getattr(tf.errors, name)(None, None, 'gs://b/x; details\nop context')
  assert cli.main_with_clear_errors('tool', _raising(error))(['tool']) == 1
  assert capsys.readouterr().err == 'tool: gs://b/x; details\n'


def test_multi_line_messages_become_one_line(capsys):
  error = ValueError('checkpoint x does not fit:\n  shape (3,) vs (19,).\n'
                     'Use the config it was trained with.')
  assert cli.main_with_clear_errors('tool', _raising(error))(['tool']) == 1
  assert capsys.readouterr().err == (
      'tool: checkpoint x does not fit: shape (3,) vs (19,). Use the config '
      'it was trained with.\n')


def test_a_gfile_error_other_than_the_filesystem_keeps_its_traceback():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  main = cli.main_with_clear_errors(
      'tool', _raising(tf.errors.InvalidArgumentError(None, None, 'a bug')))
  with pytest.raises(tf.errors.InvalidArgumentError):
    main(['tool'])


def test_a_full_disk_of_tensorflow_is_one_line_naming_the_file(capsys):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  error = tf.errors.ResourceExhaustedError(None, None, (
      'Graph execution error:\n\n{{function_node __wrapped__SaveV2_device_/'
      'job:localhost/replica:0/task:0/device:CPU:0}} run/ckpt-2_temp/part-0;'
      ' No space left on device [Op:SaveV2]'))
  assert cli.main_with_clear_errors('train', _raising(error))(['train']) == 1
  assert capsys.readouterr().err == (
      'train: run/ckpt-2_temp/part-0; No space left on device: free space on '
      'that disk or write to another directory, then rerun.\n')


def test_out_of_memory_keeps_its_traceback():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  error = tf.errors.ResourceExhaustedError(
      None, None, 'OOM when allocating tensor with shape[8,512,512,256]')
  with pytest.raises(tf.errors.ResourceExhaustedError):
    cli.main_with_clear_errors('train', _raising(error))(['train'])


def test_a_failed_check_of_the_data_is_one_line(capsys):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  error = tf.errors.InvalidArgumentError(None, None, (
      'Graph execution error:\n\nDetected at node Assert_2/Assert\n'
      "assertion failed: [Label map of image x_000003 has values for \\'syn"
      "thetic\\': rebuild the records. Largest value:] [200]\n"
      '\t [[{{node Assert_2/Assert}}]]'))
  assert cli.main_with_clear_errors('train', _raising(error))(['train']) == 1
  assert capsys.readouterr().err == (
      "train: Label map of image x_000003 has values for 'synthetic': rebuild "
      'the records. Largest value: [200]\n')


def test_other_failed_assertions_keep_their_traceback():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  error = tf.errors.InvalidArgumentError(None, None, (
      'assertion failed: [Condition x == y did not hold element-wise:] [1]'))
  with pytest.raises(tf.errors.InvalidArgumentError):
    cli.main_with_clear_errors('train', _raising(error))(['train'])
