"""Tests of deeplab_sp.export.onnx_export: onnxruntime runs the model.

Needs the optional `interop` extra (tools/setup.sh installs it; CI too).
"""

import numpy as np
import pytest
import tensorflow as tf

from deeplab_sp.export import fixed_size
import export_testing

onnx = pytest.importorskip(
    'onnx', reason='onnx (the optional [interop] extra) is not installed: '
    'pip install -e ".[interop]"')
pytest.importorskip(
    'onnxruntime', reason='onnxruntime (the optional [interop] extra) is not '
    'installed: pip install -e ".[interop]"')
pytest.importorskip(
    'tf2onnx', reason='tf2onnx (the optional [interop] extra) is not '
    'installed: pip install -e ".[interop]"')

from deeplab_sp.export import onnx_export  # pylint: disable=g-import-not-at-top


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
  """(FixedSizeModule, path of its .onnx file)."""
  tf.keras.utils.set_random_seed(5)
  module = fixed_size.build_fixed_size_module(export_testing.tiny())
  path = str(tmp_path_factory.mktemp('onnx') / 'model.onnx')
  onnx_export.export_onnx(module, path)
  return module, path


def test_onnxruntime_equals_tensorflow(exported):
  module, path = exported
  with open(path, 'rb') as f:
    model = f.read()
  for seed in (1, 2):
    images = module.test_images(seed)
    reference = module.reference(images)
    outputs = onnx_export.run_onnx(model, images)
    assert sorted(outputs) == sorted(fixed_size.OUTPUT_NAMES)
    np.testing.assert_allclose(outputs['semantic_logits'],
                               reference['semantic_logits'], atol=1e-4)
    export_testing.assert_labels_are_argmax(
        outputs['semantic'], reference['semantic_logits'])
    np.testing.assert_array_equal(outputs['superpixel_ids'],
                                  reference['superpixel_ids'])
    assert outputs['semantic'].dtype == np.int32
    # Not a constant model: the label maps differ between images.
    assert len(np.unique(reference['semantic'])) > 1


def test_graph_is_standard_onnx_with_one_input(exported):
  _, path = exported
  model = onnx.load(path)
  onnx.checker.check_model(model)
  assert {node.domain for node in model.graph.node} <= {'', 'ai.onnx'}
  assert [i.name for i in model.graph.input] == [fixed_size.INPUT_NAME]
  dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
  assert dims == [1, export_testing.SIZE, export_testing.SIZE, 3]
  assert {o.name for o in model.graph.output} == set(fixed_size.OUTPUT_NAMES)
  types = {node.op_type for node in model.graph.node}
  assert 'Erf' in types and 'Loop' not in types


def test_tensorflow_only_nodes_are_refused():
  # What tf2onnx leaves when it cannot convert an op (e.g. Erfc).
  node = onnx.helper.make_node('Erfc', ['images'], ['y'],
                               domain='ai.onnx.converters.tensorflow')
  graph = onnx.helper.make_graph(
      [node], 'g',
      [onnx.helper.make_tensor_value_info('images', onnx.TensorProto.FLOAT,
                                          [1])],
      [onnx.helper.make_tensor_value_info('y', onnx.TensorProto.FLOAT, [1])])
  with pytest.raises(ValueError, match='converters.tensorflow:Erfc'):
    onnx_export.check_standard_ops(onnx.helper.make_model(graph))


def test_existing_file_is_kept_without_overwrite(exported):
  module, path = exported
  with open(path, 'rb') as f:
    before = f.read()
  with pytest.raises(FileExistsError, match='--overwrite'):
    onnx_export.export_onnx(module, path)
  with open(path, 'rb') as f:
    assert f.read() == before
