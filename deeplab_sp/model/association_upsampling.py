"""Bilinear upsampling of the association logits, per absolute superpixel.

The 9 association logits of a pixel (equation 5) are indexed by *relative*
neighbour slot: slot (dy, dx) of a pixel in cell (r, c) is superpixel
(r + dy, c + dx). Bilinear upsampling of that slot tensor as it is mixes,
near every cell border, the logits of *different* superpixels under one
slot: a full-resolution pixel in cell (r, c) whose interpolation sources lie
in cell (r - 1, c) reads their slot (dy, dx), which there means superpixel
(r - 1 + dy, c + dx).

This module interpolates per absolute superpixel instead: for superpixel j
of a full-resolution pixel p, each source q contributes its own logit for
j, found at slot j - cell(q) of q (a slot shifted by cell(p) - cell(q));
sources that do not have j among their 9 neighbours are left out and the
bilinear weights of the others renormalised. The sources are the 2x2 of
tf.image.resize's bilinear kernel (half-pixel centres, clamped at the
border), and the pixel's own hypercolumn pixel is always one of them with
weight >= 1/2, so every slot has a source. Both forms are readings of the
paper's "the association is bilinear upsampled to the input resolution
before applying the softmax"; SuperpixelAssociationOptions.upsampling
chooses.

Bilinear interpolation is separable, and so are the slot shift (dy shifts
along rows, dx along columns) and the validity of a shifted slot
(|dy + shift| <= 1 and |dx + shift| <= 1), so the interpolation runs as two
1-D passes, rows then columns, each with its own renormalisation; their
product is the 2-D renormalisation. Each pass is two gathers of a tensor
holding the three shifted slot layouts and a multiply-add with weights of
size [output length, 9], computed from the geometry in numpy (static
shapes), so the graph holds no tensor of size H x W.
"""

from typing import Tuple

import numpy as np
import tensorflow as tf

from deeplab_sp.model.local_attention import neighbors

# SuperpixelAssociationOptions.upsampling (model.proto).
RELATIVE_SLOTS = 'RELATIVE_SLOTS'
PER_SUPERPIXEL = 'PER_SUPERPIXEL'
UPSAMPLINGS = (RELATIVE_SLOTS, PER_SUPERPIXEL)

_SHIFTS = (-1, 0, 1)


def _slot_shift(shift: int, component: int) -> Tuple[np.ndarray, np.ndarray]:
  """Slot k -> the slot whose offset has `component` (0: dy, 1: dx) larger
  by `shift`, and whether that slot exists (|offset| <= 1).

  Returns:
    (source slot index int32 [9] (0 where invalid), valid float32 [9]).
  """
  sources, valid = [], []
  for offset in neighbors.NEIGHBOR_OFFSETS:
    moved = list(offset)
    moved[component] += shift
    inside = -1 <= moved[component] <= 1
    sources.append(neighbors.NEIGHBOR_OFFSETS.index(tuple(moved))
                   if inside else 0)
    valid.append(1.0 if inside else 0.0)
  return np.array(sources, np.int32), np.array(valid, np.float32)


def interpolation_taps(low_size: int, high_size: int, grid_size: int):
  """The two taps of each output position of one 1-D pass.

  Args:
    low_size: length at the hypercolumn stride (a multiple of grid_size).
    high_size: length at the input resolution (a multiple of low_size).
    grid_size: superpixels along this axis.

  Returns:
    (indices int32 [2, high_size] into the three stacked shifted layouts
    (shift_index * low_size + source), bilinear weights float32
    [2, high_size] before the renormalisation over the slots each tap has).
  """
  position = (np.arange(high_size) + 0.5) * low_size / high_size - 0.5
  position = np.clip(position, 0, low_size - 1)
  first = np.floor(position).astype(np.int64)
  second = np.minimum(first + 1, low_size - 1)
  fraction = position - first
  high_cell = np.arange(high_size) // (high_size // grid_size)
  low_cell_size = low_size // grid_size
  indices, weights = [], []
  for source, weight in ((first, 1.0 - fraction), (second, fraction)):
    shift = high_cell - source // low_cell_size  # cell(p) - cell(q).
    assert np.all(np.abs(shift) <= 1), shift
    indices.append((shift + 1) * low_size + source)
    weights.append(weight)
  indices = np.stack(indices).astype(np.int32)
  weights = np.stack(weights).astype(np.float32)  # [2, high_size]
  return indices, weights


def _pass(values: tf.Tensor, axis: int, high_size: int, grid_size: int,
          component: int) -> tf.Tensor:
  """One 1-D pass along `axis` (1: rows, shifting dy; 2: columns, dx)."""
  low_size = values.shape[axis]
  layouts, valid_by_shift = [], []
  for shift in _SHIFTS:
    source_slots, valid = _slot_shift(shift, component)
    layouts.append(tf.gather(values, source_slots, axis=-1) *
                   tf.constant(valid, values.dtype))
    valid_by_shift.append(valid)
  stacked = tf.concat(layouts, axis=axis)  # 3 * low_size along `axis`.
  indices, tap_weights = interpolation_taps(low_size, high_size, grid_size)
  valid_by_shift = np.stack(valid_by_shift)  # [3, 9]
  # [2, high_size, 9]: each tap's weight where its shifted slot exists.
  weights = tap_weights[..., np.newaxis] * valid_by_shift[
      indices // low_size]
  total = weights.sum(axis=0)
  assert np.all(total > 0), 'every output position has a source'
  weights /= total
  shape = [1, 1, 1, 9]
  shape[axis] = high_size
  result = 0.0
  for tap in range(2):
    result += tf.gather(stacked, indices[tap], axis=axis) * tf.constant(
        weights[tap].reshape(shape), values.dtype)
  return result


def upsample_per_superpixel(logits: tf.Tensor, image_size: Tuple[int, int],
                            grid_height: int, grid_width: int) -> tf.Tensor:
  """Bilinear upsampling of slot logits, per absolute superpixel.

  Args:
    logits: [B, Hh, Wh, 9] float32 association logits at the hypercolumn
      stride (slots outside the grid hold any finite value: they are masked
      afterwards).
    image_size: (H, W), multiples of (Hh, Wh).
    grid_height, grid_width: the superpixel grid; Hh and Wh are multiples.

  Returns:
    [B, H, W, 9] float32: slot k of a full-resolution pixel holds the
    renormalised bilinear interpolation of its sources' logits for the
    same absolute superpixel.
  """
  height, width = int(image_size[0]), int(image_size[1])
  rows = _pass(logits, 1, height, grid_height, component=0)
  return _pass(rows, 2, width, grid_width, component=1)
