"""The record builder is all or nothing: things in the way, a full disk."""

import os

import pytest
import reliability_helpers as helpers

from deeplab_sp.data import synthetic
from deeplab_sp.utils import io

_SIZE = 32


def _build(out, num_shards):
  return synthetic.write_dataset(str(out), num_train=4, num_val=4,
                                 height=_SIZE, width=_SIZE,
                                 num_shards=num_shards)


def _previous_build(tmp_path):
  """An output directory holding a build of 3 shards and a user's files."""
  out = tmp_path / 'data'
  _build(out, 3)
  (out / 'notes.txt').write_text('mine')
  return out


def test_a_directory_at_a_new_shard_path_stops_every_split(tmp_path):
  out = _previous_build(tmp_path)
  # In the way of the second train shard; val comes after train.
  blocker = out / 'train-00001-of-00002.tfrecord'
  blocker.mkdir()
  (blocker / 'inside.txt').write_text('mine')
  before = helpers.snapshot(tmp_path)
  result = helpers.run_tool([
      'tools/build_synthetic_data.py', f'--output_dir={out}',
      '--num_train=4', '--num_val=4', f'--height={_SIZE}',
      f'--width={_SIZE}', '--num_shards=2'])
  helpers.assert_one_line_error(
      result, 'build_synthetic_data', f'{blocker} is a directory',
      'nothing was written', 'Move it out of the output directory')
  # No new shard published, no old one removed, no temporary left.
  assert helpers.snapshot(tmp_path) == before


def test_a_directory_at_a_stale_shard_path_stops_every_split(tmp_path):
  out = _previous_build(tmp_path)
  # A build of 2 shards removes the 3-shard names: one is a directory.
  blocker = out / 'val-00002-of-00004.tfrecord'
  blocker.mkdir()
  link = out / 'train-00003-of-00004.tfrecord'
  os.symlink(tmp_path, link)  # A link to a directory: not followed.
  before = helpers.snapshot(tmp_path)
  with pytest.raises(FileExistsError, match=f'{link} is a directory'):
    _build(out, 2)
  assert helpers.snapshot(tmp_path) == before
  os.remove(link)
  before = helpers.snapshot(tmp_path)
  with pytest.raises(FileExistsError, match=f'{blocker} is a directory'):
    _build(out, 2)
  assert helpers.snapshot(tmp_path) == before


def test_a_full_disk_leaves_nothing_behind(tmp_path):
  out = _previous_build(tmp_path)
  before = helpers.snapshot(tmp_path)
  # The third record written fails as TensorFlow's writer fails when the
  # disk is full: the first train shard is complete, the second partial.
  setup = '''
import tensorflow as tf
_written = [0]
class _FullDisk(tf.io.TFRecordWriter):
  def __init__(self, path, *args, **kwargs):
    super().__init__(path, *args, **kwargs)
    self._path = path
  def write(self, record):
    _written[0] += 1
    if _written[0] == 3:
      raise tf.errors.ResourceExhaustedError(
          None, None, f'{self._path}; No space left on device')
    super().write(record)
tf.io.TFRecordWriter = _FullDisk
'''
  result = helpers.run_tool_with_setup(setup, [
      'tools/build_synthetic_data.py', f'--output_dir={out}',
      '--num_train=4', '--num_val=4', f'--height={_SIZE}',
      f'--width={_SIZE}', '--num_shards=2'])
  helpers.assert_one_line_error(
      result, 'build_synthetic_data', f'No space left on the disk of {out} '
      'while writing train-00001-of-00002.tfrecord', 'nothing was written',
      'free space there')
  assert helpers.snapshot(tmp_path) == before
  assert not [name for name in os.listdir(out)
              if io.TEMPORARY_MARKER in name]
