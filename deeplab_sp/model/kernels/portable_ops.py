"""Graph forms that ONNX and TFLite run with their built-in operators.

The fixed-size exports (deeplab_sp/export/onnx_export.py and
tflite_export.py) build the model with the PORTABLE kernel profile
(profile.py). With it, the few places whose usual form has no built-in
equivalent in ONNX (tf2onnx) or in TFLite (the converter's built-in op set)
take a form that has one. Each form computes the same function, to float32
round-off; the other profiles (training, evaluation, the SavedModel) keep
the usual forms:

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

File size. Both converters fold every part of the graph that does not
depend on the input into constants stored in the file (tf2onnx without a
size limit; the TFLite converter up to about 1 MB per result). A value of
the size of the image that is a function of the weights or of the geometry
alone (a position table resized to the feature map, a border mask per
pixel, the first tokenization layer's products of the learned superpixel
queries with per-pixel tables) would then make the file grow with the input
size instead of the weights. The portable forms build such values from
small constants by broadcasting against the tensors they meet, and
`computed_in_graph` keeps the values that need the weights (the small table
before its resize, the learned queries) out of the folding.
"""

import tensorflow as tf

# The largest rank of `computed_in_graph`'s `like` (TFLite's strided slice).
_MAX_LIKE_RANK = 5


def computed_in_graph(value, like, portable: bool):
  """`value`, computed by the exported graph rather than stored in it.

  With `portable` (the model's `kernels.portable`), `value` is returned
  times a 1 that is computed from the first entry of `like`, a tensor known
  only at run time (c or not c for the comparison c = entry > 0, true whatever the
  entry, NaN included). The converters cannot fold what follows into a
  constant, so a small value that the graph turns into a large one (a table
  resized to the image, learned queries multiplied with per-pixel tables)
  costs its own size in the file, not the large one's. The product is
  exact: a float times 1.0, an integer times 1, a bool and True. Without
  `portable`, `value` is returned unchanged (no op is added).

  Args:
    value: a tensor (float, integer or bool).
    like: a tensor of the same graph that depends on the input (e.g. the
      features `value` meets), of rank 1 to 5, not empty.
    portable: whether the model is built for the portable exports.

  Returns:
    A tensor equal to `value`.
  """
  if not portable:
    return value
  value = tf.convert_to_tensor(value)
  like = tf.convert_to_tensor(like)
  rank = like.shape.rank
  assert rank is not None and 1 <= rank <= _MAX_LIKE_RANK, (
      f'computed_in_graph needs a `like` of rank 1 to {_MAX_LIKE_RANK}, got '
      f'{like.shape}.')
  entry = like[(0,) * rank]
  if entry.dtype == tf.bool:
    condition = entry
  else:
    condition = entry > tf.zeros([], entry.dtype)
  always = tf.logical_or(condition, tf.logical_not(condition))
  if value.dtype == tf.bool:
    return tf.logical_and(value, always)
  return value * tf.cast(always, value.dtype)
