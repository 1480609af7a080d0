r"""Measures the input pipeline's throughput (images/second) for a config.

Reads the experiment's train_dataset_options (or eval_dataset_options with
--split=eval), builds the tf.data pipeline as training does (decoding,
augmentation, batching) and prints the images per second over
--num_batches batches, without running a model. Build the data first (e.g.
tools/build_synthetic_data.py for the default experiment).

Usage (from the repository root):

  .venv/bin/python tools/benchmark_input_pipeline.py \
      --config_file=configs/synthetic/sp_transformer_tiny.textproto
"""

# First, before anything loads TensorFlow: hides its start-up log lines
# unless TF_CPP_MIN_LOG_LEVEL is set (deeplab_sp/utils/tf_startup.py).
from deeplab_sp.utils import tf_startup  # pylint: disable=g-bad-import-order,unused-import

import dataclasses
import json

from absl import app
from absl import flags

from deeplab_sp import experiment as experiment_lib
from deeplab_sp.analysis import pipeline_benchmark
from deeplab_sp.utils import cli

_CONFIG_FILE = flags.DEFINE_string(
    'config_file', None, 'Experiment config (text proto), e.g. '
    'configs/synthetic/sp_transformer_tiny.textproto.', required=True)
_CONFIG_OVERRIDE = cli.define_config_override()
_SPLIT = flags.DEFINE_enum('split', 'train', ['train', 'eval'],
                           'Time the training pipeline (train_dataset_options,'
                           ' with augmentation) or the evaluation one.')
_NUM_BATCHES = flags.DEFINE_integer('num_batches', 50,
                                    'Batches timed (after a short warm-up).')
_FORMAT = flags.DEFINE_enum('format', 'text', ['text', 'json'],
                            'Print a line of text or a JSON object.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  is_training = _SPLIT.value == 'train'
  options = experiment_lib.load_experiment(
      _CONFIG_FILE.value, mode='train' if is_training else 'eval',
      overrides=_CONFIG_OVERRIDE.value).options
  dataset_options = (options.train_dataset_options if is_training
                     else options.eval_dataset_options)
  result = pipeline_benchmark.measure_throughput(
      dataset_options, is_training, _NUM_BATCHES.value)
  if _FORMAT.value == 'json':
    print(json.dumps(dataclasses.asdict(result)))
  else:
    print(f'Input pipeline ({_SPLIT.value}, {_CONFIG_FILE.value}): '
          f'{result.images_per_second:.1f} images/second '
          f'({result.batches} batches of {result.batch_size} in '
          f'{result.seconds:.2f} s)')


if __name__ == '__main__':
  app.run(cli.main_with_clear_errors('benchmark_input_pipeline', main))
