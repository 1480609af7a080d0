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
