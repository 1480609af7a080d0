"""LayerNormalization over the last axis, in the form CPUs run as one kernel.

Every stage of the SP-Transformer (arXiv 2309.16889, Sec. III) normalises
its features with layer norms; this one is tf_keras' layer, made fusable.

On CPU the decoder's layer norms run over large pixel tensors (up to 131k
pixels x 256 channels in the hypercolumn), where the passes over memory, not
the arithmetic, set the time. TensorFlow's CPU backend (oneDNN, on by
default on x86) has a single-kernel layer norm, `_MklLayerNorm`, which
grappler's remapper substitutes for one graph pattern: tf_keras' form of the
layer, a training-mode FusedBatchNormV3 over the [1, rows, C, 1] reshaped
input with `Fill`ed unit scale and zero offset, then `* gamma + beta`, on a
rank 2 or 3 input. The pattern only matches while the row count is not a
graph constant: with static shapes (our models' case) constant folding turns
the fills into constants first, and the layer runs as ~6 separate passes.

This layer builds that pattern on the [rows, C] matrix of its input and
hides the row count from constant folding (PlaceholderWithDefault), so the
remapper fuses it: one pass instead of several forward. The pattern's own
gradient (FusedBatchNormGradV3 over `rows` channels, then gamma's and
beta's gradients as reductions over the rows) takes about twice the time
of the whole forward and backward pass otherwise, so the layer gives the
pattern its own gradient: the direct formula's, recomputing the row
statistics, compiled by XLA (kernels/xla_islands.py). It also leaves the
forward pass fusable in training graphs, where the batch norm's saved
statistics would otherwise be kept for its gradient.

Without oneDNN (TensorFlow enables it by default only on x86 CPUs with
AVX-512 or newer instruction sets; TF_ENABLE_ONEDNN_OPTS=1 forces it) there
is no such kernel, and that pattern runs as a batch norm of `rows` channels
of C values each, which TensorFlow's plain CPU kernels (forward and
gradient) run many times slower than the direct formula. The layer then
uses the direct formula (mean, centred variance, normalise, scale, shift),
compiled by XLA into one or two loops over memory inside graphs
(kernels/xla_islands.py), its gradient too. Half-precision inputs always
use the direct formula, with float32 statistics as tf_keras does; the ONNX
and TFLite exports (the PORTABLE profile) the same formula written in the
operators onnxruntime fuses into its LayerNormalization.

The variables (gamma, beta), their names, the epsilon and the results (to
float32 round-off) are those of tf_keras' layer, so checkpoints are
interchangeable.
"""

import tensorflow as tf
import tf_keras

from deeplab_sp.model.kernels import profile
from deeplab_sp.model.kernels import xla_islands
from deeplab_sp.utils import private_apis


def fused_kernel_available() -> bool:
  """Whether TensorFlow's CPU backend is oneDNN, with its layer-norm kernel."""
  return private_apis.onednn_enabled()


class LayerNormalization(tf_keras.layers.LayerNormalization):
  """tf_keras.layers.LayerNormalization, last axis only, fusable on CPU.

  Args:
    epsilon: as tf_keras'.
    kernels: the model's kernel profile (profile.py): STOCK runs tf_keras'
      own call; CPU and SERVING the fusable form where oneDNN has its
      kernel (CPU with XLA islands); PORTABLE the direct formula, without
      the fusable form's PlaceholderWithDefault, which would be an input of
      the ONNX graph. None: profile.default().
  """

  def __init__(self, epsilon=1e-3, kernels=None, **kwargs):
    if kwargs.get('axis', -1) != -1:
      raise ValueError('This LayerNormalization normalises the last axis '
                       f'only; got axis={kwargs["axis"]}.')
    super().__init__(epsilon=epsilon, **kwargs)
    self.kernels = profile.get(kernels)

  def call(self, inputs):
    if not (self.kernels.cpu_forms or self.kernels.portable):
      return super().call(inputs)
    inputs = tf.cast(inputs, self.compute_dtype)
    if self.kernels.portable:
      return self._direct_form(inputs)
    if (fused_kernel_available() and inputs.dtype == tf.float32 and
        self.dtype == 'float32' and self.scale and self.center and
        inputs.shape.rank and inputs.shape[-1] is not None):
      return self._fusable_form(inputs)
    return self._direct_form(inputs)

  def _fusable_form(self, inputs):
    """The remapper's layer norm pattern on inputs seen as [rows, C]."""
    channels = inputs.shape[-1]
    matrix = tf.reshape(inputs, [-1, channels])
    if inputs.shape.rank != 2:
      # Keeps grappler from merging the two reshapes, which would present
      # the remapper with the rank-4 input it does not fuse.
      matrix = tf.ensure_shape(matrix, [None, channels])
    outputs = _fusable_normalize(matrix, tf.convert_to_tensor(self.gamma),
                                 tf.convert_to_tensor(self.beta),
                                 epsilon=self.epsilon,
                                 use_xla=self.kernels.xla_islands)
    result = tf.reshape(outputs, tf.shape(inputs))
    result.set_shape(inputs.shape)
    return result

  def _direct_form(self, inputs):
    """Mean, centred variance, one normalise-scale-shift expression."""
    dtype = inputs.dtype
    if dtype in (tf.float16, tf.bfloat16) and self.dtype == 'float32':
      # Mixed precision: the statistics in float32, as tf_keras does.
      dtype = tf.float32
    gamma = tf.cast(self.gamma, dtype) if self.scale else None
    beta = tf.cast(self.beta, dtype) if self.center else None
    return _normalize(inputs, gamma, beta, epsilon=self.epsilon,
                      portable=self.kernels.portable,
                      use_xla=self.kernels.xla_islands)


