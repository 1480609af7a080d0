"""Tests of deeplab_sp/experiment.py and tools/validate_config.py."""

import pathlib
import subprocess
import sys

import dataclasses
import math

import pytest
from google.protobuf import text_format

from deeplab_sp import experiment
from deeplab_sp.data import dataset_info
from deeplab_sp.protos import config_pb2
from deeplab_sp.protos import dataset_pb2
from deeplab_sp.protos import model_pb2
import tiny_experiment

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
# Experiment configs, and the dataset descriptions they may name.
DESCRIPTION_SUFFIX = '.dataset.textproto'
CONFIG_FILES = sorted(p for p in (REPO_ROOT / 'configs').rglob('*.textproto')
                      if not p.name.endswith(DESCRIPTION_SUFFIX))
DESCRIPTION_FILES = sorted(
    (REPO_ROOT / 'configs').rglob(f'*{DESCRIPTION_SUFFIX}'))
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
      'ade20k/sp_transformer_convnext_l.textproto',
      'cityscapes/ablation/ca1_sp32x64.textproto',
      'cityscapes/ablation/ca2_sp16x32.textproto',
      'cityscapes/ablation/ca2_sp32x64.textproto',
      'cityscapes/ablation/ca2_sp64x128.textproto',
      'synthetic/sp_transformer_tiny.textproto',
      'synthetic/hypercolumn_pixel_classifier_tiny.textproto',
      'synthetic/deeplabv3plus_tiny.textproto',
      'cityscapes/hypercolumn_pixel_classifier_r50.textproto',
      'cityscapes/deeplabv3plus_r50.textproto',
      'camvid/sp_transformer_tiny.textproto',
      'camvid/hypercolumn_pixel_classifier_tiny.textproto',
      'camvid/deeplabv3plus_tiny.textproto',
  } <= names


@pytest.mark.parametrize('path', DESCRIPTION_FILES, ids=lambda p: p.name)
def test_every_dataset_description_is_valid(path):
  description = text_format.Parse(path.read_text(),
                                  dataset_pb2.DatasetDescription())
  info = dataset_info.from_description(description)
  assert path.name == f'{info.name}{DESCRIPTION_SUFFIX}'


def test_camvid_description_is_the_segnet_tutorials_classes():
  loaded = experiment.load_experiment(
      str(REPO_ROOT / 'configs/camvid/sp_transformer_tiny.textproto'))
  info = loaded.dataset
  assert info.class_names == (
      'sky', 'building', 'pole', 'road', 'pavement', 'tree', 'sign_symbol',
      'fence', 'car', 'pedestrian', 'bicyclist')
  assert info.label_table == tuple(range(11)) + (dataset_info.IGNORE_LABEL,)
  # The file is read once and stored inline in the resolved options.
  dataset = loaded.options.train_dataset_options
  assert dataset.WhichOneof('source') == 'dataset_description'
  assert dataset.dataset_description.name == 'camvid'


@pytest.mark.parametrize('path', CONFIG_FILES, ids=lambda p: p.name)
def test_every_config_loads_and_validates(path):
  loaded = experiment.load_experiment(str(path))
  assert loaded.name == loaded.options.experiment_name
  assert loaded.input_size == experiment.crop_size(
      loaded.options.eval_dataset_options)
  if loaded.has_superpixels:
    assert loaded.geometry.input_size == loaded.input_size
  else:  # A per-pixel baseline: no superpixel grid.
    assert loaded.geometry is None
  assert loaded.num_classes == loaded.dataset.num_classes


