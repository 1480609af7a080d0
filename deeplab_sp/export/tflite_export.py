"""TFLite export of the fixed-size model, with built-in operators only.

`to_tflite` converts FixedSizeModule.serve (fixed_size.py: inputs, outputs,
traced forms) with TensorFlow's TFLite converter restricted to TFLite's
built-in operators, so the model runs on the plain LiteRT runtime (no
TensorFlow "select" ops, no Flex delegate). `run_tflite` runs a model with
the LiteRT interpreter (the ai-edge-litert package, which replaces
tf.lite.Interpreter); `export_tflite` converts, checks the result against
TensorFlow on a test image, and writes the file.

Precisions (post-training quantization by TensorFlow's converter; the file
keeps float32 inputs and outputs, so callers do not change):
  float32  the model as trained; logits equal TensorFlow's to round-off.
  float16  weights stored as float16 (half their bytes), computed in
           float32 by LiteRT.
  int8     weights and activations in int8, the activations' ranges
           calibrated on representative images (`representative_images`:
           the config's training records); operators LiteRT has no int8
           kernel for stay float32 (`float_tensors` counts what stayed).
A reduced-precision file cannot equal TensorFlow to round-off: its check
logs how many pixels keep TensorFlow's label instead of refusing it.

The float conversions need only TensorFlow; the check, and the int8
conversion (which reads the float model's operators), need the optional
`interop` extra (ai-edge-litert).
"""

import itertools
import math
import warnings
from typing import Dict, Iterable, Iterator, List, Optional

from absl import logging
import numpy as np
import tensorflow as tf

from deeplab_sp import experiment as experiment_lib
from deeplab_sp.data import input_pipeline
from deeplab_sp.export import fixed_size
from deeplab_sp.utils import private_apis

# The signature of the converted model.
SIGNATURE = 'serving_default'

FLOAT32, FLOAT16, INT8 = 'float32', 'float16', 'int8'
PRECISIONS = (FLOAT32, FLOAT16, INT8)
# Images that calibrate an int8 model by default: enough for the ranges of
# the activations to settle on scenes of one dataset.
DEFAULT_REPRESENTATIVE_IMAGES = 32


def to_tflite(module: fixed_size.FixedSizeModule, precision: str = FLOAT32,
              calibration: Optional[Iterable[np.ndarray]] = None
              ) -> bytes:
  """The TFLite flatbuffer of `module.serve`, built-in operators only.

  Args:
    module: the FixedSizeModule.
    precision: one of PRECISIONS (see the module docstring).
    calibration: for INT8, batches float32 of the module's input shape (RGB
      in [0, 255]) that calibrate the activations' ranges
      (representative_images).

  Raises:
    ValueError: if the graph needs operators TFLite does not have built in
      (the converter's list of them); an unknown precision; INT8 without
      representative images.
  """
  if precision not in PRECISIONS:
    raise ValueError(f'--precision {precision!r} is not one of '
                     f'{", ".join(PRECISIONS)}.')
  logging.info('Converting to TFLite (built-in operators only, %s)',
               precision)
  if precision == FLOAT32:
    return _convert(_converter(module))
  if precision == FLOAT16:
    converter = _converter(module)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    return _convert(converter)
  batches = list(calibration or ())
  if not batches:
    raise ValueError('An int8 TFLite model needs representative images to '
                     'calibrate its activations; none were given.')
  converter = _converter(module)
  converter.optimizations = [tf.lite.Optimize.DEFAULT]
  converter.representative_dataset = lambda: ([batch] for batch in batches)
  kept_float = _nodes_without_int8_kernels(_convert(_converter(module)))
  if not kept_float:
    return _convert(converter)
  logging.info('Kept in float32 (no int8 kernel for them in LiteRT): %s',
               ', '.join(kept_float))
  # The converter's own way to leave chosen operators unquantized.
  try:
    return _quantized_leaving_out(converter, batches, kept_float)
  except private_apis.tflite_converter_error() as e:
    raise _converter_error(e) from None


