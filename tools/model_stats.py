"""Prints parameter counts per component and FLOPs of an SP-Transformer config.

Usage (from the repo root):
  .venv/bin/python tools/model_stats.py \
      --config_file=configs/cityscapes/sp_transformer_r50.textproto [--format=json]

Counts are compared with the paper (arXiv 2309.16889, Tables I-III). FLOPs are
measured at the config's evaluation crop size with batch 1.
"""

from absl import app
from absl import flags
from google.protobuf import text_format
import tensorflow as tf

from deeplab_sp.data import dataset_info
from deeplab_sp.model import model_stats
from deeplab_sp.protos import config_pb2

_CONFIG_FILE = flags.DEFINE_string(
    'config_file', None, 'Experiment text proto (e.g. '
    'configs/cityscapes/sp_transformer_r50.textproto).', required=True)
_FORMAT = flags.DEFINE_enum('format', 'text', ['text', 'json'],
                            'text: a readable table; json: keys total_params, '
                            'components (name -> params) and flops.')
_NO_FLOPS = flags.DEFINE_bool('skip_flops', False,
                              'Only count parameters (much faster).')


def main(argv):
  del argv
  if not tf.io.gfile.exists(_CONFIG_FILE.value):
    raise FileNotFoundError(f'--config_file {_CONFIG_FILE.value!r} does not '
                            'exist; pass a file under configs/.')
  with tf.io.gfile.GFile(_CONFIG_FILE.value) as f:
    options = text_format.Parse(f.read(), config_pb2.ExperimentOptions())
  # Parameter counts do not depend on pretrained weights; do not load them.
  options.model_options.encoder.pretrained_weights = ''
  eval_options = options.eval_dataset_options
  num_classes = dataset_info.get_dataset_info(eval_options.dataset).num_classes
  input_size = tuple(eval_options.crop_size)
  stats = model_stats.compute_model_stats(options, num_classes, input_size,
                                          with_flops=not _NO_FLOPS.value)
  print(model_stats.format_stats(stats, _FORMAT.value))


if __name__ == '__main__':
  app.run(main)
