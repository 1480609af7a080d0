"""Exports a trained model (SP-Transformer or baseline): SavedModel/ONNX/TFLite.

--format=saved_model (default) writes <output_path>/<version>/ (TF Serving's
layout) with the signatures serving_default (encoded JPEG/PNG bytes),
serving_float (float RGB images of any size) and serving_image_tensor
(uint8 RGB images of any size), and the experiment config as the asset
assets/experiment.textproto; see deeplab_sp/export/export_lib.py.
tools/inspect_export.py prints what an export is.

--format=onnx and --format=tflite write one file (--output_path) holding
the model at one fixed input size (--input_size, default the config's crop
size) and batch size: input 'images' float32 [B, H, W, 3] RGB 0..255,
outputs 'semantic_logits', 'semantic' (the label map) and
'superpixel_ids'; see deeplab_sp/export/fixed_size.py. ONNX holds standard
ONNX operators only, TFLite built-in operators only. Before writing, the
file is run with onnxruntime / LiteRT and TensorFlow on a random image, and
nothing is written if their logits differ beyond float round-off. Needs the
optional extra: pip install -e ".[interop]".

--format=tflite --precision=float16 stores the weights as float16;
--precision=int8 quantizes weights and activations, calibrated on
--representative_images images of the config's training records. Both keep
float32 inputs and outputs; their check reports the share of pixels whose
label equals TensorFlow's instead of requiring round-off equality.

Examples:
  .venv/bin/python tools/export_model.py \
    --config_file=configs/synthetic/sp_transformer_tiny.textproto \
    --checkpoint_path=work_dirs/synthetic_sp_transformer_tiny \
    --output_path=exported/sp_transformer_tiny
  .venv/bin/python tools/inspect_export.py \
    --saved_model=exported/sp_transformer_tiny/1

  .venv/bin/python tools/export_model.py --format=onnx \
    --config_file=configs/synthetic/sp_transformer_tiny.textproto \
    --checkpoint_path=work_dirs/synthetic_sp_transformer_tiny \
    --output_path=exported/sp_transformer_tiny.onnx
  .venv/bin/python tools/export_model.py --format=tflite --precision=int8 \
    --config_file=configs/synthetic/sp_transformer_tiny.textproto \
    --checkpoint_path=work_dirs/synthetic_sp_transformer_tiny \
    --output_path=exported/sp_transformer_tiny_int8.tflite
"""

# First, before anything loads TensorFlow: hides its start-up log lines
# unless TF_CPP_MIN_LOG_LEVEL is set (deeplab_sp/utils/tf_startup.py).
from deeplab_sp.utils import tf_startup  # pylint: disable=g-bad-import-order,unused-import

from absl import app
from absl import flags

from deeplab_sp import experiment as experiment_lib
from deeplab_sp.export import export_lib
from deeplab_sp.export import fixed_size
from deeplab_sp.export import image_header
from deeplab_sp.export import onnx_export
from deeplab_sp.export import tflite_export
from deeplab_sp.utils import cli

SAVED_MODEL, ONNX, TFLITE = 'saved_model', 'onnx', 'tflite'

_FORMAT = flags.DEFINE_enum(
    'format', SAVED_MODEL, [SAVED_MODEL, ONNX, TFLITE],
    'saved_model: a TF Serving SavedModel (any image size, encoded or float '
    'images). onnx / tflite: one file of the model at a fixed input size '
    '(needs pip install -e ".[interop]").')
_CONFIG_FILE = flags.DEFINE_string(
    'config_file', None, 'Experiment .textproto the checkpoint was trained '
    'with (model and dataset options).', required=True)
_CONFIG_OVERRIDE = cli.define_config_override()
_CHECKPOINT_PATH = flags.DEFINE_string(
    'checkpoint_path', None, 'Checkpoint prefix (.../ckpt-1500) or the '
    'directory holding checkpoints (its latest one is used).', required=True)
