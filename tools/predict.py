"""Predicts label maps (and superpixel overlays) for image files.

Runs an exported SavedModel (--saved_model) or a config plus checkpoint
(--config_file and --checkpoint_path) on --images and writes one label map
per image into --output_dir, as --output_format says:
  color      <name>_color.png: RGB in the dataset's colours (default);
  train_ids  <name>_trainIds.png: one channel, the class index;
  label_ids  <name>_labelIds.png: one channel, Cityscapes labelIds, what the
             official Cityscapes evaluation and test server score.
With --overlay_dir, <name>_superpixels.png (the image with superpixel
boundaries; not for the per-pixel baselines) goes there; it must not be
inside --output_dir. An unreadable image, or an output that would replace
an input image (e.g. --output_dir is the images' directory and holds
a_color.png), stops the run, naming the file, before anything is written.

Examples:
  .venv/bin/python tools/predict.py --saved_model=exported/tiny/1 \
    --images="photos/*.png" --output_dir=predictions \
    --overlay_dir=superpixels
  .venv/bin/python tools/predict.py \
    --config_file=configs/cityscapes/sp_transformer_r50.textproto \
    --checkpoint_path=work_dirs/experiments/cityscapes_sp_transformer_r50 \
    --images="/data/cityscapes/leftImg8bit/val/*/*.png" \
    --output_format=label_ids --output_dir=work_dirs/cityscapes_val
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
_CONFIG_OVERRIDE = cli.define_config_override('With --config_file only.')
_CHECKPOINT_PATH = flags.DEFINE_string(
    'checkpoint_path', None, 'Checkpoint prefix or directory (with '
    '--config_file).')
_IMAGES = flags.DEFINE_list(
    'images', None, 'Comma-separated image files or globs (JPEG, PNG, BMP, '
    'GIF).', required=True)
_OUTPUT_DIR = flags.DEFINE_string(
    'output_dir', None, 'Directory for the label maps, one PNG per image '
    '(created).', required=True)
_OUTPUT_FORMAT = flags.DEFINE_enum(
    'output_format', predict_lib.COLOR, predict_lib.OUTPUT_FORMATS,
    'color: RGB in the dataset\'s colours; train_ids: one channel, the class '
    'index; label_ids: one channel, Cityscapes labelIds (the official '
    'evaluation\'s and test server\'s format; Cityscapes models only).')
_OVERLAY_DIR = flags.DEFINE_string(
    'overlay_dir', None, 'Directory for the images with superpixel '
    'boundaries drawn on them (created; not inside --output_dir). Default: '
    'none written.')
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
  if _SAVED_MODEL.value and _CONFIG_OVERRIDE.value:
    # The SavedModel was built from its config at export time; an override
    # here would be silently ignored.
    raise ValueError('--config_override: applies to --config_file, not '
                     '--saved_model (its config was fixed at export); '
                     'remove it, or pass it to tools/export_model.py.')
  files = predict_lib.expand_images(_IMAGES.value)
  # Also done by predict_files; here it is said before the model loads.
  predict_lib.check_outputs(files, predict_lib.planned_outputs(
      files, _OUTPUT_DIR.value, _OUTPUT_FORMAT.value, _OVERLAY_DIR.value))
  if _SAVED_MODEL.value:
    model = predict_lib.load_saved_model(_SAVED_MODEL.value)
  else:
    model = predict_lib.load_checkpoint(_CONFIG_FILE.value,
                                        _CHECKPOINT_PATH.value,
                                        _MAX_INPUT_PIXELS.value,
                                        overrides=_CONFIG_OVERRIDE.value)
  predict_lib.predict_files(model, files, _OUTPUT_DIR.value,
                            _OUTPUT_FORMAT.value, _OVERLAY_DIR.value,
                            _MAX_INPUT_PIXELS.value)
  overlays = (f' and {len(files)} overlays to {_OVERLAY_DIR.value}'
              if _OVERLAY_DIR.value else '')
  print(f'Wrote {len(files)} label maps ({_OUTPUT_FORMAT.value}) to '
        f'{_OUTPUT_DIR.value}{overlays}')


if __name__ == '__main__':
  app.run(cli.main_with_clear_errors('predict', main))
