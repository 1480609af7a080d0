"""Superpixel association (arXiv 2309.16889, Sec. III-D, equations 5-7).

Eq. (5) logits I_p . S_i over the 9 neighbours of p's cell are computed at
the hypercolumn stride. With `upsample_logits_before_softmax` (the paper) the
9 logit maps are bilinearly upsampled to the input resolution *before* the
softmax; slots keep the neighbour indexing of the full-resolution pixel's own
cell (so near a cell border an interpolated slot mixes the logits of two
different absolute superpixels, as in the paper) and slots outside the grid
for that cell are re-masked after the resize. Eq. (6) then combines the
superpixel class logits at input resolution. Otherwise (5) and (6) run at the
hypercolumn stride and Q and Y are upsampled. Hard ids (eq. 7): the absolute
id row * Ws + col of the argmax slot. The softmax runs in float32.
"""

import tensorflow as tf
import tf_keras

from deeplab_sp.model import local_attention


class SuperpixelAssociation(tf_keras.layers.Layer):
  """Soft pixel-superpixel association and dense class logits.

  Args:
    upsample_logits_before_softmax: the paper's order (see module docstring).
    implementation: 'NAIVE' / 'EFFICIENT' or the proto enum value.

  Call: pixels [b, Hs*h, Ws*w, C], superpixels [b, Hs, Ws, C],
    superpixel_logits [b, Hs, Ws, K], input_size (H, W) ->
    dict 'semantic_logits' [b, H, W, K] float32, 'association' [b, H, W, 9]
    float32, 'superpixel_ids' [b, H, W] int32.
  """

  def __init__(self, upsample_logits_before_softmax=True,
               implementation='NAIVE', **kwargs):
    super().__init__(**kwargs)
    self._upsample = upsample_logits_before_softmax
    self._implementation = local_attention.normalize_implementation(
        implementation)

  def call(self, pixels, superpixels, superpixel_logits, input_size):
    grid_height, grid_width = superpixels.shape[1], superpixels.shape[2]
    height, width = input_size
    logits = local_attention.association_logits(
        tf.cast(pixels, tf.float32), tf.cast(superpixels, tf.float32),
        implementation=self._implementation)  # [b, Hs*h, Ws*w, 9]
    class_logits = tf.cast(superpixel_logits, tf.float32)
    if self._upsample:
      logits = tf.image.resize(logits, (height, width), method='bilinear')
      valid = local_attention.neighbor_superpixel_ids(
          height, width, grid_height, grid_width) >= 0  # [H, W, 9]
      logits = tf.where(valid[tf.newaxis], logits,
                        local_attention.masked_logit(tf.float32))
      association = tf.nn.softmax(logits, axis=-1)  # [b, H, W, 9], eq. (5)
      semantic = local_attention.combine_neighbors(
          association, class_logits, implementation=self._implementation)
    else:
      association = tf.nn.softmax(logits, axis=-1)  # [b, Hs*h, Ws*w, 9]
      semantic = local_attention.combine_neighbors(
          association, class_logits, implementation=self._implementation)
      semantic = tf.image.resize(semantic, (height, width), method='bilinear')
      association = tf.image.resize(association, (height, width),
                                    method='bilinear')
    ids = local_attention.neighbor_superpixel_ids(
        height, width, grid_height, grid_width)  # [H, W, 9]
    best_slot = tf.argmax(association, axis=-1, output_type=tf.int32)
    batch = tf.shape(best_slot)[0]
    superpixel_ids = tf.gather(
        tf.tile(ids[tf.newaxis], [batch, 1, 1, 1]), best_slot[..., tf.newaxis],
        batch_dims=3)[..., 0]  # [b, H, W], eq. (7)
    return {'semantic_logits': semantic, 'association': association,
            'superpixel_ids': superpixel_ids}

  def get_config(self):
    config = super().get_config()
    config.update({'upsample_logits_before_softmax': self._upsample,
                   'implementation': self._implementation})
    return config