@xla_islands.fused
def _normalize(inputs, gamma, beta, epsilon, portable=False):
  """Layer norm of the last axis, * gamma + beta (either may be None).

  Computed in gamma's (or beta's) dtype when given, returned in the
  inputs' dtype. portable: in the operators onnxruntime fuses into one
  LayerNormalization node (mean, subtract, Pow 2, mean, add epsilon, Sqrt,
  Div, * gamma + beta); tf2onnx writes Square as Mul and Rsqrt as
  Reciprocal, which that fusion does not match, leaving nine nodes. TFLite
  has POW, SQRT and DIV too.
  """
  input_dtype = inputs.dtype
  dtype = next((t.dtype for t in (gamma, beta) if t is not None),
               input_dtype)
  inputs = tf.cast(inputs, dtype)
  mean = tf.reduce_mean(inputs, axis=-1, keepdims=True)
  centered = inputs - mean
  if portable:
    variance = tf.reduce_mean(tf.pow(centered, 2.0), axis=-1, keepdims=True)
    outputs = centered / tf.sqrt(variance + epsilon)
  else:
    variance = tf.reduce_mean(tf.square(centered), axis=-1, keepdims=True)
    outputs = centered * tf.math.rsqrt(variance + epsilon)
  if gamma is not None:
    outputs *= gamma
  if beta is not None:
    outputs += beta
  return tf.cast(outputs, input_dtype)


def _fusable_normalize(matrix, gamma, beta, epsilon, use_xla):
  """Layer norm of a [rows, C] float32 matrix in the remapper's pattern.

  The gradient is `_normalize_gradient`, not TensorFlow's: the pattern's
  own (a batch-norm gradient over `rows` channels, then the reductions of
  gamma's and beta's gradients over the rows) makes several passes over the
  matrix, twice the time of the whole forward and backward otherwise.
  """
  @tf.custom_gradient
  def normalize(matrix, gamma, beta):
    # Not a constant to grappler, so the fills below stay fills.
    rows = tf.raw_ops.PlaceholderWithDefault(input=tf.shape(matrix)[0],
                                             shape=[])
    empty = tf.constant([], tf.float32)
    # Each row is one channel of a 1-image NCHW batch: batch norm's
    # statistics over its C "pixels" are the layer norm's.
    normalized = tf.raw_ops.FusedBatchNormV3(
        x=tf.reshape(matrix, [1, rows, matrix.shape[-1], 1]),
        scale=tf.ones([rows]), offset=tf.zeros([rows]), mean=empty,
        variance=empty, epsilon=epsilon, data_format='NCHW',
        is_training=True).y
    outputs = tf.reshape(normalized, tf.shape(matrix)) * gamma + beta

    def gradient(upstream):
      return _normalize_gradient(matrix, upstream, gamma, epsilon=epsilon,
                                 use_xla=use_xla)
    return outputs, gradient

  return normalize(matrix, gamma, beta)


@xla_islands.fused
def _normalize_gradient(matrix, upstream, gamma, epsilon):
  """Gradients (matrix, gamma, beta) of `_fusable_normalize`.

  The statistics are recomputed from the input (one pass) rather than
  kept from the forward pass; XLA fuses the rest into a few loops.
  With x_hat the normalised rows, s = 1 / std and u = upstream * gamma:
  d matrix = s * (u - mean(u) - x_hat * mean(u * x_hat)) per row.
  """
  channels = matrix.shape[-1]
  # Row means as matrix-vector products: XLA's CPU row reductions over a
  # few hundred channels are slower (docs/performance.md, "Training step").
  # gamma goes into the vector.
  means = tf.fill([channels, 1], tf.cast(1.0 / channels, matrix.dtype))
  gamma_means = gamma[:, tf.newaxis] / channels
  centered = matrix - tf.matmul(matrix, means)
  inverse_std = tf.math.rsqrt(
      tf.matmul(tf.square(centered), means) + epsilon)
  normalized = centered * inverse_std
  upstream_normalized = upstream * normalized
  matrix_gradient = inverse_std * (
      upstream * gamma - tf.matmul(upstream, gamma_means) -
      normalized * tf.matmul(upstream_normalized, gamma_means))
  return (matrix_gradient, tf.reduce_sum(upstream_normalized, axis=0),
          tf.reduce_sum(upstream, axis=0))
