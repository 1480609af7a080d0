"""The GELU forms of every kernel profile equal tf.nn.gelu's exact GELU."""

import functools

import numpy as np
import pytest
import tensorflow as tf

from deeplab_sp.model.kernels import activations
from deeplab_sp.model.kernels import profile
from deeplab_sp.utils import private_apis


def test_gelu_matches_tf_nn_gelu_values_and_gradients():
  x = tf.constant(np.linspace(-12.0, 12.0, 4001).astype(np.float32))
  results = []
  for function in (functools.partial(activations.gelu, kernels=profile.CPU),
                   lambda t: tf.nn.gelu(t, approximate=False)):
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = function(x)
    results.append((y.numpy(), tape.gradient(y, x).numpy()))
  (y_ours, dy_ours), (y_tf, dy_tf) = results
  np.testing.assert_allclose(y_ours, y_tf, rtol=1e-5, atol=2e-6)
  np.testing.assert_allclose(dy_ours, dy_tf, rtol=1e-5, atol=2e-6)


def test_gelu_keeps_half_precision():
  x = tf.constant([-1.0, 0.0, 2.0], tf.float16)
  for kernels in profile.PROFILES.values():
    y = activations.gelu(x, kernels)
    assert y.dtype == tf.float16
    np.testing.assert_allclose(y.numpy(), [-0.1587, 0.0, 1.9545], atol=2e-3)


def _op_types(function, x):
  graph = tf.function(function).get_concrete_function(x).graph
  return {op.type for op in graph.get_operations()}


def test_every_profile_computes_the_same_values_and_gradients():
  x = tf.constant(np.linspace(-12.0, 12.0, 4001).astype(np.float32))
  results = []
  for function in (activations.gelu, activations.keras_gelu):
    for kernels in profile.PROFILES.values():
      with tf.GradientTape() as tape:
        tape.watch(x)
        y = function(x, kernels)
      results.append((y.numpy(), tape.gradient(y, x).numpy()))
  reference_y, reference_dy = results[0]
  for y, dy in results[1:]:
    np.testing.assert_allclose(y, reference_y, rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(dy, reference_dy, rtol=1e-5, atol=2e-6)


def test_the_portable_forms_are_traced_only_in_portable_models():
  x = tf.TensorSpec([4, 8], tf.float32)
  for kernels in (profile.STOCK, profile.CPU, profile.SERVING):
    # tf_keras' 'gelu' (through Erfc), as trained.
    assert 'Erfc' in _op_types(
        functools.partial(activations.keras_gelu, kernels=kernels), x)
  for function in (activations.gelu, activations.keras_gelu):
    types = _op_types(functools.partial(function, kernels=profile.PORTABLE),
                      x)
    assert 'Erf' in types and 'Erfc' not in types


def test_portable_gelu_is_a_tflite_builtin_gelu():
  # The operand order of portable_gelu is the pattern the converter fuses;
  # the CPU form is not (TFLite has no Erf op).
  spec = tf.TensorSpec([4, 8], tf.float32)
  for function, converts in (
      (activations.portable_gelu, True),
      (functools.partial(activations.gelu, kernels=profile.SERVING), False)):
    traced = tf.function(function).get_concrete_function(spec)
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [traced], tf.Module())
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if converts:
      assert converter.convert()
    else:
      with pytest.raises(private_apis.tflite_converter_error(), match='Erf'):
        converter.convert()
