"""The SP-Transformer network (arXiv 2309.16889, Fig. 2).

image -> encoder endpoints -> hypercolumn pixel features -> superpixel
tokenization (learned queries + local dual-path cross-attention) ->
superpixel classifier (global self-attention + linear) -> superpixel
association (dense logits at input resolution).
"""

from typing import Sequence

import tensorflow as tf
import tf_keras

from deeplab_sp.model import encoders
from deeplab_sp.model.layers import hypercolumn as hypercolumn_lib
from deeplab_sp.model.layers import superpixel_association
from deeplab_sp.model.layers import superpixel_classifier
from deeplab_sp.model.layers import superpixel_tokenization

# The components, in the order they run (Table IV's rows).
COMPONENTS = ('encoder', 'hypercolumn', 'tokenization', 'classifier',
              'association')


class SPTransformer(tf_keras.Model):
  """Superpixel Transformer for semantic segmentation.

  Call args:
    images: float RGB in [0, 255], [B, H, W, 3]; H, W multiples of
      output_stride * (grid_height, grid_width).

  Returns:
    dict with 'semantic_logits' [B, H, W, K] (float32),
    'superpixel_logits' [B, Hs, Ws, K], 'association' [B, H, W, 9],
    'superpixel_ids' [B, H, W] int32.

  Attributes:
    encoder, hypercolumn, tokenization, classifier, association: the
      components (the encoder's variables get the backbone learning-rate
      multiplier).
    input_size: the (H, W) the model was built for.
  """

  def __init__(self, encoder: encoders.Encoder,
               hypercolumn: hypercolumn_lib.Hypercolumn,
               tokenization: superpixel_tokenization.SuperpixelTokenization,
               classifier: superpixel_classifier.SuperpixelClassifier,
               association: superpixel_association.SuperpixelAssociation,
               input_size: Sequence[int], **kwargs):
    super().__init__(**kwargs)
    self.encoder = encoder
    self.hypercolumn = hypercolumn
    self.tokenization = tokenization
    self.classifier = classifier
    self.association = association
    self.input_size = tuple(int(s) for s in input_size)

  @property
  def num_classes(self) -> int:
    return self.classifier.num_classes

  def check_input_size(self, height, width) -> None:
    """Raises ValueError if (height, width) does not fit the geometry."""
    cell_height = self.hypercolumn.output_stride * self.tokenization.grid_height
    cell_width = self.hypercolumn.output_stride * self.tokenization.grid_width
    if (height is None or width is None or height % cell_height or
        width % cell_width):
      raise ValueError(
          f'Input size {height}x{width} does not fit the model: it must be a '
          f'multiple of output_stride ({self.hypercolumn.output_stride}) x '
          f'superpixel grid ({self.tokenization.grid_height}x'
          f'{self.tokenization.grid_width}) = {cell_height}x{cell_width}, '
          f'e.g. {self.input_size[0]}x{self.input_size[1]}. Resize or pad '
          'the images (tools/predict.py and the SavedModel do it for you).')

  def call(self, images, training=None):
    height, width = images.shape[1], images.shape[2]
    self.check_input_size(height, width)
    images = tf.cast(images, self.compute_dtype)
    endpoints = self.encoder(images, training=training)
    pixels = self.hypercolumn(endpoints, (height, width), training=training)
    superpixels, pixels = self.tokenization(pixels, training=training)
    superpixel_logits = self.classifier(superpixels, training=training)
    outputs = self.association(pixels, superpixels, superpixel_logits,
                               (height, width))
    outputs['superpixel_logits'] = tf.cast(superpixel_logits, tf.float32)
    return outputs

  def get_config(self):
    return {'input_size': self.input_size}
