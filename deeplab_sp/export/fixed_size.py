"""The SP-Transformer as one function of fixed shapes, for ONNX and TFLite.

ONNX (through tf2onnx) and TFLite run graphs of their own built-in
operators, at static shapes. `FixedSizeModule.serve` is the model as such a
graph: one input size and one batch size, without the SavedModel's
decoding, resizing, padding and per-image loops (export_lib's tf.map_fn,
which TFLite would see as TensorList ops):

  serve(images: float32 [B, H, W, 3], RGB in [0, 255], exactly (H, W))
  returns
    'semantic_logits': float32 [B, H, W, K];
    'semantic': int32 [B, H, W], the argmax of the logits over the K classes
      (the label map, in train ids);
    'superpixel_ids': int32 [B, H, W], each pixel's hard superpixel (paper
      eq. 7; absolute id row * grid_width + col); not for the per-pixel
      baselines, which have no superpixels.

(H, W) is the experiment's input size (the crop size of its describing
dataset) unless another one is given; it must fit the hypercolumn stride and
the superpixel grid. The caller brings each image to that size, as the
SavedModel does for its callers (export_lib): resize it to fit, keeping its
aspect ratio, pad it bottom/right with 127.5, and crop the padding off the
outputs.

The model is built with the PORTABLE kernel profile (model/kernels/
profile.py):
  * GELU and layer norm in the forms ONNX and TFLite have as built-in ops
    (same function, float32 round-off; portable_ops.py);
  * without XLA islands (the runtimes do not run XLA clusters);
  * with the EFFICIENT local attention whatever the config says: the same
    function as NAIVE, with the same variables (tests/model/local_attention
    pins them together), and no tensor of rank above 5 where TFLite needs
    it (NAIVE's 9x copies have rank 6 and 7).
"""

import importlib
import os
from typing import Dict, Mapping, Optional, Sequence

from absl import logging
import numpy as np
import tensorflow as tf

from deeplab_sp import experiment as experiment_lib
from deeplab_sp.export import export_lib
from deeplab_sp.model import local_attention
from deeplab_sp.model.kernels import profile
from deeplab_sp.utils import io

# The input and output names of the exported graphs.
INPUT_NAME = 'images'
OUTPUT_NAMES = ('semantic_logits', 'semantic', 'superpixel_ids')

# The optional extra of pyproject.toml with the converters and runtimes.
EXTRA_INSTALL = 'pip install -e ".[interop]"'

# How far a runtime's logits may be from TensorFlow's: float32 round-off,
# relative to the largest logit (at least 1).
LOGITS_TOLERANCE = 1e-4


