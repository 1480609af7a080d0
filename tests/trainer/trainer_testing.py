"""Small stand-ins for tests of the trainer: a stand-in model and datasets.

`StandInModel` has the SPTransformer's output dict and `encoder` attribute
but no superpixels; `make_dataset_fn` yields learnable in-memory batches
(the label of a pixel is decided by its colour), so the trainer can be
tested without the real model and input pipeline. `tiny_options` is the
shared tiny experiment (tests/tiny_experiment.py) with short schedules.
"""

from typing import Optional

import numpy as np
import tensorflow as tf
import tf_keras

from deeplab_sp import experiment as experiment_lib
from deeplab_sp.data import dataset_info
from deeplab_sp.protos import config_pb2
import tiny_experiment

# Side of the square cells of the stand-in's fake superpixel grid.
STAND_IN_CELL = 4


class StandInModel(tf_keras.Model):
  """A 2-conv encoder and a 1x1 classifier with the SPTransformer outputs."""

  def __init__(self, num_classes: int, channels: int = 8, **kwargs):
    super().__init__(**kwargs)
    self.num_classes = num_classes
    self.encoder = tf_keras.Sequential([
        tf_keras.layers.Conv2D(channels, 3, padding='same', activation='relu',
                               name='encoder_conv1'),
        tf_keras.layers.LayerNormalization(name='encoder_norm'),
    ], name='encoder')
    self.classifier = tf_keras.layers.Conv2D(num_classes, 1,
                                             name='classifier')

  def call(self, images, training=False):
    # images: [batch, height, width, 3] float 0..255.
    features = self.encoder(images / 127.5 - 1.0, training=training)
    logits = tf.cast(self.classifier(features), tf.float32)  # [b, h, w, K]
    shape = tf.shape(images)
    height, width = shape[1], shape[2]
    rows = tf.range(height) // STAND_IN_CELL
    cols = tf.range(width) // STAND_IN_CELL
    ids = rows[:, None] * (width // STAND_IN_CELL) + cols[None, :]
    ids = tf.tile(ids[None], [shape[0], 1, 1])  # [b, h, w]
    return {
        'semantic_logits': logits,
        'superpixel_logits': logits[:, ::STAND_IN_CELL, ::STAND_IN_CELL],
        'association': tf.ones(tf.concat([shape[:3], [9]], 0)) / 9.0,
        'superpixel_ids': ids,
    }


def stand_in_model_fn(experiment: experiment_lib.Experiment) -> StandInModel:
  return StandInModel(experiment.num_classes)


def make_examples(num_images: int, size: int, num_classes: int,
                  seed: int = 0):
  """Images of random colour blocks; label = colour index (some ignored)."""
  rng = np.random.RandomState(seed)
  palette = rng.uniform(0, 255, size=[num_classes, 3]).astype(np.float32)
  blocks = rng.randint(0, num_classes, size=[num_images, size // 4, size // 4])
  labels = np.kron(blocks, np.ones([4, 4], np.int64)).astype(np.int32)
  images = palette[labels] + rng.normal(0, 5, labels.shape + (3,))
  labels[:, :2, :] = dataset_info.IGNORE_LABEL
  return np.clip(images, 0, 255).astype(np.float32), labels


def make_dataset_fn(num_images: int = 16, num_classes: int = 19,
                    seed: int = 0):
  """A dataset_fn(dataset_options, is_training, input_context) for tests."""

  def dataset_fn(dataset_options, is_training, input_context=None):
    size = dataset_options.crop_size[0]
    images, labels = make_examples(num_images, size, num_classes, seed)
    names = np.array([f'image_{i}' for i in range(num_images)])
    dataset = tf.data.Dataset.from_tensor_slices(
        {'image': images, 'label': labels, 'image_name': names})
    batch = dataset_options.batch_size
    if input_context is not None:
      dataset = dataset.shard(input_context.num_input_pipelines,
                              input_context.input_pipeline_id)
      batch = input_context.get_per_replica_batch_size(batch)
    if is_training:
      dataset = dataset.repeat()
    return dataset.batch(batch, drop_remainder=is_training)

  return dataset_fn


def tiny_options(steps: int = 20, crop: int = 16, real_model: bool = False,
                 meta_architecture: str = 'SP_TRANSFORMER'
                ) -> config_pb2.ExperimentOptions:
  """The tiny experiment on 'cityscapes' ids (19 classes), short schedules.

  The superpixel grid is 4x4, so crops of 16 pixels fit (the stand-in
  ignores the model options). `real_model`: the tiny model's FAST widths
  (tests/tiny_experiment.py) for tests that build the SP-Transformer; one
  layer per attention stack keeps its training test short.
  `meta_architecture`: start from that network's tiny config instead (the
  per-pixel baselines need crops that are multiples of 32).
  """
  overrides = {}
  if meta_architecture == 'SP_TRANSFORMER':
    overrides = {
        'model_options.superpixel_tokenization.grid_height': 4,
        'model_options.superpixel_tokenization.grid_width': 4,
        'model_options.superpixel_tokenization.num_layers': 1,
        'model_options.superpixel_classifier.num_layers': 1,
        'model_options.superpixel_classifier.num_heads': 2,
    }
  overrides.update({
      'experiment_name': 'test_experiment',
      'trainer_options.training_number_of_steps': steps,
      'trainer_options.base_learning_rate': 0.05,
      'trainer_options.warmup_steps': 2,
      'trainer_options.save_checkpoints_steps': 5,
      'trainer_options.num_checkpoints_to_keep': 5,
      'trainer_options.steps_per_loop': 5,
      'trainer_options.save_summaries_steps': 5,
      'trainer_options.log_steps': 5,
      'trainer_options.save_image_summaries_steps': 10,
      'trainer_options.backbone_learning_rate_multiplier': 0.1,
      'trainer_options.top_k_percent_pixels': 20,
      'trainer_options.random_seed': 1,
      'eval_dataset_options.repeat': False,
      'evaluator_options.eval_interval_steps': 10,
      'evaluator_options.num_vis_images': 2,
  })
  for field in ('train_dataset_options', 'eval_dataset_options'):
    overrides[f'{field}.dataset'] = 'cityscapes'
    overrides[f'{field}.file_pattern'] = ['unused']
    overrides[f'{field}.batch_size'] = 4
    overrides[f'{field}.crop_size'] = [crop, crop]
  return tiny_experiment.options(overrides, fast=real_model,
                                 meta_architecture=meta_architecture)


def experiment(options: config_pb2.ExperimentOptions,
               mode: Optional[str] = 'train_and_eval'
              ) -> experiment_lib.Experiment:
  """The Experiment of `options`, validated for `mode`."""
  return experiment_lib.experiment_from_options(options, mode=mode)
