"""Records written exactly as DeepLab2's builders write them load here.

The examples are built by hand with DeepLab2's keys, dtypes and encodings
(its data_utils.create_features): the panoptic records of its Cityscapes
builder (default --create_panoptic_data=true) and of its ADE20K builder,
semantic * 1000 + instance as raw int32 bytes with class/format `raw`, and
its test-split records, which have no label keys at all.
"""

import io
import re

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from deeplab_sp.data import dataset_info
from deeplab_sp.data import input_pipeline
from deeplab_sp.data import record_errors
from deeplab_sp.data import tfrecord_format
from deeplab_sp.protos import dataset_pb2

DIVISOR = dataset_info.DEEPLAB2_PANOPTIC_LABEL_DIVISOR


def _bytes(value):
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int64(value):
  return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def _encode(image, image_format):
  buffer = io.BytesIO()
  Image.fromarray(image).save(
      buffer, format='JPEG' if image_format in ('jpg', 'jpeg') else 'PNG')
  return buffer.getvalue()


def _deeplab2_example(image, image_format, filename, panoptic=None):
  """DeepLab2's data_utils.create_features, panoptic labels in `raw`."""
  height, width = image.shape[:2]
  feature = {
      'image/encoded': _bytes(_encode(image, image_format)),
      'image/filename': _bytes(filename.encode()),
      'image/format': _bytes(image_format.encode()),
      'image/height': _int64(height),
      'image/width': _int64(width),
      'image/channels': _int64(3),
  }
  if panoptic is not None:
    # DeepLab2: panoptic_label.astype(np.int32).tobytes(), format 'raw'.
    feature['image/segmentation/class/encoded'] = _bytes(
        panoptic.astype(np.int32).tobytes())
    feature['image/segmentation/class/format'] = _bytes(b'raw')
  return tf.train.Example(features=tf.train.Features(feature=feature))


def _write(path, examples):
  with tf.io.TFRecordWriter(str(path)) as writer:
    for example in examples:
      writer.write(example.SerializeToString())


def _image(height, width, seed):
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, [height, width, 3], dtype=np.uint8)


def _eval(pattern, dataset, divisor, crop=(8, 8), batch_size=1):
  options = dataset_pb2.DatasetOptions(
      dataset=dataset, file_pattern=[str(pattern)], batch_size=batch_size,
      crop_size=list(crop), repeat=False, panoptic_label_divisor=divisor)
  return list(input_pipeline.build_dataset(options, False)
              .as_numpy_iterator())


def _training_batch(pattern, dataset, divisor, crop=(6, 7)):
  options = dataset_pb2.DatasetOptions(
      dataset=dataset, file_pattern=[str(pattern)], batch_size=1,
      crop_size=list(crop), panoptic_label_divisor=divisor)
  options.augmentations.deterministic = True
  options.augmentations.min_scale_factor = 1.0
  options.augmentations.max_scale_factor = 1.0
  options.augmentations.random_flip = False
  options.augmentations.color_jitter_strength = 0.0
  return next(input_pipeline.build_dataset(options, True)
              .as_numpy_iterator())


# Cityscapes panoptic: train id * 1000 + instance; 255 * 1000 (+ instance)
# for ignored pixels; stuff classes have instance 0.
_CITYSCAPES_PANOPTIC = np.array([
    [0, 0, 13001, 13001, 13002, 13002, 255000],
    [1000, 1000, 13001, 13001, 13002, 13002, 255000],
    [11005, 11005, 11006, 18000, 18000, 10000, 10000],
    [11005, 11005, 11006, 18003, 18003, 10000, 255007],
    [2000, 2000, 2000, 2000, 2000, 2000, 2000],
    [8000, 8000, 8000, 8000, 9000, 9000, 9000],
])
_CITYSCAPES_TRAIN_IDS = np.array([
    [0, 0, 13, 13, 13, 13, 255],
    [1, 1, 13, 13, 13, 13, 255],
    [11, 11, 11, 18, 18, 10, 10],
    [11, 11, 11, 18, 18, 10, 255],
    [2, 2, 2, 2, 2, 2, 2],
    [8, 8, 8, 8, 9, 9, 9],
])

# ADE20K panoptic: semantic 0..150 * 1000 + instance, 0 = unlabeled; train
# ids 0..149 = semantic - 1, unlabeled ignored.
_ADE20K_PANOPTIC = np.array([
    [0, 0, 1000, 1000, 150001, 150002],
    [0, 13004, 13004, 1000, 150001, 150002],
    [3000, 3000, 13005, 13005, 75000, 75000],
    [3000, 3000, 3000, 3000, 149000, 7],
])
_ADE20K_TRAIN_IDS = np.array([
    [255, 255, 0, 0, 149, 149],
    [255, 12, 12, 0, 149, 149],
    [2, 2, 12, 12, 74, 74],
    [2, 2, 2, 2, 148, 255],
])


@pytest.fixture(name='cityscapes_records')
def fixture_cityscapes_records(tmp_path):
  images = [_image(6, 7, seed) for seed in range(2)]
  panoptic = [_CITYSCAPES_PANOPTIC, _CITYSCAPES_PANOPTIC[::-1]]
  _write(tmp_path / 'val-00000-of-00001.tfrecord', [
      _deeplab2_example(image, 'png', f'frankfurt_000000_00029{i}', label)
      for i, (image, label) in enumerate(zip(images, panoptic))])
  return tmp_path / 'val-*.tfrecord', images


