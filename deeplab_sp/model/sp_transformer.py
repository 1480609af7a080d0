"""The SP-Transformer network (arXiv 2309.16889, Fig. 2).

image -> encoder endpoints -> hypercolumn pixel features -> superpixel
tokenization (learned queries + local dual-path cross-attention) ->
superpixel classifier (global self-attention + linear) -> superpixel
association (dense logits at input resolution).

The components are built elsewhere (model/builder/) and injected. The input
size is checked here, once per call, against the hypercolumn stride and the
superpixel grid (geometry.py); the layers rely on it.
"""

from typing import Sequence

import tensorflow as tf
import tf_keras

from deeplab_sp.model import association as association_lib
from deeplab_sp.model import classifier as classifier_lib
from deeplab_sp.model import components
from deeplab_sp.model import encoders
from deeplab_sp.model import geometry as geometry_lib
from deeplab_sp.model import hypercolumn as hypercolumn_lib
from deeplab_sp.model import tokenization as tokenization_lib
from deeplab_sp.model.kernels import recompute

# The components, in the order they run (Table IV's rows).
COMPONENTS = ('encoder', 'hypercolumn', 'tokenization', 'classifier',
              'association')


class SPTransformer(components.ComponentModel):
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
    recompute_in_backward: whether training calls recompute the
      hypercolumn's and the association's intermediate tensors in the
      backward pass instead of storing them (kernels/recompute.py); the
      values and gradients are the same.
  """

  # The components, in the order they run.
  COMPONENTS = COMPONENTS

  def __init__(self, encoder: encoders.Encoder,
               hypercolumn: hypercolumn_lib.Hypercolumn,
               tokenization: tokenization_lib.SuperpixelTokenization,
               classifier: classifier_lib.SuperpixelClassifier,
               association: association_lib.SuperpixelAssociation,
               input_size: Sequence[int], recompute_in_backward: bool = True,
               **kwargs):
    super().__init__(**kwargs)
    self.encoder = encoder
    self.hypercolumn = hypercolumn
    self.tokenization = tokenization
    self.classifier = classifier
    self.association = association
    self.input_size = tuple(int(s) for s in input_size)
    self.recompute_in_backward = bool(recompute_in_backward)

  @property
  def num_classes(self) -> int:
    return self.classifier.num_classes

  def geometry(self, height, width) -> geometry_lib.Geometry:
    """The feature-map sizes for (height, width) input images.

    Raises:
      geometry.GeometryError (a ValueError): if the size does not fit the
        hypercolumn stride and the superpixel grid.
    """
    if height is None or width is None:
      raise geometry_lib.GeometryError(
          f'The model needs a static input size, got {height}x{width}.')
    try:
      return geometry_lib.compute_geometry(
          (height, width), self.hypercolumn.output_stride,
          self.tokenization.grid_height, self.tokenization.grid_width)
    except geometry_lib.GeometryError as e:
      raise geometry_lib.GeometryError(
          f'{e} The model was built for {self.input_size[0]}x'
          f'{self.input_size[1]}. Resize or pad the images (tools/predict.py '
          'and the SavedModel do it for you).') from None

  def call(self, images, training=None):
    height, width = self.geometry(images.shape[1], images.shape[2]).input_size
    images = tf.cast(images, self.compute_dtype)
    endpoints = self.encoder(images, training=training)
    size = (height, width)
    # Only a Python True: inference and the export trace the plain calls.
    recompute_segments = training is True and self.recompute_in_backward
    strides = sorted(endpoints)

    def hypercolumn(*features):
      return self.hypercolumn(dict(zip(strides, features)), size,
                              training=training)

    def association(pixels, superpixels, superpixel_logits):
      return self.association(pixels, superpixels, superpixel_logits, size)

    if recompute_segments:
      pixels = recompute.in_backward(hypercolumn,
                                     [endpoints[s] for s in strides])
    else:
      pixels = hypercolumn(*[endpoints[s] for s in strides])
    superpixels, pixels = self.tokenization(pixels, training=training)
    superpixel_logits = self.classifier(superpixels, training=training)
    if recompute_segments:
      outputs = recompute.in_backward(
          association, [pixels, superpixels, superpixel_logits])
    else:
      outputs = association(pixels, superpixels, superpixel_logits)
    outputs = dict(outputs)
    outputs['superpixel_logits'] = tf.cast(superpixel_logits, tf.float32)
    return outputs

  def get_config(self):
    return {'input_size': self.input_size,
            'recompute_in_backward': self.recompute_in_backward}
