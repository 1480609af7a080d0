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
from deeplab_sp.protos import model_pb2

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
  assert experiment.name == 'synthetic_deeplabv3plus_tiny_base_seed7'
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
    directory.mkdir(parents=True, exist_ok=True)
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
  assert [(row['model'], row['variant']) for row in accuracy['rows']] == [
      (meta, 'base') for meta in _METAS]
  deeplab = accuracy['rows'][2]
  assert deeplab['values'] == pytest.approx([0.21, 0.23])
  assert deeplab['mean'] == pytest.approx(0.22)
  assert deeplab['training_steps'] == 40
  assert all(seconds >= 0 for seconds in deeplab['training_seconds'])
  written = (tmp_path / 'configs' /
             'synthetic_sp_transformer_tiny_base_seed3.textproto').read_text()
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


def _costs(metas):
  return {'settings': {'num_runs': 5, 'num_warmup': 1,
                       'execution_mode': 'tf_function', 'device': 'CPU'},
          'models': {name: {'input_size': [1024, 2048], 'params': 31e6,
                            'multiply_adds': 195.4e9, 'encoder_ms': 1700.0,
                            'total_ms': 2200.0, 'total_over_encoder': 1.3}
                     for name in metas}}


def _row(model, variant='base', results=(), seconds=(60.0, 62.0)):
  return {'model': model, 'config': 'a', 'experiment_name': 'e',
          'variant': variant, 'override': '', 'training_steps': 1500,
          'results': list(results), 'training_seconds': list(seconds)}


def test_table_has_one_row_per_model():
  pairs = [compare_models.ModelPair(meta, 'a', 'b') for meta in _METAS[:2]]
  accuracy = compare_models.summarize_runs(
      [_row('SP_TRANSFORMER', results=[{'miou': 0.74}, {'miou': 0.76}])],
      [1, 2])
  table = compare_models.format_table(pairs, accuracy, _costs(_METAS[:2]))
  lines = table.splitlines()
  assert lines[0] == ('| model | variant | val mIoU | train s / run | params '
                      '| multiply-adds | encoder ms | total ms | '
                      'total / encoder |')
  assert lines[2] == ('| SP-Transformer | base | 0.750 ± 0.014 (0.740, '
                      '0.760) | 60, 62 | 31.00M | 195.4G | 1700 | 2200 | '
                      '1.30x |')
  assert lines[3] == ('| hypercolumn + pixel MLP | base | not trained | '
                      'not trained | 31.00M | 195.4G | 1700 | 2200 | 1.30x |')
  assert 'seeds [1, 2]' in table and '1500 training steps' in table
  assert '1024x2048' in table
  # Without costs the cost columns are left out.
  assert compare_models.format_table(pairs, accuracy, None).splitlines()[
      0] == '| model | variant | val mIoU | train s / run |'


