"""The evaluator's `superpixels` section (trainer/superpixel_eval.py)."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from deeplab_sp.trainer import evaluator as evaluator_lib
from deeplab_sp.trainer import superpixel_eval
from deeplab_sp.trainer import superpixel_metrics

_CLASS_NAMES = ['a', 'b', 'c']
_SIZE = 8


def _examples(num_images=5, seed=0):
  rng = np.random.default_rng(seed)
  labels = np.kron(rng.integers(0, 3, size=(num_images, 2, 4)),
                   np.ones([1, 4, 2], np.int32)).astype(np.int32)
  labels[:, 0, :] = 255
  ids = np.kron(rng.integers(0, 6, size=(num_images, 4, 2)),
                np.ones([1, 2, 4], np.int32)).astype(np.int32)
  # The image's first pixel holds its index (the model looks ids up).
  images = np.zeros([num_images, _SIZE, _SIZE, 3], np.float32)
  images[:, 0, 0, 0] = np.arange(num_images)
  return images, labels, ids


class _FixedSuperpixels(tf_keras.Model):
  """Returns superpixel_ids[i] for image i (index in its first pixel)."""

  def __init__(self, ids):
    super().__init__()
    self.ids = tf.constant(ids)

  def call(self, images, training=False):
    index = tf.cast(images[:, 0, 0, 0], tf.int32)
    ids = tf.gather(self.ids, index)
    return {'semantic_logits': tf.one_hot(tf.zeros_like(ids), 3),
            'superpixel_ids': ids}


def _dataset(images, labels, batch_size=2):
  # Pads to whole batches with all-ignore examples, as the pipeline does.
  pad = -len(images) % batch_size
  images = np.concatenate([images, np.zeros([pad, *images.shape[1:]],
                                            np.float32)])
  labels = np.concatenate([labels, np.full([pad, *labels.shape[1:]], 255,
                                           np.int32)])
  return tf.data.Dataset.from_tensor_slices(
      {'image': images, 'label': labels}).batch(batch_size)


def _expected(labels, ids):
  accumulator = superpixel_metrics.SuperpixelMetricsAccumulator()
  accumulator.add_batch(ids, labels)
  return accumulator.result()


def test_superpixel_section_equals_the_numpy_metrics(tmp_path):
  images, labels, ids = _examples()
  evaluator = evaluator_lib.Evaluator(
      tf.distribute.get_strategy(), _FixedSuperpixels(ids),
      _dataset(images, labels), _CLASS_NAMES, tf.Variable(3, dtype=tf.int64),
      experiment_dir=str(tmp_path))
  scalars = evaluator.evaluate(tf.constant(-1))
  with open(tmp_path / evaluator_lib.EVAL_RESULTS_FILENAME) as f:
    saved = json.load(f)
  expected = _expected(labels, ids)
  assert saved['superpixels'] == pytest.approx(expected)
  assert saved['superpixels']['num_images'] == saved['num_images'] == 5
  assert saved == evaluator.last_results
  for name in superpixel_metrics.METRIC_NAMES:
    assert float(scalars[f'superpixels/{name}']) == pytest.approx(
        expected[name])
  # A second evaluation starts from an empty accumulator.
  evaluator.evaluate(tf.constant(-1))
  assert evaluator.last_results['superpixels'] == saved['superpixels']


def test_superpixel_metrics_can_be_turned_off(tmp_path):
  images, labels, ids = _examples(num_images=2)
  evaluator = evaluator_lib.Evaluator(
      tf.distribute.get_strategy(), _FixedSuperpixels(ids),
      _dataset(images, labels), _CLASS_NAMES, tf.Variable(3, dtype=tf.int64),
      superpixel_metrics=False)
  scalars = evaluator.evaluate(tf.constant(-1))
  assert 'superpixels' not in evaluator.last_results
  assert not any(name.startswith('superpixels/') for name in scalars)


class _PerPixel(tf_keras.Model):
  """Class 0 everywhere; no 'superpixel_ids' (a per-pixel baseline's dict)."""

  def call(self, images, training=False):
    return {'semantic_logits': tf.one_hot(
        tf.zeros(tf.shape(images)[:3], tf.int32), 3)}


def test_a_model_without_superpixels_has_no_section(tmp_path):
  images, labels, _ = _examples(num_images=3)
  evaluator = evaluator_lib.Evaluator(
      tf.distribute.get_strategy(), _PerPixel(), _dataset(images, labels),
      _CLASS_NAMES, tf.Variable(3, dtype=tf.int64),
      experiment_dir=str(tmp_path))
  scalars = evaluator.evaluate(tf.constant(-1))
  assert 'superpixels' not in evaluator.last_results
  assert not any(name.startswith('superpixels/') for name in scalars)
  assert evaluator.last_results['num_images'] == 3
  # Class 0 everywhere: its IoU is its share of the labelled pixels.
  valid = labels[labels != 255]
  assert evaluator.last_results['per_class_iou']['a'] == pytest.approx(
      np.mean(valid == 0))
  history = evaluator_lib.read_history(str(tmp_path))
  assert len(history) == 1 and 'superpixels' not in history[0]


def test_sum_over_workers_on_one_worker_is_the_identity():
  vector = np.array([3.0, 0.5, 2.0])
  strategy = tf.distribute.get_strategy()
  assert superpixel_eval.num_workers(strategy) == 1
  np.testing.assert_array_equal(
      superpixel_eval.sum_over_workers(strategy, vector), vector)


_MIRRORED_SCRIPT = textwrap.dedent('''
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices('CPU')[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, sys.argv[1])
    import test_superpixel_eval as t
    from deeplab_sp.trainer import evaluator as evaluator_lib
    strategy = tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])
    images, labels, ids = t._examples()
    with strategy.scope():
      model = t._FixedSuperpixels(ids)
    dataset = strategy.experimental_distribute_dataset(
        t._dataset(images, labels, batch_size=4))
    evaluator = evaluator_lib.Evaluator(
        strategy, model, dataset, t._CLASS_NAMES,
        tf.Variable(3, dtype=tf.int64))
    evaluator.evaluate(tf.constant(-1))
    print('RESULT', json.dumps(evaluator.last_results['superpixels']))
''')


@pytest.mark.slow
def test_mirrored_strategy_counts_every_replica():
  # 2 replicas of a batch of 4 (5 images and 3 padding examples).
  here = os.path.dirname(os.path.abspath(__file__))
  process = subprocess.run(
      [sys.executable, '-c', _MIRRORED_SCRIPT, here], capture_output=True,
      text=True, timeout=240, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
  assert process.returncode == 0, process.stderr[-3000:]
  line = [l for l in process.stdout.splitlines() if l.startswith('RESULT')]
  assert line, process.stdout[-2000:] + process.stderr[-2000:]
  _, labels, ids = _examples()
  assert json.loads(line[0][len('RESULT '):]) == pytest.approx(
      _expected(labels, ids))
