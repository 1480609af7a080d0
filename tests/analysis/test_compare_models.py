"""Tests of deeplab_sp/analysis/compare_models.py and tools/compare_models.py."""

import json
import pathlib
import subprocess
import sys

from google.protobuf import text_format
import pytest

import tiny_experiment
from deeplab_sp import experiment as experiment_lib
from deeplab_sp.analysis import compare_models
from deeplab_sp.analysis import model_stats
from deeplab_sp.protos import config_pb2

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
_METAS = ('SP_TRANSFORMER', 'HYPERCOLUMN_PIXEL_CLASSIFIER', 'DEEPLABV3PLUS')


@pytest.fixture(scope='module')
def configs(tmp_path_factory):
  """{meta: tiny config file}: FAST widths, 64x64, records in the tmp dir."""
  root = tmp_path_factory.mktemp('configs')
  records = root / 'records'
  records.mkdir()
  for split in ('train', 'val'):
    (records / f'{split}-00000-of-00001.tfrecord').write_bytes(b'')
  paths = {}
  for meta in _METAS:
    overrides = {
        'train_dataset_options.crop_size': [64, 64],
        'eval_dataset_options.crop_size': [64, 64],
        'train_dataset_options.file_pattern': [str(records / 'train-*')],
        'eval_dataset_options.file_pattern': [str(records / 'val-*')],
    }
    if meta == 'SP_TRANSFORMER':
      overrides.update({
          'model_options.superpixel_tokenization.grid_height': 4,
          'model_options.superpixel_tokenization.grid_width': 4})
    path = root / f'{meta.lower()}.textproto'
    path.write_text(text_format.MessageToString(
        tiny_experiment.options(overrides, fast=True, meta_architecture=meta)))
    paths[meta] = str(path)
  return paths


def _pairs(configs):
  paths = [configs[meta] for meta in _METAS]
  return compare_models.model_pairs(paths, paths)


def test_the_shipped_pairs_are_the_three_networks():
  pairs = compare_models.model_pairs(
      [str(REPO_ROOT / p) for p in compare_models.DEFAULT_ACCURACY_CONFIGS],
      [str(REPO_ROOT / p) for p in compare_models.DEFAULT_COST_CONFIGS])
  assert [p.meta_architecture for p in pairs] == list(_METAS)
  assert [p.name for p in pairs] == ['SP-Transformer',
                                     'hypercolumn + pixel MLP', 'DeepLabV3+']
  for pair in pairs:
    cost = experiment_lib.load_experiment(pair.cost_config, mode=None)
    assert cost.input_size == (1024, 2048)
    assert cost.options.model_options.encoder.name == 'resnet50'


def test_pairs_must_be_one_network_each(configs):
  sp, deeplab = configs['SP_TRANSFORMER'], configs['DEEPLABV3PLUS']
  with pytest.raises(ValueError, match='must be one network'):
    compare_models.model_pairs([sp], [deeplab])
  with pytest.raises(ValueError, match='the same number'):
    compare_models.model_pairs([sp, deeplab], [sp])
  with pytest.raises(ValueError, match='SP_TRANSFORMER appears more than'):
    compare_models.model_pairs([sp, sp], [sp, sp])


def test_seed_experiment_names_and_seeds_the_run(configs):
  experiment = compare_models.seed_experiment(configs['DEEPLABV3PLUS'], 7,
                                              training_steps=30)
  assert experiment.name == 'synthetic_deeplabv3plus_tiny_seed7'
  assert experiment.options.trainer_options.random_seed == 7
  assert experiment.options.trainer_options.training_number_of_steps == 30
  assert experiment.mode == 'train_and_eval'
  with pytest.raises(ValueError, match='Seeds must be positive'):
    compare_models.seed_experiment(configs['DEEPLABV3PLUS'], 0)


def test_spread_is_the_mean_and_sample_std():
  result = compare_models.spread([0.5, 0.7, 0.6])
  assert result['mean'] == pytest.approx(0.6)
  assert result['std'] == pytest.approx(0.1)
  assert result['values'] == [0.5, 0.7, 0.6]
  assert compare_models.spread([0.4])['std'] is None


