"""Tests of the DeepLab2 record layout (deeplab_sp/data/tfrecord_format.py).

Records are written here with DeepLab2's keys directly (not through our
builders), with PNG and raw int32 labels and PNG / JPEG images, so records
from DeepLab2's own builders are known to load unchanged.
"""

import numpy as np
import pytest
import tensorflow as tf

from deeplab_sp.data import tfrecord_format


def _deeplab2_example(image_bytes, image_format, label_bytes, label_format,
                      name, height, width):
  """An example built key by key, as DeepLab2's data_utils does."""
  def b(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

  def i(value):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
  return tf.train.Example(features=tf.train.Features(feature={
      'image/encoded': b(image_bytes),
      'image/filename': b(name.encode()),
      'image/format': b(image_format.encode()),
      'image/height': i(height),
      'image/width': i(width),
      'image/channels': i(3),
      'image/segmentation/class/encoded': b(label_bytes),
      'image/segmentation/class/format': b(label_format.encode()),
  }))


def _arrays(height=5, width=7, seed=0):
  rng = np.random.default_rng(seed)
  image = rng.integers(0, 256, [height, width, 3], dtype=np.uint8)
  label = rng.integers(0, 19, [height, width]).astype(np.int32)
  label[0, 0] = 255
  return image, label


@pytest.mark.parametrize('label_format', ['png', 'raw'])
def test_deeplab2_keys_decode_exactly(label_format):
  image, label = _arrays()
  label_bytes = (tf.io.encode_png(label[..., None].astype(np.uint8)).numpy()
                 if label_format == 'png' else label.astype('<i4').tobytes())
  example = _deeplab2_example(tf.io.encode_png(image).numpy(), 'png',
                              label_bytes, label_format, 'frankfurt_000000',
                              5, 7)
  decoded = tfrecord_format.parse_example(example.SerializeToString())
  np.testing.assert_array_equal(decoded['image'].numpy(), image)
  np.testing.assert_array_equal(decoded['label'].numpy(), label)
  assert decoded['label'].dtype == tf.int32
  assert decoded['image_name'].numpy() == b'frankfurt_000000'


def test_raw_label_keeps_values_above_255():
  image, label = _arrays()
  label[1, 1] = 1000
  example = _deeplab2_example(tf.io.encode_png(image).numpy(), 'png',
                              label.astype('<i4').tobytes(), 'raw', 'x', 5, 7)
  decoded = tfrecord_format.parse_example(example.SerializeToString())
  assert decoded['label'].numpy()[1, 1] == 1000


def test_jpeg_image_decodes_to_rgb():
  image = np.full([8, 8, 3], (200, 40, 90), np.uint8)
  jpeg = tf.io.encode_jpeg(image, quality=100).numpy()
  example = tfrecord_format.make_example(
      jpeg, 'jpeg', 'a', 8, 8, tfrecord_format.encode_label_png(
          np.zeros([8, 8], np.uint8)))
  decoded = tfrecord_format.parse_example(example.SerializeToString())
  assert decoded['image'].shape == (8, 8, 3)
  np.testing.assert_allclose(decoded['image'].numpy(), image, atol=3)


def test_make_example_writes_deeplab2_keys():
  image, label = _arrays()
  example = tfrecord_format.make_example(
      tfrecord_format.encode_image_png(image), 'png', 'n', 5, 7,
      tfrecord_format.encode_label_png(label.astype(np.uint8)))
  assert set(example.features.feature) == {
      'image/encoded', 'image/filename', 'image/format', 'image/height',
      'image/width', 'image/channels', 'image/segmentation/class/encoded',
      'image/segmentation/class/format'}
  decoded = tfrecord_format.parse_example(example.SerializeToString())
  np.testing.assert_array_equal(decoded['image'].numpy(), image)
  np.testing.assert_array_equal(decoded['label'].numpy(), label)


def test_shard_names():
  assert (tfrecord_format.shard_filename('train', 3, 10) ==
          'train-00003-of-00010.tfrecord')
  assert tfrecord_format.shard_glob('val') == 'val-*-of-*.tfrecord'


def test_missing_pattern_names_it(tmp_path):
  with pytest.raises(FileNotFoundError, match='nothing-here'):
    tfrecord_format.list_record_files([str(tmp_path / 'nothing-here-*')])
