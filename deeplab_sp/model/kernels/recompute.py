"""Activations recomputed in the backward pass instead of stored.

A training step keeps every activation that the backward pass reads until
that pass reaches it. At the Cityscapes geometry the decoder's are large
next to its compute: the association and the loss work on full-resolution
[H, W, 9] and [H, W, K] tensors, the hypercolumn's hidden layer on 131k
pixels x 256 channels, while their forward pass costs little against the
encoder's. `in_backward` runs such a segment forward without keeping its
intermediate tensors (only its inputs and outputs), and runs it again in
the backward pass to differentiate it (tf.recompute_grad). The values and
gradients are those of the plain call: the same ops run on the same inputs.

It is used only where the segment is deterministic (no dropout, no
BatchNorm statistics update: the second run would differ), and only in
training graphs: inference has no backward pass, and the SavedModel export
traces the plain call.
"""

from typing import Callable, Sequence

import tensorflow as tf


def in_backward(function: Callable[..., object],
                tensors: Sequence[tf.Tensor]):
  """`function(*tensors)`, its intermediate tensors recomputed for gradients.

  Args:
    function: a deterministic function of `tensors` (and of variables it
      reads, e.g. a Keras layer's, whose gradients are also recomputed). It
      must not create variables: call it once (build the layers) before.
    tensors: its tensor arguments; anything else is bound in `function`.

  Returns:
    What `function` returns (a tensor or a nest of tensors).
  """
  return tf.recompute_grad(function)(*tensors)