def test_paper_geometries():
  loaded = experiment.load_experiment(
      str(REPO_ROOT / 'configs/cityscapes/sp_transformer_r50.textproto'))
  cityscapes = loaded.options
  geometry = experiment.model_geometry(
      cityscapes.model_options,
      experiment.crop_size(cityscapes.train_dataset_options))
  assert (geometry.hypercolumn_height, geometry.hypercolumn_width) == (128, 256)
  assert (geometry.grid_height, geometry.grid_width) == (32, 64)
  assert (geometry.superpixel_height, geometry.superpixel_width) == (4, 4)
  assert geometry.output_stride == 8
  assert cityscapes.train_dataset_options.batch_size == 32
  assert cityscapes.trainer_options.training_number_of_steps == 60000

  ade20k = experiment.load_experiment(
      str(REPO_ROOT / 'configs/ade20k/sp_transformer_r50.textproto')).options
  geometry = experiment.model_geometry(
      ade20k.model_options, experiment.crop_size(ade20k.train_dataset_options))
  assert (geometry.hypercolumn_height, geometry.hypercolumn_width) == (160, 160)
  assert (geometry.grid_height, geometry.grid_width) == (40, 40)
  assert (geometry.superpixel_height, geometry.superpixel_width) == (4, 4)
  assert ade20k.train_dataset_options.batch_size == 64
  assert ade20k.trainer_options.training_number_of_steps == 100000

  convnext = experiment.load_experiment(str(
      REPO_ROOT / 'configs/ade20k/sp_transformer_convnext_l.textproto'))
  assert convnext.input_size == (640, 640)
  assert (convnext.geometry.grid_height, convnext.geometry.grid_width) == (
      40, 40)
  options = convnext.options
  assert options.model_options.encoder.name == 'convnext_large'
  assert options.model_options.encoder.drop_path_keep_prob == pytest.approx(
      0.8)
  assert options.train_dataset_options.batch_size == 64
  assert options.trainer_options.training_number_of_steps == 150000


@pytest.mark.parametrize('path', CONFIG_FILES, ids=lambda p: p.name)
def test_paper_configs_synchronize_batch_norm_and_autoaugment(path):
  options = experiment.load_experiment(str(path)).options
  # The paper-scale configs (for accelerators), not the CPU-sized ones.
  paper = options.model_options.encoder.name != 'tiny_convnet'
  assert options.model_options.encoder.sync_batchnorm == paper
  augmentation = options.train_dataset_options.augmentations
  assert (augmentation.color_augmentation ==
          dataset_pb2.AUTOAUGMENT_SIMPLE_CLASSIFICATION) == paper


def test_model_geometry_rejects_indivisible_size():
  options = config_pb2.ExperimentOptions()
  with pytest.raises(experiment.ConfigError, match=r'256x512'):
    # Defaults: stride 8, grid 32x64 -> cells of 256x512 input pixels.
    experiment.model_geometry(options.model_options, (1000, 2048))


def test_syntax_error_names_file_and_line(tmp_path):
  text = _load_text().replace('experiment_name: "synthetic_sp_transformer_tiny"',
                              'experiment_name "oops"\nmodel_options {{')
  path = _write(tmp_path, text)
  with pytest.raises(experiment.ConfigError) as error:
    experiment.load_experiment(path)
  message = str(error.value)
  assert path in message
  assert 'syntax' in message


def test_unknown_field_names_field_and_line(tmp_path):
  text = _load_text().replace('num_heads: 2', 'num_headz: 2')
  line = next(i for i, l in enumerate(text.splitlines(), 1) if 'num_headz' in l)
  path = _write(tmp_path, text)
  with pytest.raises(experiment.ConfigError) as error:
    experiment.load_experiment(path)
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
    ('num_vis_images: 4', 'num_vis_images: 4 boundary_band_pixels: -2',
     'boundary_band_pixels is -2'),
    ('file_pattern: "work_dirs/data/synthetic/val-*.tfrecord"',
     'file_pattern: "work_dirs/data/synthetic/val-*.tfrecord" repeat: true',
     'remove `repeat: true`'),
    ('file_pattern: "work_dirs/data/synthetic/val-*.tfrecord"',
     'file_pattern: "work_dirs/data/synthetic/val-*.tfrecord" '
     'panoptic_label_divisor: -1',
     'eval_dataset_options.panoptic_label_divisor must be >= 0'),
])
def test_bad_values_get_a_clear_message(tmp_path, old, new, expected):
  text = _load_text()
  assert old in text, old
  path = _write(tmp_path, text.replace(old, new, 1))
  with pytest.raises(experiment.ConfigError) as error:
    experiment.load_experiment(path)
  message = str(error.value)
  assert path in message
  assert expected in message