_OUTPUT_PATH = flags.DEFINE_string(
    'output_path', None, 'saved_model: the model base directory; the '
    'SavedModel goes to <output_path>/<version>/. onnx / tflite: the file '
    'to write (e.g. model.onnx, model.tflite).', required=True)
_OVERWRITE = flags.DEFINE_bool(
    'overwrite', False, 'Replace <output_path>/<version> (saved_model) or '
    'the output file (onnx, tflite) if it exists.')
_VERSION = flags.DEFINE_integer(
    'version', None, 'saved_model only. Version number (a positive '
    'integer); default: one more than the largest existing version, or 1.')
_INCLUDE_PROBABILITIES = flags.DEFINE_bool(
    'include_probabilities', False, "saved_model only. Add the output "
    "'probabilities' [B, H, W, num_classes] (large).")
_INCLUDE_SUPERPIXEL_IDS = flags.DEFINE_bool(
    'include_superpixel_ids', True, "saved_model only. Add the output "
    "'superpixel_ids' [B, H, W] (hard superpixel assignment). Models without "
    'superpixels (the per-pixel baselines) never have it.')
_DEEPLAB2_OUTPUT_NAMES = flags.DEFINE_bool(
    'deeplab2_output_names', True, "saved_model only. Add DeepLab2's names "
    "of the outputs as aliases: 'semantic_pred' (= 'semantic') and, with "
    "--include_probabilities, 'semantic_probs' (= 'probabilities'). The "
    'same tensors, but a TF Serving answer carries every output name: leave '
    "them out to send 'semantic' (and 'probabilities') once.")
_MAX_INPUT_PIXELS = flags.DEFINE_integer(
    'max_input_pixels', image_header.DEFAULT_MAX_INPUT_PIXELS,
    'saved_model only. Largest image (height * width pixels) the signatures '
    'accept; larger ones are refused with InvalidArgument before decoding '
    '(the size is read from the JPEG/PNG/GIF/BMP header). Bounds the memory '
    'of one request. Default 4096*4096.')
_MAX_BATCH_PIXELS = flags.DEFINE_integer(
    'max_batch_pixels', None, 'saved_model only. Largest batch the '
    'signatures accept, as batch size x largest height x largest width '
    '(the outputs are padded to the largest height and width of the batch); '
    'larger ones are refused with InvalidArgument before decoding. Default '
    '4 x --max_input_pixels.')
_INPUT_SIZE = flags.DEFINE_list(
    'input_size', None, 'onnx / tflite only. HEIGHT,WIDTH of the exported '
    "model's input; default: the config's crop size (eval dataset, else "
    'train dataset). Must be a multiple of hypercolumn.output_stride times '
    'the superpixel grid.')
_BATCH_SIZE = flags.DEFINE_integer(
    'batch_size', 1, 'onnx / tflite only. Batch size of the exported '
    "model's input.")
_ONNX_OPSET = flags.DEFINE_integer(
    'onnx_opset', onnx_export.DEFAULT_OPSET, 'onnx only. ONNX opset.')
_PRECISION = flags.DEFINE_enum(
    'precision', tflite_export.FLOAT32, list(tflite_export.PRECISIONS),
    'tflite only. float32: the model as trained. float16: weights stored '
    'as float16. int8: weights and activations quantized, calibrated on '
    '--representative_images images of the training records.')
_REPRESENTATIVE_IMAGES = flags.DEFINE_integer(
    'representative_images', tflite_export.DEFAULT_REPRESENTATIVE_IMAGES,
    'tflite --precision=int8 only. Images of the config\'s training records '
    '(train_dataset_options) that calibrate the activations.')
_VERIFY = flags.DEFINE_bool(
    'verify', True, 'onnx / tflite only. Run the converted model with '
    'onnxruntime / LiteRT and TensorFlow on a random image and write '
    'nothing if the logits differ beyond float round-off.')

_SAVED_MODEL_FLAGS = (_VERSION, _INCLUDE_PROBABILITIES,
                      _INCLUDE_SUPERPIXEL_IDS, _DEEPLAB2_OUTPUT_NAMES,
                      _MAX_INPUT_PIXELS, _MAX_BATCH_PIXELS)
