r"""Prints the parameter count of each component and the FLOPs of a config.

Usage:
  python tools/model_stats.py \
      --config_file=configs/cityscapes/sp_transformer_r50.textproto [--format=json]

Components: the model's own; for the SP-Transformer encoder, hypercolumn,
tokenization, classifier, association; for the baselines encoder,
hypercolumn, pixel_classifier (HYPERCOLUMN_PIXEL_CLASSIFIER) or encoder,
aspp, decoder (DEEPLABV3PLUS). FLOPs are for one image at the config's
evaluation crop size. Compare with the paper's Table I/III (e.g. Cityscapes
ResNet-50: 29M params, 253G FLOPs).
"""

# First, before anything loads TensorFlow: hides its start-up log lines
# unless TF_CPP_MIN_LOG_LEVEL is set (deeplab_sp/utils/tf_startup.py).
from deeplab_sp.utils import tf_startup  # pylint: disable=g-bad-import-order,unused-import

import json

from absl import app
from absl import flags

from deeplab_sp.utils import cli
from deeplab_sp.analysis import model_stats

_CONFIG_FILE = flags.DEFINE_string('config_file', None,
                                   'Experiment config (.textproto).',
                                   required=True)
_CONFIG_OVERRIDE = cli.define_config_override()
_FORMAT = flags.DEFINE_enum('format', 'text', ['text', 'json'],
                            'Output format; json has keys total_params, '
                            'components (name -> params) and flops.')
_FLOPS = flags.DEFINE_bool('flops', True,
                           'Count FLOPs (builds and freezes the graph; takes '
                           'a while for the paper configs).')


def main(argv):
  del argv  # Unused.
  stats = model_stats.model_stats(_CONFIG_FILE.value, with_flops=_FLOPS.value,
                                  overrides=_CONFIG_OVERRIDE.value)
  if _FORMAT.value == 'json':
    print(json.dumps(stats, indent=2))
  else:
    print(model_stats.format_text(stats))


if __name__ == '__main__':
  app.run(cli.main_with_clear_errors('model_stats', main))