def test_tool_prints_the_table_of_the_work_dir(tmp_path):
  # accuracy.json as an older version wrote it: keyed by network.
  accuracy = {'seeds': [1], 'models': {'DEEPLABV3PLUS': {
      'mean': 0.5, 'std': None, 'values': [0.5], 'training_steps': 10}}}
  (tmp_path / 'accuracy.json').write_text(json.dumps(accuracy))
  result = subprocess.run(
      [sys.executable, 'tools/compare_models.py', '--stages=',
       f'--work_dir={tmp_path}'],
      capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
      check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  assert '| DeepLabV3+ | base | 0.500 (0.500) | unknown |' in result.stdout
  assert (tmp_path / 'comparison.md').read_text().strip() in result.stdout
  bad = subprocess.run(
      [sys.executable, 'tools/compare_models.py', '--stages=train',
       f'--work_dir={tmp_path}'],
      capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
      check=False)
  assert bad.returncode == 1
  assert "compare_models: Unknown --stages ['train']" in bad.stderr
  # An accuracy-only study pairs no cost configs (two CamVid configs and
  # three default cost configs); the bad variant stops it before training.
  bad = subprocess.run(
      [sys.executable, 'tools/compare_models.py', '--stages=accuracy',
       '--accuracy_configs=configs/camvid/sp_transformer_tiny.textproto,'
       'configs/camvid/hypercolumn_pixel_classifier_tiny.textproto',
       '--variants=per_superpixel', f'--work_dir={tmp_path}'],
      capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
      check=False)
  assert bad.returncode == 1
  assert "compare_models: --variants 'per_superpixel': write NAME:FRAGMENT" \
      in bad.stderr


def test_mean_class_accuracy_is_a_column_when_the_results_have_it():
  pairs = [compare_models.ModelPair(meta, 'a', 'b') for meta in _METAS]
  accuracy = compare_models.summarize_runs([
      _row('SP_TRANSFORMER', results=[
          {'miou': 0.74, 'mean_class_accuracy': 0.8},
          {'miou': 0.76, 'mean_class_accuracy': 0.9}]),
      # DeepLabV3+'s second run predates the class accuracy.
      _row('DEEPLABV3PLUS', results=[
          {'miou': 0.5, 'mean_class_accuracy': 0.7}, {'miou': 0.6}])],
                                           [1, 2])
  sp, deeplab = accuracy['rows']
  assert sp['mean_class_accuracy']['mean'] == pytest.approx(0.85)
  assert sp['mean_class_accuracy']['values'] == [0.8, 0.9]
  assert 'mean_class_accuracy' not in deeplab
  lines = compare_models.format_table(pairs, accuracy, None).splitlines()
  assert lines[0] == ('| model | variant | val mIoU | val mean class acc. | '
                      'train s / run |')
  assert lines[1] == '|---|---|---|---|---|'
  assert lines[2] == ('| SP-Transformer | base | 0.750 ± 0.014 (0.740, '
                      '0.760) | 0.850 ± 0.071 (0.800, 0.900) | 60, 62 |')
  assert lines[3] == ('| hypercolumn + pixel MLP | base | not trained | '
                      'not trained | not trained |')
  assert lines[4] == ('| DeepLabV3+ | base | 0.550 ± 0.071 (0.500, 0.600) | '
                      'n/a | 60, 62 |')
  assert 'mIoU and mean class accuracy: mean ± sample std over seeds [1, 2]' \
      in '\n'.join(lines)


def test_run_accuracy_reads_the_mean_class_accuracy(configs, tmp_path):
  pair = _pairs(configs)[0]

  def fake_train(config_path, model_dir):
    options = text_format.Parse(pathlib.Path(config_path).read_text(),
                                config_pb2.ExperimentOptions())
    directory = pathlib.Path(model_dir) / options.experiment_name
    directory.mkdir(parents=True, exist_ok=True)
    seed = options.trainer_options.random_seed
    (directory / 'eval_results.json').write_text(json.dumps({
        'step': options.trainer_options.training_number_of_steps,
        'miou': 0.5, 'mean_class_accuracy': 0.6 + 0.1 * seed}))

  accuracy = compare_models.run_accuracy([pair], [1, 2], str(tmp_path),
                                         fake_train, training_steps=10,
                                         log=lambda _: None)
  entry = accuracy['rows'][0]['mean_class_accuracy']
  assert entry['values'] == pytest.approx([0.7, 0.8])
  assert entry['mean'] == pytest.approx(0.75)


_PER_SUPERPIXEL = ('per_superpixel:model_options { superpixel_association { '
                   'upsampling: PER_SUPERPIXEL } }')


def test_parse_variants_puts_base_first_and_names_the_errors():
  variants = compare_models.parse_variants(
      [_PER_SUPERPIXEL, 'lr.low: trainer_options { base_learning_rate: 1e-4 }'])
  assert [v.name for v in variants] == ['base', 'per_superpixel', 'lr.low']
  assert variants[0].override == ''
  assert variants[2].override == (
      'trainer_options { base_learning_rate: 1e-4 }')
  for text, message in (
      ('per_superpixel', 'write NAME:FRAGMENT'),
      (':trainer_options { random_seed: 3 }', 'write NAME:FRAGMENT'),
      ('empty:', 'write NAME:FRAGMENT'),
      ('a b:trainer_options { random_seed: 3 }', "'a b': use letters"),
      ('base:trainer_options { random_seed: 3 }', "reserved 'base'"),
      ('x:model_options { no_such_field: 1 }', '--variants x: .*no_such_field'),
  ):
    with pytest.raises(ValueError, match=message):
      compare_models.parse_variants([text])
  with pytest.raises(ValueError, match="'x' is given twice"):
    compare_models.parse_variants(['x:trainer_options { random_seed: 3 }'] * 2)


def test_a_variant_runs_only_on_the_networks_that_read_it(configs):
  base, per_superpixel = compare_models.parse_variants([_PER_SUPERPIXEL])
  sp, deeplab = configs['SP_TRANSFORMER'], configs['DEEPLABV3PLUS']
  assert compare_models.variant_applies(deeplab, base)
  assert compare_models.variant_applies(sp, per_superpixel)
  assert not compare_models.variant_applies(deeplab, per_superpixel)
  experiment = compare_models.seed_experiment(sp, 2, 30, per_superpixel)
  assert experiment.name == (
      'synthetic_sp_transformer_tiny_per_superpixel_seed2')
  association = experiment.options.model_options.superpixel_association
  assert association.upsampling == model_pb2.PER_SUPERPIXEL
  # The config's other association fields are kept.
  base_options = compare_models.seed_experiment(sp, 2).options
  assert (association.implementation ==
          base_options.model_options.superpixel_association.implementation)
  with pytest.raises(ValueError, match='does not read'):
    compare_models.seed_experiment(deeplab, 2, 30, per_superpixel)
  # Any other mistake the fragment makes is the user's to fix.
  zero_grid = compare_models.Variant(
      'zero', 'model_options { superpixel_tokenization { grid_height: 0 } }')
  assert compare_models.variant_applies(sp, zero_grid)
  with pytest.raises(experiment_lib.ConfigError, match='grid_height'):
    compare_models.seed_experiment(sp, 2, 30, zero_grid)
  pair = compare_models.ModelPair('DEEPLABV3PLUS', deeplab)
  with pytest.raises(ValueError, match='per_superpixel applies to none'):
    compare_models.run_accuracy([pair], [1], '/nonexistent', None,
                                variants=[base, per_superpixel])


def test_accuracy_only_pairs_allow_a_network_twice_but_not_a_name():
  sp_configs = [str(REPO_ROOT / 'configs' / dataset /
                    'sp_transformer_tiny.textproto')
                for dataset in ('synthetic', 'camvid')]
  pairs = compare_models.model_pairs(sp_configs, None)
  assert [(p.meta_architecture, p.cost_config) for p in pairs] == [
      ('SP_TRANSFORMER', None)] * 2
  with pytest.raises(ValueError, match='appears more than once'):
    compare_models.model_pairs(sp_configs, sp_configs)
  with pytest.raises(ValueError, match="one experiment_name 'synthetic_sp"):
    compare_models.model_pairs(sp_configs[:1] * 2, None)


def _fake_study_train(trained):
  """A train_fn writing eval_results.json from the run's name and seed."""

  def train(config_path, model_dir):
    options = text_format.Parse(pathlib.Path(config_path).read_text(),
                                config_pb2.ExperimentOptions())
    name = options.experiment_name
    trained.append(name)
    seed = options.trainer_options.random_seed
    bonus = 0.05 if '_per_superpixel_' in name else 0.0
    results = {
        'step': options.trainer_options.training_number_of_steps,
        'miou': 0.5 + bonus + 0.1 * seed,
        'mean_class_accuracy': 0.6 + 0.1 * seed,
        'per_class_iou': {'ground': 0.9, 'pole': 0.1 * seed,
                          'wire': None if seed == 2 else 0.05},
    }
    if options.model_options.meta_architecture == 0:  # SP_TRANSFORMER
      results['superpixels'] = {'asa': 0.9 + bonus,
                                'undersegmentation_error': 0.1 * seed,
                                'connected_fraction': 1.0,
                                'boundary_recall': 0.5}
    directory = pathlib.Path(model_dir) / name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / 'eval_results.json').write_text(json.dumps(results))

  return train


