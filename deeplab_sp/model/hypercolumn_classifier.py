"""Per-pixel baseline: the SP-Transformer's hypercolumn, classified per pixel.

image -> encoder endpoints -> hypercolumn pixel features (the SP-Transformer's
own layers, paper Sec. III-A) -> a per-pixel MLP classifier -> class logits
at the hypercolumn stride, bilinearly upsampled to the input.

The ablation of the SP-Transformer's superpixel path: the same pixel
features, classified where they are instead of through superpixel
tokenization, self-attention and association. No superpixels, so the model
returns only 'semantic_logits'.
"""

import math
from typing import Sequence

import tensorflow as tf
import tf_keras

from deeplab_sp.model import components
from deeplab_sp.model import encoders
from deeplab_sp.model import hypercolumn as hypercolumn_lib
from deeplab_sp.model import per_pixel


def input_multiple(hypercolumn_stride: int) -> int:
  """What the input height and width must be a multiple of.

  The encoder's output stride (its endpoints then tile the image exactly)
  and the hypercolumn's stride (the hypercolumn size is input / stride).
  """
  return math.lcm(encoders.OUTPUT_STRIDE, hypercolumn_stride)


class HypercolumnPixelClassifier(components.ComponentModel):
  """Hypercolumn features classified pixel by pixel.

  Call args:
    images: float RGB in [0, 255], [B, H, W, 3]; H, W multiples of
      input_multiple(hypercolumn.output_stride).

  Returns:
    dict with 'semantic_logits' [B, H, W, K] (float32).

  Args:
    encoder: the backbone (its endpoints feed the hypercolumn).
    hypercolumn: the SP-Transformer's Hypercolumn layer.
    pixel_classifier: maps [..., hypercolumn channels] to [..., K] pixel by
      pixel (a hypercolumn.EndpointProjection: Dense -> LayerNorm -> GELU ->
      Dense).
    input_size: the (H, W) the model is built for.

  Attributes:
    encoder, hypercolumn, pixel_classifier: the components (COMPONENTS);
      the encoder's variables get the backbone learning-rate multiplier.
    input_size: the (H, W) the model was built for.
  """

  # The components, in the order they run.
  COMPONENTS = ('encoder', 'hypercolumn', 'pixel_classifier')

  def __init__(self, encoder: encoders.Encoder,
               hypercolumn: hypercolumn_lib.Hypercolumn,
               pixel_classifier: hypercolumn_lib.EndpointProjection,
               input_size: Sequence[int], **kwargs):
    super().__init__(**kwargs)
    self.encoder = encoder
    self.hypercolumn = hypercolumn
    self.pixel_classifier = pixel_classifier
    self.input_size = tuple(int(s) for s in input_size)

  @property
  def num_classes(self) -> int:
    return self.pixel_classifier.channels

  def call(self, images, training=None):
    height, width = per_pixel.checked_input_size(
        images, input_multiple(self.hypercolumn.output_stride),
        self.input_size)
    images = tf.cast(images, self.compute_dtype)
    endpoints = self.encoder(images, training=training)
    # [B, H / stride, W / stride, C]
    pixels = self.hypercolumn(endpoints, (height, width), training=training)
    # [B, H / stride, W / stride, K]
    logits = self.pixel_classifier(pixels, training=training)
    return {'semantic_logits': per_pixel.upsample_logits(logits,
                                                         (height, width))}

  def get_config(self):
    return {'input_size': self.input_size}
