"""Tests of deeplab_sp.model.local_attention against plain numpy references.

The references loop over pixels and superpixels and implement equations
(3)-(6) of the SP-Transformer paper (arXiv 2309.16889) directly, with the
neighbourhoods of a regular grid (out-of-grid neighbours dropped).
"""

import numpy as np
import pytest
import tensorflow as tf

from deeplab_sp.model import local_attention
from deeplab_sp.protos import model_pb2

IMPLEMENTATIONS = (local_attention.NAIVE, local_attention.EFFICIENT)
# (grid_height, grid_width, cell_height, cell_width)
GEOMETRIES = ((1, 1, 2, 2), (1, 3, 2, 1), (2, 2, 2, 3), (3, 2, 1, 2))


def _neighbors(row, col, grid_height, grid_width):
  """(slot, row, col) of the in-grid neighbours of cell (row, col)."""
  result = []
  for slot, (dy, dx) in enumerate(local_attention.NEIGHBOR_OFFSETS):
    r, c = row + dy, col + dx
    if 0 <= r < grid_height and 0 <= c < grid_width:
      result.append((slot, r, c))
  return result


def _softmax(x):
  e = np.exp(x - np.max(x))
  return e / np.sum(e)


def _reference_superpixel_update(query, key, value, key_pos, value_pos, ch,
                                 cw):
  batch, gh, gw, heads, dim = query.shape
  out = np.zeros(query.shape)
  for b in range(batch):
    for i in range(gh):
      for j in range(gw):
        for n in range(heads):
          logits, values = [], []
          for slot, r, c in _neighbors(i, j, gh, gw):
            for py in range(ch):
              for px in range(cw):
                index = (slot * ch + py) * cw + px
                k = key[b, r * ch + py, c * cw + px, n] + key_pos[index, n]
                v = value[b, r * ch + py, c * cw + px, n] + value_pos[index, n]
                logits.append(query[b, i, j, n] @ k / np.sqrt(dim))
                values.append(v)
          out[b, i, j, n] = _softmax(np.array(logits)) @ np.array(values)
  return out


def _reference_pixel_update(query, key, value, key_pos, value_pos, ch, cw):
  batch, height, width, heads, dim = query.shape
  gh, gw = key.shape[1:3]
  out = np.zeros(query.shape)
  for b in range(batch):
    for y in range(height):
      for x in range(width):
        for n in range(heads):
          logits, values = [], []
          for slot, r, c in _neighbors(y // ch, x // cw, gh, gw):
            logits.append(query[b, y, x, n] @ (key[b, r, c, n] +
                                               key_pos[slot, n]) / np.sqrt(dim))
            values.append(value[b, r, c, n] + value_pos[slot, n])
          out[b, y, x, n] = _softmax(np.array(logits)) @ np.array(values)
  return out


def _random_inputs(seed, batch, gh, gw, ch, cw, heads=2, dim=3):
  rng = np.random.default_rng(seed)
  height, width = gh * ch, gw * cw
  f = lambda *shape: rng.normal(size=shape).astype(np.float32)
  return dict(
      superpixels=f(batch, gh, gw, heads, dim),
      pixels=f(batch, height, width, heads, dim),
      pixels2=f(batch, height, width, heads, dim),
      superpixels2=f(batch, gh, gw, heads, dim),
      sp_key_pos=f(9 * ch * cw, heads, dim),
      sp_value_pos=f(9 * ch * cw, heads, dim),
      px_key_pos=f(9, heads, dim),
      px_value_pos=f(9, heads, dim))


@pytest.mark.parametrize('implementation', IMPLEMENTATIONS)
@pytest.mark.parametrize('gh,gw,ch,cw', GEOMETRIES)
def test_superpixel_update_matches_reference(implementation, gh, gw, ch, cw):
  x = _random_inputs(0, 2, gh, gw, ch, cw)
  result = local_attention.superpixel_update(
      x['superpixels'], x['pixels'], x['pixels2'], x['sp_key_pos'],
      x['sp_value_pos'], implementation=implementation)
  expected = _reference_superpixel_update(
      x['superpixels'], x['pixels'], x['pixels2'], x['sp_key_pos'],
      x['sp_value_pos'], ch, cw)
  np.testing.assert_allclose(result.numpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('implementation', IMPLEMENTATIONS)
@pytest.mark.parametrize('gh,gw,ch,cw', GEOMETRIES)
def test_pixel_update_matches_reference(implementation, gh, gw, ch, cw):
  x = _random_inputs(1, 2, gh, gw, ch, cw)
  result = local_attention.pixel_update(
      x['pixels'], x['superpixels'], x['superpixels2'], x['px_key_pos'],
      x['px_value_pos'], implementation=implementation)
  expected = _reference_pixel_update(
      x['pixels'], x['superpixels'], x['superpixels2'], x['px_key_pos'],
      x['px_value_pos'], ch, cw)
  np.testing.assert_allclose(result.numpy(), expected, rtol=1e-5, atol=1e-5)
