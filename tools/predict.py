"""Predicts label maps and superpixels for image files.

Runs an exported SavedModel (--saved_model) or a config plus checkpoint
(--config_file and --checkpoint_path) on --images and writes, per image,
<name>_labels.png (colour-coded label map) and <name>_superpixels.png (the
image with superpixel boundaries; only for a model with superpixels, not
the per-pixel baselines) into --output_dir. An unreadable image stops the
run, naming the file, before anything is written.

Examples:
  .venv/bin/python tools/predict.py --saved_model=exported/tiny/1 \
    --images="photos/*.png" --output_dir=predictions
  .venv/bin/python tools/predict.py \
    --config_file=configs/synthetic/sp_transformer_tiny.textproto \
    --checkpoint_path=work_dirs/synthetic_sp_transformer_tiny \
    --images=a.jpg,b.png --output_dir=predictions
"""

# First, before anything loads TensorFlow: hides its start-up log lines
# unless TF_CPP_MIN_LOG_LEVEL is set (deeplab_sp/utils/tf_startup.py).
from deeplab_sp.utils import tf_startup  # pylint: disable=g-bad-import-order,unused-import

from absl import app
from absl import flags

from deeplab_sp.export import image_header
from deeplab_sp.export import predict_lib
from deeplab_sp.utils import cli

_SAVED_MODEL = flags.DEFINE_string(
    'saved_model', None, 'SavedModel version directory from '
    'tools/export_model.py (e.g. exported/tiny/1).')
_CONFIG_FILE = flags.DEFINE_string(
    'config_file', None, 'Experiment .textproto (instead of --saved_model).')
_CHECKPOINT_PATH = flags.DEFINE_string(
    'checkpoint_path', None, 'Checkpoint prefix or directory (with '
    '--config_file).')
_IMAGES = flags.DEFINE_list(
    'images', None, 'Comma-separated image files or globs (JPEG, PNG, BMP, '
    'GIF).', required=True)
_OUTPUT_DIR = flags.DEFINE_string(
    'output_dir', None, 'Directory for the PNGs (created).', required=True)
_MAX_INPUT_PIXELS = flags.DEFINE_integer(
    'max_input_pixels', image_header.DEFAULT_MAX_INPUT_PIXELS,
    'Largest image (height * width) read; larger ones stop the run before '
    'decoding (the size is read from the file header). Default 4096*4096.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  use_checkpoint = _CONFIG_FILE.value or _CHECKPOINT_PATH.value
  if bool(_SAVED_MODEL.value) == bool(use_checkpoint) or (
      use_checkpoint and not (_CONFIG_FILE.value and _CHECKPOINT_PATH.value)):
    raise app.UsageError('Pass either --saved_model, or both --config_file '
                         'and --checkpoint_path.')
  files = predict_lib.expand_images(_IMAGES.value)
  if _SAVED_MODEL.value:
    predict, colormap = predict_lib.load_saved_model(_SAVED_MODEL.value)
  else:
    predict, colormap = predict_lib.load_checkpoint(_CONFIG_FILE.value,
                                                    _CHECKPOINT_PATH.value)
  written = predict_lib.predict_files(predict, colormap, files,
                                      _OUTPUT_DIR.value,
                                      _MAX_INPUT_PIXELS.value)
  print(f'Wrote {len(set(written))} files to {_OUTPUT_DIR.value}')


if __name__ == '__main__':
  app.run(cli.main_with_clear_errors('predict', main))
