"""Kernel profiles: which forms of the kernels a model is built with.

A profile is fixed when the model is built (builder.build_model(...,
kernels=...)) and handed to every layer, which hands it on to the functions
it calls: what a trace produces depends only on the model, never on
ambient state. Every profile computes the same function with the same
variables, so a checkpoint written under one restores under any other
(tests/model/kernels/test_profile.py pins them together: values, gradients
and checkpoints).

  STOCK     tf_keras' own layers and TensorFlow's plain ops: what GPUs and
            TPUs get by default (their compilers fuse on their own).
  CPU       the forms tuned for TensorFlow's CPU backend: XLA islands over
            the memory-bound tails (xla_islands.py), the oneDNN-fusable
            layer norm, matmul self-attention (the default on a CPU-only
            machine, and the forms the CPU figures of docs/performance.md
            were measured with).
  SERVING   CPU without XLA islands: the SavedModel, which TF Serving runs
            without JIT compilation, and graph-level statistics.
  PORTABLE  the forms ONNX and TFLite have built-in operators for
            (portable_ops.py), without XLA islands or CPU-only patterns:
            the fixed-size exports.
"""

import dataclasses
from typing import Dict

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class KernelProfile:
  """Which kernel forms a model uses.

  Attributes:
    name: one of PROFILES.
    xla_islands: compile the memory-bound tails with XLA inside graphs.
    cpu_forms: the CPU-tuned layer forms (fusable layer norm, matmul
      self-attention, erf GELU).
    portable: the ONNX / TFLite forms (portable_ops.py).
  """
  name: str
  xla_islands: bool
  cpu_forms: bool
  portable: bool


STOCK = KernelProfile('stock', xla_islands=False, cpu_forms=False,
                      portable=False)
CPU = KernelProfile('cpu', xla_islands=True, cpu_forms=True, portable=False)
SERVING = KernelProfile('serving', xla_islands=False, cpu_forms=True,
                        portable=False)
PORTABLE = KernelProfile('portable', xla_islands=False, cpu_forms=False,
                         portable=True)
PROFILES: Dict[str, KernelProfile] = {
    p.name: p for p in (STOCK, CPU, SERVING, PORTABLE)}


def default() -> KernelProfile:
  """STOCK where a GPU or TPU is visible, else CPU."""
  if (tf.config.list_logical_devices('GPU') or
      tf.config.list_logical_devices('TPU')):
    return STOCK
  return CPU


def get(kernels) -> KernelProfile:
  """A KernelProfile for a profile, its name, or None (`default()`).

  Raises:
    ValueError: an unknown name.
  """
  if kernels is None:
    return default()
  if isinstance(kernels, KernelProfile):
    return kernels
  if kernels not in PROFILES:
    raise ValueError(f'Unknown kernel profile {kernels!r}: use one of '
                     f'{", ".join(PROFILES)}.')
  return PROFILES[kernels]
