r"""Converts ADE20K SceneParsing into DeepLab2-format TFRecord shards.

Reads ADEChallengeData2016/images/{training,validation}/*.jpg and
annotations/{training,validation}/*.png (values 0..150, 0 = unlabeled,
stored unchanged; the input pipeline maps 0 to ignore and 1..150 to
0..149). Writes train-0000i-of-0000n.tfrecord (training) and val-...
(validation) into --output_dir; a failure (missing annotation, unreadable
or truncated file, size mismatch, label value above 150) names the file and
leaves no partial shard.

Usage (from the repository root):

  .venv/bin/python tools/build_ade20k_data.py \
      --ade20k_root=/data/ADEChallengeData2016 --output_dir=data/ade20k
"""

# First, before anything loads TensorFlow: hides its start-up log lines
# unless TF_CPP_MIN_LOG_LEVEL is set (deeplab_sp/utils/tf_startup.py).
from deeplab_sp.utils import tf_startup  # pylint: disable=g-bad-import-order,unused-import

from absl import app
from absl import flags
from absl import logging

from deeplab_sp.data import ade20k
from deeplab_sp.utils import cli

_ROOT = flags.DEFINE_string(
    'ade20k_root', None, 'The ADEChallengeData2016 directory holding images/ '
    'and annotations/ (gs:// works).', required=True)
_OUTPUT_DIR = flags.DEFINE_string(
    'output_dir', None, 'Directory the shards are written to (created if '
    'missing), e.g. data/ade20k.', required=True)
_SPLITS = flags.DEFINE_list('splits', list(ade20k.DEFAULT_SPLITS),
                            'Comma-separated splits: train (the training '
                            'directory) and/or val (validation).')
_NUM_SHARDS = flags.DEFINE_integer('num_shards', 10, 'Shards per split.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.INFO)
  ade20k.build(_ROOT.value, _OUTPUT_DIR.value, _SPLITS.value,
               _NUM_SHARDS.value)


if __name__ == '__main__':
  app.run(cli.main_with_clear_errors('build_ade20k_data', main))