def _quantized_leaving_out(converter, batches, kept_float) -> bytes:
  """The int8 model with the nodes `kept_float` in float32, made by the
  converter's QuantizationDebugger."""
  # It runs the model with tf.lite.Interpreter, whose deprecation warning
  # (use LiteRT, as run_tflite does) is TensorFlow's own business here.
  with warnings.catch_warnings():
    warnings.filterwarnings('ignore', category=UserWarning,
                            module='tensorflow')
    return tf.lite.experimental.QuantizationDebugger(
        converter=converter,
        debug_dataset=lambda: ([batch] for batch in batches[:1]),
        debug_options=tf.lite.experimental.QuantizationDebugOptions(
            denylisted_nodes=kept_float)).get_nondebug_quantized_model()


# LiteRT's int8 ADD and SUB broadcast over at most this many dimensions; a
# quantized one of higher rank (the local attention's [B, h, w, pixels,
# slots, heads] sums) aborts the interpreter instead of failing.
_INT8_MAX_BROADCAST_RANK = 5


def _nodes_without_int8_kernels(float_model: bytes) -> List[str]:
  """Names of the float model's ADD / SUB outputs of too high a rank."""
  interpreter = _litert().Interpreter(model_content=float_model)
  tensors = {t['index']: t for t in interpreter.get_tensor_details()}
  operators = private_apis.tflite_operators(interpreter)
  return [tensors[output]['name'] for op in operators
          if op['op_name'] in ('ADD', 'SUB') and
          max(len(tensors[i]['shape']) for i in op['inputs'] if i >= 0) >
          _INT8_MAX_BROADCAST_RANK
          for output in op['outputs']]


def _converter(module: fixed_size.FixedSizeModule) -> tf.lite.TFLiteConverter:
  converter = tf.lite.TFLiteConverter.from_concrete_functions(
      [module.serve.get_concrete_function()], module)
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
  return converter


def _convert(converter: tf.lite.TFLiteConverter) -> bytes:
  try:
    return converter.convert()
  except private_apis.tflite_converter_error() as e:
    raise _converter_error(e) from None


def _converter_error(error: Exception) -> ValueError:
  message = str(error)
  # The converter's summary line names the ops; the rest is its IR dump.
  summary = [line.strip() for line in message.splitlines()
             if 'TF Select ops' in line or 'not supported' in line]
  return ValueError(
      'The TFLite converter cannot express the model with built-in '
      f'operators: {" ".join(summary[:3]) or message[:500]}. Nothing was '
      'written. The model needs a portable form of these ops '
      '(deeplab_sp/model/kernels/portable_ops.py).')


def _litert():
  """LiteRT's interpreter module (the optional interop extra)."""
  return fixed_size.import_interop_package('ai_edge_litert.interpreter',
                                           'ai-edge-litert')


def require_packages(verify: bool = True, precision: str = FLOAT32) -> None:
  """Raises ImportError (naming the pip command) if a package is missing.

  Args:
    verify: the LiteRT interpreter is needed (to check the export); the
      conversion itself needs only TensorFlow.
    precision: INT8 needs the interpreter to convert (it reads the float
      model's operators).
  """
  if verify or precision == INT8:
    _litert()


