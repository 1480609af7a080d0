"""tools/superpixel_quality.py end to end on the tiny model and records."""

import json
import os
import pathlib
import subprocess
import sys

from google.protobuf import text_format
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tf_keras

import tiny_experiment
from deeplab_sp import experiment as experiment_lib
from deeplab_sp.analysis import superpixel_quality
from deeplab_sp.data import synthetic
from deeplab_sp.model import builder
from deeplab_sp.trainer import superpixel_metrics

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
TOOL = str(REPO_ROOT / 'tools' / 'superpixel_quality.py')
SIZE = 64
NUM_VAL = 5


@pytest.fixture(scope='module')
def experiment(tmp_path_factory):
  """(config path, checkpoint directory) of a tiny untrained model."""
  root = tmp_path_factory.mktemp('superpixel_quality')
  data_dir = root / 'data'
  synthetic.write_dataset(str(data_dir), num_train=2, num_val=NUM_VAL,
                          height=SIZE, width=SIZE, num_shards=1)
  options = tiny_experiment.options({
      'train_dataset_options.file_pattern': [str(data_dir / 'train-*')],
      'eval_dataset_options.file_pattern': [str(data_dir / 'val-*')],
      'train_dataset_options.crop_size': [SIZE, SIZE],
      'eval_dataset_options.crop_size': [SIZE, SIZE],
      'eval_dataset_options.batch_size': 2,
  }, fast=True)
  config = root / 'tiny.textproto'
  config.write_text(text_format.MessageToString(options))
  # A checkpoint as the trainer writes it (CheckpointManager, 'model').
  tf_keras.utils.set_random_seed(7)
  model = builder.build_model(options.model_options, 6, (SIZE, SIZE))
  checkpoint_dir = root / 'experiment'
  tf.train.CheckpointManager(tf.train.Checkpoint(model=model),
                             str(checkpoint_dir), max_to_keep=1).save(
                                 checkpoint_number=3)
  return str(config), str(checkpoint_dir)


def _run_tool(*flags):
  return subprocess.run([sys.executable, TOOL, *flags], capture_output=True,
                        text=True, cwd=REPO_ROOT, timeout=300,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))


def test_measures_every_method_and_writes_json_and_png(experiment, tmp_path):
  config, checkpoint_dir = experiment
  output_dir = tmp_path / 'out'
  progress = []
  report = superpixel_quality.run(config, checkpoint_dir,
                                  output_dir=str(output_dir), log_every=2,
                                  num_figure_images=2, log=progress.append)
  assert report == json.loads(
      (output_dir / 'superpixel_quality_val.json').read_text())
  assert report['methods'] == ['learned', 'grid', 'slic', 'init']
  assert report['num_images'] == NUM_VAL
  assert report['superpixel_grid'] == [8, 8]
  # Progress: one line per 2 images.
  assert [line for line in progress if 'images measured' in line] == [
      '2 images measured', '4 images measured', '5 images measured.']
  results = report['results']
  for method in report['methods']:
    assert results[method]['num_images'] == NUM_VAL
    for name in ('asa', 'boundary_recall', 'boundary_precision',
                 'undersegmentation_error', 'connected_fraction'):
      assert 0.0 <= results[method][name] <= 1.0, (method, name)
  # The grid: 64 square cells, all connected, hand-checkable.
  assert results['grid']['num_superpixels'] == 64
  assert results['grid']['connected_fraction'] == 1.0
  # SLIC is matched to at least the same number of superpixels.
  assert 64 <= results['slic']['num_superpixels'] <= 128
  # The control (seed INIT_SEED) is another model than the checkpoint's.
  assert results['init'] != results['learned']
  figure = np.asarray(Image.open(output_dir / 'superpixel_quality_val.png'))
  assert figure.ndim == 3 and figure.shape[0] > 100
  assert sorted(os.listdir(output_dir)) == [
      'superpixel_quality_val.json', 'superpixel_quality_val.png']


def test_learned_superpixels_are_the_models(experiment):
  # 'learned' measures the restored model's own superpixel_ids.
  config, checkpoint_dir = experiment
  loaded = experiment_lib.load_experiment(config, mode=None)
  options = loaded.options
  fns = superpixel_quality.build_superpixel_fns(
      options, loaded.num_classes, loaded.input_size, checkpoint_dir,
      with_init=False)
  tf_keras.utils.set_random_seed(7)
  model = builder.build_model(options.model_options, 6, (SIZE, SIZE))
  images = np.random.default_rng(0).uniform(0, 255, [2, SIZE, SIZE, 3])
  np.testing.assert_array_equal(
      fns['learned'](images.astype(np.float32)),
      model(images.astype(np.float32), training=False)['superpixel_ids'])