class FixedSizeModule(tf.Module):
  """A model traced at one input size and batch size (see the module doc).

  Attributes:
    serve: the tf.function of the exported graph.
    input_size: (H, W).
    batch_size: B.
    num_classes: K.
  """

  def __init__(self, model: tf.keras.Model, input_size: Sequence[int],
               batch_size: int = 1,
               reference_model: Optional[tf.keras.Model] = None):
    """Initialises the module.

    Args:
      model: the built SP-Transformer (EFFICIENT local attention), with the
        PORTABLE kernel profile (kernels/profile.py).
      input_size: (H, W) of the graph; must fit the model's geometry.
      batch_size: B of the graph.
      reference_model: the same model with the same weights in the forms
        training and evaluation use (`reference`); None: `model`.

    Raises:
      ValueError: for a batch size below 1, or a model without the
        portable kernels.
    """
    if batch_size < 1:
      raise ValueError(f'--batch_size must be at least 1, got {batch_size}.')
    if not model.kernels.portable:
      raise ValueError(
          f'A fixed-size export needs a model built with the \'portable\' '
          f'kernels (builder.build_model(..., kernels=profile.PORTABLE)); '
          f'this one has the {model.kernels.name!r} kernels.')
    super().__init__(name='sp_transformer_fixed_size')
    # As in serving_module.ServingModule: the variables are tracked, the Keras
    # model (not serialisable as an object graph) is not.
    self._get_model = lambda: model
    self._get_reference_model = lambda: reference_model or model
    self.model_variables = list(model.variables)
    self.input_size = (int(input_size[0]), int(input_size[1]))
    self.batch_size = int(batch_size)
    self.num_classes = int(model.num_classes)
    self.serve = tf.function(self._serve, input_signature=[tf.TensorSpec(
        [self.batch_size, *self.input_size, 3], tf.float32, name=INPUT_NAME)])

  @property
  def model(self) -> tf.keras.Model:
    return self._get_model()

  @property
  def input_shape(self):
    return (self.batch_size, *self.input_size, 3)

  def _serve(self, images: tf.Tensor) -> Dict[str, tf.Tensor]:
    outputs = self.model(images, training=False)
    logits = tf.cast(outputs['semantic_logits'], tf.float32)
    served = {
        'semantic_logits': logits,
        'semantic': tf.argmax(logits, axis=-1, output_type=tf.int32),
    }
    if 'superpixel_ids' in outputs:  # Not the per-pixel baselines.
      served['superpixel_ids'] = tf.cast(outputs['superpixel_ids'], tf.int32)
    return served

  def reference(self, images: np.ndarray) -> Dict[str, np.ndarray]:
    """The outputs of the model as TensorFlow runs it (training's forms).

    What the exported graphs must reproduce: computed by the reference
    model (the forms evaluation uses), not the portable one.
    """
    outputs = self._get_reference_model()(tf.constant(images, tf.float32),
                                          training=False)
    logits = outputs['semantic_logits'].numpy().astype(np.float32)
    reference = {
        'semantic_logits': logits,
        'semantic': logits.argmax(axis=-1).astype(np.int32),
    }
    if 'superpixel_ids' in outputs:
      reference['superpixel_ids'] = (
          outputs['superpixel_ids'].numpy().astype(np.int32))
    return reference

  def test_images(self, seed: int = 0) -> np.ndarray:
    """Random RGB images of the graph's input shape, for checks."""
    return np.random.RandomState(seed).uniform(
        0.0, 255.0, self.input_shape).astype(np.float32)


def build_fixed_size_module(experiment: experiment_lib.Experiment,
                            checkpoint_path: Optional[str] = None,
                            input_size: Optional[Sequence[int]] = None,
                            batch_size: int = 1) -> FixedSizeModule:
  """The experiment's model with a checkpoint's weights, at a fixed size.

  Args:
    experiment: the Experiment.
    checkpoint_path: a checkpoint prefix or a directory (its latest
      checkpoint); None keeps the initial weights (tests).
    input_size: (H, W) of the exported graph; None: experiment.input_size.
    batch_size: B of the exported graph.

  Raises:
    experiment.ConfigError: an input size that does not fit the model.
    FileNotFoundError: if checkpoint_path holds no checkpoint.
  """
  if input_size is None:
    input_size = experiment.input_size
  if len(input_size) != 2:
    raise ValueError('--input_size must be two numbers, height and width, '
                     f'got {list(input_size)}.')
  input_size = experiment_lib.model_geometry(
      experiment.options.model_options, input_size,
      field='--input_size').input_size
  model, reference = (
      export_lib.restored_model(
          experiment, checkpoint_path,
          local_attention_implementation=local_attention.EFFICIENT,
          kernels=kernels)
      for kernels in (profile.PORTABLE, None))
  # The same weights (a fresh model's too, when there is no checkpoint).
  reference.set_weights(model.get_weights())
  return FixedSizeModule(model, input_size, batch_size, reference)


def compare_outputs(reference: Mapping[str, np.ndarray],
                    outputs: Mapping[str, np.ndarray]) -> Dict[str, float]:
  """How far a runtime's outputs are from TensorFlow's.

  Returns:
    {'max_logit_difference': max |logits - reference logits|,
     'label_agreement': fraction of pixels with the same 'semantic' label,
     'superpixel_agreement': the same for 'superpixel_ids' (NaN for a
       model without superpixels)}.
  """
  difference = np.abs(outputs['semantic_logits'].astype(np.float64) -
                      reference['semantic_logits'])
  superpixel_agreement = float('nan')
  if 'superpixel_ids' in reference:
    superpixel_agreement = float(np.mean(
        outputs['superpixel_ids'] == reference['superpixel_ids']))
  return {
      'max_logit_difference': float(difference.max()),
      'label_agreement': float(np.mean(
          outputs['semantic'] == reference['semantic'])),
      'superpixel_agreement': superpixel_agreement,
  }


