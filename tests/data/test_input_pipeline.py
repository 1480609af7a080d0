"""Tests of the tf.data input pipeline (deeplab_sp/data/input_pipeline.py)."""

import numpy as np
import pytest
import tensorflow as tf

from deeplab_sp.data import input_pipeline
from deeplab_sp.data import tfrecord_format
from deeplab_sp.protos import dataset_pb2


def _write_records(path, examples):
  """examples: (name, image uint8 [h, w, 3], label [h, w], label_format)."""
  with tf.io.TFRecordWriter(str(path)) as writer:
    for name, image, label, label_format in examples:
      label_bytes = (tfrecord_format.encode_label_raw(label)
                     if label_format == 'raw' else
                     tfrecord_format.encode_label_png(label))
      writer.write(tfrecord_format.make_example(
          tfrecord_format.encode_image_png(image), 'png', name,
          image.shape[0], image.shape[1], label_bytes,
          label_format).SerializeToString())


def _pair(height, width, seed, max_label):
  rng = np.random.default_rng(seed)
  image = rng.integers(0, 256, [height, width, 3], dtype=np.uint8)
  label = rng.integers(0, max_label + 1, [height, width]).astype(np.uint8)
  return image, label


def _options(pattern, dataset='synthetic', batch_size=2, crop=(8, 8),
             **kwargs):
  options = dataset_pb2.DatasetOptions(
      dataset=dataset, file_pattern=[str(pattern)], batch_size=batch_size,
      crop_size=list(crop), **kwargs)
  return options


def _eval_batches(options, **kwargs):
  options.repeat = False
  return list(input_pipeline.build_dataset(options, False, **kwargs)
              .as_numpy_iterator())


@pytest.fixture(name='five_images')
def fixture_five_images(tmp_path):
  """5 synthetic-range images of 6x7 in two shards."""
  pairs = [_pair(6, 7, seed, 5) for seed in range(5)]
  examples = [(f'img{i}', image, label, 'png')
              for i, (image, label) in enumerate(pairs)]
  _write_records(tmp_path / 'val-00000-of-00002.tfrecord', examples[:3])
  _write_records(tmp_path / 'val-00001-of-00002.tfrecord', examples[3:])
  return tmp_path / 'val-*', pairs


def test_eval_pads_with_ignore_and_keeps_every_example(five_images):
  pattern, pairs = five_images
  batches = _eval_batches(_options(pattern, batch_size=2, crop=(8, 8)))
  # 5 examples in batches of 2: the third batch holds one filler.
  assert len(batches) == 3
  names = np.concatenate([b['image_name'] for b in batches])
  assert list(names) == [b'img0', b'img1', b'img2', b'img3', b'img4', b'']
  images = np.concatenate([b['image'] for b in batches])
  labels = np.concatenate([b['label'] for b in batches])
  assert images.dtype == np.float32 and labels.dtype == np.int32
  assert images.shape == (6, 8, 8, 3) and labels.shape == (6, 8, 8)
  for i, (image, label) in enumerate(pairs):
    np.testing.assert_array_equal(images[i, :6, :7], image)
    np.testing.assert_array_equal(labels[i, :6, :7], label)
    assert (labels[i, 6:] == 255).all() and (labels[i, :, 7:] == 255).all()
  assert (labels[5] == 255).all()


def test_eval_with_batch_multiple_adds_no_filler(five_images):
  pattern, _ = five_images
  batches = _eval_batches(_options(pattern, batch_size=5))
  assert len(batches) == 1 and b'' not in list(batches[0]['image_name'])


def test_eval_max_examples(five_images):
  pattern, _ = five_images
  options = _options(pattern, batch_size=2, max_examples=3)
  names = np.concatenate([b['image_name'] for b in _eval_batches(options)])
  assert list(names) == [b'img0', b'img1', b'img2', b'']


def test_eval_resize_longer_side(tmp_path):
  image = np.zeros([4, 8, 3], np.uint8)
  label = np.zeros([4, 8], np.uint8)
  label[:, 4:] = 1
  _write_records(tmp_path / 'a.tfrecord', [('a', image, label, 'png')])
  batch = _eval_batches(_options(tmp_path / 'a.tfrecord', batch_size=1,
                                 crop=(8, 16), resize_longer_side=16))[0]
  expected = np.full([8, 16], 255)
  expected[:8, :8] = 0
  expected[:8, 8:16] = 1
  np.testing.assert_array_equal(batch['label'][0], expected)


def test_eval_image_larger_than_crop_names_it(five_images):
  pattern, _ = five_images
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match='img0.*larger than crop_size'):
    _eval_batches(_options(pattern, crop=(4, 8)))


@pytest.mark.parametrize('dataset,stored,expected', [
    ('ade20k', [0, 1, 150], [255, 0, 149]),
    ('cityscapes', [0, 18, 255], [0, 18, 255]),
    ('synthetic', [0, 5, 255], [0, 5, 255]),
])
def test_label_mapping(tmp_path, dataset, stored, expected):
  label = np.array([stored], np.uint8)
  image = np.zeros([1, 3, 3], np.uint8)
  _write_records(tmp_path / 'a.tfrecord', [('a', image, label, 'png')])
  batch = _eval_batches(_options(tmp_path / 'a.tfrecord', dataset=dataset,
                                 batch_size=1, crop=(1, 3)))[0]
  np.testing.assert_array_equal(batch['label'][0, 0], expected)


@pytest.mark.parametrize('dataset,bad', [('ade20k', 151), ('cityscapes', 19),
                                         ('synthetic', 6),
                                         ('cityscapes', 256)])
