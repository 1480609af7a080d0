"""Hostile configs and filesystem mistakes, through the real tools.

Each case ends as one line naming the file or field and the fix, exit 1, no
traceback, and nothing outside the tool's own outputs changes.
"""

import math
import os

from google.protobuf import text_format
import pytest
import reliability_helpers as helpers

from deeplab_sp.protos import dataset_pb2
import tiny_experiment

# Field overrides -> a word the message must contain.
_BAD_CONFIGS = {
    'name_dotdot': ({'experiment_name': '..'}, 'experiment_name'),
    'name_dot': ({'experiment_name': '.'}, 'experiment_name'),
    'nan_learning_rate': ({'trainer_options.base_learning_rate': math.nan},
                          'base_learning_rate'),
    'inf_learning_rate': ({'trainer_options.base_learning_rate': math.inf},
                          'base_learning_rate'),
    'huge_batch': ({'train_dataset_options.batch_size': 10**9},
                   'batch_size'),
    'huge_crop': ({'train_dataset_options.crop_size': [65536, 65536]},
                  'crop_size'),
    'huge_channels': ({'model_options.hypercolumn.channels': 10**9},
                      'channels'),
    'steps_per_loop': ({'trainer_options.steps_per_loop': 30,
                        'trainer_options.save_summaries_steps': 50},
                       'steps_per_loop'),
    'warmup_whole_training': ({'trainer_options.warmup_steps': 1500},
                              'warmup_steps'),
    'negative_poly_power': ({'trainer_options.poly_learning_power': -2.0},
                            'poly_learning_power'),
    'parallel_reads_threads': (
        {'train_dataset_options.num_parallel_reads': 100000},
        'num_parallel_reads'),
    'description_twice_mapped': (
        {'train_dataset_options.dataset_description':
             text_format.Parse(
                 'name: "d" classes { name: "a" color: [1, 2, 3] } classes '
                 '{ name: "b" color: [1, 2, 3] } ignore_values: 1',
                 dataset_pb2.DatasetDescription())},
        'dataset_description.label_offset'),
}


def _assert_one_line_error(result, *words):
  assert result.returncode == 1, result.stderr
  assert 'Traceback' not in result.stderr, result.stderr
  last = result.stderr.strip().splitlines()[-1]
  for word in words:
    assert word in last, last


def test_bad_configs_are_named_in_one_line_each(tmp_path):
  paths = {}
  for name, (overrides, _) in _BAD_CONFIGS.items():
    path = tmp_path / f'{name}.textproto'
    path.write_text(text_format.MessageToString(
        tiny_experiment.options(overrides)))
    paths[name] = path
  before = helpers.snapshot(tmp_path)
  result = helpers.run_tool(['tools/validate_config.py'] + [
      f'--config_file={path}' for path in paths.values()])
  assert result.returncode == 1, result.stderr
  assert 'Traceback' not in result.stderr, result.stderr
  invalid = [line for line in result.stderr.splitlines()
             if line.startswith('INVALID ')]
  assert len(invalid) == len(_BAD_CONFIGS), result.stderr
  for line, (name, (_, field)) in zip(invalid, _BAD_CONFIGS.items()):
    assert str(paths[name]) in line and field in line, line
  assert helpers.snapshot(tmp_path) == before


def test_a_directory_or_binary_config_is_one_line(tmp_path):
  binary = tmp_path / 'weights.h5'
  binary.write_bytes(b'\x89HDF\r\n\x1a\n\xff\xfe\x00')
  for config, words in ((tmp_path, ('is a directory',)),
                        (binary, ('not UTF-8',))):
    result = helpers.run_tool(['tools/validate_config.py',
                               f'--config_file={config}'])
    assert 'Traceback' not in result.stderr, result.stderr
    assert result.returncode == 1
    assert all(word in result.stderr for word in words), result.stderr


@pytest.mark.slow
def test_output_paths_that_cannot_be_written_are_one_line(tmp_path):
  # An output directory below a regular file, and a directory given as the
  # images of predict: each tool names the path and writes nothing.
  blocker = tmp_path / 'a_file'
  blocker.write_text('mine')
  before = helpers.snapshot(tmp_path)
  result = helpers.run_tool(['tools/build_synthetic_data.py',
                             f'--output_dir={blocker}/data', '--num_train=1',
                             '--num_val=1'])
  _assert_one_line_error(result, str(blocker))
  images = tmp_path / 'images'
  images.mkdir()
  result = helpers.run_tool(['tools/predict.py',
                             f'--saved_model={tmp_path}/none',
                             f'--images={images}',
                             f'--output_dir={tmp_path}/out'])
  _assert_one_line_error(result, str(images))
  assert not os.path.exists(tmp_path / 'out')
  assert blocker.read_text() == 'mine'
  assert set(helpers.snapshot(tmp_path)) - set(before) == {'images'}
