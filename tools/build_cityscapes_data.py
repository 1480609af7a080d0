r"""Converts Cityscapes (gtFine) into DeepLab2-format TFRecord shards.

Reads leftImg8bit/{split}/{city}/*_leftImg8bit.png and, per image,
gtFine/{split}/{city}/*_gtFine_labelTrainIds.png if present, otherwise
*_gtFine_labelIds.png converted with the official label table (19 train
ids, everything else 255). Writes {split}-0000i-of-0000n.tfrecord into
--output_dir; a failure (missing label, unreadable or truncated file, size
mismatch, label value out of range) names the file and leaves no partial
shard.

Usage (from the repository root):

  .venv/bin/python tools/build_cityscapes_data.py \
      --cityscapes_root=/data/cityscapes --output_dir=data/cityscapes
"""

# First, before anything loads TensorFlow: hides its start-up log lines
# unless TF_CPP_MIN_LOG_LEVEL is set (deeplab_sp/utils/tf_startup.py).
from deeplab_sp.utils import tf_startup  # pylint: disable=g-bad-import-order,unused-import

from absl import app
from absl import flags
from absl import logging

from deeplab_sp.data import cityscapes
from deeplab_sp.utils import cli

_ROOT = flags.DEFINE_string(
    'cityscapes_root', None, 'The Cityscapes directory holding leftImg8bit/ '
    'and gtFine/ (gs:// works).', required=True)
_OUTPUT_DIR = flags.DEFINE_string(
    'output_dir', None, 'Directory the shards are written to (created if '
    'missing), e.g. data/cityscapes.', required=True)
_SPLITS = flags.DEFINE_list('splits', list(cityscapes.DEFAULT_SPLITS),
                            'Comma-separated splits to convert, e.g. '
                            'train,val.')
_NUM_SHARDS = flags.DEFINE_integer('num_shards', 10, 'Shards per split.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.INFO)
  cityscapes.build(_ROOT.value, _OUTPUT_DIR.value, _SPLITS.value,
                   _NUM_SHARDS.value)


if __name__ == '__main__':
  app.run(cli.main_with_clear_errors('build_cityscapes_data', main))