def test_label_out_of_range_names_image(tmp_path, dataset, bad):
  label = np.array([[0, bad]], np.int32)
  image = np.zeros([1, 2, 3], np.uint8)
  _write_records(tmp_path / 'a.tfrecord',
                 [('bad_image_7', image, label, 'raw')])
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=f'bad_image_7.*outside.*{bad}'):
    _eval_batches(_options(tmp_path / 'a.tfrecord', dataset=dataset,
                           batch_size=1, crop=(1, 2)))


def test_label_size_mismatch_names_image(tmp_path):
  image = np.zeros([4, 4, 3], np.uint8)
  label = np.zeros([4, 3], np.uint8)
  _write_records(tmp_path / 'a.tfrecord', [('mismatch_1', image, label,
                                            'png')])
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match='mismatch_1 does not have the size of the image'):
    _eval_batches(_options(tmp_path / 'a.tfrecord', batch_size=1,
                           crop=(4, 4)))


def test_missing_files_name_the_pattern(tmp_path):
  with pytest.raises(FileNotFoundError, match='absent-'):
    input_pipeline.build_dataset(_options(tmp_path / 'absent-*'), True)


def test_bad_crop_size(five_images):
  pattern, _ = five_images
  options = _options(pattern)
  del options.crop_size[:]
  with pytest.raises(ValueError, match='crop_size'):
    input_pipeline.build_dataset(options, True)


def _training_options(pattern, **augment):
  options = _options(pattern, batch_size=3, crop=(8, 8),
                     shuffle_buffer_size=4)
  options.augmentations.CopyFrom(dataset_pb2.AugmentationOptions(**augment))
  return options


def _take(dataset, count):
  return [batch for _, batch in zip(range(count), dataset.as_numpy_iterator())]


def test_training_shapes_and_repeat(five_images):
  pattern, _ = five_images
  dataset = input_pipeline.build_dataset(_training_options(pattern), True)
  spec = dataset.element_spec
  assert spec['image'].shape == (3, 8, 8, 3)
  assert spec['label'].shape == (3, 8, 8)
  assert spec['image_name'].shape == (3,)
  batches = _take(dataset, 4)  # 12 examples from 5: it repeats.
  for batch in batches:
    assert batch['image'].min() >= 0 and batch['image'].max() <= 255
    assert set(np.unique(batch['label'])) <= {0, 1, 2, 3, 4, 5, 255}


def test_unset_repeat_follows_the_split_role(five_images):
  """Unset, a training split repeats and an evaluation split is read once."""
  pattern, _ = five_images
  options = _options(pattern, batch_size=2, crop=(8, 8))
  assert not options.HasField('repeat')
  assert input_pipeline.repeats(options, is_training=True)
  assert not input_pipeline.repeats(options, is_training=False)
  # 5 examples in batches of 2, the last completed by a filler: 3 batches.
  assert len(list(input_pipeline.build_dataset(options, False)
                  .as_numpy_iterator())) == 3
  options.repeat = False
  assert not input_pipeline.repeats(options, is_training=True)
  options.repeat = True
  assert input_pipeline.repeats(options, is_training=False)


def test_deterministic_mode_repeats_batches(five_images):
  pattern, _ = five_images
  augment = dict(deterministic=True, seed=7, min_scale_factor=0.5,
                 max_scale_factor=2.0, color_jitter_strength=0.5)
  first = _take(input_pipeline.build_dataset(
      _training_options(pattern, **augment), True), 3)
  second = _take(input_pipeline.build_dataset(
      _training_options(pattern, **augment), True), 3)
  for a, b in zip(first, second):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  augment['seed'] = 8
  third = _take(input_pipeline.build_dataset(
      _training_options(pattern, **augment), True), 3)
  assert any(not np.array_equal(a['image'], c['image'])
             for a, c in zip(first, third))


def test_training_augmentation_keeps_image_and_label_aligned(tmp_path):
  # The label is a function of the pixel, so a flip or crop that moved them
  # apart would show. Scale 1 and no jitter keep pixel values exact.
  rng = np.random.default_rng(0)
  examples = []
  for i in range(4):
    image = rng.integers(0, 256, [6, 10, 3], dtype=np.uint8)
    examples.append((f'i{i}', image, image[..., 0] % 6, 'png'))
  _write_records(tmp_path / 'a.tfrecord', examples)
  options = _training_options(tmp_path / 'a.tfrecord', min_scale_factor=1.0,
                              max_scale_factor=1.0, random_flip=True,
                              color_jitter_strength=0.0)
  for batch in _take(input_pipeline.build_dataset(options, True), 4):
    labelled = batch['label'] != 255
    assert labelled.sum() == 3 * 6 * 8  # Rows 6..7 are padding.
    np.testing.assert_array_equal(
        batch['image'][..., 0][labelled].astype(np.int64) % 6,
        batch['label'][labelled])
    assert (batch['image'][:, 6:] == 127.5).all()


def test_input_context_batch_and_sharding(five_images):
  pattern, _ = five_images
  names = []
  for pipeline_id in range(2):
    context = tf.distribute.InputContext(
        num_input_pipelines=2, input_pipeline_id=pipeline_id,
        num_replicas_in_sync=2)
    batches = _eval_batches(_options(pattern, batch_size=4),
                            input_context=context)
    assert all(b['image'].shape[0] == 2 for b in batches)
    names.extend(n for b in batches for n in b['image_name'] if n)
  # Two files, two pipelines: sharded by file, every image exactly once.
  assert sorted(names) == [b'img0', b'img1', b'img2', b'img3', b'img4']
  context = tf.distribute.InputContext(3, 1, 3)  # 3 pipelines > 2 files.
  batches = _eval_batches(_options(pattern, batch_size=3),
                          input_context=context)
  assert [n for b in batches for n in b['image_name'] if n] == [b'img1',
                                                                b'img4']
