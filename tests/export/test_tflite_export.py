"""Tests of deeplab_sp.export.tflite_export: LiteRT runs the model.

Needs the optional `interop` extra (tools/setup.sh installs it; CI too).
"""

import numpy as np
import pytest
import tensorflow as tf

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
