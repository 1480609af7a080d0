"""Tests of the input pipeline benchmark and its tool."""

import json
import subprocess
import sys

from conftest import REPO_ROOT
from deeplab_sp.analysis import pipeline_benchmark
from deeplab_sp.data import synthetic
import tiny_experiment

TOOL = str(REPO_ROOT / 'tools' / 'benchmark_input_pipeline.py')


def _config(tmp_path):
  synthetic.write_dataset(str(tmp_path / 'data'), 8, 5, 32, 32,
                          num_shards=1)
  overrides = {}
  for field, split in (('train_dataset_options', 'train'),
                       ('eval_dataset_options', 'val')):
    overrides[f'{field}.file_pattern'] = [str(tmp_path / 'data' / f'{split}-*')]
    overrides[f'{field}.batch_size'] = 2
    overrides[f'{field}.crop_size'] = [32, 32]
  options = tiny_experiment.options(overrides)
  path = tmp_path / 'config.textproto'
  path.write_text(str(options))
  return options, path


def test_measure_throughput_counts_batches(tmp_path):
  options, _ = _config(tmp_path)
  train = pipeline_benchmark.measure_throughput(
      options.train_dataset_options, True, num_batches=7)
  assert (train.batches, train.batch_size) == (7, 2)
  assert train.images_per_second > 0
  assert abs(train.images_per_second * train.seconds - 14) < 1e-6
  # 5 eval images in batches of 2: 3 batches, then the split ends.
  evaluation = pipeline_benchmark.measure_throughput(
      options.eval_dataset_options, False, num_batches=10)
  assert evaluation.batches == 3 and not evaluation.is_training


def test_tool_prints_json(tmp_path):
  _, path = _config(tmp_path)
  result = subprocess.run(
      [sys.executable, TOOL, f'--config_file={path}', '--num_batches=3',
       '--format=json'], capture_output=True, text=True, timeout=120,
      cwd=str(REPO_ROOT))
  assert result.returncode == 0, result.stderr[-2000:]
  measured = json.loads(result.stdout.strip().splitlines()[-1])
  assert measured['batches'] == 3 and measured['batch_size'] == 2
  assert measured['images_per_second'] > 0
