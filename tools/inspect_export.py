r"""Prints what an exported SavedModel is.

Reads a version directory written by tools/export_model.py, without loading
its functions (fast, any size): the model's input size, the pixel limits of
its signatures, the class names, a summary of the experiment config stored
with it (assets/experiment.textproto; --full_config prints the whole text),
and each signature's inputs and outputs (name, dtype, shape). --json prints
the same as one JSON object. A missing or damaged directory is a one-line
error naming what is wrong.

Examples:
  .venv/bin/python tools/inspect_export.py \
    --saved_model=exported/sp_transformer_tiny/1
  .venv/bin/python tools/inspect_export.py \
    --saved_model=exported/sp_transformer_tiny/1 --json
"""

# First, before anything loads TensorFlow: hides its start-up log lines
# unless TF_CPP_MIN_LOG_LEVEL is set (deeplab_sp/utils/tf_startup.py).
from deeplab_sp.utils import tf_startup  # pylint: disable=g-bad-import-order,unused-import

import json

from absl import app
from absl import flags

from deeplab_sp.export import saved_model_info
from deeplab_sp.utils import cli

_SAVED_MODEL = flags.DEFINE_string(
    'saved_model', None, 'SavedModel version directory from '
    'tools/export_model.py (e.g. exported/tiny/1).', required=True)
_JSON = flags.DEFINE_bool(
    'json', False, 'Print one JSON object instead of text (the config as '
    'its summary and path; with --full_config, its text too).')
_FULL_CONFIG = flags.DEFINE_bool(
    'full_config', False, 'Print the stored experiment config in full.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  info = saved_model_info.describe(_SAVED_MODEL.value)
  config_text = (saved_model_info.config_text(info) if _FULL_CONFIG.value
                 else None)
  if _JSON.value:
    if _FULL_CONFIG.value:
      info['config_text'] = config_text
    print(json.dumps(info, indent=2))
    return
  print(saved_model_info.as_text(info))
  if _FULL_CONFIG.value:
    print(f'\n# {info["config_path"]}\n{config_text}' if config_text else
          '\n(no experiment config stored)')


if __name__ == '__main__':
  app.run(cli.main_with_clear_errors('inspect_export', main))
