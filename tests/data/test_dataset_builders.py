"""Tests of the Cityscapes and ADE20K builders on tiny fixture trees.

Decoded records must reproduce the source pixels and labels exactly, and
every bad input gets an error naming the file, with no shard left behind.
"""

import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from conftest import REPO_ROOT
from deeplab_sp.data import ade20k
from deeplab_sp.data import cityscapes
from deeplab_sp.data import tfrecord_format


def _save(path, array, **kwargs):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(array).save(path, **kwargs)


def _random(shape, high, seed):
  return np.random.default_rng(seed).integers(0, high, shape).astype(np.uint8)


def _cityscapes_tree(root, label_kind='train_ids'):
  """train: 2 cities, 3 images; val: 1 image. Returns {name: (img, lab)}."""
  expected = {}
  items = [('train', 'aachen', 'aachen_000000_000019'),
           ('train', 'aachen', 'aachen_000001_000019'),
           ('train', 'bremen', 'bremen_000000_000019'),
           ('val', 'lindau', 'lindau_000000_000019')]
  for seed, (split, city, name) in enumerate(items):
    image = _random([6, 10, 3], 256, seed)
    _save(root / 'leftImg8bit' / split / city / f'{name}_leftImg8bit.png',
          image)
    gt_dir = root / 'gtFine' / split / city
    if label_kind == 'train_ids':
      label = _random([6, 10], 19, seed + 10)
      label[0, 0] = 255
      _save(gt_dir / f'{name}_gtFine_labelTrainIds.png', label)
    else:
      label_ids = _random([6, 10], 34, seed + 10)
      _save(gt_dir / f'{name}_gtFine_labelIds.png', label_ids)
      label = np.array(cityscapes.LABEL_ID_TO_TRAIN_ID, np.uint8)[label_ids]
    expected[name] = (image, label)
  return expected


def _records(pattern):
  return {example['image_name']: example
          for example in tfrecord_format.read_examples(str(pattern))}


@pytest.mark.parametrize('label_kind', ['train_ids', 'label_ids'])
def test_cityscapes_records_reproduce_sources(tmp_path, label_kind):
  expected = _cityscapes_tree(tmp_path / 'cs', label_kind)
  written = cityscapes.build(str(tmp_path / 'cs'), str(tmp_path / 'out'),
                             num_shards=2)
  assert [len(written['train']), len(written['val'])] == [2, 1]
  records = {**_records(tmp_path / 'out' / 'train-*'),
             **_records(tmp_path / 'out' / 'val-*')}
  assert sorted(records) == sorted(expected)
  for name, (image, label) in expected.items():
    np.testing.assert_array_equal(records[name]['image'], image)
    np.testing.assert_array_equal(records[name]['label'], label)


def test_label_id_table_matches_official_train_ids():
  table = cityscapes.LABEL_ID_TO_TRAIN_ID
  assert len(table) == 34
  evaluated = {i: t for i, t in enumerate(table) if t != 255}
  assert evaluated == {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7,
                       21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13, 27: 14,
                       28: 15, 31: 16, 32: 17, 33: 18}


def test_train_id_to_label_id_table_inverts_the_label_id_table():
  train_ids = np.arange(19).reshape(1, 19)
  label_ids = cityscapes.train_ids_to_label_ids(train_ids)
  assert label_ids.dtype == np.uint8
  np.testing.assert_array_equal(
      np.asarray(cityscapes.LABEL_ID_TO_TRAIN_ID)[label_ids], train_ids)
  assert label_ids[0, 0] == 7 and label_ids[0, 18] == 33  # road, bicycle
  for bad in (19, 255, -1):
    with pytest.raises(ValueError, match='0..18'):
      cityscapes.train_ids_to_label_ids(np.array([[0, bad]]))


def _ade20k_tree(root):
  expected = {}
  for seed, (directory, name) in enumerate([
      ('training', 'ADE_train_00000001'), ('training', 'ADE_train_00000002'),
      ('validation', 'ADE_val_00000001')]):
    image = _random([7, 5, 3], 256, seed)
    # PNG images keep the pixel check exact (JPEG is lossy); see below.
    _save(root / 'images' / directory / f'{name}.png', image)
    label = _random([7, 5], 151, seed + 10)
    _save(root / 'annotations' / directory / f'{name}.png', label)
    expected[name] = (image, label)
  return expected


def test_ade20k_records_reproduce_sources(tmp_path):
  expected = _ade20k_tree(tmp_path / 'ade')
  image = _random([7, 5, 3], 256, 99)
  _save(tmp_path / 'ade' / 'images' / 'training' / 'ADE_train_00000003.jpg',
        image, quality=95)
  _save(tmp_path / 'ade' / 'annotations' / 'training' /
        'ADE_train_00000003.png', np.full([7, 5], 150, np.uint8))
  ade20k.build(str(tmp_path / 'ade'), str(tmp_path / 'out'), num_shards=1)
  records = {**_records(tmp_path / 'out' / 'train-*'),
             **_records(tmp_path / 'out' / 'val-*')}
  assert sorted(records) == sorted(list(expected) + ['ADE_train_00000003'])
  for name, (image, label) in expected.items():
    np.testing.assert_array_equal(records[name]['image'], image)
    np.testing.assert_array_equal(records[name]['label'], label)
  jpeg = records['ADE_train_00000003']
  np.testing.assert_array_equal(
      jpeg['image'], np.asarray(Image.open(
          tmp_path / 'ade' / 'images' / 'training' / 'ADE_train_00000003.jpg')))
  assert (jpeg['label'] == 150).all()


def _expect_error(build, root, output, error, match):
  with pytest.raises(error, match=match):
    build(str(root), str(output))
  assert not output.exists() or not list(output.iterdir())


