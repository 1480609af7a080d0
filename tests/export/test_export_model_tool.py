"""tools/export_model.py --format=onnx|tflite: the command line."""

import os
import subprocess
import sys

import numpy as np
import pytest

from deeplab_sp import experiment as experiment_lib
from deeplab_sp.export import fixed_size
from deeplab_sp.export import tflite_export
import export_testing

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
SIZE = export_testing.SIZE


def run_tool(*args):
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='3')
  return subprocess.run([sys.executable, 'tools/export_model.py', *args],
                        capture_output=True, text=True, cwd=REPO, env=env,
                        timeout=300, check=False)


@pytest.fixture(scope='module')
def config_and_checkpoint(tmp_path_factory):
  return export_testing.write_config_and_checkpoint(
      str(tmp_path_factory.mktemp('tool')), seed=7)


def assert_one_line_error(result, *fragments):
  assert result.returncode == 1, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  line = result.stderr.strip().splitlines()[-1]
  assert line.startswith('export_model: '), result.stderr[-3000:]
  for fragment in fragments:
    assert fragment in line, line


@pytest.mark.slow
def test_tflite_export_at_another_size(config_and_checkpoint, tmp_path):
  pytest.importorskip(
      'ai_edge_litert.interpreter',
      reason='ai-edge-litert (the optional [interop] extra) is not '
      'installed: pip install -e ".[interop]"')
  config_file, prefix = config_and_checkpoint
  output = tmp_path / 'out' / 'model.tflite'
  result = run_tool('--format=tflite', f'--config_file={config_file}',
                    f'--checkpoint_path={prefix}', f'--output_path={output}',
                    f'--input_size={SIZE},{2 * SIZE}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert f'images float32 [1, {SIZE}, {2 * SIZE}, 3]' in result.stdout
  assert f'Exported to {output}' in result.stdout
  assert sorted(os.listdir(output.parent)) == ['model.tflite']
  # The file is the checkpoint's model.
  module = fixed_size.build_fixed_size_module(
      experiment_lib.load_experiment(config_file, mode=None), prefix,
      input_size=(SIZE, 2 * SIZE))
  images = module.test_images(seed=4)
  outputs = tflite_export.run_tflite(output.read_bytes(), images)
  reference = module.reference(images)
  np.testing.assert_allclose(outputs['semantic_logits'],
                             reference['semantic_logits'], atol=1e-4)
  export_testing.assert_labels_are_argmax(
      outputs['semantic'], reference['semantic_logits'])
  # A second export to the same file needs --overwrite.
  again = run_tool('--format=tflite', f'--config_file={config_file}',
                   f'--checkpoint_path={prefix}', f'--output_path={output}')
  assert_one_line_error(again, str(output), '--overwrite')


@pytest.mark.slow  # Six runs of the tool, ~10 s each to import TensorFlow.
def test_bad_flags_are_one_line_errors(config_and_checkpoint, tmp_path):
  config_file, prefix = config_and_checkpoint
  common = (f'--config_file={config_file}', f'--checkpoint_path={prefix}')
  assert_one_line_error(
      run_tool('--format=onnx', *common, f'--output_path={tmp_path / "m"}',
               '--version=2', '--include_probabilities'),
      '--version, --include_probabilities: not used by --format=onnx')
  assert_one_line_error(
      run_tool(*common, f'--output_path={tmp_path / "m"}',
               '--input_size=64,64'),
      '--input_size: not used by --format=saved_model')
  assert_one_line_error(
      run_tool('--format=tflite', *common, f'--output_path={tmp_path}'),
      'is a directory', 'model.onnx')
  assert_one_line_error(
      run_tool('--format=tflite', *common, '--input_size=60,64',
               f'--output_path={tmp_path / "m.tflite"}', '--noverify'),
      '--input_size', 'multiple of 16x16')
  assert not os.path.exists(tmp_path / 'm.tflite')
  assert_one_line_error(
      run_tool('--format=onnx', *common, '--precision=int8',
               f'--output_path={tmp_path / "m.onnx"}'),
      '--precision: not used by --format=onnx')
  assert_one_line_error(
      run_tool('--format=tflite', *common, '--representative_images=4',
               f'--output_path={tmp_path / "m.tflite"}'),
      '--representative_images: only --precision=int8')
