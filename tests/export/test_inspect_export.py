"""tools/inspect_export.py and deeplab_sp/export/saved_model_info.py.

A real export is described in test_export_lib.py (it has one); here a
small SavedModel stands in for what is not this project's, and for the
damaged copies.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
import tensorflow as tf

from deeplab_sp.export import saved_model_info
import export_testing

REPO_ROOT = export_testing.tiny_experiment.REPO_ROOT


class _Small(tf.Module):

  def __init__(self):
    super().__init__()
    self.scale = tf.Variable([1.0, 2.0, 3.0])

  @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32,
                                              name='values')])
  def serve(self, values):
    return {'scaled': values * self.scale}


@pytest.fixture(scope='module', name='small')
def fixture_small(tmp_path_factory):
  """A base directory with version 1: a SavedModel not of this project."""
  base = tmp_path_factory.mktemp('small') / 'model'
  module = _Small()
  tf.saved_model.save(module, str(base / '1'), signatures=module.serve)
  return str(base)


def _copy(small, tmp_path):
  copy = str(tmp_path / 'copy')
  shutil.copytree(os.path.join(small, '1'), copy)
  return copy


def _truncate(path):
  with open(path, 'rb') as f:
    data = f.read()
  with open(path, 'wb') as f:
    f.write(data[:len(data) // 3])


def test_another_savedmodel_is_described_without_our_facts(small):
  info = saved_model_info.describe(os.path.join(small, '1'))
  assert info['signatures'] == {'serving_default': {
      'inputs': {'values': {'dtype': 'float32', 'shape': [None, 3]}},
      'outputs': {'scaled': {'dtype': 'float32', 'shape': [None, 3]}}}}
  assert info['tensorflow_version'] == tf.__version__
  for key in ('model_input_size', 'class_names', 'max_input_pixels',
              'config_path', 'config_summary'):
    assert info[key] is None, key
  text = saved_model_info.as_text(info)
  assert 'Model input size: (not stored)' in text
  assert 'Experiment config: (not stored' in text
  assert 'inputs:  values: float32 [None, 3]' in text
  assert saved_model_info.config_text(info) is None
  json.dumps(info)  # JSON-able as it is.


@pytest.mark.parametrize('case, fragments', [
    ('missing', ['does not exist', 'pass a version directory']),
    ('file', ['is a file, not a SavedModel directory']),
    ('base', ['is a model base directory (versions 1)', '/1.']),
    ('empty', ['holds no saved_model.pb']),
])
def test_a_wrong_directory_is_named_with_the_fix(small, tmp_path, case,
                                                 fragments):
  path = {'missing': str(tmp_path / 'nothing'),
          'file': str(tmp_path / 'file'),
          'base': small,
          'empty': str(tmp_path)}[case]
  (tmp_path / 'file').write_text('x')
  with pytest.raises(saved_model_info.ExportError) as raised:
    saved_model_info.describe(path)
  message = str(raised.value)
  assert path in message
  for fragment in fragments:
    assert fragment in message, message


@pytest.mark.parametrize('damage, fragment', [
    ('garbage_graph', 'saved_model.pb is damaged'),
    ('truncated_graph', 'saved_model.pb is damaged'),
    ('no_variables_index', 'variables.index is missing'),
    ('truncated_variables', 'truncated'),
])
def test_a_damaged_export_is_named(small, tmp_path, damage, fragment):
  copy = _copy(small, tmp_path)
  variables = os.path.join(copy, 'variables', 'variables')
  if damage == 'garbage_graph':
    with open(os.path.join(copy, 'saved_model.pb'), 'wb') as f:
      f.write(b'\xff' * 100)
  elif damage == 'truncated_graph':
    _truncate(os.path.join(copy, 'saved_model.pb'))
  elif damage == 'no_variables_index':
    os.remove(variables + '.index')
  else:
    _truncate(variables + '.data-00000-of-00001')
  with pytest.raises(saved_model_info.ExportError) as raised:
    saved_model_info.describe(copy)
  message = str(raised.value)
  assert fragment in message, message
  assert 'export the model again' in message
  assert '\n' not in message


def _run_tool(*args):
  env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL='3')
  return subprocess.run(
      [sys.executable, 'tools/inspect_export.py', *args], capture_output=True,
      text=True, cwd=str(REPO_ROOT), env=env, timeout=300, check=False)


@pytest.mark.slow  # Two runs of the tool, ~10 s each to import TensorFlow.
def test_the_tool_prints_json_and_one_line_errors(small, tmp_path):
  version = os.path.join(small, '1')
  result = _run_tool(f'--saved_model={version}', '--json')
  assert result.returncode == 0, result.stderr[-3000:]
  assert json.loads(result.stdout) == saved_model_info.describe(version)
  result = _run_tool(f'--saved_model={tmp_path / "nothing"}')
  assert result.returncode == 1
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  assert result.stderr.strip().splitlines()[-1].startswith(
      f'inspect_export: --saved_model {tmp_path / "nothing"} does not exist')
