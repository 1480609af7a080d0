"""Superpixel association (arXiv 2309.16889, Sec. III-D, equations 5-7).

Every pixel is softly associated with the 9 superpixels of the 3x3 cells
around its own cell, from the outputs of the last tokenization layer:

  Q_pi = softmax_{i in N(p)}(I_p^n . S_i^n)        (5)
  Y_p  = sum_{i in N(p)} Q_pi * C_i                (6)
  hard superpixel of p = argmax_i Q_pi             (7)

As in the paper, the 9 association logits are computed at the hypercolumn
stride and bilinearly upsampled to the input resolution *before* the softmax
of (5); (6) is then evaluated at input resolution. The logits are indexed by
relative neighbour slot, so near a cell border the interpolation of slot k
mixes the logits of different absolute superpixels (upsampling
RELATIVE_SLOTS, the slot tensor resized as it is), unless each source's
logits are re-indexed into the full-resolution pixel's own cell first
(upsampling PER_SUPERPIXEL, association_upsampling.py); either way the
slots are read with the neighbour indexing of the full-resolution pixel's
own cell.
Implementation choices, documented:
  * by default (logit_scale SQRT_CHANNELS) the dot products are scaled by
    1/sqrt(C) (the features are layer-normalised, so unscaled logits would
    start out nearly one-hot), by scaling the superpixel features (exact when
    sqrt(C) is a power of 2, as for C = 16, 64, 256); logit_scale NONE uses
    the paper's unscaled form of (5);
  * before the upsampling, slots outside the grid (which hold a large
    negative mask value) are filled with the smallest valid logit of their
    pixel, so that the mask value never bleeds into valid slots of
    neighbouring cells; after it, the slots outside the grid of each
    full-resolution pixel's own cell are masked again, so they get weight
    exactly 0.
With upsample_logits_before_softmax=False, (5) and (6) run at the hypercolumn
stride and the dense logits are upsampled instead.
"""

import math

import tensorflow as tf
import tf_keras

from deeplab_sp.model import association_upsampling
from deeplab_sp.model import local_attention
from deeplab_sp.model.kernels import portable_ops
from deeplab_sp.model.kernels import profile
from deeplab_sp.model.kernels import xla_islands
from deeplab_sp.model.local_attention import neighbors

# How the dot products of equation (5) are scaled (model.proto,
# AssociationLogitScale): divided by sqrt(C), or not at all (the paper's
# form).
SQRT_CHANNELS = 'SQRT_CHANNELS'
NONE = 'NONE'
LOGIT_SCALES = (SQRT_CHANNELS, NONE)


def _argmax_slot(values):
  """argmax over the 9 slots of [B, H, W, 9] -> [B, H, W] int32.

  Taken over the rows of a [B*H*W, 9] matrix, which the CPU kernel does
  faster than over the last axis of the 4-D tensor.
  """
  slots = tf.argmax(tf.reshape(values, [-1, neighbors.NUM_NEIGHBORS]),
                    axis=-1, output_type=tf.int32)
  return tf.reshape(slots, [-1, values.shape[1], values.shape[2]])


def _slot_superpixel_ids(slots, grid_height, grid_width, portable):
  """Absolute superpixel ids (row * Ws + col) of neighbour `slots` [B, H, W].

  The id of slot s of a pixel in cell (r, c) is (r + dy_s) * Ws + c + dx_s;
  the slots must be inside the grid.
  """
  height, width = slots.shape[1], slots.shape[2]
  cell_rows = tf.range(height) // (height // grid_height)
  cell_cols = tf.range(width) // (width // grid_width)
  # [H, W]: the id of each pixel's own cell. The exports compute it from
  # its [H, 1] and [W] terms (stored, it would be an H x W constant).
  row_ids = portable_ops.computed_in_graph(
      cell_rows[:, tf.newaxis] * grid_width, slots, portable)
  own_ids = row_ids + cell_cols[tf.newaxis, :]
  offsets = tf.constant([dy * grid_width + dx
                         for dy, dx in neighbors.NEIGHBOR_OFFSETS],
                        tf.int32)
  return own_ids[tf.newaxis] + tf.gather(offsets, slots)


def _fill_outside_grid(logits, grid_height, grid_width, portable):
  """`logits` [B, H, W, 9] with each pixel's smallest valid logit at the
  slots outside the grid (so that the mask value never bleeds into valid
  slots of neighbouring cells when the logits are upsampled)."""
  if portable:
    # The exports: the mask of valid slots as one [Hs, 1, Ws, 1, 9] block
    # broadcast over the pixels of each cell, not a stored [H, W, 9] one.
    smallest_valid = tf.reduce_min(
        neighbors.where_inside_grid(logits, grid_height, grid_width,
                                    tf.float32.max),
        axis=-1, keepdims=True)
    return neighbors.where_inside_grid(logits, grid_height, grid_width,
                                       smallest_valid)
  valid = neighbors.neighbor_superpixel_ids(
      logits.shape[1], logits.shape[2], grid_height, grid_width) >= 0
  smallest_valid = tf.reduce_min(
      tf.where(valid[tf.newaxis], logits, tf.float32.max), axis=-1,
      keepdims=True)
  return tf.where(valid[tf.newaxis], logits, smallest_valid)


