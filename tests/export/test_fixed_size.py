"""Tests of deeplab_sp.export.fixed_size: the graph ONNX and TFLite get."""

import numpy as np
import pytest
import tensorflow as tf

from deeplab_sp import experiment as experiment_lib
from deeplab_sp.export import export_lib
from deeplab_sp.export import fixed_size
from deeplab_sp.model.kernels import xla_islands
from deeplab_sp.protos import model_pb2
import export_testing
from export_testing import SIZE


def _naive_experiment():
  """The tiny export experiment with the NAIVE local attention."""
  options = export_testing.tiny_options()
  naive = model_pb2.LocalAttentionImplementation.Value('NAIVE')
  options.model_options.superpixel_tokenization.implementation = naive
  options.model_options.superpixel_association.implementation = naive
  return experiment_lib.experiment_from_options(options, mode=None)


@pytest.fixture(scope='module')
def naive_model_and_module(tmp_path_factory):
  """A NAIVE model, its checkpoint, and the fixed-size module built from it."""
  tf.keras.utils.set_random_seed(3)
  experiment = _naive_experiment()
  model = export_lib.restored_model(experiment)
  prefix = tf.train.Checkpoint(model=model).write(
      str(tmp_path_factory.mktemp('fixed') / 'ckpt-1'))
  return model, fixed_size.build_fixed_size_module(experiment, prefix)


def _op_types(concrete_function):
  graph_def = concrete_function.graph.as_graph_def()
  types = {node.op for node in graph_def.node}
  for function in graph_def.library.function:
    types |= {node.op for node in function.node_def}
  return types, graph_def


def test_graph_equals_the_trained_model(naive_model_and_module):
  # The config's NAIVE model as evaluation runs it, against the exported
  # graph: EFFICIENT local attention, portable GELU and layer norm.
  model, module = naive_model_and_module
  assert module.model.tokenization.implementation == 'EFFICIENT'
  images = module.test_images(seed=1)
  expected = model(images, training=False)
  outputs = module.serve(tf.constant(images))
  assert set(outputs) == set(fixed_size.OUTPUT_NAMES)
  np.testing.assert_allclose(outputs['semantic_logits'].numpy(),
                             expected['semantic_logits'].numpy(), atol=1e-4)
  np.testing.assert_array_equal(
      outputs['semantic'].numpy(),
      np.argmax(expected['semantic_logits'].numpy(), axis=-1))
  np.testing.assert_array_equal(outputs['superpixel_ids'].numpy(),
                                expected['superpixel_ids'].numpy())
  assert outputs['semantic'].dtype == tf.int32
  assert outputs['superpixel_ids'].dtype == tf.int32
  # What the exporters compare against is that model too.
  reference = module.reference(images)
  np.testing.assert_allclose(reference['semantic_logits'],
                             expected['semantic_logits'].numpy(), atol=1e-4)


def test_graph_has_fixed_shapes_and_no_loops_or_tensorflow_only_ops(
    naive_model_and_module):
  _, module = naive_model_and_module
  concrete = module.serve.get_concrete_function()
  assert concrete.inputs[0].shape.as_list() == [1, SIZE, SIZE, 3]
  for output in concrete.outputs:
    assert output.shape.is_fully_defined(), output
  types, graph_def = _op_types(concrete)
  # No map_fn (TensorList, While), no erfc, no hidden placeholders, no XLA.
  forbidden = {'While', 'StatelessWhile', 'TensorListReserve',
               'TensorListFromTensor', 'Erfc', 'PlaceholderWithDefault'}
  assert not types & forbidden
  assert 'Erf' in types
  assert not xla_islands.compiled_functions(graph_def)


def test_other_input_size_and_batch(naive_model_and_module):
  model, portable = naive_model_and_module
  module = fixed_size.FixedSizeModule(portable.model, (2 * SIZE, SIZE),
                                      batch_size=2, reference_model=model)
  assert module.input_shape == (2, 2 * SIZE, SIZE, 3)
  images = module.test_images()
  outputs = module.serve(tf.constant(images))
  assert outputs['semantic'].shape == (2, 2 * SIZE, SIZE)
  np.testing.assert_allclose(outputs['semantic_logits'].numpy(),
                             module.reference(images)['semantic_logits'],
                             atol=1e-4)


def test_bad_sizes_are_clear_errors():
  experiment = export_testing.tiny()
  with pytest.raises(experiment_lib.ConfigError,
                     match=r'--input_size.*multiple of 16x16'):
    fixed_size.build_fixed_size_module(experiment, input_size=(100, 64))
  with pytest.raises(ValueError, match='two numbers'):
    fixed_size.build_fixed_size_module(experiment, input_size=(64,))
  with pytest.raises(ValueError, match='--batch_size'):
    fixed_size.FixedSizeModule(None, (SIZE, SIZE), batch_size=0)


def test_a_model_without_the_portable_kernels_is_refused(
    naive_model_and_module):
  model, _ = naive_model_and_module
  with pytest.raises(ValueError, match="'portable' kernels"):
    fixed_size.FixedSizeModule(model, (SIZE, SIZE))


def test_output_file_checks(tmp_path):
  with pytest.raises(IsADirectoryError, match='model.onnx'):
    fixed_size.check_output_file(str(tmp_path), overwrite=True)
  path = tmp_path / 'sub' / 'model.tflite'
  fixed_size.write_model_file(str(path), b'first', overwrite=False)
  with pytest.raises(FileExistsError, match='--overwrite'):
    fixed_size.write_model_file(str(path), b'second', overwrite=False)
  fixed_size.write_model_file(str(path), b'second', overwrite=True)
  assert path.read_bytes() == b'second'
  assert sorted(p.name for p in path.parent.iterdir()) == ['model.tflite']


def test_missing_extra_names_the_pip_command():
  with pytest.raises(ImportError, match=r'pip install -e "\.\[interop\]"'):
    fixed_size.import_interop_package('deeplab_sp_no_such_package',
                                      'no-such-package')


def test_compare_outputs_counts_what_differs():
  reference = {'semantic_logits': np.zeros([1, 2, 2, 3], np.float32),
               'semantic': np.zeros([1, 2, 2], np.int32),
               'superpixel_ids': np.zeros([1, 2, 2], np.int32)}
  outputs = {name: value.copy() for name, value in reference.items()}
  outputs['semantic_logits'][0, 0, 0, 1] = 0.25
  outputs['semantic'][0, 1, 1] = 2
  figures = fixed_size.compare_outputs(reference, outputs)
  assert figures == {'max_logit_difference': 0.25, 'label_agreement': 0.75,
                     'superpixel_agreement': 1.0}
