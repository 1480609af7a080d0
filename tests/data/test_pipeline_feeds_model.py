"""The input pipeline's batches feed the real model's training step.

A synthetic split at 64x64 through build_dataset (training, with the
default experiment's augmentation) into the default experiment's model,
shrunk to a 4x4 superpixel grid: one gradient step gives a finite loss and
updates the weights.
"""

import numpy as np
import tensorflow as tf

from deeplab_sp.data import dataset_info
from deeplab_sp.data import input_pipeline
from deeplab_sp.data import synthetic
from deeplab_sp.model import builder
import tiny_experiment

SIZE = 64


def test_one_training_step_on_pipeline_batch(tmp_path):
  synthetic.write_dataset(str(tmp_path), 6, 2, SIZE, SIZE, num_shards=1)
  options = tiny_experiment.options({
      'train_dataset_options.file_pattern': [str(tmp_path / 'train-*')],
      'train_dataset_options.batch_size': 2,
      'train_dataset_options.crop_size': [SIZE, SIZE],
      'model_options.superpixel_tokenization.grid_height': 4,
      'model_options.superpixel_tokenization.grid_width': 4,
  })
  dataset_options = options.train_dataset_options

  batch = next(iter(input_pipeline.build_dataset(dataset_options, True)))
  num_classes = dataset_info.get_dataset_info('synthetic').num_classes
  model = builder.build_model(options.model_options, num_classes,
                              input_size=(SIZE, SIZE))
  with tf.GradientTape() as tape:
    logits = model(batch['image'], training=True)['semantic_logits']
    labelled = batch['label'] != dataset_info.IGNORE_LABEL
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(
        tf.where(labelled, batch['label'], 0), logits)
    loss = tf.reduce_sum(tf.where(labelled, losses, 0.0)) / tf.reduce_sum(
        tf.cast(labelled, tf.float32))
  assert logits.shape == (2, SIZE, SIZE, num_classes)
  assert np.isfinite(loss.numpy())
  variables = model.trainable_variables
  gradients = tape.gradient(loss, variables)
  before = [v.numpy() for v in variables]
  for variable, gradient in zip(variables, gradients):
    if gradient is not None:
      variable.assign_sub(0.1 * tf.convert_to_tensor(gradient))
  changed = sum(not np.array_equal(b, v.numpy())
                for b, v in zip(before, variables))
  assert changed > len(variables) // 2