@xla_islands.fused
def _masked_association(upsampled, grid_height, grid_width, portable):
  """Equations (5) and (7) at full resolution, one XLA fusion in graphs.

  Args:
    upsampled: [B, H, W, 9] upsampled association logits.
    grid_height, grid_width: the superpixel grid.
    portable: the model's kernels.portable.

  Returns:
    (association [B, H, W, 9], exactly 0 at slots outside the grid of each
    pixel's cell; superpixel_ids [B, H, W] int32, the absolute id of each
    pixel's argmax slot).
  """
  upsampled = neighbors.where_inside_grid(
      upsampled, grid_height, grid_width, neighbors.masked_logit(tf.float32))
  return (tf.nn.softmax(upsampled, axis=-1),
          _slot_superpixel_ids(_argmax_slot(upsampled), grid_height,
                               grid_width, portable))


class SuperpixelAssociation(tf_keras.layers.Layer):
  """Projects superpixel class logits back to pixels (equations 5-7).

  Call args:
    pixels: I^n [B, Hh, Wh, C] at the hypercolumn stride.
    superpixels: S^n [B, Hs, Ws, C].
    superpixel_logits: C_i [B, Hs, Ws, K].
    image_size: (H, W), static ints, multiples of (Hs, Ws) (the model
      checks its geometry once, model/geometry.py).

  Returns:
    dict with
      'semantic_logits': Y [B, H, W, K] float32;
      'association': Q [B, H, W, 9] float32, non-negative, sums to 1;
      'superpixel_ids': [B, H, W] int32, absolute id (row * Ws + col) of
        each pixel's hard superpixel.

  Args:
    upsample_logits_before_softmax: the paper's order (True) or softmax and
      (6) at the hypercolumn stride (False).
    implementation: 'NAIVE' or 'EFFICIENT' (local_attention.get).
    logit_scale: SQRT_CHANNELS (I . S / sqrt(C)) or NONE (I . S, the
      paper's equation 5).
    upsampling: how the logits are upsampled before the softmax
      (association_upsampling): RELATIVE_SLOTS (the slot tensor as it is) or
      PER_SUPERPIXEL (per absolute superpixel).
    kernels: the model's kernel profile (kernels/profile.py); None: its
      default.
  """

  def __init__(self, upsample_logits_before_softmax=True,
               implementation=local_attention.NAIVE,
               logit_scale=SQRT_CHANNELS,
               upsampling=association_upsampling.RELATIVE_SLOTS,
               kernels=None, **kwargs):
    super().__init__(**kwargs)
    self.kernels = profile.get(kernels)
    if logit_scale not in LOGIT_SCALES:
      raise ValueError(f'Unknown association logit scale {logit_scale!r}: '
                       f'use one of {LOGIT_SCALES}.')
    if upsampling not in association_upsampling.UPSAMPLINGS:
      raise ValueError(f'Unknown association upsampling {upsampling!r}: use '
                       f'one of {association_upsampling.UPSAMPLINGS}.')
    self.upsampling = upsampling
    self.upsample_logits_before_softmax = upsample_logits_before_softmax
    self.local_attention = local_attention.get(implementation, self.kernels)
    self.implementation = self.local_attention.name
    self.logit_scale = logit_scale

  def call(self, pixels, superpixels, superpixel_logits, image_size):
    height, width = int(image_size[0]), int(image_size[1])
    grid_height, grid_width = superpixels.shape[1], superpixels.shape[2]
    channels = pixels.shape[-1]
    superpixels = tf.cast(superpixels, tf.float32)
    if self.logit_scale == SQRT_CHANNELS:
      superpixels /= math.sqrt(channels)
    # [B, Hh, Wh, 9], masked_logit at slots outside the grid.
    logits = self.local_attention.association_logits(
        tf.cast(pixels, tf.float32), superpixels)
    class_logits = tf.cast(superpixel_logits, tf.float32)

    if self.upsample_logits_before_softmax:
      filled = _fill_outside_grid(logits, grid_height, grid_width,
                                  self.kernels.portable)
      # [B, H, W, 9], masked again with the full-resolution pixels' cells.
      if self.upsampling == association_upsampling.PER_SUPERPIXEL:
        upsampled = association_upsampling.upsample_per_superpixel(
            filled, (height, width), grid_height, grid_width)
      else:
        upsampled = tf.image.resize(filled, (height, width),
                                    method='bilinear')
      association, superpixel_ids = _masked_association(
          upsampled, grid_height, grid_width, portable=self.kernels.portable,
          use_xla=self.kernels.xla_islands)
      semantic_logits = self.local_attention.combine_neighbors(
          association, class_logits, weights_are_masked=True)
    else:
      association_low = tf.nn.softmax(logits, axis=-1)  # [B, Hh, Wh, 9]
      semantic_low = self.local_attention.combine_neighbors(
          association_low, class_logits)
      semantic_logits = tf.image.resize(semantic_low, (height, width),
                                        method='bilinear')
      association = tf.image.resize(association_low, (height, width),
                                    method='bilinear')
      association = neighbors.where_inside_grid(
          association, grid_height, grid_width, 0.0)
      association /= tf.reduce_sum(association, axis=-1, keepdims=True)
      # Equation (7): the absolute id of each pixel's most associated slot.
      superpixel_ids = _slot_superpixel_ids(_argmax_slot(association),
                                            grid_height, grid_width,
                                            self.kernels.portable)
    return {
        'semantic_logits': semantic_logits,
        'association': association,
        'superpixel_ids': superpixel_ids,
    }

  def get_config(self):
    config = super().get_config()
    config.update({
        'upsample_logits_before_softmax': self.upsample_logits_before_softmax,
        'implementation': self.implementation,
        'logit_scale': self.logit_scale,
        'upsampling': self.upsampling,
    })
    return config