def test_study_table_has_a_row_per_model_and_variant(configs, tmp_path):
  pairs = [compare_models.ModelPair(meta, configs[meta])
           for meta in ('SP_TRANSFORMER', 'DEEPLABV3PLUS')]
  variants = compare_models.parse_variants([_PER_SUPERPIXEL])
  trained, lines = [], []
  accuracy = compare_models.run_accuracy(
      pairs, [1, 2], str(tmp_path), _fake_study_train(trained),
      training_steps=10, log=lines.append, variants=variants,
      thin_classes=['pole', 'wire'])
  # The variant is skipped for DeepLabV3+: 3 rows of 2 seeds.
  assert sorted(trained) == sorted(
      f'synthetic_{name}_seed{seed}' for seed in (1, 2)
      for name in ('sp_transformer_tiny_base',
                   'sp_transformer_tiny_per_superpixel',
                   'deeplabv3plus_tiny_base'))
  assert any('variant per_superpixel does not apply' in line
             for line in lines)
  assert [(row['model'], row['variant']) for row in accuracy['rows']] == [
      ('SP_TRANSFORMER', 'base'), ('SP_TRANSFORMER', 'per_superpixel'),
      ('DEEPLABV3PLUS', 'base')]
  json.dumps(accuracy)
  sp = accuracy['rows'][1]
  assert sp['values'] == pytest.approx([0.65, 0.75])
  assert sp['std'] == pytest.approx(0.0707107)
  assert sp['thin_class_iou']['pole']['values'] == pytest.approx([0.1, 0.2])
  assert sp['thin_class_iou']['wire'] is None  # Absent from seed 2's split.
  assert sp['superpixels']['asa']['mean'] == pytest.approx(0.95)
  assert 'superpixels' not in accuracy['rows'][2]
  for row in accuracy['rows']:
    assert len(row['training_seconds']) == 2
    assert all(seconds >= 0 for seconds in row['training_seconds'])
    row['training_seconds'] = [61.4, 70.0]
  table = compare_models.format_table(pairs, accuracy, None).splitlines()
  assert table[0] == (
      '| model | variant | val mIoU | val mean class acc. | IoU pole | '
      'IoU wire | ASA | undersegm. error | connected | train s / run |')
  assert table[3] == (
      '| SP-Transformer | per_superpixel | 0.700 ± 0.071 (0.650, 0.750) | '
      '0.750 ± 0.071 (0.700, 0.800) | 0.150 ± 0.071 (0.100, 0.200) | n/a | '
      '0.950 ± 0.000 (0.950, 0.950) | 0.150 ± 0.071 (0.100, 0.200) | '
      '1.000 ± 0.000 (1.000, 1.000) | 61, 70 |')
  assert table[4] == (
      '| DeepLabV3+ | base | 0.650 ± 0.071 (0.600, 0.700) | 0.750 ± 0.071 '
      '(0.700, 0.800) | 0.150 ± 0.071 (0.100, 0.200) | n/a | n/a | n/a | '
      'n/a | 61, 70 |')
  assert ('Variant per_superpixel: `model_options { superpixel_association '
          '{ upsampling: PER_SUPERPIXEL } }`.') in table
  with pytest.raises(ValueError, match='--thin_classes fence: no evaluated'):
    compare_models.run_accuracy(pairs, [1], str(tmp_path), None,
                                thin_classes=['fence'])


