"""Local pixel-superpixel attention of the Superpixel Transformer.

The local terms of the SP-Transformer (Zhu et al., "Superpixel Transformers
for Efficient Semantic Segmentation", arXiv 2309.16889), as the methods of
a `LocalAttention` (interface.py) on tensors with static spatial shapes
(eager, `tf.function`, XLA; any batch; float32, float16, bfloat16):

  * `superpixel_update`: the attention term of equation (3), each superpixel
    attending to the 9*h*w pixels of the 3x3 block of cells around it, with
    the pixels' keys and values given as affine maps of their features;
  * `pixel_update`: the attention term of equation (4), each pixel attending
    to the 9 superpixels of the 3x3 block around its own cell, with the
    pixels' queries and the output projection given as affine maps;
  * `association_logits`: the dot products I_p . S_i of equation (5);
  * `combine_neighbors`: the weighted sum of equation (6);
  * `to_pixel_order`, `from_pixel_order`: the pixel order the two updates
    take and give (image order for NAIVE, cell order for EFFICIENT), so
    that a chain of layers converts once at each end.

`get(implementation)` gives the form of a name, once, when a layer is
built: NAIVE (naive.Naive, the paper's 9x duplication, the reference) or
EFFICIENT (efficient.Efficient, the same function without the copies, equal
forward and backward to float32 round-off). Both read the same arguments,
so a model's variables and checkpoints do not depend on the choice.

The neighbourhoods themselves (slot numbering, border masks, superpixel ids,
masked logits, cell order) are defined in neighbors.py; the shifted grids
both forms rest on, with their custom gradients, in slot_ops.py.

Shapes: B batch, Hs x Ws superpixel grid, h x w pixels per cell (H = Hs*h,
W = Ws*w), N heads of D channels, C feature channels. The sizes must divide;
the model checks that once (deeplab_sp/model/geometry.py).
"""

import functools

from deeplab_sp.model.kernels import profile
from deeplab_sp.model.local_attention import efficient
from deeplab_sp.model.local_attention import interface
from deeplab_sp.model.local_attention import naive

Affine = interface.Affine
LocalAttention = interface.LocalAttention

NAIVE = naive.Naive.name
EFFICIENT = efficient.Efficient.name
IMPLEMENTATIONS = (NAIVE, EFFICIENT)
_FORMS = {NAIVE: naive.Naive, EFFICIENT: efficient.Efficient}


def normalize_implementation(implementation: str) -> str:
  """Returns NAIVE or EFFICIENT for a name in any case.

  Raises:
    ValueError: for anything else (proto enum values are converted to names
      by the model builder, not here).
  """
  name = implementation.upper() if isinstance(implementation, str) else None
  if name not in IMPLEMENTATIONS:
    raise ValueError(
        f'Unknown local attention implementation {implementation!r}: use one '
        f'of {IMPLEMENTATIONS} (the LocalAttentionImplementation enum of '
        'protos/model.proto: NAIVE = 0, EFFICIENT = 1).')
  return name


def get(implementation: str, kernels=None) -> LocalAttention:
  """The local attention form named `implementation`, in any case, with the
  kernel profile `kernels` (kernels/profile.py; None: its default).

  Raises:
    ValueError: for any other name (see `normalize_implementation`).
  """
  return _form(normalize_implementation(implementation), profile.get(kernels))


@functools.lru_cache(maxsize=None)
def _form(name: str, kernels: profile.KernelProfile) -> LocalAttention:
  # A form holds only its profile: one instance of each serves every layer.
  return _FORMS[name](kernels)