@pytest.mark.slow
def test_command_line_text_table_and_one_line_errors(experiment, tmp_path):
  config, checkpoint_dir = experiment
  result = _run_tool(f'--config_file={config}',
                     f'--checkpoint_path={checkpoint_dir}/ckpt-3',
                     '--baselines=grid', '--num_images=1', '--log_every=0')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Superpixel quality on 1 val images' in result.stdout
  header = [l for l in result.stdout.splitlines() if l.startswith('metric')]
  assert header and header[0].split() == ['metric', 'learned', 'grid']
  # By default the outputs go beside the checkpoint.
  assert os.path.exists(os.path.join(
      checkpoint_dir, 'superpixel_quality', 'superpixel_quality_val.png'))

  result = _run_tool(f'--config_file={config}',
                     f'--checkpoint_path={tmp_path / "nothing"}')
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].startswith(
      'superpixel_quality: Checkpoint ')
  assert 'Traceback' not in result.stderr


def test_errors_name_the_fix(experiment, tmp_path):
  config, checkpoint_dir = experiment
  with pytest.raises(FileNotFoundError, match='Checkpoint .* not found'):
    superpixel_quality.run(config, str(tmp_path / 'nothing'))
  with pytest.raises(ValueError, match='does not exist'):
    superpixel_quality.run(str(tmp_path / 'missing.textproto'),
                           checkpoint_dir)
  with pytest.raises(ValueError, match="Unknown --split='test'"):
    superpixel_quality.run(config, checkpoint_dir, split='test')
  with pytest.raises(ValueError, match="Unknown baseline 'watershed'"):
    superpixel_quality.run(config, checkpoint_dir,
                           baselines=['grid', 'watershed'])
  options = tiny_experiment.options(fast=True)
  del options.train_dataset_options.file_pattern[:]
  no_train = tmp_path / 'no_train.textproto'
  no_train.write_text(text_format.MessageToString(options))
  with pytest.raises(ValueError, match='train_dataset_options.file_pattern'):
    superpixel_quality.run(str(no_train), checkpoint_dir, split='train')


def test_slic_count_matching():
  image = synthetic.generate_split('val', 1, SIZE, SIZE, seed=0)[0][0]
  plain = superpixel_quality.slic_superpixels(image, 64, match_count=False)
  matched = superpixel_quality.slic_superpixels(image, 64)
  assert plain.min() == 0 and matched.shape == (SIZE, SIZE)
  # The connectivity step leaves fewer than asked on this textured image
  # (27); matching raises n_segments until the count is reached.
  assert len(np.unique(plain)) < 64 <= len(np.unique(matched)) <= 128


def test_grid_by_hand():
  np.testing.assert_array_equal(
      superpixel_quality.grid_superpixels(4, 6, 2, 3),
      [[0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 2, 2],
       [3, 3, 4, 4, 5, 5], [3, 3, 4, 4, 5, 5]])


def test_format_table():
  result = dict.fromkeys(superpixel_metrics.METRIC_NAMES, 0.5)
  result['num_superpixels'] = 64.0
  result['boundary_precision'] = None
  table = superpixel_quality.format_table(['learned', 'grid'],
                                          {'learned': result, 'grid': result})
  lines = table.splitlines()
  assert lines[0].split() == ['metric', 'learned', 'grid']
  assert len(lines) == 2 + len(superpixel_metrics.METRIC_NAMES)
  assert '64.0' in table and '0.5000' in table
  assert [l for l in lines if l.startswith('boundary precision')][0].split(
  )[-2:] == ['-', '-']


def test_a_model_without_superpixels_is_a_clear_error(tmp_path):
  config = tmp_path / 'deeplab.textproto'
  config.write_text(text_format.MessageToString(tiny_experiment.options(
      fast=True, meta_architecture='DEEPLABV3PLUS')))
  with pytest.raises(ValueError, match='DEEPLABV3PLUS, a per-pixel network '
                     'without superpixels'):
    superpixel_quality.run(str(config), str(tmp_path / 'no_checkpoint'))
