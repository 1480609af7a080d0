"""Damaged records are named; builders touch only their own files."""

import io
import os
import shutil
import subprocess
import sys

from google.protobuf import text_format
import numpy as np
from PIL import Image
import pytest
import reliability_helpers as helpers
import tensorflow as tf

from deeplab_sp.data import input_pipeline
from deeplab_sp.data import record_errors
from deeplab_sp.data import record_writer
from deeplab_sp.data import source_files
from deeplab_sp.data import synthetic
from deeplab_sp.data import tfrecord_format
from deeplab_sp.trainer import train_lib


@pytest.fixture(scope='module')
def records(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp('records')
  return helpers.write_records(data_dir, num_shards=2)


@pytest.fixture
def data_dir(records, tmp_path):
  """A private copy of the records."""
  copy = tmp_path / 'data'
  shutil.copytree(os.path.dirname(records['train'][0]), copy)
  return copy


def _truncate(path):
  data = open(path, 'rb').read()
  open(path, 'wb').write(data[:len(data) * 2 // 3])


def _flip(path):
  data = bytearray(open(path, 'rb').read())
  data[len(data) * 2 // 3] ^= 0x01
  open(path, 'wb').write(bytes(data))


def _not_a_record(path):
  open(path, 'wb').write(b'this is not a TFRecord file\n' * 40)


def _truncated_png(path):
  """Rewrites the shard with its second image's PNG cut short."""
  examples = [tf.train.Example.FromString(r.numpy())
              for r in tf.data.TFRecordDataset(path)]
  feature = examples[1].features.feature[tfrecord_format.IMAGE_ENCODED_KEY]
  encoded = feature.bytes_list.value[0]
  feature.bytes_list.value[0] = encoded[:len(encoded) // 2]
  with tf.io.TFRecordWriter(path) as writer:
    for example in examples:
      writer.write(example.SerializeToString())
  return examples[1].features.feature[
      tfrecord_format.IMAGE_FILENAME_KEY].bytes_list.value[0].decode()


DAMAGES = {'truncated': _truncate, 'bit_flip': _flip,
           'not_a_tfrecord': _not_a_record, 'truncated_png': _truncated_png}


def _read_all(options, is_training):
  dataset = input_pipeline.build_dataset(options, is_training)
  for _ in dataset.take(8):
    pass


@pytest.mark.parametrize('damage', sorted(DAMAGES))
def test_damaged_shard_is_named(data_dir, damage):
  shard = str(data_dir / 'val-00001-of-00002.tfrecord')
  image = DAMAGES[damage](shard)
  options = helpers.options(data_dir).eval_dataset_options
  before = helpers.snapshot(data_dir)
  with pytest.raises(record_errors.DamagedRecordError) as error:
    with record_errors.explain_data_errors([options]):
      _read_all(options, is_training=False)
  message = str(error.value)
  assert f'shard {shard}' in message
  assert 'rebuild the records with tools/build_synthetic_data.py' in message
  if image:
    assert f"image '{image}'" in message
  assert isinstance(error.value.__cause__, tf.errors.OpError)
  assert helpers.snapshot(data_dir) == before


def test_other_errors_are_not_blamed_on_the_records(data_dir):
  options = helpers.options(data_dir).eval_dataset_options
  with pytest.raises(tf.errors.InvalidArgumentError):
    with record_errors.explain_data_errors([options]):
      raise tf.errors.InvalidArgumentError(None, None, 'Corrupt PNG? no.')


@pytest.mark.slow
def test_trainer_names_the_image_with_a_truncated_png(data_dir):
  shard = str(data_dir / 'train-00000-of-00002.tfrecord')
  image = _truncated_png(shard)
  options = helpers.options(data_dir, steps=2)
  with pytest.raises(record_errors.DamagedRecordError,
                     match=f"shard {shard} \\(image '{image}'\\)"):
    train_lib.run_experiment(
        helpers.experiment(options, 'train'), str(data_dir / 'runs'))


@pytest.mark.slow
def test_train_cli_prints_one_line_for_a_damaged_shard(data_dir):
  shard = str(data_dir / 'train-00001-of-00002.tfrecord')
  _not_a_record(shard)
  config = data_dir / 'config.textproto'
  config.write_text(text_format.MessageToString(
      helpers.options(data_dir, steps=2)))
  result = helpers.run_tool([
      'deeplab_sp/trainer/train.py', f'--config_file={config}',
      '--mode=train', f'--model_dir={data_dir / "runs"}'])
  helpers.assert_one_line_error(result, 'train', f'shard {shard}',
                                'not a TFRecord', 'rebuild')


def test_stale_shard_cleanup_keeps_user_files(tmp_path):
  out = tmp_path / 'data'
  out.mkdir()
  user_files = ['train-backup-of-2023.tfrecord', 'train-x-of-y.tfrecord',
                'train-00000-of-00003.tfrecord.bak',
                'train-0000-of-00003.tfrecord']
  for name in user_files:
    (out / name).write_text('mine')
  old_shards = [f'train-{i:05d}-of-00003.tfrecord' for i in range(3)]
  for name in old_shards:
    (out / name).write_text('old shard')
  synthetic.write_dataset(str(out), num_train=2, num_val=2, height=32,
                          width=32, num_shards=1)
  names = set(os.listdir(out))
  assert set(user_files) <= names
  assert not set(old_shards) & names
  for name in user_files:
    assert (out / name).read_text() == 'mine'


def test_temporaries_of_killed_builders_are_cleaned(tmp_path):
  out = tmp_path / 'data'
  out.mkdir()
  dead = helpers.dead_pid()
  live = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
  stale = [f'.train-00000-of-00001.tfrecord.incomplete-{dead}-0123abcd',
           f'train-00000-of-00001.tfrecord.incomplete-{dead}-0123abcd']
  # A builder still running, and files that are not temporaries of ours.
  alive = [f'.val-00000-of-00001.tfrecord.incomplete-{live.pid}-0123abcd',
           f'val-00000-of-00001.tfrecord.incomplete-{live.pid}-0123abcd',
           'notes.incomplete-123-zz', f'.incomplete-{dead}-my-notes.txt']
  for name in stale + alive:
    (out / name).write_text('partial')
  try:
    synthetic.write_dataset(str(out), num_train=2, num_val=2, height=32,
                            width=32, num_shards=1)
  finally:
    live.kill()
    live.wait()
  names = set(os.listdir(out))
  assert not set(stale) & names
  assert set(alive) <= names


def _jpeg_bytes(image):
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format='JPEG')
  return buffer.getvalue()


def test_jpeg_named_png_is_stored_as_jpeg_and_read_from_its_bytes(tmp_path):
  image = np.random.RandomState(0).randint(0, 255, [32, 48, 3]).astype(
      np.uint8)
  jpeg = _jpeg_bytes(image)
  path = tmp_path / 'photo.png'  # JPEG bytes behind a .png name.
  path.write_bytes(jpeg)
  data, image_format, pixels = source_files.read_image(str(path))
  assert image_format == 'jpeg' and data == jpeg
  label = tfrecord_format.encode_label_png(np.zeros([32, 48], np.uint8))
  example = tfrecord_format.make_example(jpeg, 'png', 'photo', 32, 48, label)
  stored = example.features.feature[tfrecord_format.IMAGE_FORMAT_KEY]
  assert stored.bytes_list.value[0] == b'jpeg'
  # A record of another tool that says png: decoded from its bytes.
  example.features.feature[tfrecord_format.IMAGE_FORMAT_KEY].bytes_list.value[
      0] = b'png'
  parsed = tfrecord_format.parse_example(
      tf.constant(example.SerializeToString()))
  np.testing.assert_array_equal(parsed['image'].numpy(), pixels)