def test_run_accuracy_trains_each_seed_once_and_reuses_finished_runs(
    configs, tmp_path):
  pairs = _pairs(configs)
  trained = []

  def fake_train(config_path, model_dir):
    # Stands in for deeplab_sp/trainer/train.py: reads the seed's config and
    # writes the evaluation of its last step.
    options = text_format.Parse(pathlib.Path(config_path).read_text(),
                                config_pb2.ExperimentOptions())
    trained.append(options.experiment_name)
    directory = pathlib.Path(model_dir) / options.experiment_name
    directory.mkdir(parents=True)
    seed = options.trainer_options.random_seed
    meta = options.model_options.meta_architecture
    (directory / 'eval_results.json').write_text(json.dumps({
        'step': options.trainer_options.training_number_of_steps,
        'miou': 0.1 * meta + 0.01 * seed}))

  accuracy = compare_models.run_accuracy(pairs, [1, 3], str(tmp_path),
                                         fake_train, training_steps=40,
                                         log=lambda _: None)
  assert len(trained) == 6 and len(set(trained)) == 6
  assert accuracy['seeds'] == [1, 3]
  deeplab = accuracy['models']['DEEPLABV3PLUS']
  assert deeplab['values'] == pytest.approx([0.21, 0.23])
  assert deeplab['mean'] == pytest.approx(0.22)
  assert deeplab['training_steps'] == 40
  written = (tmp_path / 'configs' /
             'synthetic_sp_transformer_tiny_seed3.textproto').read_text()
  assert 'random_seed: 3' in written
  # A second call trains nothing: every run has its last evaluation.
  again = compare_models.run_accuracy(pairs, [1, 3], str(tmp_path),
                                      fake_train, training_steps=40,
                                      log=lambda _: None)
  assert len(trained) == 6 and again == accuracy


def test_run_accuracy_needs_the_records_before_training(configs, tmp_path):
  options = text_format.Parse(
      pathlib.Path(configs['SP_TRANSFORMER']).read_text(),
      config_pb2.ExperimentOptions())
  options.train_dataset_options.file_pattern[:] = [str(tmp_path / 'none-*')]
  path = tmp_path / 'no_records.textproto'
  path.write_text(text_format.MessageToString(options))
  pair = compare_models.ModelPair('SP_TRANSFORMER', str(path), str(path))
  with pytest.raises(FileNotFoundError, match='build_synthetic_data'):
    compare_models.run_accuracy([pair], [1], str(tmp_path),
                                lambda *args: pytest.fail('trained'))


@pytest.mark.slow
def test_measure_costs_times_every_model_round_robin(configs):
  pairs = _pairs(configs)
  lines = []
  costs = compare_models.measure_costs(pairs, num_warmup=1, num_runs=2,
                                       progress=lines.append)
  json.dumps(costs)
  assert list(costs['models']) == list(_METAS)
  for pair in pairs:
    entry = costs['models'][pair.meta_architecture]
    stats = model_stats.model_stats(pair.cost_config)
    assert entry['params'] == stats['total_params']
    assert entry['multiply_adds'] == stats['multiply_adds']
    assert entry['input_size'] == [64, 64]
    assert entry['encoder_ms'] > 0 and entry['total_ms'] > 0
    assert entry['total_over_encoder'] > 0
  assert costs['settings']['num_runs'] == 2
  assert any('round-robin' in line for line in lines)


def test_table_has_one_row_per_model():
  pairs = [compare_models.ModelPair(meta, 'a', 'b') for meta in _METAS[:2]]
  accuracy = {'seeds': [1, 2], 'models': {'SP_TRANSFORMER': {
      'mean': 0.75, 'std': 0.01, 'values': [0.74, 0.76],
      'training_steps': 1500}}}
  costs = {'settings': {'num_runs': 5, 'num_warmup': 1,
                        'execution_mode': 'tf_function', 'device': 'CPU'},
           'models': {name: {'input_size': [1024, 2048], 'params': 31e6,
                             'multiply_adds': 195.4e9, 'encoder_ms': 1700.0,
                             'total_ms': 2200.0, 'total_over_encoder': 1.3}
                      for name in _METAS[:2]}}
  table = compare_models.format_table(pairs, accuracy, costs)
  lines = table.splitlines()
  assert lines[2] == ('| SP-Transformer | 0.750 ± 0.010 (0.740, 0.760) | '
                      '31.00M | 195.4G | 1700 | 2200 | 1.30x |')
  assert lines[3].startswith('| hypercolumn + pixel MLP | not trained |')
  assert 'seeds [1, 2]' in table and '1500 training steps' in table
  assert '1024x2048' in table
  assert 'not measured' in compare_models.format_table(pairs, accuracy, None)


