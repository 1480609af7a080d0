"""Test-time augmentation of the evaluation: several scales, flipped images.

DeepLab's `eval_scales` and `add_flipped_images` (its multi-scale
prediction), set by EvaluatorOptions (protos/evaluator.proto). For each
scale s the evaluation input [B, H, W, 3] (the size the model is built for)
is resized bilinearly to geometry.scaled_size((H, W), s), the model runs on
it, and its semantic logits are resized bilinearly back to H x W and turned
into softmax probabilities; with flipped images the model also runs on the
horizontally flipped resized input, whose logits are flipped back first.
The prediction is the argmax of the mean of the probabilities of all the
views. Averaging probabilities (not logits) is DeepLab's choice: every view
gets the same say however confident its logits are.

The model takes any static input size that fits its geometry (a multiple of
output_stride * superpixel grid for the SP-Transformer, of the encoder's
stride for the baselines); experiment_checks.py checks every scaled size
against it, so the views need no padding.

Two properties the tests rely on: the single scale 1.0 without flipping
returns the model's own logits and outputs, so the evaluation is the plain
one exactly; and each image's views and its flipped views are summed in
pairs, in the same order, so the prediction of a flipped image is exactly
the flipped prediction at scale 1.0 (and up to the bilinear resizes'
rounding at other scales).
"""

import dataclasses
from typing import Dict, Optional, Sequence, Tuple

import tensorflow as tf
import tf_keras

from deeplab_sp.model import geometry
from deeplab_sp.protos import evaluator_pb2

# What an empty EvaluatorOptions.eval_scales means.
DEFAULT_SCALES = (1.0,)


@dataclasses.dataclass(frozen=True)
class EvalAugmentation:
  """The views the evaluation averages (see the module docstring).

  Attributes:
    scales: the factors the evaluation input is resized by (positive; the
      experiment's validation checks that each scaled size fits the model).
    flip: also run every scale on the horizontally flipped input.
  """
  scales: Tuple[float, ...] = DEFAULT_SCALES
  flip: bool = False

  @classmethod
  def from_options(cls, options: evaluator_pb2.EvaluatorOptions
                  ) -> 'EvalAugmentation':
    """The augmentation of a validated EvaluatorOptions."""
    return cls(scales=tuple(float(s) for s in options.eval_scales)
               or DEFAULT_SCALES,
               flip=bool(options.add_flipped_images))

  @property
  def is_plain(self) -> bool:
    """Whether it is the plain evaluation (one view, the input as is)."""
    return tuple(self.scales) == DEFAULT_SCALES and not self.flip

  @property
  def num_views(self) -> int:
    """Forward passes per batch (the plain pass of `__call__` excluded)."""
    return len(self.scales) * (2 if self.flip else 1)

  def as_dict(self) -> Dict:
    """The settings as JSON-ready fields of EvaluatorOptions."""
    return {'eval_scales': list(self.scales),
            'add_flipped_images': self.flip}

  def __call__(self, model: tf_keras.Model, images: tf.Tensor
              ) -> Tuple[tf.Tensor, Optional[Dict[str, tf.Tensor]]]:
    """The averaged class scores of `images`.

    Args:
      model: returns a dict with 'semantic_logits' [B, h, w, K] for images
        [B, h, w, 3] of every scaled size.
      images: float [B, H, W, 3] with a static H, W: the evaluation input.

    Returns:
      (scores, plain_outputs). scores: float32 [B, H, W, K] whose argmax is
      the prediction: the model's logits when `is_plain`, else the mean
      softmax probabilities of the views. plain_outputs: the model's output
      dict for `images` as they are (scale 1.0, not flipped) when that is
      one of the views, else None.
    """
    if self.is_plain:
      outputs = model(images, training=False)
      return outputs['semantic_logits'], outputs
    size = (int(images.shape[1]), int(images.shape[2]))
    plain_outputs = None
    total = None
    for scale in self.scales:
      scaled_size = geometry.scaled_size(size, scale)
      scaled = (images if scaled_size == size else
                tf.image.resize(images, scaled_size, method='bilinear'))
      outputs = model(scaled, training=False)
      if scaled_size == size:
        plain_outputs = outputs
      probabilities = _probabilities(outputs['semantic_logits'], size)
      if self.flip:
        flipped = model(tf.reverse(scaled, axis=[2]), training=False)
        # A sum of two terms is the same whichever comes first, so a flipped
        # image gets exactly the flipped sum.
        probabilities += _probabilities(
            tf.reverse(flipped['semantic_logits'], axis=[2]), size)
      total = probabilities if total is None else total + probabilities
    return total / float(self.num_views), plain_outputs


def _probabilities(logits: tf.Tensor, size: Sequence[int]) -> tf.Tensor:
  """Softmax of `logits` [B, h, w, K] resized to `size` (H, W): float32."""
  logits = tf.cast(logits, tf.float32)
  if tuple(logits.shape[1:3]) != tuple(size):
    logits = tf.image.resize(logits, size, method='bilinear')
  return tf.nn.softmax(logits, axis=-1)
