"""Tests of deeplab_sp.utils.private_apis on the installed libraries.

Each test calls one function on a real object of the library it reaches
into; when an upgrade renames what it reads, the test of that function
fails, naming it.
"""

import pathlib

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from deeplab_sp.utils import private_apis


def test_onednn_enabled_is_a_bool():
  assert isinstance(private_apis.onednn_enabled(), bool)


def test_attention_internals_of_tf_keras_multi_head_attention():
  layer = tf_keras.layers.MultiHeadAttention(num_heads=2, key_dim=4,
                                             value_dim=3)
  assert private_apis.attention_internals(layer) is None  # Not built yet.
  tokens = tf.random.stateless_normal([1, 5, 8], seed=[0, 1])
  layer(tokens, tokens)
  internals = private_apis.attention_internals(layer)
  assert (internals.num_heads, internals.key_dim, internals.value_dim) == (
      2, 4, 3)
  assert internals.use_bias
  assert internals.query_dense.kernel.shape == (8, 2, 4)
  assert internals.key_dense.kernel.shape == (8, 2, 4)
  assert internals.value_dense.kernel.shape == (8, 2, 3)
  assert internals.output_dense.kernel.shape == (2, 3, 8)
  scores = internals.masked_softmax(tf.zeros([1, 2, 5, 5]), None)
  np.testing.assert_allclose(scores.numpy(), 0.2, rtol=1e-6)
  np.testing.assert_array_equal(
      internals.dropout_layer(scores, training=False).numpy(),
      scores.numpy())


def test_segmentation_head_classifier_is_the_output_convolution():
  from official.vision.modeling.heads import segmentation_heads  # pylint: disable=g-import-not-at-top
  head = segmentation_heads.SegmentationHead(num_classes=5, level=3,
                                             num_convs=0)
  features = {'3': tf.zeros([1, 4, 4, 8])}
  head((features, features))
  classifier = private_apis.segmentation_head_classifier(head)
  assert isinstance(classifier, tf_keras.layers.Conv2D)
  assert classifier.filters == 5


def test_decayed_learning_rate_follows_the_schedule():
  schedule = tf_keras.optimizers.schedules.PolynomialDecay(
      1.0, decay_steps=10, end_learning_rate=0.0)
  optimizer = tf_keras.optimizers.legacy.SGD(learning_rate=schedule)
  optimizer.iterations.assign(5)
  rate = private_apis.decayed_learning_rate(optimizer, tf.float32)
  assert float(rate) == pytest.approx(0.5)


def test_tflite_operators_lists_the_models_operators():
  interpreter_lib = pytest.importorskip(
      'ai_edge_litert.interpreter',
      reason='ai-edge-litert (the optional [interop] extra) is not installed')

  @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32)])
  def add_one(x):
    return {'y': x + tf.ones([1, 4])}

  converter = tf.lite.TFLiteConverter.from_concrete_functions(
      [add_one.get_concrete_function()], add_one)
  interpreter = interpreter_lib.Interpreter(
      model_content=converter.convert())
  operators = private_apis.tflite_operators(interpreter)
  assert [op['op_name'] for op in operators] == ['ADD']
  assert {'inputs', 'outputs'} <= set(operators[0])


def test_saved_model_proto_reads_a_saved_model(tmp_path):
  module = tf.Module()
  module.double = tf.function(lambda x: {'y': 2 * x},
                              input_signature=[tf.TensorSpec([2])])
  tf.saved_model.save(module, str(tmp_path),
                      signatures={'serving_default': module.double})
  proto = private_apis.saved_model_proto()
  proto.ParseFromString((tmp_path / 'saved_model.pb').read_bytes())
  assert 'serving_default' in proto.meta_graphs[0].signature_def


def test_tflite_converter_error_is_what_the_converter_raises():
  error = private_apis.tflite_converter_error()
  assert issubclass(error, Exception)

  @tf.function(input_signature=[tf.TensorSpec([2], tf.string)])
  def unconvertible(x):
    return {'y': tf.strings.regex_replace(x, 'a', 'b')}

  converter = tf.lite.TFLiteConverter.from_concrete_functions(
      [unconvertible.get_concrete_function()], unconvertible)
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
  with pytest.raises(error):
    converter.convert()


def test_frozen_function_folds_the_variables():
  variable = tf.Variable(3.0)
  function = tf.function(lambda x: x * variable).get_concrete_function(
      tf.TensorSpec([], tf.float32))
  frozen = private_apis.frozen_function(function)
  ops = {op.type for op in frozen.graph.get_operations()}
  assert 'ReadVariableOp' not in ops and 'Const' in ops
  assert float(frozen(tf.constant(2.0))[0]) == 6.0


def test_no_other_module_reaches_into_a_private_api():
  root = pathlib.Path(__file__).resolve().parents[2]
  marks = ('protected-access', 'g-direct-tensorflow-import',
           'tensorflow.python', 'tensorflow.core', 'tensorflow.lite.python')
  found = []
  for path in sorted([*root.glob('deeplab_sp/**/*.py'),
                      *root.glob('tools/*.py')]):
    if path.name == 'private_apis.py' or path.name.endswith('_pb2.py'):
      continue
    for number, line in enumerate(path.read_text().splitlines(), 1):
      # os._exit is public (the exit that skips clean-up handlers).
      if any(mark in line for mark in marks) and 'os._exit(' not in line:
        found.append(f'{path.relative_to(root)}:{number}: {line.strip()}')
  assert not found, ('use deeplab_sp/utils/private_apis.py instead:\n' +
                     '\n'.join(found))
