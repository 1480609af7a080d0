"""Multi-head self-attention as batched matmuls, same variables as tf_keras'.

The superpixel classifier (arXiv 2309.16889, Sec. III-C) runs k global
self-attention layers over the Hs*Ws superpixels. tf_keras' MultiHeadAttention
projects with einsums (then a separate bias pass) and contracts
[B, T, N, H] queries and keys with einsums, which on CPU transpose inside and
make the [B, N, T, S] logits much slower than one batched matmul over
heads-first tensors. `MultiHeadSelfAttention` keeps tf_keras' layer (its
variables, their names, its first call that builds them, and every call
that is not plain float32 self-attention) and replaces only the arithmetic
of that one case.

Seam: the override reads tf_keras' private attributes through
utils/private_apis.py (`attention_internals`), whose test fails naming the
attribute when a tf_keras upgrade renames one;
tests/model/kernels/test_attention.py pins this layer's results and
gradients to tf_keras' and checks that the matmul path is taken.
"""

import math

import tensorflow as tf
import tf_keras

from deeplab_sp.utils import private_apis


class MultiHeadSelfAttention(tf_keras.layers.MultiHeadAttention):
  """tf_keras' MultiHeadAttention with matmuls for self-attention.

  For self-attention (query = value = key, no mask, float32) this layer
  projects the [B*T, C] token matrix once with the three kernels side by
  side (one MatMul with its BiasAdd fused), moves the heads first with one
  transpose, and forms the logits, the weighted sum and the output
  projection as matmuls. Same variables, same results (float32 round-off);
  other calls go to tf_keras' code.

  Call args and returns: those of tf_keras.layers.MultiHeadAttention
  (query, value [B, T, C] -> [B, T, C]).
  """

  def call(self, query, value, key=None, attention_mask=None,
           return_attention_scores=False, training=None,
           use_causal_mask=False):
    internals = private_apis.attention_internals(self)
    projections = internals[:4] if internals else ()
    # The first call (tf_keras' code) builds the projections.
    if (not projections or not all(p.built for p in projections) or
        value is not query or (key is not None and key is not query) or
        attention_mask is not None or use_causal_mask or
        isinstance(query, tf.RaggedTensor) or query.shape.rank != 3 or
        self.compute_dtype != 'float32' or not internals.use_bias):
      return super().call(query, value, key=key,
                          attention_mask=attention_mask,
                          return_attention_scores=return_attention_scores,
                          training=training, use_causal_mask=use_causal_mask)
    tokens, channels = query.shape[1], query.shape[2]
    num_heads, key_dim = internals.num_heads, internals.key_dim
    value_dim = internals.value_dim
    kernel = tf.concat([tf.reshape(p.kernel, [channels, -1])
                        for p in projections[:3]], axis=1)
    bias = tf.concat([tf.reshape(p.bias, [-1]) for p in projections[:3]],
                     axis=0)
    # [B*T, N*(2*key_dim + value_dim)]
    projected = tf.nn.bias_add(
        tf.matmul(tf.reshape(query, [-1, channels]), kernel), bias)
    sizes = [num_heads * key_dim, num_heads * key_dim, num_heads * value_dim]
    heads = []
    for part, dim in zip(tf.split(projected, sizes, axis=1),
                         (key_dim, key_dim, value_dim)):
      # [B, N, T, dim]
      heads.append(tf.transpose(
          tf.reshape(part, [-1, tokens, num_heads, dim]), [0, 2, 1, 3]))
    query_heads, key_heads, value_heads = heads
    query_heads *= 1.0 / math.sqrt(float(key_dim))
    # [B, N, T, S]
    scores = internals.masked_softmax(
        tf.matmul(query_heads, key_heads, transpose_b=True), None)
    weights = internals.dropout_layer(scores, training=training)
    # [B*T, N*value_dim] in (head, channel) order, as the output kernel.
    attended = tf.reshape(
        tf.transpose(tf.matmul(weights, value_heads), [0, 2, 1, 3]),
        [-1, num_heads * value_dim])
    output_kernel = internals.output_dense.kernel
    output = tf.nn.bias_add(
        tf.matmul(attended, tf.reshape(output_kernel,
                                       [num_heads * value_dim, -1])),
        internals.output_dense.bias)
    output = tf.reshape(output, [-1, tokens, output_kernel.shape[-1]])
    if return_attention_scores:
      return output, scores
    return output
