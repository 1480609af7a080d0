"""Tests of the generated dataset and its builder."""

import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT
from deeplab_sp.data import synthetic
from deeplab_sp.data import tfrecord_format

BUILD = str(REPO_ROOT / 'tools' / 'build_synthetic_data.py')


def test_scene_is_deterministic_and_uses_every_class():
  first = synthetic.generate_split('train', 20, 64, 64, seed=3)
  second = synthetic.generate_split('train', 20, 64, 64, seed=3)
  other = synthetic.generate_split('train', 20, 64, 64, seed=4)
  for (image_a, label_a), (image_b, label_b) in zip(first, second):
    np.testing.assert_array_equal(image_a, image_b)
    np.testing.assert_array_equal(label_a, label_b)
  assert not np.array_equal(first[0][0], other[0][0])
  labels = np.stack([label for _, label in first])
  assert labels.dtype == np.uint8 and labels.shape == (20, 64, 64)
  assert set(np.unique(labels)) == set(range(6))
  # Layout: sky dominates the top row, ground the bottom row.
  assert (labels[:, 0] == synthetic.SKY).mean() > 0.5
  assert (labels[:, -1] == synthetic.GROUND).mean() > 0.5


def test_poles_are_thin_and_vertical_wires_thin_and_horizontal():
  for image_index in range(10):
    _, label = synthetic.generate_scene(
        128, 128, synthetic.scene_rng(0, 'train', image_index))
    pole_columns = np.nonzero((label == synthetic.POLE).any(0))[0]
    # At most two poles of at most 6 pixels each.
    assert 0 < len(pole_columns) <= 12
    wire_rows = (label == synthetic.WIRE).sum(0)
    # Each column crosses at most two wires of at most 4 pixels.
    assert wire_rows.max() <= 8


def test_colours_overlap_between_classes():
  pairs = synthetic.generate_split('train', 30, 64, 64, seed=0)
  quantised = {}
  for image, label in pairs:
    bins = (image // 64).reshape(-1, 3)
    for color, class_id in zip(map(tuple, bins), label.ravel()):
      quantised.setdefault(color, set()).add(int(class_id))
  # Most coarse colours occur in several classes.
  shared = sum(len(classes) >= 3 for classes in quantised.values())
  assert shared >= len(quantised) // 2


def test_builder_writes_shards_that_decode_to_the_scenes(tmp_path):
  result = subprocess.run(
      [sys.executable, BUILD, f'--output_dir={tmp_path}', '--num_train=5',
       '--num_val=3', '--height=48', '--width=64', '--seed=2',
       '--num_shards=2'], capture_output=True, text=True, timeout=120,
      cwd=str(REPO_ROOT))
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'train: 5 images in 2 shard(s)' in result.stdout
  assert 'val: 3 images in 2 shard(s)' in result.stdout
  assert sorted(p.name for p in tmp_path.iterdir()) == [
      'train-00000-of-00002.tfrecord', 'train-00001-of-00002.tfrecord',
      'val-00000-of-00002.tfrecord', 'val-00001-of-00002.tfrecord']
  expected = synthetic.generate_split('val', 3, 48, 64, seed=2)
  decoded = list(tfrecord_format.read_examples(str(tmp_path / 'val-*')))
  assert [d['image_name'] for d in decoded] == [
      'synthetic_val_000000', 'synthetic_val_000001', 'synthetic_val_000002']
  for example, (image, label) in zip(decoded, expected):
    np.testing.assert_array_equal(example['image'], image)
    np.testing.assert_array_equal(example['label'], label)


def test_write_dataset_replaces_stale_shards(tmp_path):
  synthetic.write_dataset(str(tmp_path), 4, 2, 32, 32, num_shards=3)
  synthetic.write_dataset(str(tmp_path), 4, 2, 32, 32, num_shards=1)
  assert sorted(p.name for p in tmp_path.iterdir()) == [
      'train-00000-of-00001.tfrecord', 'val-00000-of-00001.tfrecord']


def test_failed_write_leaves_no_shard(tmp_path):
  from deeplab_sp.data import record_writer  # pylint: disable=g-import-not-at-top

  def make_example(index):
    if index == 3:
      raise ValueError('bad source image x.png')
    image, label = synthetic.generate_scene(
        32, 32, synthetic.scene_rng(0, 'train', index))
    return tfrecord_format.make_example(
        tfrecord_format.encode_image_png(image), 'png', 'x', 32, 32,
        tfrecord_format.encode_label_png(label))
  with pytest.raises(ValueError, match='x.png'):
    record_writer.write_split(make_example, 5, str(tmp_path), 'train', 2)
  assert not list(tmp_path.iterdir())


def test_bad_sizes_and_counts(tmp_path):
  with pytest.raises(ValueError, match='--height'):
    synthetic.write_dataset(str(tmp_path), 2, 2, 16, 64)
  with pytest.raises(ValueError, match='--num_val'):
    synthetic.write_dataset(str(tmp_path), 2, 0, 32, 32)
