"""What the per-pixel networks share: their input check and last upsampling.

The per-pixel baselines (hypercolumn_classifier.py, deeplabv3plus.py)
classify every pixel of a feature map at a fixed stride and upsample the
class logits to the input; they have no superpixel grid, so their input only
needs to be a multiple of their feature maps' strides.
"""

from typing import Sequence, Tuple

import tensorflow as tf

from deeplab_sp.model import geometry as geometry_lib


def upsample_logits(logits: tf.Tensor, size) -> tf.Tensor:
  """float32 class logits [B, h, w, K] -> [B, size[0], size[1], K].

  Bilinear, in float32 (half-pixel centres): the per-pixel networks' last
  step, as in DeepLab.
  """
  logits = tf.cast(logits, tf.float32)
  if tuple(logits.shape[1:3]) == tuple(size):
    return logits
  return tf.image.resize(logits, size, method='bilinear')


def checked_input_size(images: tf.Tensor, multiple: int,
                       built_for: Sequence[int]) -> Tuple[int, int]:
  """(height, width) of `images` if static multiples of `multiple`.

  Raises:
    geometry.GeometryError (a ValueError): naming the size, the multiple
      and the size the model was built for.
  """
  height, width = images.shape[1], images.shape[2]
  if height is None or width is None:
    raise geometry_lib.GeometryError(
        f'The model needs a static input size, got {height}x{width}.')
  try:
    return geometry_lib.check_input_multiple(
        (height, width), multiple,
        "the encoder's output stride and the feature maps' strides")
  except geometry_lib.GeometryError as e:
    raise geometry_lib.GeometryError(
        f'{e} The model was built for {built_for[0]}x{built_for[1]}. Resize '
        'or pad the images (tools/predict.py and the SavedModel do it for '
        'you).') from None