def test_eval_mode_does_not_need_training_files(tmp_path):
  text = _load_text().replace(
      'file_pattern: "work_dirs/data/synthetic/train-*.tfrecord"', '')
  path = _write(tmp_path, text)
  options = experiment.load_experiment(path, mode='eval').options
  assert not options.train_dataset_options.file_pattern
  with pytest.raises(experiment.ConfigError, match='file_pattern is empty'):
    experiment.load_experiment(path, mode='train')
  # Tools that read no data (export, model_stats) pass mode=None.
  text = text.replace(
      'file_pattern: "work_dirs/data/synthetic/val-*.tfrecord"', '')
  path = _write(tmp_path, text, 'no_files.textproto')
  assert experiment.load_experiment(path, mode=None).name


def test_missing_file_is_a_clear_error(tmp_path):
  with pytest.raises(experiment.ConfigError, match='does not exist'):
    experiment.load_experiment(str(tmp_path / 'nope.textproto'))


def test_missing_pretrained_weights_is_a_clear_error(tmp_path):
  text = _load_text().replace(
      'name: "tiny_convnet"',
      f'name: "tiny_convnet"\n    pretrained_weights: "{tmp_path}/w.h5"')
  path = _write(tmp_path, text)
  with pytest.raises(experiment.ConfigError, match='pretrained_weights'):
    experiment.load_experiment(path)


def test_summary_reports_geometry():
  text = experiment.load_experiment(str(DEFAULT_CONFIG)).summary()
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


# The resolved Experiment.


def _experiment(overrides=None, mode='train_and_eval'):
  return experiment.experiment_from_options(
      tiny_experiment.options(overrides), mode=mode)


def test_experiment_holds_the_resolved_facts():
  loaded = experiment.load_experiment(str(DEFAULT_CONFIG))
  assert loaded.path == str(DEFAULT_CONFIG)
  assert loaded.mode == 'train_and_eval'
  assert loaded.name == 'synthetic_sp_transformer_tiny'
  assert loaded.train_dataset is dataset_info.get_dataset_info('synthetic')
  assert loaded.eval_dataset is loaded.train_dataset is loaded.dataset
  assert loaded.num_classes == 6
  assert loaded.input_size == (128, 128)
  assert (loaded.geometry.hypercolumn_height,
          loaded.geometry.superpixel_height) == (32, 4)
  assert loaded.keras_mixed_precision_policy == 'float32'
  with pytest.raises(dataclasses.FrozenInstanceError):
    loaded.num_classes = 3  # pytype: disable=not-writable


def test_experiment_owns_a_copy_of_the_options():
  options = tiny_experiment.options()
  loaded = experiment.experiment_from_options(options)
  options.experiment_name = 'changed'
  assert loaded.name == 'synthetic_sp_transformer_tiny'
  assert loaded.path == '<string>'


def test_the_eval_dataset_describes_the_experiment():
  # Precedence: eval_dataset_options if set, else train_dataset_options.
  both = _experiment({'train_dataset_options.crop_size': [64, 64]})
  assert both.input_size == (128, 128)
  assert both.geometry.input_size == (128, 128)
  train_only = tiny_experiment.options(
      {'train_dataset_options.crop_size': [64, 64]})
  train_only.ClearField('eval_dataset_options')
  loaded = experiment.experiment_from_options(train_only, mode='train')
  assert loaded.eval_dataset is None
  assert loaded.input_size == (64, 64)
  assert loaded.dataset is loaded.train_dataset
  assert loaded.num_classes == 6


def test_a_config_without_datasets_is_a_clear_error():
  options = tiny_experiment.options()
  options.ClearField('train_dataset_options')
  options.ClearField('eval_dataset_options')
  with pytest.raises(experiment.ConfigError, match='crop_size'):
    experiment.experiment_from_options(options, mode=None)


def test_class_count_mismatch_is_rejected(monkeypatch):
  cityscapes = dataset_info.get_dataset_info('cityscapes')
  monkeypatch.setitem(dataset_info.DATASETS, 'other', dataclasses.replace(
      cityscapes, name='other', class_names=cityscapes.class_names[:3],
      colormap=cityscapes.colormap[:3]))
  with pytest.raises(experiment.ConfigError,
                     match='train_dataset_options.*eval_dataset_options.*'
                     'same label space'):
    _experiment({'train_dataset_options.dataset': 'cityscapes',
                 'eval_dataset_options.dataset': 'other'})


