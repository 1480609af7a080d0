"""Tests of deeplab_sp/config.py and tools/validate_config.py."""

import pathlib
import subprocess
import sys

import pytest

from deeplab_sp import config
from deeplab_sp.protos import config_pb2

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIG_FILES = sorted((REPO_ROOT / 'configs').rglob('*.textproto'))
DEFAULT_CONFIG = REPO_ROOT / 'configs/synthetic/sp_transformer_tiny.textproto'


def _load_text(path=DEFAULT_CONFIG):
  return pathlib.Path(path).read_text()


def _write(tmp_path, text, name='bad.textproto'):
  path = tmp_path / name
  path.write_text(text)
  return str(path)


def test_configs_directory_has_the_paper_experiments():
  names = {str(p.relative_to(REPO_ROOT / 'configs')) for p in CONFIG_FILES}
  assert {
      'cityscapes/sp_transformer_r50.textproto',
      'cityscapes/sp_transformer_convnext_l.textproto',
      'ade20k/sp_transformer_r50.textproto',
      'cityscapes/ablation/ca1_sp32x64.textproto',
      'cityscapes/ablation/ca2_sp16x32.textproto',
      'cityscapes/ablation/ca2_sp32x64.textproto',
      'cityscapes/ablation/ca2_sp64x128.textproto',
      'synthetic/sp_transformer_tiny.textproto',
  } <= names


@pytest.mark.parametrize('path', CONFIG_FILES, ids=lambda p: p.name)
def test_every_config_loads_and_validates(path):
  options = config.load_experiment_options(str(path))
  assert options.experiment_name
  assert len(options.train_dataset_options.crop_size) == 2


def test_paper_geometries():
  cityscapes = config.load_experiment_options(
      str(REPO_ROOT / 'configs/cityscapes/sp_transformer_r50.textproto'))
  geometry = config.model_geometry(
      cityscapes.model_options,
      config.crop_size(cityscapes.train_dataset_options))
  assert (geometry.hypercolumn_height, geometry.hypercolumn_width) == (128, 256)
  assert (geometry.grid_height, geometry.grid_width) == (32, 64)
  assert (geometry.superpixel_height, geometry.superpixel_width) == (4, 4)
  assert geometry.output_stride == 8
  assert cityscapes.train_dataset_options.batch_size == 32
  assert cityscapes.trainer_options.training_number_of_steps == 60000

  ade20k = config.load_experiment_options(
      str(REPO_ROOT / 'configs/ade20k/sp_transformer_r50.textproto'))
  geometry = config.model_geometry(
      ade20k.model_options, config.crop_size(ade20k.train_dataset_options))
  assert (geometry.hypercolumn_height, geometry.hypercolumn_width) == (160, 160)
  assert (geometry.grid_height, geometry.grid_width) == (40, 40)
  assert (geometry.superpixel_height, geometry.superpixel_width) == (4, 4)
  assert ade20k.train_dataset_options.batch_size == 64
  assert ade20k.trainer_options.training_number_of_steps == 100000


def test_model_geometry_rejects_indivisible_size():
  options = config_pb2.ExperimentOptions()
  with pytest.raises(config.ConfigError, match=r'256x512'):
    # Defaults: stride 8, grid 32x64 -> cells of 256x512 input pixels.
    config.model_geometry(options.model_options, (1000, 2048))


def test_syntax_error_names_file_and_line(tmp_path):
  text = _load_text().replace('experiment_name: "synthetic_sp_transformer_tiny"',
                              'experiment_name "oops"\nmodel_options {{')
  path = _write(tmp_path, text)
  with pytest.raises(config.ConfigError) as error:
    config.load_experiment_options(path)
  message = str(error.value)
  assert path in message
  assert 'syntax' in message


def test_unknown_field_names_field_and_line(tmp_path):
  text = _load_text().replace('num_heads: 2', 'num_headz: 2')
  line = next(i for i, l in enumerate(text.splitlines(), 1) if 'num_headz' in l)
  path = _write(tmp_path, text)
  with pytest.raises(config.ConfigError) as error:
    config.load_experiment_options(path)
  message = str(error.value)
  assert f'{path}:{line}:' in message
  assert 'num_headz' in message
  assert 'protos/' in message