_FIXED_SIZE_FLAGS = (_INPUT_SIZE, _BATCH_SIZE, _ONNX_OPSET, _VERIFY,
                     _PRECISION, _REPRESENTATIVE_IMAGES)
# Flags of one fixed-size format only.
_ONLY_FOR = {_ONNX_OPSET.name: ONNX, _PRECISION.name: TFLITE,
             _REPRESENTATIVE_IMAGES.name: TFLITE}


def _check_flags_of_format(export_format: str) -> None:
  """Refuses flags that do not apply to the chosen --format."""
  own = _SAVED_MODEL_FLAGS if export_format == SAVED_MODEL else (
      _FIXED_SIZE_FLAGS)
  own = {flag.name for flag in own
         if _ONLY_FOR.get(flag.name, export_format) == export_format}
  given = [f'--{flag.name}' for flag in _SAVED_MODEL_FLAGS + _FIXED_SIZE_FLAGS
           if flag.name not in own and flags.FLAGS[flag.name].present]
  if given:
    raise ValueError(f'{", ".join(given)}: not used by '
                     f'--format={export_format}; remove it (see --help).')
  if (_REPRESENTATIVE_IMAGES.present and
      _PRECISION.value != tflite_export.INT8):
    raise ValueError('--representative_images: only --precision=int8 is '
                     'calibrated; remove it.')


def _input_size():
  if _INPUT_SIZE.value is None:
    return None
  try:
    return [int(value) for value in _INPUT_SIZE.value]
  except ValueError:
    raise ValueError('--input_size must be HEIGHT,WIDTH in pixels, got '
                     f'{",".join(_INPUT_SIZE.value)}.') from None


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  export_format = _FORMAT.value
  _check_flags_of_format(export_format)
  if export_format == SAVED_MODEL:
    exported = export_lib.export_from_config(
        _CONFIG_FILE.value, _CHECKPOINT_PATH.value, _OUTPUT_PATH.value,
        _VERSION.value, _OVERWRITE.value, _INCLUDE_PROBABILITIES.value,
        _INCLUDE_SUPERPIXEL_IDS.value, _MAX_INPUT_PIXELS.value,
        _MAX_BATCH_PIXELS.value, overrides=_CONFIG_OVERRIDE.value,
        include_deeplab2_names=_DEEPLAB2_OUTPUT_NAMES.value)
  else:
    output_path = _OUTPUT_PATH.value
    # Before the model is built: a wrong path or a missing extra is said
    # at once.
    fixed_size.check_output_file(output_path, _OVERWRITE.value)
    if export_format == ONNX:
      onnx_export.require_packages(_VERIFY.value)
    else:
      tflite_export.require_packages(_VERIFY.value, _PRECISION.value)
    experiment = experiment_lib.load_experiment(
        _CONFIG_FILE.value, mode=None, overrides=_CONFIG_OVERRIDE.value)
    module = fixed_size.build_fixed_size_module(
        experiment, _CHECKPOINT_PATH.value, _input_size(), _BATCH_SIZE.value)
    if export_format == ONNX:
      exported = onnx_export.export_onnx(
          module, output_path, _OVERWRITE.value, _ONNX_OPSET.value,
          _VERIFY.value)
    else:
      calibration = None
      if _PRECISION.value == tflite_export.INT8:
        calibration = tflite_export.representative_images(
            experiment, module, _REPRESENTATIVE_IMAGES.value)
      exported = tflite_export.export_tflite(
          module, output_path, _OVERWRITE.value, _VERIFY.value,
          _PRECISION.value, calibration)
    print(f'Input: {fixed_size.INPUT_NAME} float32 '
          f'{list(module.input_shape)} (RGB 0..255); outputs: '
          f'{", ".join(fixed_size.OUTPUT_NAMES)}.')
  print(f'Exported to {exported}')


if __name__ == '__main__':
  app.run(cli.main_with_clear_errors('export_model', main,
                                     extra_errors=(ImportError,)))