def test_image_without_label(tmp_path):
  _cityscapes_tree(tmp_path / 'cs')
  (tmp_path / 'cs/gtFine/train/bremen/'
   'bremen_000000_000019_gtFine_labelTrainIds.png').unlink()
  _expect_error(cityscapes.build, tmp_path / 'cs', tmp_path / 'out',
                ValueError, 'bremen_000000_000019_leftImg8bit.png has no '
                'label')


def test_label_without_image(tmp_path):
  _ade20k_tree(tmp_path / 'ade')
  (tmp_path / 'ade/images/validation/ADE_val_00000001.png').unlink()
  _expect_error(ade20k.build, tmp_path / 'ade', tmp_path / 'out',
                ValueError, 'ADE_val_00000001.png has no image')


def test_size_mismatch(tmp_path):
  _ade20k_tree(tmp_path / 'ade')
  _save(tmp_path / 'ade/annotations/training/ADE_train_00000002.png',
        np.zeros([7, 6], np.uint8))
  _expect_error(ade20k.build, tmp_path / 'ade', tmp_path / 'out',
                ValueError, 'ADE_train_00000002.png is 7x5 but its label')


def test_truncated_image(tmp_path):
  _cityscapes_tree(tmp_path / 'cs')
  path = (tmp_path / 'cs/leftImg8bit/val/lindau/'
          'lindau_000000_000019_leftImg8bit.png')
  path.write_bytes(path.read_bytes()[:60])
  _expect_error(cityscapes.build, tmp_path / 'cs', tmp_path / 'out',
                ValueError, 'Cannot read image .*lindau_000000_000019')


def test_unreadable_label(tmp_path):
  _ade20k_tree(tmp_path / 'ade')
  (tmp_path / 'ade/annotations/training/ADE_train_00000001.png').write_bytes(
      b'not a png')
  _expect_error(ade20k.build, tmp_path / 'ade', tmp_path / 'out',
                ValueError, 'Cannot read label .*ADE_train_00000001.png')


@pytest.mark.parametrize('kind,value', [('train_ids', 19),
                                        ('label_ids', 34)])
def test_cityscapes_label_out_of_range(tmp_path, kind, value):
  _cityscapes_tree(tmp_path / 'cs', kind)
  suffix = ('labelTrainIds' if kind == 'train_ids' else 'labelIds')
  path = (tmp_path / 'cs/gtFine/train/aachen/'
          f'aachen_000001_000019_gtFine_{suffix}.png')
  label = np.zeros([6, 10], np.uint8)
  label[2, 3] = value
  _save(path, label)
  _expect_error(cityscapes.build, tmp_path / 'cs', tmp_path / 'out',
                ValueError, f'aachen_000001_000019_gtFine_{suffix}.png has '
                f'values \\[{value}\\]')


def test_ade20k_label_out_of_range(tmp_path):
  _ade20k_tree(tmp_path / 'ade')
  _save(tmp_path / 'ade/annotations/validation/ADE_val_00000001.png',
        np.full([7, 5], 151, np.uint8))
  _expect_error(ade20k.build, tmp_path / 'ade', tmp_path / 'out',
                ValueError, 'ADE_val_00000001.png has values \\[151\\]')


def test_empty_split(tmp_path):
  _cityscapes_tree(tmp_path / 'cs')
  (tmp_path / 'cs/leftImg8bit/test').mkdir()
  with pytest.raises(ValueError, match='Split .test. is empty.*leftImg8bit'):
    cityscapes.build(str(tmp_path / 'cs'), str(tmp_path / 'out'),
                     splits=['test'])


def test_missing_root(tmp_path):
  with pytest.raises(FileNotFoundError, match='ADEChallengeData2016'):
    ade20k.build(str(tmp_path / 'nothing'), str(tmp_path / 'out'))


@pytest.mark.parametrize('tool,root_flag,make_tree', [
    ('build_cityscapes_data.py', 'cityscapes_root', _cityscapes_tree),
    ('build_ade20k_data.py', 'ade20k_root', _ade20k_tree)])
def test_tools_print_summary(tmp_path, tool, root_flag, make_tree):
  make_tree(tmp_path / 'src')
  result = subprocess.run(
      [sys.executable, str(REPO_ROOT / 'tools' / tool),
       f'--{root_flag}={tmp_path / "src"}', f'--output_dir={tmp_path / "out"}',
       '--num_shards=2'], capture_output=True, text=True, timeout=120,
      cwd=str(REPO_ROOT))
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'train: ' in result.stdout and 'val: 1 images in 1 shard(s)' in (
      result.stdout)
  help_text = subprocess.run(
      [sys.executable, str(REPO_ROOT / 'tools' / tool), '--helpfull'],
      capture_output=True, text=True, timeout=60, cwd=str(REPO_ROOT)).stdout
  assert f'--{root_flag}' in help_text


@pytest.mark.parametrize('tool,root_flag', [
    ('build_cityscapes_data.py', 'cityscapes_root'),
    ('build_ade20k_data.py', 'ade20k_root')])
def test_tools_report_a_missing_root_in_one_line(tmp_path, tool, root_flag):
  result = subprocess.run(
      [sys.executable, str(REPO_ROOT / 'tools' / tool),
       f'--{root_flag}={tmp_path / "nothing"}',
       f'--output_dir={tmp_path / "out"}'], capture_output=True, text=True,
      timeout=120, cwd=str(REPO_ROOT))
  assert result.returncode == 1
  assert str(tmp_path / 'nothing') in result.stderr
  assert 'Traceback' not in result.stderr
  assert not (tmp_path / 'out').exists()