def test_a_run_is_reused_only_with_an_identical_config(configs, tmp_path):
  pair = compare_models.ModelPair('SP_TRANSFORMER', configs['SP_TRANSFORMER'])
  trained = []
  train = _fake_study_train(trained)
  variants = compare_models.parse_variants([_PER_SUPERPIXEL])
  first = compare_models.run_accuracy([pair], [1], str(tmp_path), train,
                                      training_steps=10, log=lambda _: None,
                                      variants=variants)
  assert len(trained) == 2
  run_dir = (tmp_path / 'experiments' /
             'synthetic_sp_transformer_tiny_per_superpixel_seed1')
  stored = (run_dir / compare_models.RUN_CONFIG_FILENAME).read_text()
  assert 'upsampling: PER_SUPERPIXEL' in stored
  again = compare_models.run_accuracy([pair], [1], str(tmp_path), train,
                                      training_steps=10, log=lambda _: None,
                                      variants=variants)
  assert len(trained) == 2
  assert again['rows'][1]['training_seconds'] == (
      first['rows'][1]['training_seconds'])
  # The same variant name with another fragment, or other steps: refused
  # before any training, not read as the old results nor resumed.
  changed = compare_models.parse_variants([
      'per_superpixel:model_options { superpixel_association { '
      'upsample_logits_before_softmax: false } }'])
  for kwargs in ({'variants': changed}, {'variants': variants,
                                         'training_steps': 20}):
    kwargs.setdefault('training_steps', 10)
    with pytest.raises(RuntimeError, match='holds a run of another config '
                       r'\(its compare_models_config.textproto differs\)'):
      compare_models.run_accuracy([pair], [1], str(tmp_path), train,
                                  log=lambda _: None, **kwargs)
  assert len(trained) == 2
  # A run of an unknown config (an older version's) is refused too.
  (run_dir / compare_models.RUN_CONFIG_FILENAME).unlink()
  with pytest.raises(RuntimeError, match='is missing'):
    compare_models.check_reusable(str(run_dir), stored)
  compare_models.check_reusable(str(tmp_path / 'no_such_run'), stored)
