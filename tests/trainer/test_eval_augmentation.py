"""Tests of deeplab_sp/trainer/eval_augmentation.py (tiny SP-Transformer)."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from deeplab_sp.model import builder
from deeplab_sp.model import geometry
from deeplab_sp.protos import evaluator_pb2
from deeplab_sp.trainer import eval_augmentation
from deeplab_sp.trainer import evaluator as evaluator_lib
from deeplab_sp.trainer import metrics
import tiny_experiment
import trainer_testing

# 64x64 inputs, stride 4, a 4x4 grid: sizes must be multiples of 16, so the
# scales 0.5, 0.75, 1.25, 1.5 and 2 fit.
_SIZE = (64, 64)
_NUM_CLASSES = 5
_CLASS_NAMES = [f'class{i}' for i in range(_NUM_CLASSES)]
Augmentation = eval_augmentation.EvalAugmentation


@pytest.fixture(scope='module')
def model():
  tf_keras.utils.set_random_seed(3)
  options = tiny_experiment.model_options({
      'superpixel_tokenization.grid_height': 4,
      'superpixel_tokenization.grid_width': 4})
  return builder.build_model(options, _NUM_CLASSES, _SIZE)


def _images(seed=0, batch=2):
  # Not symmetric under a horizontal flip, so a flip changes the input.
  return tf.random.stateless_uniform([batch, *_SIZE, 3], [seed, 1], 0.0,
                                     255.0)


def _probabilities(model, images, size):
  logits = model(images, training=False)['semantic_logits']
  return tf.nn.softmax(tf.image.resize(logits, size, method='bilinear'))


def test_scaled_size_rounds_half_up():
  assert geometry.scaled_size((64, 96), 0.75) == (48, 72)
  assert geometry.scaled_size((360, 480), 1.25) == (450, 600)
  # 5 * 0.5 = 2.5 rounds up; 3 * 0.5 = 1.5 too (not to even).
  assert geometry.scaled_size((5, 3), 0.5) == (3, 2)


def test_empty_scales_mean_the_plain_evaluation():
  default = Augmentation.from_options(evaluator_pb2.EvaluatorOptions())
  assert default.scales == (1.0,) and not default.flip and default.is_plain
  options = evaluator_pb2.EvaluatorOptions(eval_scales=[0.75, 1.0],
                                           add_flipped_images=True)
  augmentation = Augmentation.from_options(options)
  assert augmentation.scales == (0.75, 1.0) and augmentation.flip
  assert augmentation.num_views == 4 and not augmentation.is_plain
  assert augmentation.as_dict() == {'eval_scales': [0.75, 1.0],
                                    'add_flipped_images': True}


def test_scale_one_without_flip_returns_the_models_logits(model):
  images = _images()
  scores, outputs = Augmentation((1.0,), False)(model, images)
  expected = model(images, training=False)
  np.testing.assert_array_equal(scores.numpy(),
                                expected['semantic_logits'].numpy())
  np.testing.assert_array_equal(outputs['superpixel_ids'].numpy(),
                                expected['superpixel_ids'].numpy())


def test_scores_are_the_mean_probabilities_of_the_views(model):
  images = _images()
  scores, outputs = Augmentation((0.5, 1.25), True)(model, images)
  assert outputs is None  # No view saw the input as it is.
  views = []
  for size in ((32, 32), (80, 80)):
    resized = tf.image.resize(images, size, method='bilinear')
    views.append(_probabilities(model, resized, _SIZE))
    flipped = model(tf.reverse(resized, [2]), training=False)
    views.append(tf.nn.softmax(tf.image.resize(
        tf.reverse(flipped['semantic_logits'], [2]), _SIZE,
        method='bilinear')))
  np.testing.assert_allclose(scores.numpy(),
                             np.mean([v.numpy() for v in views], axis=0),
                             rtol=1e-6, atol=1e-7)
  assert scores.shape == (2, *_SIZE, _NUM_CLASSES)
  np.testing.assert_allclose(scores.numpy().sum(-1), 1.0, rtol=1e-5)
  # With 1.0 among the scales, its view is the plain outputs.
  _, plain = Augmentation((0.5, 1.0), False)(model, images)
  np.testing.assert_array_equal(
      plain['superpixel_ids'].numpy(),
      model(images, training=False)['superpixel_ids'].numpy())


def test_flipped_views_make_the_prediction_flip_symmetric(model):
  images = _images(seed=4)
  flip = lambda x: tf.reverse(x, [2]).numpy()
  # The model alone is not flip-symmetric ...
  plain = model(images, training=False)['semantic_logits']
  plain_of_flipped = model(tf.reverse(images, [2]),
                           training=False)['semantic_logits']
  assert np.abs(plain_of_flipped.numpy() - flip(plain)).max() > 1e-3
  # ... the average with the flipped view is, exactly at scale 1.0.
  augmentation = Augmentation((1.0,), True)
  scores, _ = augmentation(model, images)
  scores_of_flipped, _ = augmentation(model, tf.reverse(images, [2]))
  np.testing.assert_array_equal(scores_of_flipped.numpy(), flip(scores))
  np.testing.assert_array_equal(
      tf.argmax(scores_of_flipped, -1).numpy(),
      flip(tf.argmax(scores, -1)))
  # At other scales up to the rounding of the bilinear resizes.
  augmentation = Augmentation((0.5, 1.0, 1.5), True)
  scores, _ = augmentation(model, images)
  scores_of_flipped, _ = augmentation(model, tf.reverse(images, [2]))
  np.testing.assert_allclose(scores_of_flipped.numpy(), flip(scores),
                             atol=1e-5)


def _dataset(seed=0):
  images = _images(seed, batch=4)
  labels = tf.random.stateless_uniform([4, *_SIZE], [seed, 2], 0,
                                       _NUM_CLASSES, dtype=tf.int32)
  return tf.data.Dataset.from_tensor_slices(
      {'image': images, 'label': labels}).batch(2)


def _evaluate(model, augmentation, superpixel_metrics=True):
  evaluator = evaluator_lib.Evaluator(
      tf.distribute.get_strategy(), model, _dataset(), _CLASS_NAMES,
      tf.Variable(1, dtype=tf.int64), superpixel_metrics=superpixel_metrics,
      log_every_batches=0, augmentation=augmentation)
  evaluator.evaluate(tf.constant(-1))
  return evaluator.last_results


def test_evaluation_with_scale_one_alone_equals_the_plain_one(model):
  plain = _evaluate(model, None)
  scale_one = _evaluate(model, Augmentation.from_options(
      evaluator_pb2.EvaluatorOptions(eval_scales=[1.0])))
  assert scale_one == plain
  assert plain['test_time_augmentation'] == {'eval_scales': [1.0],
                                             'add_flipped_images': False}
  assert 0.0 < plain['miou'] < 1.0


def test_evaluator_scores_the_augmented_prediction():
  # The stand-in per-pixel model (with a fixed grid of superpixel ids)
  # traces in a fraction of the SP-Transformer's time at every size.
  tf_keras.utils.set_random_seed(5)
  model = trainer_testing.StandInModel(_NUM_CLASSES)
  augmentation = Augmentation((0.5, 1.25), True)
  results = _evaluate(model, augmentation)
  confusion = metrics.ConfusionMatrix(_NUM_CLASSES)
  for batch in _dataset():
    scores, _ = augmentation(model, batch['image'])
    confusion.update(batch['label'], tf.argmax(scores, -1))
  expected = metrics.metrics_from_confusion_matrix(confusion.result())
  assert results['miou'] == pytest.approx(expected.miou, abs=1e-9)
  assert results['mean_class_accuracy'] == pytest.approx(
      expected.mean_class_accuracy, abs=1e-9)
  assert results['test_time_augmentation'] == {
      'eval_scales': [0.5, 1.25], 'add_flipped_images': True}
  # The superpixels are the model's at scale 1.0, not flipped: the same as
  # the plain evaluation's (a pass of their own, 1.0 not being a scale).
  plain = _evaluate(model, None)
  assert results['superpixels'] == plain['superpixels']
  assert results['miou'] != plain['miou']
