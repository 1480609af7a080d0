"""The trainer with the real models (tiny_convnet) on in-memory data.

The generated-dataset input pipeline is replaced by trainer_testing's
in-memory dataset; the model (the tiny experiment's, built by train_lib's
default model_fn), loss, optimiser and loop are the real ones.
"""

import json

import pytest
import tensorflow as tf

from deeplab_sp.trainer import train_lib
import trainer_testing


@pytest.mark.slow
def test_real_model_trains_and_evaluates(tmp_path):
  options = trainer_testing.tiny_options(steps=20, crop=32, real_model=True)
  options.trainer_options.base_learning_rate = 0.005
  options.trainer_options.backbone_learning_rate_multiplier = 1.0
  results = train_lib.run_experiment(
      trainer_testing.experiment(options, 'train_and_eval'), str(tmp_path),
      dataset_fn=trainer_testing.make_dataset_fn())
  exp_dir = tmp_path / 'test_experiment'
  losses = {}
  for path in tf.io.gfile.glob(str(exp_dir / 'train' / 'events.*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag == 'loss':
          losses[event.step] = float(tf.make_ndarray(value.tensor))
  values = [losses[step] for step in sorted(losses)]
  assert len(values) == 4 and values[-1] < values[0], values
  assert tf.train.latest_checkpoint(str(exp_dir)).endswith('ckpt-20')
  with open(exp_dir / 'eval_results.json') as f:
    assert json.load(f) == results
  assert results['step'] == 20 and 0.0 <= results['miou'] <= 1.0
  # One history line per evaluation (every 10 steps), the last one equal to
  # eval_results.json, superpixel section included.
  history = [json.loads(line) for line in
             (exp_dir / 'eval_history.jsonl').read_text().splitlines()]
  assert [entry['step'] for entry in history] == [10, 20]
  assert history[-1]['miou'] == results['miou']
  assert history[-1]['superpixels'] == results['superpixels']


def _image_summary_tags(directory) -> set:
  tags = set()
  for path in tf.io.gfile.glob(str(directory / 'events.*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      tags.update(value.tag for value in event.summary.value)
  return tags


@pytest.mark.slow
@pytest.mark.parametrize('meta', ['HYPERCOLUMN_PIXEL_CLASSIFIER',
                                  'DEEPLABV3PLUS'])
def test_baseline_trains_and_evaluates_without_superpixels(tmp_path, meta):
  options = trainer_testing.tiny_options(steps=5, crop=32, real_model=True,
                                         meta_architecture=meta)
  results = train_lib.run_experiment(
      trainer_testing.experiment(options, 'train_and_eval'), str(tmp_path),
      dataset_fn=trainer_testing.make_dataset_fn())
  exp_dir = tmp_path / 'test_experiment'
  assert tf.train.latest_checkpoint(str(exp_dir)).endswith('ckpt-5')
  assert results['step'] == 5 and 0.0 <= results['miou'] <= 1.0
  # No superpixels: no section, in the results or the history.
  assert 'superpixels' not in results
  history = [json.loads(line) for line in
             (exp_dir / 'eval_history.jsonl').read_text().splitlines()]
  assert [entry['step'] for entry in history] == [5]
  assert 'superpixels' not in history[0]
  # Image summaries without the superpixel overlay.
  for split in ('train', 'eval'):
    tags = _image_summary_tags(exp_dir / f'{split}_images')
    assert tags == {f'{split}/input', f'{split}/prediction',
                    f'{split}/ground_truth'}, tags
