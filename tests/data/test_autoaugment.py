"""Tests of the AutoAugment colour augmentation (preprocessing.autoaugment)."""

import numpy as np
import pytest
import tensorflow as tf

import tiny_experiment
from deeplab_sp import experiment
from deeplab_sp.data import input_pipeline
from deeplab_sp.data import preprocessing
from deeplab_sp.data import tfrecord_format
from deeplab_sp.protos import dataset_pb2

# DeepLab2's data/preprocessing/autoaugment_policy.py, decoded: operations of
# its reduced search space, probabilities 0.2 * id, magnitudes x 0.2.
_DEEPLAB2_SIMPLE_POLICY_0_2 = (
    (('Sharpness', 0.4, 1.4), ('Brightness', 0.2, 2.0)),
    (('Equalize', 0.0, 1.8), ('Contrast', 0.2, 2.0)),
    (('Sharpness', 0.2, 1.8), ('Color', 0.2, 1.8)),
    (('Solarize', 0.2, 1.4), ('Equalize', 0.6, 1.8)),
    (('Sharpness', 0.2, 0.2), ('Equalize', 0.2, 1.4)),
)


def _image(seed=0, size=(16, 12)):
  rng = np.random.default_rng(seed)
  return tf.constant(rng.integers(0, 256, size + (3,)), tf.float32)


def test_policy_is_deeplab2s_kmax_policy():
  assert len(preprocessing.AUTOAUGMENT_POLICY) == 5
  for ours, theirs in zip(preprocessing.AUTOAUGMENT_POLICY,
                          _DEEPLAB2_SIMPLE_POLICY_0_2):
    for (name, prob, level), (name2, prob2, level2) in zip(ours, theirs):
      assert name == name2
      assert prob == pytest.approx(prob2) and level == pytest.approx(level2)


def test_deterministic_for_a_seed_and_in_range():
  image = _image()
  outputs = []
  for seed in range(12):
    first = preprocessing.autoaugment(image, tf.constant([seed, 1]))
    second = preprocessing.autoaugment(image, tf.constant([seed, 1]))
    np.testing.assert_array_equal(first.numpy(), second.numpy())
    assert first.dtype == tf.float32 and first.shape == image.shape
    assert first.numpy().min() >= 0 and first.numpy().max() <= 255
    outputs.append(first.numpy())
  # Some seeds change the image, and not all in the same way.
  changed = [o for o in outputs if not np.array_equal(o, image.numpy())]
  assert changed
  assert len({o.tobytes() for o in outputs}) > 2


def test_only_photometric_operations():
  with pytest.raises(ValueError, match='not photometric'):
    preprocessing.autoaugment(_image(), tf.constant([0, 0]),
                              policy=((('Rotate', 1.0, 5),),))


def test_training_with_autoaugment_keeps_labels():
  image = _image(1, (8, 8))
  label = tf.constant(np.random.default_rng(2).integers(0, 5, (8, 8)),
                      tf.int32)
  for seed in range(6):
    augmented, augmented_label = preprocessing.preprocess_for_training(
        image, label, (8, 8), tf.constant([seed, 3]),
        color_augmentation=preprocessing.AUTOAUGMENT)
    np.testing.assert_array_equal(augmented_label.numpy(), label.numpy())
    assert 0 <= augmented.numpy().min() and augmented.numpy().max() <= 255


def test_pipeline_applies_the_option(tmp_path):
  rng = np.random.default_rng(4)
  image = rng.integers(0, 256, [8, 8, 3], dtype=np.uint8)
  label = rng.integers(0, 5, [8, 8]).astype(np.uint8)
  with tf.io.TFRecordWriter(str(tmp_path / 'a.tfrecord')) as writer:
    writer.write(tfrecord_format.make_example(
        tfrecord_format.encode_image_png(image), 'png', 'a', 8, 8,
        tfrecord_format.encode_label_png(label), 'png').SerializeToString())
  options = dataset_pb2.DatasetOptions(
      dataset='synthetic', file_pattern=[str(tmp_path / 'a.tfrecord')],
      batch_size=1, crop_size=[8, 8])
  options.augmentations.CopyFrom(dataset_pb2.AugmentationOptions(
      min_scale_factor=1.0, max_scale_factor=1.0, random_flip=False,
      deterministic=True,
      color_augmentation=dataset_pb2.AUTOAUGMENT_SIMPLE_CLASSIFICATION))
  batches = list(input_pipeline.build_dataset(options, True).take(8)
                 .as_numpy_iterator())
  for batch in batches:
    np.testing.assert_array_equal(batch['label'][0], label)
  assert any(not np.array_equal(b['image'][0], image) for b in batches)


def test_setting_jitter_strength_with_autoaugment_is_a_config_error(
    tmp_path):
  options = tiny_experiment.options({
      'train_dataset_options.augmentations.color_augmentation':
          dataset_pb2.AUTOAUGMENT_SIMPLE_CLASSIFICATION,
      'train_dataset_options.augmentations.color_jitter_strength': 0.4,
  })
  path = tmp_path / 'bad.textproto'
  path.write_text(str(options))
  with pytest.raises(experiment.ConfigError,
                     match='color_jitter_strength.*remove'):
    experiment.load_experiment(str(path))
