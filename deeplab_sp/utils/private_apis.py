"""Every use of a private API of TensorFlow, tf_keras, the Model Garden or
LiteRT, in one place.

Each function below reaches into something its library does not promise to
keep (a leading underscore, a module under tensorflow.python). The rest of
the package calls these functions instead, so that an upgrade that renames
one breaks here, and tests/utils/test_private_apis.py, which calls every
function on the installed versions, fails naming it instead of a model
silently taking a slower path or a tool failing deep in a run. Each says
why no public API does the job.
"""

from typing import Callable, List, NamedTuple, Optional

# The only way to ask which CPU backend TensorFlow was built with.
from tensorflow.python.util import _pywrap_util_port  # pylint: disable=g-direct-tensorflow-import


def onednn_enabled() -> bool:
  """Whether TensorFlow's CPU backend is oneDNN (it then has the fused
  layer-norm kernel that kernels/layer_norm.py's graph pattern selects)."""
  return bool(_pywrap_util_port.IsMklEnabled())


class AttentionInternals(NamedTuple):
  """What kernels/attention.py reads of a built tf_keras MultiHeadAttention
  to run the same arithmetic as batched matmuls (the layer exposes its
  projections and sizes only through private attributes)."""
  query_dense: object
  key_dense: object
  value_dense: object
  output_dense: object
  num_heads: int
  key_dim: int
  value_dim: int
  use_bias: bool
  masked_softmax: Callable
  dropout_layer: Callable


def attention_internals(layer) -> Optional[AttentionInternals]:
  """The internals of a tf_keras.layers.MultiHeadAttention; None until its
  first call has built the projections."""
  if not layer._built_from_signature:  # pylint: disable=protected-access
    return None
  return AttentionInternals(
      query_dense=layer._query_dense,  # pylint: disable=protected-access
      key_dense=layer._key_dense,  # pylint: disable=protected-access
      value_dense=layer._value_dense,  # pylint: disable=protected-access
      output_dense=layer._output_dense,  # pylint: disable=protected-access
      num_heads=layer._num_heads,  # pylint: disable=protected-access
      key_dim=layer._key_dim,  # pylint: disable=protected-access
      value_dim=layer._value_dim,  # pylint: disable=protected-access
      use_bias=layer._use_bias,  # pylint: disable=protected-access
      masked_softmax=layer._masked_softmax,  # pylint: disable=protected-access
      dropout_layer=layer._dropout_layer)  # pylint: disable=protected-access


def segmentation_head_classifier(head):
  """The 1x1 output convolution (num_classes filters) of a Model Garden
  SegmentationHead, which keeps it in a private attribute."""
  return head._classifier  # pylint: disable=protected-access


def decayed_learning_rate(optimizer, dtype):
  """A legacy tf_keras optimizer's learning rate at its current iteration
  (its schedule applied), which it computes only privately."""
  return optimizer._decayed_lr(dtype)  # pylint: disable=protected-access


def tflite_operators(interpreter) -> List[dict]:
  """The operators of a LiteRT Interpreter's model (op_name, inputs,
  outputs): LiteRT's Python API has no public accessor for them."""
  return interpreter._get_ops_details()  # pylint: disable=protected-access


def saved_model_proto():
  """An empty SavedModel protobuf (saved_model.pb's message), to read a
  SavedModel's signatures without loading it: TensorFlow exports no public
  name for the message."""
  from tensorflow.core.protobuf import saved_model_pb2  # pylint: disable=g-direct-tensorflow-import,g-import-not-at-top
  return saved_model_pb2.SavedModel()


def tflite_converter_error() -> type:
  """The exception the TFLite converter raises on an unconvertible graph
  (tf.lite does not export it); imported when asked for, so that the model
  does not load the converter's modules."""
  from tensorflow.lite.python.convert_phase import ConverterError  # pylint: disable=g-direct-tensorflow-import,g-import-not-at-top
  return ConverterError


def frozen_function(concrete_function):
  """`concrete_function` with its variables folded into constants, whose
  graph the profiler can count; TF2 has no public form of this."""
  from tensorflow.python.framework import convert_to_constants  # pylint: disable=g-direct-tensorflow-import,g-import-not-at-top
  return convert_to_constants.convert_variables_to_constants_v2(
      concrete_function)
