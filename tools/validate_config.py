r"""Checks an experiment config and prints a summary of its geometry.

Usage:
  python tools/validate_config.py \
      --config_file=configs/cityscapes/sp_transformer_r50.textproto \
      [--config_override='trainer_options { base_learning_rate: 1e-4 }']

Exit 0 with a short summary (dataset, crop, hypercolumn size, superpixel
grid, pixels per superpixel), or exit 1 with a message naming the file, the
line or field, and the fix.
"""

# First, before anything loads TensorFlow: hides its start-up log lines
# unless TF_CPP_MIN_LOG_LEVEL is set (deeplab_sp/utils/tf_startup.py).
from deeplab_sp.utils import tf_startup  # pylint: disable=g-bad-import-order,unused-import

import sys

from absl import app
from absl import flags

from deeplab_sp import experiment as experiment_lib
from deeplab_sp.utils import cli

_CONFIG_FILE = flags.DEFINE_multi_string(
    'config_file', None,
    'Path of a text ExperimentOptions (.textproto); repeat the flag to check '
    'several files.', required=True)
_MODE = flags.DEFINE_enum(
    'mode', 'train_and_eval', experiment_lib.MODES,
    'Mode the config will be used in; decides which datasets must have '
    'file patterns.')
_CONFIG_OVERRIDE = cli.define_config_override(
    'Applied to every --config_file; the summary shows the result.')


def main(argv):
  del argv  # Unused.
  failed = 0
  for path in _CONFIG_FILE.value:
    try:
      experiment = experiment_lib.load_experiment(
          path, mode=_MODE.value, overrides=_CONFIG_OVERRIDE.value)
    except experiment_lib.ConfigError as e:
      print(f'INVALID {e}', file=sys.stderr)
      failed += 1
      continue
    print(f'OK {path}')
    print('  ' + experiment.summary(with_path=False).replace('\n', '\n  '))
  return 1 if failed else 0


if __name__ == '__main__':
  app.run(cli.main_with_clear_errors('validate_config', main))
