r"""Generates the 'synthetic' dataset (the default experiment's data).

Street-like scenes with six classes (ground, sky, building, pole, wire,
vehicle) whose colours and textures overlap, so that shape and layout decide
the class; the recipe is in deeplab_sp/data/synthetic.py. Writes
DeepLab2-format TFRecord shards `train-0000i-of-0000n.tfrecord` and
`val-...` into --output_dir. Same --seed, same dataset.

Usage (from the repository root):

  .venv/bin/python tools/build_synthetic_data.py \
      --output_dir=work_dirs/data/synthetic
"""

# First, before anything loads TensorFlow: hides its start-up log lines
# unless TF_CPP_MIN_LOG_LEVEL is set (deeplab_sp/utils/tf_startup.py).
from deeplab_sp.utils import tf_startup  # pylint: disable=g-bad-import-order,unused-import

from absl import app
from absl import flags
from absl import logging

from deeplab_sp.data import record_writer
from deeplab_sp.data import synthetic
from deeplab_sp.utils import cli

_OUTPUT_DIR = flags.DEFINE_string(
    'output_dir', None, 'Directory the TFRecord shards are written to '
    '(created if missing; gs:// works), e.g. work_dirs/data/synthetic.',
    required=True)
_NUM_TRAIN = flags.DEFINE_integer('num_train', synthetic.DEFAULT_NUM_TRAIN,
                                  'Number of training images.')
_NUM_VAL = flags.DEFINE_integer('num_val', synthetic.DEFAULT_NUM_VAL,
                                'Number of validation images.')
_HEIGHT = flags.DEFINE_integer('height', synthetic.DEFAULT_SIZE,
                               'Image height in pixels (>= 32).')
_WIDTH = flags.DEFINE_integer('width', synthetic.DEFAULT_SIZE,
                              'Image width in pixels (>= 32).')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the generator; the same '
                             'seed gives the same dataset.')
_NUM_SHARDS = flags.DEFINE_integer('num_shards', synthetic.DEFAULT_NUM_SHARDS,
                                   'Shards per split.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.INFO)
  counts = {'train': _NUM_TRAIN.value, 'val': _NUM_VAL.value}
  written = synthetic.write_dataset(
      _OUTPUT_DIR.value, num_train=counts['train'], num_val=counts['val'],
      height=_HEIGHT.value, width=_WIDTH.value, seed=_SEED.value,
      num_shards=_NUM_SHARDS.value)
  print(record_writer.format_summary(written, counts, _OUTPUT_DIR.value))


if __name__ == '__main__':
  app.run(cli.main_with_clear_errors('build_synthetic_data', main))
