"""Exports a trained model (SP-Transformer or baseline) for TF Serving.

Writes <output_path>/<version>/ (TF Serving's layout) with the signatures
serving_default (encoded JPEG/PNG bytes) and serving_float (float RGB
images); see deeplab_sp/export/export_lib.py for inputs, outputs and how
images of other sizes are handled.

Example:
  .venv/bin/python tools/export_model.py \
    --config_file=configs/synthetic/sp_transformer_tiny.textproto \
    --checkpoint_path=work_dirs/synthetic_sp_transformer_tiny \
    --output_path=exported/sp_transformer_tiny
  .venv/bin/saved_model_cli show --dir exported/sp_transformer_tiny/1 --all
"""

# First, before anything loads TensorFlow: hides its start-up log lines
# unless TF_CPP_MIN_LOG_LEVEL is set (deeplab_sp/utils/tf_startup.py).
from deeplab_sp.utils import tf_startup  # pylint: disable=g-bad-import-order,unused-import

from absl import app
from absl import flags

from deeplab_sp.export import export_lib
from deeplab_sp.export import image_header
from deeplab_sp.utils import cli

_CONFIG_FILE = flags.DEFINE_string(
    'config_file', None, 'Experiment .textproto the checkpoint was trained '
    'with (model and dataset options).', required=True)
_CHECKPOINT_PATH = flags.DEFINE_string(
    'checkpoint_path', None, 'Checkpoint prefix (.../ckpt-1500) or the '
    'directory holding checkpoints (its latest one is used).', required=True)
_OUTPUT_PATH = flags.DEFINE_string(
    'output_path', None, 'Model base directory; the SavedModel goes to '
    '<output_path>/<version>/.', required=True)
_VERSION = flags.DEFINE_integer(
    'version', None, 'Version number (a positive integer); default: one more '
    'than the largest existing version, or 1.')
_OVERWRITE = flags.DEFINE_bool(
    'overwrite', False, 'Replace <output_path>/<version> if it exists.')
_INCLUDE_PROBABILITIES = flags.DEFINE_bool(
    'include_probabilities', False, "Add the output 'probabilities' "
    '[B, H, W, num_classes] (large).')
_INCLUDE_SUPERPIXEL_IDS = flags.DEFINE_bool(
    'include_superpixel_ids', True, "Add the output 'superpixel_ids' "
    '[B, H, W] (hard superpixel assignment). Models without superpixels (the '
    'per-pixel baselines) never have it.')
_MAX_INPUT_PIXELS = flags.DEFINE_integer(
    'max_input_pixels', image_header.DEFAULT_MAX_INPUT_PIXELS,
    'Largest image (height * width pixels) the signatures accept; larger '
    'ones are refused with InvalidArgument before decoding (the size is read '
    'from the JPEG/PNG/GIF/BMP header). Bounds the memory of one request. '
    'Default 4096*4096.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  export_dir = export_lib.export_from_config(
      _CONFIG_FILE.value, _CHECKPOINT_PATH.value, _OUTPUT_PATH.value,
      _VERSION.value, _OVERWRITE.value, _INCLUDE_PROBABILITIES.value,
      _INCLUDE_SUPERPIXEL_IDS.value, _MAX_INPUT_PIXELS.value)
  print(f'Exported to {export_dir}')


if __name__ == '__main__':
  app.run(cli.main_with_clear_errors('export_model', main))