def representative_images(experiment: experiment_lib.Experiment,
                          module: fixed_size.FixedSizeModule,
                          count: int = DEFAULT_REPRESENTATIVE_IMAGES
                          ) -> Iterator[np.ndarray]:
  """Batches of the config's training images at the module's input shape.

  Read in order, without augmentation (evaluation's preprocessing), from
  train_dataset_options (eval_dataset_options where the config has no
  training data); resized to the module's input size where the crop size
  differs. The last batch is completed with the first images.

  Raises:
    ValueError: count < 1, or a config without datasets.
    FileNotFoundError: the dataset's file_pattern matches no file.
  """
  if count < 1:
    raise ValueError(f'--representative_images must be at least 1, got '
                     f'{count}.')
  options = experiment.options
  dataset_options = (options.train_dataset_options
                     if options.HasField('train_dataset_options')
                     else options.eval_dataset_options)
  if not dataset_options.file_pattern:
    raise ValueError(
        f'{experiment.path}: an int8 TFLite model is calibrated on the '
        'training records (train_dataset_options.file_pattern), which the '
        'config does not name; add them, or export float32 or float16.')
  batch_size, height, width, _ = module.input_shape
  images = []
  for image, _ in input_pipeline.first_examples(dataset_options, count):
    if tuple(image.shape[:2]) != (height, width):
      image = tf.image.resize(image, (height, width)).numpy()
    images.append(image)
  if not images:
    raise ValueError(f'{experiment.path}: the records of file_pattern '
                     f'{list(dataset_options.file_pattern)} hold no image '
                     'to calibrate an int8 model with.')
  logging.info('Calibrating int8 on %d images of %s', len(images),
               ', '.join(dataset_options.file_pattern))
  cycled = itertools.cycle(images)
  for _ in range(math.ceil(len(images) / batch_size)):
    yield np.stack([next(cycled) for _ in range(batch_size)]).astype(
        np.float32)


def float_tensors(model: bytes) -> Dict[str, int]:
  """{'float32': n, 'total': m}: n of the model's m tensors are float32.

  In an int8 model, what stayed in float: the inputs and outputs, the
  (de)quantisation around them, and operators without int8 kernels.
  """
  interpreter = _litert()
  details = interpreter.Interpreter(model_content=model).get_tensor_details()
  return {'float32': sum(d['dtype'] == np.float32 for d in details),
          'total': len(details)}


def run_tflite(model: bytes, images: np.ndarray) -> Dict[str, np.ndarray]:
  """Runs a TFLite model with the LiteRT interpreter.

  Returns:
    The outputs by name.
  """
  interpreter = _litert()
  runner = interpreter.Interpreter(model_content=model).get_signature_runner(
      SIGNATURE)
  outputs = runner(**{fixed_size.INPUT_NAME: images})
  return {name: np.asarray(value) for name, value in outputs.items()}


def export_tflite(module: fixed_size.FixedSizeModule, output_path: str,
                  overwrite: bool = False, verify: bool = True,
                  precision: str = FLOAT32,
                  calibration: Optional[Iterable[np.ndarray]] = None
                  ) -> str:
  """Converts `module` to TFLite and writes it to output_path atomically.

  Args:
    module: the FixedSizeModule.
    output_path: the .tflite file.
    overwrite: replace an existing file.
    verify: run the model with LiteRT and TensorFlow on a random image
      first; float32: write nothing if the logits differ beyond round-off;
      float16 / int8: log how many pixels keep TensorFlow's label.
    precision: one of PRECISIONS.
    calibration: the batches that calibrate INT8 (representative_images).

  Returns:
    output_path.
  """
  fixed_size.check_output_file(output_path, overwrite)
  require_packages(verify, precision)
  model = to_tflite(module, precision, calibration)
  if verify:
    run = lambda images: run_tflite(model, images)
    runtime = f'TFLite (LiteRT, {precision})'
    if precision == FLOAT32:
      fixed_size.check_against_tensorflow(module, run, runtime)
    else:
      fixed_size.compare_with_tensorflow(module, run, runtime)
  if precision == INT8:
    counts = float_tensors(model)
    logging.info('int8 model: %d of its %d tensors stayed float32 (inputs, '
                 'outputs and operators without int8 kernels).',
                 counts['float32'], counts['total'])
  fixed_size.write_model_file(output_path, model, overwrite)
  logging.info('Exported TFLite model to %s', output_path)
  return output_path
