"""Runs a short stand-in training under a given strategy (test helper).

Run as a subprocess by test_distributed.py, because logical devices and
TF_CONFIG must be set before TensorFlow initialises:

  python tests/trainer/distributed_runner.py STRATEGY MODEL_DIR INIT_CKPT \
      [STEPS [MIXED_PRECISION]]

STRATEGY: 'single' (default strategy), 'mirrored' (2 logical CPUs) or
'multi_worker' (TF_CONFIG from the environment). Prints DONE at the end.
"""

import pathlib
import sys

from absl import logging

import tensorflow as tf


def main(strategy_name, model_dir, init_checkpoint, steps='6',
         mixed_precision='none'):
  logging.set_verbosity(logging.INFO)
  if strategy_name == 'mirrored':
    cpu = tf.config.list_physical_devices('CPU')[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])
  elif strategy_name == 'multi_worker':
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
  else:
    strategy = tf.distribute.get_strategy()
  # Imported after the device setup. tests/ holds the shared tiny config.
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
  from deeplab_sp.trainer import train_lib  # pylint: disable=g-import-not-at-top
  import trainer_testing  # pylint: disable=g-import-not-at-top

  options = trainer_testing.tiny_options(steps=int(steps))
  trainer = options.trainer_options
  trainer.steps_per_loop = 2
  trainer.save_summaries_steps = 2
  trainer.save_checkpoints_steps = 2
  trainer.save_image_summaries_steps = 0
  # The loss is per image (loss.py), so any percentage is split-independent;
  # test_replicas.py checks 20% on images with unequal valid pixels.
  trainer.top_k_percent_pixels = 100
  trainer.initial_checkpoint = init_checkpoint
  trainer.initial_checkpoint_parts = trainer.ALL
  trainer.mixed_precision = mixed_precision
  options.train_dataset_options.batch_size = 4
  train_lib.run_experiment(trainer_testing.experiment(options, 'train'),
                           model_dir, strategy=strategy,
                           model_fn=trainer_testing.stand_in_model_fn,
                           dataset_fn=trainer_testing.make_dataset_fn())
  print('DONE', flush=True)


if __name__ == '__main__':
  main(*sys.argv[1:6])
