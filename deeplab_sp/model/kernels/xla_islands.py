"""XLA islands: memory-bound tails compiled by XLA in an otherwise plain graph.

Used by the hypercolumn (arXiv 2309.16889, Sec. III-A), the EFFICIENT
local attention (Sec. III-B), the association (Sec. III-D) and the layer
norms; what they compute is unchanged.

On CPU, TensorFlow runs each elementwise op or reduction as its own pass
over memory. A few of the decoder's chains run over the largest tensors of
the model (the hypercolumn's 131k x 256 GELU, the association's
full-resolution 9-slot softmax and argmax), where XLA's fusion into one or
two loops beats the separate kernels. `fused` compiles such a
function with XLA when it is traced into a graph (tf.function, the trainer's
steps); everything else in the graph stays with TensorFlow's kernels (XLA's
CPU matmuls and convolutions are slower than oneDNN's here). Results equal
the plain function's to float32 round-off.

Eagerly (no graph) the plain function runs, so eager callers pay no
compilation. Whether a call compiles is the caller's argument `use_xla`,
its model's kernel profile (profile.py): the SavedModel and the portable
exports are built with profiles without islands, because TF Serving does
not JIT-compile XLA on CPU by default (its --xla_cpu_compilation_enabled is
off) and would refuse such a graph.
"""

import functools

import tensorflow as tf


def fused(function):
  """Decorator: `function` compiled with XLA when traced into a graph.

  The wrapper takes one more keyword argument, `use_xla` (the model's
  `kernels.xla_islands`): False runs the plain function. Each call in a
  graph compiles its own function (traced once, at its static shapes), so
  one decorated function used at many shapes does not retrace a shared
  tf.function. The arguments must be tensors or Python values fixed at
  trace time (shapes, sizes).
  """

  @functools.wraps(function)
  def wrapper(*args, use_xla: bool, **kwargs):
    if tf.executing_eagerly() or not use_xla:
      return function(*args, **kwargs)
    compiled = tf.function(functools.partial(function, **kwargs),
                           jit_compile=True, autograph=False)
    return compiled(*args)

  return wrapper


def compiled_functions(graph_def) -> list:
  """Names of the functions of a GraphDef that XLA must compile."""
  return [function.signature.name for function in graph_def.library.function
          if function.attr['_XlaMustCompile'].b]
