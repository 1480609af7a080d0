"""CPU-kernel forms of standard layers, each behind a small seam.

None of these changes what the SP-Transformer (arXiv 2309.16889) computes;
each presents TensorFlow's CPU backend a graph it runs faster, with the same
variables and the same results to float32 round-off:

  * dense_rows.on_rows(function, features): per-position layers on a
    [rows, C] matrix (Dense + BiasAdd + activation fuse into one kernel);
  * layer_norm.LayerNormalization: tf_keras' layer, in the graph pattern
    oneDNN fuses into one layer-norm kernel;
  * attention.MultiHeadSelfAttention: tf_keras' MultiHeadAttention with
    self-attention as batched matmuls;
  * activations.gelu: the exact GELU through erf;
  * resize.bilinear: tf.image.resize whose gradient keeps the input's
    dtype (bfloat16 training steps compile with XLA);
  * xla_islands.fused / compiled_functions(): memory-bound tails compiled
    by XLA inside a plain graph, where the model's profile has them;
  * portable_ops.computed_in_graph and the portable forms of the layers:
    what ONNX and TFLite run with built-in operators.

Which forms a model uses is its kernel profile (profile.py: STOCK, CPU,
SERVING, PORTABLE), fixed when it is built and passed to every layer;
nothing here reads ambient state.
"""
