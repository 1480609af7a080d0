"""Tests of deeplab_sp.export.onnx_export: onnxruntime runs the model.

Needs the optional `interop` extra (tools/setup.sh installs it; CI too).
"""

import numpy as np
import pytest
import tensorflow as tf

from deeplab_sp.export import export_lib
from deeplab_sp.export import fixed_size
from deeplab_sp.model import local_attention
from deeplab_sp.model.kernels import layer_norm
from deeplab_sp.model.kernels import profile
import export_testing

onnx = pytest.importorskip(
    'onnx', reason='onnx (the optional [interop] extra) is not installed: '
    'pip install -e ".[interop]"')
onnxruntime = pytest.importorskip(
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


def test_onnxruntime_fuses_the_layer_norms_of_pixel_tensors(tmp_path):
  """The portable layer norms are in the pattern onnxruntime's graph
  optimizer turns into one LayerNormalization node each; unfused, each is
  nine nodes and several passes over the tensor. Every layer norm of the
  hypercolumn and the tokenization (the pixel-sized tensors) fuses; the
  classifier's three, over a few hundred superpixel tokens, stay unfused.
  The scales and shifts are set away from 1 and 0, as after training: at
  their initial values TensorFlow's graph optimizer drops the * gamma +
  beta that the fusion's pattern ends with."""
  tf.keras.utils.set_random_seed(6)
  experiment = export_testing.tiny()
  portable, reference = (
      export_lib.restored_model(
          experiment,
          local_attention_implementation=local_attention.EFFICIENT,
          kernels=kernels)
      for kernels in (profile.PORTABLE, None))
  rng = np.random.default_rng(0)
  for layer in portable.submodules:
    if isinstance(layer, layer_norm.LayerNormalization):
      for weight in (layer.gamma, layer.beta):
        weight.assign(rng.uniform(0.5, 1.5, size=weight.shape))
  reference.set_weights(portable.get_weights())
  module = fixed_size.FixedSizeModule(portable, experiment.input_size,
                                      reference_model=reference)
  path = onnx_export.export_onnx(module, str(tmp_path / 'model.onnx'))
  options = onnxruntime.SessionOptions()
  options.optimized_model_filepath = str(tmp_path / 'optimized.onnx')
  onnxruntime.InferenceSession(path, options,
                               providers=['CPUExecutionProvider'])
  # A layer norm's nodes are named after its layer: <layer>/Pow, and the
  # fused node <layer>/mul/LayerNormFusion/.
  layer_norms = {node.name[:-len('/Pow')] for node in onnx.load(path).graph.node
                 if node.op_type == 'Pow'}
  fused = {node.name.split('/mul/LayerNormFusion')[0]
           for node in onnx.load(options.optimized_model_filepath).graph.node
           if node.op_type == 'LayerNormalization'}
  pixel_norms = {name for name in layer_norms
                 if '/superpixel_classifier/' not in name}
  assert any('/hypercolumn/' in name for name in pixel_norms)
  assert any('/superpixel_tokenization/' in name for name in pixel_norms)
  assert pixel_norms <= fused
