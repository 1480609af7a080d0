"""The trainer with the real SP-Transformer (tiny_convnet) on in-memory data.

The generated-dataset input pipeline is replaced by testing_utils'
in-memory dataset; the model, loss, optimiser and loop are the real ones.
"""

import json

import pytest
import tensorflow as tf

from deeplab_sp import config as config_lib
from deeplab_sp.model import builder
from deeplab_sp.trainer import testing_utils
from deeplab_sp.trainer import train_lib


def _model_fn(options, num_classes):
  return builder.build_model(options.model_options, num_classes,
                             input_size=config_lib.model_input_size(options))


@pytest.mark.slow
def test_real_model_trains_and_evaluates(tmp_path):
  options = testing_utils.tiny_options(steps=20, crop=32)
  testing_utils.use_real_tiny_model(options)
  options.trainer_options.base_learning_rate = 0.005
  options.trainer_options.backbone_learning_rate_multiplier = 1.0
  config_lib.validate_experiment_options(options, mode='train_and_eval')
  results = train_lib.run_experiment(
      options, 'train_and_eval', str(tmp_path), model_fn=_model_fn,
      dataset_fn=testing_utils.make_dataset_fn())
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
