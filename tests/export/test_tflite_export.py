"""Tests of deeplab_sp.export.tflite_export: LiteRT runs the model.

Needs the optional `interop` extra (tools/setup.sh installs it; CI too).
"""

import numpy as np
import pytest
import tensorflow as tf

from deeplab_sp import experiment as experiment_lib
from deeplab_sp.data import synthetic
from deeplab_sp.export import fixed_size
from deeplab_sp.export import tflite_export
import export_testing

interpreter_lib = pytest.importorskip(
    'ai_edge_litert.interpreter',
    reason='ai-edge-litert (the optional [interop] extra) is not installed: '
    'pip install -e ".[interop]"')


@pytest.fixture(scope='module')
def module():
  tf.keras.utils.set_random_seed(5)
  return fixed_size.build_fixed_size_module(export_testing.tiny())


@pytest.fixture(scope='module')
def exported(module, tmp_path_factory):
  """The bytes of the module's .tflite file."""
  path = tmp_path_factory.mktemp('tflite') / 'model.tflite'
  tflite_export.export_tflite(module, str(path))
  return path.read_bytes()


def _assert_equal_to_tensorflow(module, model, seeds):
  for seed in seeds:
    images = module.test_images(seed)
    reference = module.reference(images)
    outputs = tflite_export.run_tflite(model, images)
    assert sorted(outputs) == sorted(fixed_size.OUTPUT_NAMES)
    np.testing.assert_allclose(outputs['semantic_logits'],
                               reference['semantic_logits'], atol=1e-4)
    export_testing.assert_labels_are_argmax(
        outputs['semantic'], reference['semantic_logits'])
    np.testing.assert_array_equal(outputs['superpixel_ids'],
                                  reference['superpixel_ids'])
    # Not a constant model: the label maps differ between images.
    assert len(np.unique(reference['semantic'])) > 1


def test_litert_equals_tensorflow(module, exported):
  _assert_equal_to_tensorflow(module, exported, seeds=(1, 2))


def test_only_builtin_operators(exported):
  interpreter = interpreter_lib.Interpreter(model_content=exported)
  operators = {op['op_name'] for op in interpreter._get_ops_details()}  # pylint: disable=protected-access
  # No TensorFlow ops (Flex...), no custom ops; GELU is TFLite's own.
  assert not {op for op in operators if op.startswith('Flex')}
  assert 'CUSTOM' not in operators and 'DELEGATE' not in operators
  assert {'GELU', 'BATCH_MATMUL', 'PAD', 'ARG_MAX'} <= operators
  signature = interpreter.get_signature_list()[tflite_export.SIGNATURE]
  assert signature['inputs'] == [fixed_size.INPUT_NAME]


def test_batch_of_two_at_another_size(module):
  other = fixed_size.FixedSizeModule(
      module.model, (export_testing.SIZE, 2 * export_testing.SIZE),
      batch_size=2)
  _assert_equal_to_tensorflow(other, tflite_export.to_tflite(other),
                              seeds=(3,))


def _weight_bytes(module):
  return 4 * sum(int(np.prod(v.shape)) for v in module.model.variables)


def _agreement(module, model):
  images = module.test_images(1)
  return fixed_size.compare_outputs(module.reference(images),
                                    tflite_export.run_tflite(model, images))


def test_float16_halves_the_file_and_keeps_the_labels(module, exported):
  model = tflite_export.to_tflite(module, tflite_export.FLOAT16)
  # Two bytes saved per weight (the file also holds the graph).
  assert len(exported) - len(model) > 0.45 * _weight_bytes(module)
  figures = _agreement(module, model)
  assert figures['label_agreement'] >= 0.99, figures
  assert figures['superpixel_agreement'] >= 0.99, figures


@pytest.fixture(scope='module')
def calibration_experiment(tmp_path_factory):
  """The tiny experiment reading generated records of its input size."""
  root = tmp_path_factory.mktemp('records')
  shards = synthetic.write_dataset(
      str(root), num_train=3, num_val=1, height=export_testing.SIZE,
      width=export_testing.SIZE, num_shards=1)
  options = export_testing.tiny_options()
  for field in ('train_dataset_options', 'eval_dataset_options'):
    getattr(options, field).dataset = 'synthetic'
    getattr(options, field).ClearField('file_pattern')
  options.train_dataset_options.file_pattern.extend(shards['train'])
  options.eval_dataset_options.file_pattern.extend(shards['val'])
  return experiment_lib.experiment_from_options(options, mode=None)


def test_representative_images_are_the_training_images(
    module, calibration_experiment):
  batches = list(tflite_export.representative_images(
      calibration_experiment, module, count=5))
  # Three training images, in order; the batch of one ends with them.
  assert len(batches) == 3
  for batch in batches:
    assert batch.shape == module.input_shape and batch.dtype == np.float32
    assert 0.0 <= batch.min() and batch.max() <= 255.0
  assert not np.array_equal(batches[0], batches[1])
  two = fixed_size.FixedSizeModule(module.model, module.input_size,
                                   batch_size=2)
  pairs = list(tflite_export.representative_images(
      calibration_experiment, two, count=3))
  # The last batch completed with the first image.
  assert len(pairs) == 2 and pairs[1].shape == two.input_shape
  np.testing.assert_array_equal(pairs[1][1], batches[0][0])
  with pytest.raises(ValueError, match='at least 1'):
    next(tflite_export.representative_images(calibration_experiment,
                                             module, count=0))


def test_int8_stores_weights_in_a_byte_and_reports_what_stayed_float(
    module, exported, calibration_experiment, tmp_path):
  path = tmp_path / 'int8.tflite'
  tflite_export.export_tflite(
      module, str(path), precision=tflite_export.INT8,
      calibration=tflite_export.representative_images(
          calibration_experiment, module, count=3))
  model = path.read_bytes()
  # Three bytes saved per weight, but for the biases (int32) and the
  # layers that stay float.
  assert len(exported) - len(model) > 0.6 * _weight_bytes(module)
  counts = tflite_export.float_tensors(model)
  assert 0 < counts['float32'] < counts['total']
  assert counts['float32'] < tflite_export.float_tensors(exported)['float32']
  outputs = tflite_export.run_tflite(model, module.test_images(1))
  assert outputs['semantic'].shape == module.input_shape[:3]
  images = module.test_images(1)
  logits = module.reference(images)['semantic_logits'].ravel()
  quantized = outputs['semantic_logits'].ravel()
  # An untrained model's logits lie within hundredths of each other, so
  # int8's rounding flips many of its labels; that the quantized model
  # computes the same function shows as correlated logits (0.75 here; noise
  # would give 0). A trained model's agreement is the benchmark's figure.
  assert np.corrcoef(logits, quantized)[0, 1] > 0.5
  with pytest.raises(ValueError, match="representative images"):
    tflite_export.to_tflite(module, tflite_export.INT8)
  with pytest.raises(ValueError, match='not one of'):
    tflite_export.to_tflite(module, 'int4')