@pytest.mark.parametrize('name', ['.', '..', 'a/b', '../up', '', 'a b'])
def test_experiment_name_must_be_one_safe_directory_name(name):
  with pytest.raises(experiment.ConfigError, match='experiment_name'):
    _experiment({'experiment_name': name})


@pytest.mark.parametrize('field', [
    'trainer_options.base_learning_rate',
    'trainer_options.weight_decay',
    'trainer_options.poly_end_learning_rate',
    'trainer_options.gradient_clip_norm',
    'train_dataset_options.augmentations.max_scale_factor',
    'model_options.superpixel_tokenization.dropout_rate',
])
@pytest.mark.parametrize('value', [math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_rejected(field, value):
  with pytest.raises(experiment.ConfigError,
                     match=f'{field} is {value}.*finite'):
    _experiment({field: value})


@pytest.mark.parametrize('field,value,limit', [
    ('train_dataset_options.batch_size', 4097, 'MAX_BATCH_SIZE'),
    ('eval_dataset_options.crop_size', [16384 * 2, 128], 'MAX_CROP_SIDE'),
    ('model_options.hypercolumn.channels', 65536 * 2, 'MAX_CHANNELS'),
    ('model_options.superpixel_tokenization.ffn_channels', 10**6,
     'MAX_CHANNELS'),
    ('model_options.superpixel_classifier.num_layers', 1001, 'MAX_LAYERS'),
    ('model_options.superpixel_tokenization.num_layers', 5000, 'MAX_LAYERS'),
])
def test_absurd_sizes_are_rejected_with_the_field(field, value, limit):
  with pytest.raises(experiment.ConfigError,
                     match=f'{field} is .*experiment.{limit}'):
    _experiment({field: value})


def test_summary_interval_must_be_a_multiple_of_steps_per_loop():
  with pytest.raises(experiment.ConfigError,
                     match=r'save_summaries_steps \(75\) must be a multiple '
                     r'of trainer_options.steps_per_loop \(50\).*'
                     'save_summaries_steps: 100'):
    _experiment({'trainer_options.save_summaries_steps': 75})


def test_geometry_error_names_the_file_and_field(tmp_path):
  path = _write(tmp_path, _load_text().replace('grid_width: 8', 'grid_width: 6'))
  with pytest.raises(experiment.ConfigError,
                     match=f'^{path}: train_dataset_options.crop_size: '
                     'Input size 128x128 is not divisible'):
    experiment.load_experiment(path)


def test_a_directory_or_binary_config_file_is_a_clear_error(tmp_path):
  with pytest.raises(experiment.ConfigError, match='is a directory'):
    experiment.load_experiment(str(tmp_path))
  binary = tmp_path / 'weights.h5'
  binary.write_bytes(b'\x89HDF\r\n\x1a\n\xff\xfe\x00')
  with pytest.raises(experiment.ConfigError,
                     match=f'{binary} is not UTF-8 text'):
    experiment.load_experiment(str(binary))


def test_validate_config_tool_one_line_for_a_directory(tmp_path):
  result = _run_validate(f'--config_file={tmp_path}')
  assert result.returncode == 1
  assert 'is a directory' in result.stderr
  assert 'Traceback' not in result.stderr


def test_sync_batchnorm_with_xla_is_a_config_error(tmp_path):
  options = tiny_experiment.options({
      'model_options.encoder.sync_batchnorm': True,
      'trainer_options.use_xla': True,
  })
  with pytest.raises(experiment.ConfigError,
                     match='sync_batchnorm.*use_xla'):
    experiment.load_experiment(_write(tmp_path, str(options)))


# The per-pixel baselines (model_options.meta_architecture).

_BASELINE_CONFIGS = {
    'HYPERCOLUMN_PIXEL_CLASSIFIER': 'hypercolumn_pixel_classifier',
    'DEEPLABV3PLUS': 'deeplabv3plus',
}


@pytest.mark.parametrize('meta', sorted(_BASELINE_CONFIGS))
def test_baseline_configs_differ_from_the_default_only_in_the_model(meta):
  default = experiment.load_experiment(str(DEFAULT_CONFIG)).options
  for folder, suffix in (('synthetic', 'tiny'), ('cityscapes', 'r50')):
    loaded = experiment.load_experiment(str(
        REPO_ROOT / 'configs' / folder /
        f'{_BASELINE_CONFIGS[meta]}_{suffix}.textproto'))
    assert loaded.meta_architecture == meta and not loaded.has_superpixels
    sp_config = REPO_ROOT / 'configs' / folder / (
        f'sp_transformer_{suffix}.textproto')
    reference = experiment.load_experiment(str(sp_config)).options
    for field in ('trainer_options', 'train_dataset_options',
                  'eval_dataset_options', 'evaluator_options'):
      assert getattr(loaded.options, field) == getattr(reference, field)
    assert (loaded.options.model_options.encoder.name ==
            reference.model_options.encoder.name)
  assert default.model_options.meta_architecture == 0  # SP_TRANSFORMER.


def test_summary_of_the_baselines():
  text = experiment.load_experiment(str(
      REPO_ROOT / 'configs/synthetic/deeplabv3plus_tiny.textproto')).summary()
  assert 'DEEPLABV3PLUS' in text and 'no superpixels' in text
  assert 'ASPP 4x4, logits 32x32' in text and 'rates 1, 2, 3' in text
  text = experiment.load_experiment(str(
      REPO_ROOT / 'configs/cityscapes/'
      'hypercolumn_pixel_classifier_r50.textproto')).summary()
  assert 'hypercolumn and logits 128x256' in text


@pytest.mark.parametrize('meta,overrides,expected', [
    # A message the network does not read.
    ('SP_TRANSFORMER', {'model_options.pixel_classifier.hidden_channels': 8},
     r'model_options.pixel_classifier is set, but '
     r'model_options.meta_architecture SP_TRANSFORMER does not use it'),
    ('HYPERCOLUMN_PIXEL_CLASSIFIER',
     {'model_options.superpixel_tokenization.grid_height': 4,
      'model_options.deeplabv3plus.aspp_channels': 8},
     r'superpixel_tokenization, model_options.deeplabv3plus are set'),
    ('DEEPLABV3PLUS', {'model_options.hypercolumn.channels': 8},
     r'hypercolumn is set.*reads encoder, deeplabv3plus'),
    # Ranges.
    ('HYPERCOLUMN_PIXEL_CLASSIFIER',
     {'model_options.pixel_classifier.hidden_channels': -1},
     'hidden_channels must be >= 0'),
    ('DEEPLABV3PLUS', {'model_options.deeplabv3plus.low_level_stride': 32},
     'low_level_stride is 32; encoder tiny_convnet has endpoints below the '
     'ASPP stride 32 at strides 2, 4, 8, 16'),
    ('DEEPLABV3PLUS', {'model_options.deeplabv3plus.aspp_channels': 0},
     'aspp_channels must be positive'),
    ('DEEPLABV3PLUS', {'model_options.deeplabv3plus.atrous_rates': [2, 0]},
     'atrous_rates must be positive'),
    ('DEEPLABV3PLUS', {'model_options.deeplabv3plus.aspp_dropout_rate': 1.0},
     r'aspp_dropout_rate must be in \[0, 1\)'),
    ('DEEPLABV3PLUS', {'model_options.deeplabv3plus.decoder_num_convs': -1},
     'decoder_num_convs must be >= 0'),
    # Sizes: multiples of the encoder's stride (and the hypercolumn's).
    ('DEEPLABV3PLUS', {'eval_dataset_options.crop_size': [96, 112]},
     r'eval_dataset_options.crop_size: Input size 96x112 is not a multiple '
     'of 32'),
    ('HYPERCOLUMN_PIXEL_CLASSIFIER',
     {'model_options.hypercolumn.output_stride': 64,
      'train_dataset_options.crop_size': [96, 128]},
     r'96x128 is not a multiple of 64'),
])
def test_baseline_options_are_validated(meta, overrides, expected):
  options = tiny_experiment.options(overrides, meta_architecture=meta)
  with pytest.raises(experiment.ConfigError, match=expected):
    experiment.experiment_from_options(options, 'bad.textproto')


def test_a_baseline_of_another_encoder_names_its_strides():
  options = tiny_experiment.options(
      {'model_options.encoder.name': 'convnext_large',
       'model_options.deeplabv3plus.low_level_stride': 2},
      meta_architecture='DEEPLABV3PLUS')
  with pytest.raises(experiment.ConfigError,
                     match='convnext_large has endpoints below the ASPP '
                     'stride 32 at strides 4, 8, 16'):
    experiment.experiment_from_options(options)


def test_eval_scales_and_flipped_images_load_as_written(tmp_path):
  text = _load_text().replace(
      'evaluator_options {',
      'evaluator_options {\n  eval_scales: [0.5, 0.75, 1.0, 1.25, 1.5]\n'
      '  add_flipped_images: true', 1)
  loaded = experiment.load_experiment(_write(tmp_path, text))
  evaluator = loaded.options.evaluator_options
  assert list(evaluator.eval_scales) == [0.5, 0.75, 1.0, 1.25, 1.5]
  assert evaluator.add_flipped_images
  # Off by default: no scale listed (1.0 alone), no flipped images.
  default = experiment.load_experiment(str(DEFAULT_CONFIG)).options
  assert not default.evaluator_options.eval_scales
  assert not default.evaluator_options.add_flipped_images


# The tiny config evaluates 128x128 crops; its sizes must be multiples of
# 32 (stride 4 x an 8x8 grid), so 0.25, 0.5, ... 4.0 fit.
@pytest.mark.parametrize('meta,overrides,expected', [
    ('SP_TRANSFORMER', {'evaluator_options.eval_scales': [1.0, 0.0]},
     r'bad.textproto: evaluator_options.eval_scales has 0; every scale must '
     r'be in \(0, 4\]'),
    ('SP_TRANSFORMER', {'evaluator_options.eval_scales': [-0.5]},
     r'eval_scales has -0.5; every scale must be in \(0, 4\]'),
    ('SP_TRANSFORMER', {'evaluator_options.eval_scales': [10.0]},
     r'eval_scales has 10; every scale must be in \(0, 4\] '
     r'\(experiment.MAX_EVAL_SCALE\)'),
    ('SP_TRANSFORMER', {'evaluator_options.eval_scales': [float('inf')]},
     'evaluator_options.eval_scales is inf; it must be a finite number'),
    ('SP_TRANSFORMER', {'evaluator_options.eval_scales': [float('nan')]},
     'evaluator_options.eval_scales is nan; it must be a finite number'),
    ('SP_TRANSFORMER', {'evaluator_options.eval_scales': [0.75, 1.0, 0.75]},
     'eval_scales lists 0.75 more than once'),
    ('SP_TRANSFORMER',
     {'evaluator_options.eval_scales': [0.25 * i for i in range(1, 18)]},
     r'eval_scales lists 17 scales, above the limit 16 '
     r'\(experiment.MAX_EVAL_SCALES\)'),
    # A scaled size the model cannot take: the nearest scales that fit.
    ('SP_TRANSFORMER', {'evaluator_options.eval_scales': [1.0, 1.1]},
     r'eval_scales has 1.1, which resizes the evaluation input 128x128 '
     r'\(eval_dataset_options.crop_size\) to 141x141, a size the model '
     r'cannot take \(Input size 141x141 is not divisible .*\) Use scales '
     r'whose sizes fit, e.g. 0.75, 1, 1.25.'),
    ('SP_TRANSFORMER', {'evaluator_options.eval_scales': [0.1]},
     r'to 13x13, .* e.g. 0.25, 0.5, 0.75.'),
    ('SP_TRANSFORMER', {'eval_dataset_options.crop_size': [8192, 8192],
                        'train_dataset_options.crop_size': [128, 128],
                        'evaluator_options.eval_scales': [1.0, 4.0]},
     r'eval_scales has 4, which resizes the evaluation input 8192x8192 '
     r'\(eval_dataset_options.crop_size\) to 32768x32768, above the limit '
     '16384'),
    # The baselines: multiples of their encoder's stride.
    ('DEEPLABV3PLUS', {'evaluator_options.eval_scales': [1.2]},
     r'to 154x154, a size the model cannot take \(Input size 154x154 is not '
     r'a multiple of 32 .*\) Use scales whose sizes fit, e.g. 1, 1.25, 1.5.'),
])
def test_eval_scales_are_validated(meta, overrides, expected):
  options = tiny_experiment.options(overrides, meta_architecture=meta)
  with pytest.raises(experiment.ConfigError, match=expected):
    experiment.experiment_from_options(options, 'bad.textproto')


def test_eval_scales_are_checked_at_the_train_crop_without_eval_dataset():
  # Without eval_dataset_options the model's size is the train crop_size.
  options = tiny_experiment.options(
      {'train_dataset_options.crop_size': [64, 64],
       'evaluator_options.eval_scales': [0.5, 0.75]})
  options.ClearField('eval_dataset_options')
  with pytest.raises(experiment.ConfigError,
                     match=r'eval_scales has 0.75, which resizes the '
                     r'evaluation input 64x64 \(train_dataset_options.'
                     r'crop_size\) to 48x48'):
    experiment.experiment_from_options(options, mode='train')
  options.evaluator_options.eval_scales[:] = [0.5, 1.0, 1.5]
  loaded = experiment.experiment_from_options(options, mode='train')
  assert loaded.input_size == (64, 64)


def test_warmup_as_long_as_the_run_is_rejected_with_the_fix(tmp_path):
  with pytest.raises(experiment.ConfigError,
                     match=r'trainer_options.warmup_steps \(1500\) must be '
                     r'below trainer_options.training_number_of_steps '
                     r'\(1500\).*near 0.*warmup_steps: 150'):
    _experiment({'trainer_options.warmup_steps': 1500})
  # The proto default (5000) of a config that does not set it.
  text = _load_text().replace('  warmup_steps: 100\n', '')
  assert 'warmup_steps' not in text
  with pytest.raises(experiment.ConfigError) as error:
    experiment.load_experiment(_write(tmp_path, text))
  assert str(error.value).startswith(f'{tmp_path}/bad.textproto: ')
  assert ('trainer_options.warmup_steps (5000, the default when the config '
          'does not set it) must be below') in str(error.value)
  _experiment({'trainer_options.warmup_steps': 1499})  # Fits.


@pytest.mark.parametrize('power', [-0.9, -1e-3])
def test_negative_poly_power_is_rejected(power):
  with pytest.raises(experiment.ConfigError,
                     match=r'trainer_options.poly_learning_power must be >= '
                     r'0, got .*infinite at the last step.*0.9'):
    _experiment({'trainer_options.poly_learning_power': power})
  _experiment({'trainer_options.poly_learning_power': 0.0})  # Constant.


def test_set_training_steps_shortens_a_warmup_that_would_not_fit():
  options = tiny_experiment.options().trainer_options
  experiment.set_training_steps(options, 30)
  assert (options.training_number_of_steps, options.warmup_steps) == (30, 2)
  experiment.set_training_steps(options, 1)
  assert (options.training_number_of_steps, options.warmup_steps) == (1, 0)
  options.warmup_steps = 100
  experiment.set_training_steps(options, 1000)  # Fits: kept.
  assert options.warmup_steps == 100


def test_config_overrides_replace_fields_and_whole_repeated_fields(tmp_path):
  path = _write(tmp_path, _load_text())
  loaded = experiment.load_experiment(path, 'eval', overrides=[
      'eval_dataset_options { file_pattern: "test-*.tfrecord" }',
      'trainer_options { base_learning_rate: 1e-4 } '
      'train_dataset_options { crop_size: [64, 96] }',
      'model_options { superpixel_association { upsampling: '
      'PER_SUPERPIXEL } }'])
  options = loaded.options
  assert list(options.eval_dataset_options.file_pattern) == [
      'test-*.tfrecord']
  assert list(options.train_dataset_options.crop_size) == [64, 96]
  assert options.trainer_options.base_learning_rate == pytest.approx(1e-4)
  # Everything else is the file's.
  assert options.trainer_options.training_number_of_steps == 1500
  assert options.eval_dataset_options.batch_size == 16
  assert options.model_options.superpixel_tokenization.grid_height == 8
  assert (options.model_options.superpixel_association.upsampling ==
          model_pb2.PER_SUPERPIXEL)
  # A oneof member replaces the other.
  overridden = experiment.load_experiment(path, None, overrides=[
      'eval_dataset_options { dataset_info_file: "'
      f'{REPO_ROOT}/configs/camvid/camvid.dataset.textproto" }}',
      'train_dataset_options { dataset_info_file: "'
      f'{REPO_ROOT}/configs/camvid/camvid.dataset.textproto" }}'])
  assert overridden.num_classes == 11


def test_a_bad_config_override_is_named(tmp_path):
  path = _write(tmp_path, _load_text())
  with pytest.raises(experiment.ConfigError,
                     match=r"--config_override 'trainer_options "
                     r"\{ base_learning_rat: 1 \}': 1:.*base_learning_rat"):
    experiment.load_experiment(
        path, overrides=['trainer_options { base_learning_rat: 1 }'])
  with pytest.raises(experiment.ConfigError,
                     match='trainer_options.base_learning_rate'):
    experiment.load_experiment(
        path, overrides=['trainer_options { base_learning_rate: -1 }'])


def test_num_parallel_reads_is_bounded():
  """Tens of thousands of reader threads abort the process; a named error."""
  with pytest.raises(experiment.ConfigError,
                     match='train_dataset_options.num_parallel_reads is '
                     '100000, above the limit 1024'):
    _experiment({'train_dataset_options.num_parallel_reads': 100000})
  _experiment({'train_dataset_options.num_parallel_reads': 1024})


@pytest.mark.parametrize('value, fix', [(0.2, 'write 20 for the top 20%'),
                                        (0.5, 'write 50 for the top 50%')])
def test_a_top_k_fraction_is_refused_as_a_percent(value, fix):
  """The Model Garden's and DeepLab2's fraction would keep 0.2% of pixels."""
  with pytest.raises(
      experiment.ConfigError,
      match=(r'trainer_options.top_k_percent_pixels is a percent in '
             rf'\[1, 100\]; {value} looks like a fraction: '
             f'{fix}')):
    _experiment({'trainer_options.top_k_percent_pixels': value})
  for bad in (0, -5, 150):
    with pytest.raises(experiment.ConfigError,
                       match=r'top_k_percent_pixels must be in \[1, 100\]'):
      _experiment({'trainer_options.top_k_percent_pixels': bad})
  for percent in (1, 20, 100):
    loaded = _experiment({'trainer_options.top_k_percent_pixels': percent})
    assert loaded.options.trainer_options.top_k_percent_pixels == percent


def test_validate_config_tool_applies_config_overrides():
  tiny = REPO_ROOT / 'configs/synthetic/deeplabv3plus_tiny.textproto'
  result = _run_validate(
      f'--config_file={DEFAULT_CONFIG}', f'--config_file={tiny}',
      '--config_override=trainer_options { base_learning_rate: 2.5e-4 }',
      '--config_override=train_dataset_options { batch_size: 3 }')
  assert result.returncode == 0, result.stderr
  assert result.stdout.count('OK ') == 2
  # Every file gets the overrides; the fields they leave keep the file's.
  assert result.stdout.count('adamw lr 0.00025 (poly') == 2
  assert result.stdout.count('train: dataset synthetic (6 classes), crop '
                             '128x128, batch 3,') == 2
  assert result.stdout.count(', batch 16,') == 2  # eval_dataset_options.
  bad = _run_validate(f'--config_file={DEFAULT_CONFIG}',
                      '--config_override=trainer_options { top_k: 20 }')
  assert bad.returncode == 1
  assert ("INVALID --config_override 'trainer_options { top_k: 20 }': "
          in bad.stderr)
  assert 'Traceback' not in bad.stderr
