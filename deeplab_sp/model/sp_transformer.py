"""The SP-Transformer network (arXiv 2309.16889, Sec. III, Fig. 2).

image -> encoder endpoints -> hypercolumn pixel features -> superpixel
tokenization (learned queries + local dual-path cross-attention) ->
superpixel self-attention classifier -> association back to pixels.
"""

import tensorflow as tf
import tf_keras


class SPTransformer(tf_keras.Model):
  """Superpixel Transformer for semantic segmentation.

  Args:
    encoder, hypercolumn, tokenization, classifier, association: the
      component layers (see deeplab_sp.model.builder.build_model).
    output_stride: hypercolumn stride in input pixels.
    grid_height, grid_width: superpixel grid Hs x Ws.

  Call: images [b, H, W, 3] float RGB in [0, 255], with H a multiple of
    output_stride * Hs and W of output_stride * Ws -> dict
    'semantic_logits' [b, H, W, K] float32, 'superpixel_logits'
    [b, Hs, Ws, K], 'association' [b, H, W, 9], 'superpixel_ids' [b, H, W].
  """

  def __init__(self, encoder, hypercolumn, tokenization, classifier,
               association, output_stride, grid_height, grid_width, **kwargs):
    super().__init__(**kwargs)
    self.encoder = encoder
    self.hypercolumn = hypercolumn
    self.tokenization = tokenization
    self.classifier = classifier
    self.association = association
    self._output_stride = output_stride
    self._grid = (grid_height, grid_width)

  def check_input_size(self, height, width):
    """Raises ValueError unless (height, width) fits the geometry."""
    for size, cells, axis in ((height, self._grid[0], 'height'),
                              (width, self._grid[1], 'width')):
      multiple = self._output_stride * cells
      if size is None or size % multiple:
        raise ValueError(
            f'Input {axis} {size} does not fit the model: the hypercolumn '
            f'stride {self._output_stride} times the superpixel grid '
            f'{self._grid[0]}x{self._grid[1]} needs a {axis} that is a '
            f'multiple of {multiple} (e.g. {multiple}, {2 * multiple}, ...). '
            'Change the crop size or model_options.')

  def call(self, images, training=None):
    height, width = images.shape[1], images.shape[2]
    self.check_input_size(height, width)
    endpoints = self.encoder(images, training=training)
    pixel_features = self.hypercolumn(endpoints, (height, width))
    superpixels, pixels = self.tokenization(pixel_features, training=training)
    superpixel_logits, _ = self.classifier(superpixels, training=training)
    outputs = self.association(pixels, superpixels, superpixel_logits,
                               (height, width))
    outputs['semantic_logits'] = tf.cast(outputs['semantic_logits'],
                                         tf.float32)
    outputs['superpixel_logits'] = superpixel_logits
    return outputs

  def get_config(self):
    return {
        'encoder': tf_keras.layers.serialize(self.encoder),
        'hypercolumn': tf_keras.layers.serialize(self.hypercolumn),
        'tokenization': tf_keras.layers.serialize(self.tokenization),
        'classifier': tf_keras.layers.serialize(self.classifier),
        'association': tf_keras.layers.serialize(self.association),
        'output_stride': self._output_stride,
        'grid_height': self._grid[0], 'grid_width': self._grid[1]}
