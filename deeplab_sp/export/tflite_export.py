"""TFLite export of the fixed-size model, with built-in operators only.

`to_tflite` converts FixedSizeModule.serve (fixed_size.py: inputs, outputs,
traced forms) with TensorFlow's TFLite converter restricted to TFLite's
built-in operators, so the model runs on the plain LiteRT runtime (no
TensorFlow "select" ops, no Flex delegate). `run_tflite` runs a model with
the LiteRT interpreter (the ai-edge-litert package, which replaces
tf.lite.Interpreter); `export_tflite` converts, checks the result against
TensorFlow on a test image, and writes the file.

The conversion needs only TensorFlow; the check needs the optional
`interop` extra (ai-edge-litert).
"""

from typing import Dict

from absl import logging
import numpy as np
import tensorflow as tf
# What the converter raises (tf.lite does not export it).
from tensorflow.lite.python.convert_phase import ConverterError  # pylint: disable=g-direct-tensorflow-import

from deeplab_sp.export import fixed_size

# The signature of the converted model.
SIGNATURE = 'serving_default'


def to_tflite(module: fixed_size.FixedSizeModule) -> bytes:
  """The TFLite flatbuffer of `module.serve`, built-in operators only.

  Raises:
    ValueError: if the graph needs operators TFLite does not have built in
      (the converter's list of them).
  """
  logging.info('Converting to TFLite (built-in operators only)')
  converter = tf.lite.TFLiteConverter.from_concrete_functions(
      [module.serve.get_concrete_function()], module)
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
  try:
    return converter.convert()
  except ConverterError as e:
    message = str(e)
    # The converter's summary line names the ops; the rest is its IR dump.
    summary = [line.strip() for line in message.splitlines()
               if 'TF Select ops' in line or 'not supported' in line]
    raise ValueError(
        'The TFLite converter cannot express the model with built-in '
        f'operators: {" ".join(summary[:3]) or message[:500]}. Nothing was '
        'written. The model needs a portable form of these ops '
        '(deeplab_sp/model/kernels/portable_ops.py).') from None


def require_packages(verify: bool = True) -> None:
  """Raises ImportError (naming the pip command) if a package is missing.

  Args:
    verify: the LiteRT interpreter is needed (to check the export); the
      conversion itself needs only TensorFlow.
  """
  if verify:
    fixed_size.import_interop_package('ai_edge_litert.interpreter',
                                      'ai-edge-litert')


def run_tflite(model: bytes, images: np.ndarray) -> Dict[str, np.ndarray]:
  """Runs a TFLite model with the LiteRT interpreter.

  Returns:
    The outputs by name.
  """
  interpreter = fixed_size.import_interop_package(
      'ai_edge_litert.interpreter', 'ai-edge-litert')
  runner = interpreter.Interpreter(model_content=model).get_signature_runner(
      SIGNATURE)
  outputs = runner(**{fixed_size.INPUT_NAME: images})
  return {name: np.asarray(value) for name, value in outputs.items()}


def export_tflite(module: fixed_size.FixedSizeModule, output_path: str,
                  overwrite: bool = False, verify: bool = True) -> str:
  """Converts `module` to TFLite and writes it to output_path atomically.

  Args:
    module: the FixedSizeModule.
    output_path: the .tflite file.
    overwrite: replace an existing file.
    verify: run the model with LiteRT and TensorFlow on a random image
      first, and write nothing if the logits differ beyond round-off.

  Returns:
    output_path.
  """
  fixed_size.check_output_file(output_path, overwrite)
  require_packages(verify)
  model = to_tflite(module)
  if verify:
    fixed_size.check_against_tensorflow(
        module, lambda images: run_tflite(model, images), 'TFLite (LiteRT)')
  fixed_size.write_model_file(output_path, model, overwrite)
  logging.info('Exported TFLite model to %s', output_path)
  return output_path