def check_against_tensorflow(module: FixedSizeModule, run, runtime: str
                             ) -> Dict[str, float]:
  """Runs an exported graph and TensorFlow on one test batch; compares.

  Args:
    module: the FixedSizeModule the graph was exported from.
    run: images float32 [B, H, W, 3] -> the graph's outputs by name.
    runtime: its name, for the log and the error.

  Returns:
    compare_outputs' figures.

  Raises:
    ValueError: if the logits differ by more than LOGITS_TOLERANCE times
      the largest logit (at least 1): the export would not be the model.
  """
  figures, scale = _compare_on_test_images(module, run, runtime)
  if figures['max_logit_difference'] > LOGITS_TOLERANCE * scale:
    raise ValueError(
        f'The {runtime} export does not reproduce the model: its logits '
        f'differ from TensorFlow\'s by up to '
        f'{figures["max_logit_difference"]:.3g} (allowed: '
        f'{LOGITS_TOLERANCE * scale:.3g}). Nothing was written. Please '
        'report this with the config and the versions of TensorFlow and '
        f'the {runtime} packages.')
  return figures


def compare_with_tensorflow(module: FixedSizeModule, run, runtime: str
                            ) -> Dict[str, float]:
  """check_against_tensorflow's figures, logged, for a reduced-precision
  graph (which cannot equal TensorFlow to round-off): nothing is refused."""
  return _compare_on_test_images(module, run, runtime)[0]


def _compare_on_test_images(module: FixedSizeModule, run, runtime: str):
  """(compare_outputs' figures, the largest |logit| (at least 1)), logged."""
  images = module.test_images()
  reference = module.reference(images)
  figures = compare_outputs(reference, run(images))
  scale = max(1.0, float(np.abs(reference['semantic_logits']).max()))
  logging.info(
      '%s against TensorFlow on a random image: max |logit difference| '
      '%.2g, same label at %.4f of the pixels, same superpixel at %.4f.',
      runtime, figures['max_logit_difference'], figures['label_agreement'],
      figures['superpixel_agreement'])
  return figures, scale


def import_interop_package(module_name: str, package_name: str):
  """Imports a package of the optional `interop` extra, or says how to.

  Raises:
    ImportError: naming the package and the pip command.
  """
  try:
    return importlib.import_module(module_name)
  except ImportError as e:
    raise ImportError(
        f'The ONNX and TFLite exports need the optional package '
        f'{package_name}, which is not installed: run {EXTRA_INSTALL} in '
        f'the repository root (or bash tools/setup.sh). ({e})') from e


def check_output_file(output_path: str, overwrite: bool) -> None:
  """Refuses an output file that exists (unless overwrite) or is a folder.

  Checked before the (long) conversion, and again when writing.

  Raises:
    IsADirectoryError, FileExistsError.
  """
  if tf.io.gfile.isdir(output_path):
    raise IsADirectoryError(
        f'--output_path {output_path} is a directory; the ONNX and TFLite '
        'exports write one file: give its name, e.g. '
        f'{output_path.rstrip("/")}/model.onnx.')
  if tf.io.gfile.exists(output_path) and not overwrite:
    raise FileExistsError(f'{output_path} exists; pass --overwrite to '
                          'replace it, or another --output_path.')


def write_model_file(output_path: str, content: bytes,
                     overwrite: bool) -> None:
  """Writes an exported model file atomically (see check_output_file)."""
  check_output_file(output_path, overwrite)
  parent = os.path.dirname(output_path)
  if parent:
    tf.io.gfile.makedirs(parent)
  io.write_atomically(output_path, content)