def test_tool_prints_the_table_of_the_work_dir(tmp_path):
  accuracy = {'seeds': [1], 'models': {'DEEPLABV3PLUS': {
      'mean': 0.5, 'std': None, 'values': [0.5], 'training_steps': 10}}}
  (tmp_path / 'accuracy.json').write_text(json.dumps(accuracy))
  result = subprocess.run(
      [sys.executable, 'tools/compare_models.py', '--stages=',
       f'--work_dir={tmp_path}'],
      capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
      check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  assert '| DeepLabV3+ | 0.500 (0.500) | not measured |' in result.stdout
  assert (tmp_path / 'comparison.md').read_text().strip() in result.stdout
  bad = subprocess.run(
      [sys.executable, 'tools/compare_models.py', '--stages=train',
       f'--work_dir={tmp_path}'],
      capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
      check=False)
  assert bad.returncode == 1
  assert "compare_models: Unknown --stages ['train']" in bad.stderr


def test_mean_class_accuracy_is_a_column_when_the_results_have_it():
  pairs = [compare_models.ModelPair(meta, 'a', 'b') for meta in _METAS]
  accuracy = compare_models.summarize_accuracy(
      pairs, [1, 2],
      mious={'SP_TRANSFORMER': [0.74, 0.76], 'DEEPLABV3PLUS': [0.5, 0.6]},
      steps={'SP_TRANSFORMER': 1500, 'DEEPLABV3PLUS': 1500},
      # DeepLabV3+'s second run predates the class accuracy.
      class_accuracies={'SP_TRANSFORMER': [0.8, 0.9],
                        'DEEPLABV3PLUS': [0.7, None]})
  sp = accuracy['models']['SP_TRANSFORMER']['mean_class_accuracy']
  assert sp['mean'] == pytest.approx(0.85) and sp['values'] == [0.8, 0.9]
  assert 'mean_class_accuracy' not in accuracy['models']['DEEPLABV3PLUS']
  lines = compare_models.format_table(pairs, accuracy, None).splitlines()
  assert lines[0] == (
      '| model | val mIoU, generated data | val mean class acc. | params | '
      'multiply-adds | encoder ms | total ms | total / encoder |')
  assert lines[1] == '|---|---|---|---|---|---|---|---|'
  assert lines[2] == (
      '| SP-Transformer | 0.750 ± 0.014 (0.740, 0.760) | 0.850 ± 0.071 '
      '(0.800, 0.900) | not measured | not measured | not measured | '
      'not measured | not measured |')
  assert lines[3].startswith('| hypercolumn + pixel MLP | not trained | '
                             'not trained | not measured |')
  assert lines[4].startswith('| DeepLabV3+ | 0.550 ± 0.071 (0.500, 0.600) | '
                             'not measured | not measured |')
  assert 'mIoU and mean class accuracy: mean ± sample std over seeds [1, 2]' \
      in '\n'.join(lines)


def test_run_accuracy_reads_the_mean_class_accuracy(configs, tmp_path):
  pair = _pairs(configs)[0]

  def fake_train(config_path, model_dir):
    options = text_format.Parse(pathlib.Path(config_path).read_text(),
                                config_pb2.ExperimentOptions())
    directory = pathlib.Path(model_dir) / options.experiment_name
    directory.mkdir(parents=True)
    seed = options.trainer_options.random_seed
    (directory / 'eval_results.json').write_text(json.dumps({
        'step': options.trainer_options.training_number_of_steps,
        'miou': 0.5, 'mean_class_accuracy': 0.6 + 0.1 * seed}))

  accuracy = compare_models.run_accuracy([pair], [1, 2], str(tmp_path),
                                         fake_train, training_steps=10,
                                         log=lambda _: None)
  entry = accuracy['models']['SP_TRANSFORMER']['mean_class_accuracy']
  assert entry['values'] == pytest.approx([0.7, 0.8])
  assert entry['mean'] == pytest.approx(0.75)
