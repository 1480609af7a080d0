"""Per-pixel baseline: DeepLabV3+ (Chen et al., ECCV 2018).

image -> encoder endpoints -> ASPP (atrous spatial pyramid pooling: a 1x1
branch, three atrous 3x3 branches and image pooling, concatenated and
projected) on the deepest endpoint -> decoder: the ASPP features upsampled
to a low-level endpoint's stride (Chen et al.: 4), concatenated with that
endpoint projected to a few channels, 3x3 convolutions and a 1x1 classifier
-> class logits at the low-level stride, bilinearly upsampled to the input.

The layers are the Model Garden's (official.vision): `ASPP` for the pyramid
and `SegmentationHead` with feature_fusion='deeplabv3plus' for the decoder.
They key multi-scale features by level, log2 of the stride, as strings;
this model converts the encoder's {stride: features} to that form. Chen et
al. run ASPP at stride 16 on a dilated backbone; the backbones here are not
dilated, so ASPP runs at their stride 32 (see protos/model.proto,
DeepLabV3PlusOptions). No superpixels: the model returns only
'semantic_logits'.
"""

import math
from typing import Dict, Sequence

import tensorflow as tf
import tf_keras

from deeplab_sp.model import components
from deeplab_sp.model import encoders
from deeplab_sp.model import per_pixel


def level(stride: int) -> int:
  """The Model Garden's level of a stride: log2(stride)."""
  result = int(round(math.log2(stride)))
  assert 2**result == stride, stride
  return result


class DeepLabV3Plus(components.ComponentModel):
  """DeepLabV3+: ASPP on the deepest endpoint, decoder on a low-level one.

  Call args:
    images: float RGB in [0, 255], [B, H, W, 3]; H, W multiples of the
      encoder's output stride (32).

  Returns:
    dict with 'semantic_logits' [B, H, W, K] (float32).

  Args:
    encoder: the backbone; it must return the endpoints at `aspp_stride` and
      `low_level_stride`.
    aspp: the Model Garden's ASPP at level(aspp_stride): maps {level:
      features} to {level: [B, H/aspp_stride, W/aspp_stride, C]}.
    decoder: the Model Garden's SegmentationHead with deeplabv3plus fusion at
      those levels: maps ({level: endpoint}, {level: ASPP features}) to
      logits [B, H/low_level_stride, W/low_level_stride, K].
    num_classes: K.
    input_size: the (H, W) the model is built for.

  Attributes:
    encoder, aspp, decoder: the components (COMPONENTS); the encoder's
      variables get the backbone learning-rate multiplier.
    input_size: the (H, W) the model was built for.
  """

  # The components, in the order they run.
  COMPONENTS = ('encoder', 'aspp', 'decoder')

  def __init__(self, encoder: encoders.Encoder, aspp: tf_keras.layers.Layer,
               decoder: tf_keras.layers.Layer, num_classes: int,
               input_size: Sequence[int], **kwargs):
    super().__init__(**kwargs)
    self.encoder = encoder
    self.aspp = aspp
    self.decoder = decoder
    self._num_classes = int(num_classes)
    self.input_size = tuple(int(s) for s in input_size)

  @property
  def num_classes(self) -> int:
    return self._num_classes

  def call(self, images, training=None):
    height, width = per_pixel.checked_input_size(
        images, encoders.OUTPUT_STRIDE, self.input_size)
    images = tf.cast(images, self.compute_dtype)
    endpoints = self.encoder(images, training=training)
    by_level: Dict[str, tf.Tensor] = {
        str(level(stride)): features for stride, features in endpoints.items()}
    # {level: [B, H / 32, W / 32, aspp channels]}
    context = self.aspp(by_level, training=training)
    # [B, H / low-level stride, W / low-level stride, K]
    logits = self.decoder((by_level, context), training=training)
    return {'semantic_logits': per_pixel.upsample_logits(
        logits, (height, width))}

  def get_config(self):
    return {'num_classes': self.num_classes, 'input_size': self.input_size}