def test_cityscapes_panoptic_raw_records_evaluate(cityscapes_records):
  pattern, images = cityscapes_records
  batches = _eval(pattern, 'cityscapes', DIVISOR)
  assert len(batches) == 2
  for batch, image, expected in zip(
      batches, images, [_CITYSCAPES_TRAIN_IDS, _CITYSCAPES_TRAIN_IDS[::-1]]):
    np.testing.assert_array_equal(batch['image'][0, :6, :7], image)
    np.testing.assert_array_equal(batch['label'][0, :6, :7], expected)
    assert (batch['label'][0, 6:] == 255).all()
  assert batches[0]['image_name'][0] == b'frankfurt_000000_000290'


def test_cityscapes_panoptic_raw_records_train(cityscapes_records):
  pattern, _ = cityscapes_records
  batch = _training_batch(pattern, 'cityscapes', DIVISOR)
  # Both records' train ids; the batch holds one of them (shuffled).
  label = batch['label'][0]
  assert any((label == expected).all() for expected in
             (_CITYSCAPES_TRAIN_IDS, _CITYSCAPES_TRAIN_IDS[::-1]))


def test_panoptic_records_without_divisor_say_how_to_read_them(
    cityscapes_records):
  pattern, _ = cityscapes_records
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match='panoptic_label_divisor: 1000'):
    _eval(pattern, 'cityscapes', 0)


def test_ade20k_panoptic_raw_records_with_jpeg_images(tmp_path):
  image = _image(4, 6, 7)
  example = _deeplab2_example(image, 'jpg', 'ADE_val_00000001',
                              _ADE20K_PANOPTIC)
  _write(tmp_path / 'val-00000-of-00001.tfrecord', [example])
  batches = _eval(tmp_path / 'val-*', 'ade20k', DIVISOR)
  assert len(batches) == 1
  np.testing.assert_array_equal(batches[0]['label'][0, :4, :6],
                                _ADE20K_TRAIN_IDS)
  decoded = tfrecord_format.decode_image(
      example.features.feature['image/encoded'].bytes_list.value[0])
  np.testing.assert_array_equal(batches[0]['image'][0, :4, :6], decoded)
  batch = _training_batch(tmp_path / 'val-*', 'ade20k', DIVISOR, (4, 6))
  np.testing.assert_array_equal(batch['label'][0], _ADE20K_TRAIN_IDS)


def test_divisor_applies_to_png_labels(tmp_path):
  image = _image(3, 4, 1)
  stored = np.array([[10, 11, 25, 59], [0, 9, 30, 41], [55, 50, 12, 19]])
  _write(tmp_path / 'val-00000-of-00001.tfrecord', [
      tfrecord_format.make_example(
          tfrecord_format.encode_image_png(image), 'png', 'a', 3, 4,
          tfrecord_format.encode_label_png(stored))])
  batches = _eval(tmp_path / 'val-*', 'synthetic', 10)
  np.testing.assert_array_equal(batches[0]['label'][0, :3, :4], stored // 10)


@pytest.fixture(name='test_split')
def fixture_test_split(tmp_path):
  """DeepLab2's test split: image keys only, no label keys."""
  images = [_image(5, 6, seed) for seed in range(2)]
  _write(tmp_path / 'test-00000-of-00001.tfrecord', [
      _deeplab2_example(image, 'png', f'berlin_00000{i}_000019')
      for i, image in enumerate(images)])
  return tmp_path / 'test-00000-of-00001.tfrecord', images


def test_records_without_label_load_for_prediction(test_split, tmp_path):
  shard, images = test_split
  examples = list(tfrecord_format.read_examples(str(shard)))
  assert len(examples) == 2
  for example, image in zip(examples, images):
    assert example['label'] is None
    np.testing.assert_array_equal(example['image'], image)
  written = tfrecord_format.write_images_from_records(
      str(shard), str(tmp_path / 'images'), 2)
  assert [p.rsplit('/', 1)[1] for p in written] == [
      'berlin_000000_000019.png', 'berlin_000001_000019.png']


@pytest.mark.parametrize('training', [False, True])
def test_records_without_label_name_the_shard_for_training_and_eval(
    test_split, training):
  shard, _ = test_split
  with pytest.raises(tf.errors.InvalidArgumentError) as error:
    if training:
      _training_batch(shard, 'cityscapes', DIVISOR, (5, 6))
    else:
      _eval(shard, 'cityscapes', DIVISOR)
  message = str(error.value)
  assert str(shard) in message and 'without a label' in message
  # Training shuffles: either image of the shard may be the first one read.
  assert re.search(r'berlin_00000[01]_000019', message), message
  assert 'train or val' in message


def test_training_and_evaluation_report_a_missing_label_as_one_error(
    test_split):
  shard, _ = test_split
  options = dataset_pb2.DatasetOptions(
      dataset='cityscapes', file_pattern=[str(shard)], batch_size=1,
      crop_size=[8, 8], repeat=False)
  with pytest.raises(record_errors.MissingLabelError) as error:
    with record_errors.explain_data_errors([options]):
      list(input_pipeline.build_dataset(options, False))
  message = str(error.value)
  assert message.startswith(f'TFRecord shard {shard} has a record without')
  assert '\n' not in message and 'train or val' in message
