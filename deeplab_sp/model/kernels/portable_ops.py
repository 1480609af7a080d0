"""Graph forms that ONNX and TFLite run with their built-in operators.

The fixed-size exports (deeplab_sp/export/onnx_export.py and
tflite_export.py) trace the model inside `enabled()`. While it is on, the
few places whose usual form has no built-in equivalent in ONNX (tf2onnx) or
in TFLite (the converter's built-in op set) take a form that has one. Each
form computes the same function, to float32 round-off; outside the block
(training, evaluation, the SavedModel) the graphs are unchanged:

  * GELU (activations.gelu, activations.keras_gelu) as
    0.5 * x * (1 + erf(x / sqrt(2))): tf2onnx maps erf to ONNX's Erf, and
    the TFLite converter fuses exactly this pattern into its GELU op (it
    has no Erf op; tf.nn.gelu's Erfc has no ONNX equivalent);
  * layer norm (layer_norm.LayerNormalization) as the direct two-pass
    formula: the CPU-fusable form hides a row count behind a
    PlaceholderWithDefault, which would become an input of the ONNX graph.

Forms that convert and cost nothing on CPU need no switch: the local
attention (EFFICIENT) keeps every tensor that meets a batched matmul, a pad
or a strided slice at rank <= 5, the most TFLite's built-in ops take.
"""

import contextlib
import threading

_STATE = threading.local()


def is_enabled() -> bool:
  """Whether functions traced now use the portable forms."""
  return getattr(_STATE, 'enabled', False)


@contextlib.contextmanager
def enabled():
  """Traces the portable forms within the block."""
  previous = is_enabled()
  _STATE.enabled = True
  try:
    yield
  finally:
    _STATE.enabled = previous
