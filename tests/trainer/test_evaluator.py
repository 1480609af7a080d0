"""The orbit Evaluator on hand-made predictions."""

import json
import math

import numpy as np
import tensorflow as tf
import tf_keras

from deeplab_sp.trainer import evaluator as evaluator_lib

# Hand-made ground truth and predictions of two 2x4 images, 4 classes.
_LABELS = np.array([[[0, 0, 1, 1], [2, 2, 255, 0]],
                    [[1, 1, 1, 255], [0, 0, 2, 2]]], np.int32)
_PREDICTIONS = np.array([[[0, 1, 1, 1], [2, 0, 3, 0]],
                         [[1, 1, 2, 0], [0, 0, 2, 2]]], np.int32)
_CLASS_NAMES = ['a', 'b', 'c', 'd']


class _FixedPredictions(tf_keras.Model):
  """Predicts _PREDICTIONS[i] for the image whose pixels all equal i."""

  def call(self, images, training=False):
    index = tf.cast(images[:, 0, 0, 0], tf.int32)  # [batch]
    predictions = tf.gather(tf.constant(_PREDICTIONS), index)
    logits = tf.one_hot(predictions, len(_CLASS_NAMES))  # [b, 2, 4, 4]
    return {'semantic_logits': logits,
            'superpixel_ids': tf.zeros_like(predictions)}


def _dataset():
  # Batch of 2: image 0, image 1, then image 0 again as an all-ignore
  # padding example (how the pipeline pads the last evaluation batch).
  images = np.stack([np.full([2, 4, 3], i, np.float32) for i in (0, 1, 0)])
  labels = np.concatenate([_LABELS, np.full([1, 2, 4], 255, np.int32)])
  return tf.data.Dataset.from_tensor_slices(
      {'image': images, 'label': labels}).batch(2)


def test_results_equal_the_hand_computed_confusion_matrix(tmp_path):
  # Rows = ground truth. Image 0: 0->0 x2, 0->1, 1->1 x2, 2->2, 2->0.
  # Image 1: 1->1 x2, 1->2, 0->0 x2, 2->2 x2 (its 255 pixel predicted 0
  # does not count).
  # IoU a = 4 / (5 + 5 - 4) = 2/3; b = 4 / (5 + 5 - 4) = 2/3;
  # c = 3 / (4 + 4 - 3) = 3/5; d: absent (only predicted on an ignored
  # pixel). Pixel accuracy = 11 / 14.
  strategy = tf.distribute.get_strategy()
  step = tf.Variable(7, dtype=tf.int64)
  evaluator = evaluator_lib.Evaluator(
      strategy, _FixedPredictions(), _dataset(), _CLASS_NAMES, step,
      experiment_dir=str(tmp_path))
  scalars = evaluator.evaluate(tf.constant(-1))
  with open(tmp_path / evaluator_lib.EVAL_RESULTS_FILENAME) as f:
    saved = json.load(f)
  assert saved == evaluator.last_results
  assert saved['step'] == 7
  assert saved['num_images'] == 2  # The padding example is not counted.
  assert saved['per_class_iou'] == {'a': 2 / 3, 'b': 2 / 3, 'c': 3 / 5,
                                    'd': None}
  assert math.isclose(saved['miou'], (2 / 3 + 2 / 3 + 3 / 5) / 3)
  assert math.isclose(saved['pixel_accuracy'], 11 / 14)
  assert saved['num_valid_pixels'] == 14
  assert math.isclose(float(scalars['miou']), saved['miou'], rel_tol=1e-6)
  assert 'iou/d' not in scalars and math.isclose(float(scalars['iou/c']), 0.6,
                                                 rel_tol=1e-6)
  assert not list(tmp_path.glob('*.tmp*'))  # Written atomically.

  # A second evaluation starts from an empty confusion matrix.
  evaluator.evaluate(tf.constant(-1))
  assert evaluator.last_results == saved


def test_progress_every_n_batches_and_one_history_line_each(tmp_path,
                                                            monkeypatch):
  lines = []

  def record(message, *args):
    if message.startswith('Evaluation: %d batches'):
      lines.append(message % args)

  monkeypatch.setattr(evaluator_lib.logging, 'info', record)
  step = tf.Variable(3, dtype=tf.int64)
  evaluator = evaluator_lib.Evaluator(
      tf.distribute.get_strategy(), _FixedPredictions(), _dataset(),
      _CLASS_NAMES, step, experiment_dir=str(tmp_path), log_every_batches=1,
      superpixel_metrics=False)
  evaluator.evaluate(tf.constant(-1))
  assert [line.split(' in ')[0] for line in lines] == [
      'Evaluation: 1 batches', 'Evaluation: 2 batches']
  step.assign(4)
  evaluator.evaluate(tf.constant(-1))
  history = evaluator_lib.read_history(str(tmp_path))
  assert [entry['step'] for entry in history] == [3, 4]
  assert history[0]['per_class_iou'] == evaluator.last_results['per_class_iou']
  # Whole lines only, each a JSON object; no temporary is left behind.
  text = (tmp_path / evaluator_lib.EVAL_HISTORY_FILENAME).read_text()
  assert text.endswith('\n') and text.count('\n') == 2
  assert sorted(p.name for p in tmp_path.iterdir()) == [
      'eval_history.jsonl', 'eval_results.json']


def test_class_accuracy_in_results_history_scalars_and_log(tmp_path,
                                                          monkeypatch):
  # The confusion matrix of the first test, rows = ground truth:
  # a: [4, 1, 0, 0], b: [0, 4, 1, 0], c: [1, 0, 3, 0], d: never labelled.
  # Accuracy a = 4/5, b = 4/5, c = 3/4; d absent (only predicted, on an
  # ignored pixel). Mean class accuracy = (4/5 + 4/5 + 3/4) / 3.
  tables = []

  def record(message, *args):
    if message.startswith('Evaluation at step'):
      tables.append(message % args)

  monkeypatch.setattr(evaluator_lib.logging, 'info', record)
  evaluator = evaluator_lib.Evaluator(
      tf.distribute.get_strategy(), _FixedPredictions(), _dataset(),
      _CLASS_NAMES, tf.Variable(5, dtype=tf.int64),
      experiment_dir=str(tmp_path), superpixel_metrics=False)
  scalars = evaluator.evaluate(tf.constant(-1))
  saved = json.loads(
      (tmp_path / evaluator_lib.EVAL_RESULTS_FILENAME).read_text())
  assert saved['per_class_accuracy'] == {'a': 4 / 5, 'b': 4 / 5, 'c': 3 / 4,
                                         'd': None}
  assert saved['mean_class_accuracy'] == (4 / 5 + 4 / 5 + 3 / 4) / 3
  # The plain evaluation, recorded as such.
  assert saved['test_time_augmentation'] == {'eval_scales': [1.0],
                                             'add_flipped_images': False}
  assert math.isclose(float(scalars['mean_class_accuracy']),
                      saved['mean_class_accuracy'], rel_tol=1e-6)
  assert math.isclose(float(scalars['accuracy/c']), 0.75, rel_tol=1e-6)
  assert 'accuracy/d' not in scalars
  history = evaluator_lib.read_history(str(tmp_path))
  assert history[0]['mean_class_accuracy'] == saved['mean_class_accuracy']
  assert history[0]['per_class_accuracy'] == saved['per_class_accuracy']
  (table,) = tables
  assert 'c                  60.00     75.00' in table
  assert 'mean class acc.    78.33' in table