@pytest.mark.parametrize('old,new,expected', [
    ('dataset: "synthetic"', 'dataset: "kitti"', 'unknown train_dataset_options.dataset'),
    ('name: "tiny_convnet"', 'name: "resnet18"', 'unknown model_options.encoder.name'),
    ('batch_size: 16', 'batch_size: 0', 'batch_size must be positive'),
    ('num_layers: 2\n    channels: 64\n    num_heads: 2',
     'num_layers: -1\n    channels: 64\n    num_heads: 2',
     'superpixel_tokenization.num_layers must be positive'),
    ('grid_height: 8', 'grid_height: 0', 'grid_height must be positive'),
    ('training_number_of_steps: 1500', 'training_number_of_steps: 0',
     'training_number_of_steps must be positive'),
    ('crop_size: 128\n  crop_size: 128\n  augmentations',
     'crop_size: 120\n  crop_size: 128\n  augmentations',
     'crop_size: Input size 120x128 is not divisible'),
    ('grid_width: 8', 'grid_width: 6', 'is not divisible'),
    ('num_heads: 2', 'num_heads: 3', 'must divide'),
    ('file_pattern: "work_dirs/data/synthetic/train-*.tfrecord"', '',
     'train_dataset_options.file_pattern is empty'),
    ('repeat: false', 'repeat: true', 'add `repeat: false`'),
])
def test_bad_values_get_a_clear_message(tmp_path, old, new, expected):
  text = _load_text()
  assert old in text, old
  path = _write(tmp_path, text.replace(old, new, 1))
  with pytest.raises(config.ConfigError) as error:
    config.load_experiment_options(path)
  message = str(error.value)
  assert path in message
  assert expected in message


def test_eval_mode_does_not_need_training_files(tmp_path):
  text = _load_text().replace(
      'file_pattern: "work_dirs/data/synthetic/train-*.tfrecord"', '')
  path = _write(tmp_path, text)
  options = config.load_experiment_options(path, mode='eval')
  assert not options.train_dataset_options.file_pattern
  with pytest.raises(config.ConfigError, match='file_pattern is empty'):
    config.load_experiment_options(path, mode='train')
  # Tools that read no data (export, model_stats) pass mode=None.
  text = text.replace(
      'file_pattern: "work_dirs/data/synthetic/val-*.tfrecord"', '')
  path = _write(tmp_path, text, 'no_files.textproto')
  assert config.load_experiment_options(path, mode=None).experiment_name


def test_missing_file_is_a_clear_error(tmp_path):
  with pytest.raises(config.ConfigError, match='does not exist'):
    config.load_experiment_options(str(tmp_path / 'nope.textproto'))


def test_missing_pretrained_weights_is_a_clear_error(tmp_path):
  text = _load_text().replace(
      'name: "tiny_convnet"',
      f'name: "tiny_convnet"\n    pretrained_weights: "{tmp_path}/w.h5"')
  path = _write(tmp_path, text)
  with pytest.raises(config.ConfigError, match='pretrained_weights'):
    config.load_experiment_options(path)


def test_summary_reports_geometry():
  options = config.load_experiment_options(str(DEFAULT_CONFIG))
  text = config.summary(options)
  assert 'crop 128x128' in text
  assert 'hypercolumn 32x32' in text
  assert 'superpixel grid 8x8' in text
  assert '4x4 = 16 hypercolumn pixels per superpixel' in text


def _run_validate(*args):
  return subprocess.run(
      [sys.executable, str(REPO_ROOT / 'tools/validate_config.py'), *args],
      capture_output=True, text=True, cwd=REPO_ROOT, timeout=120, check=False)


def test_validate_config_tool_accepts_every_config():
  args = [f'--config_file={p}' for p in CONFIG_FILES]
  result = _run_validate(*args)
  assert result.returncode == 0, result.stderr
  assert result.stdout.count('OK ') == len(CONFIG_FILES)
  assert 'superpixel grid 32x64' in result.stdout


def test_validate_config_tool_rejects_bad_config(tmp_path):
  path = _write(tmp_path, _load_text().replace('grid_width: 8', 'grid_width: 6'))
  result = _run_validate(f'--config_file={path}')
  assert result.returncode == 1
  assert 'INVALID' in result.stderr
  assert 'grid_width' in result.stderr
