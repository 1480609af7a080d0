"""The local attention functions against plain numpy references.

The references loop over pixels and superpixels and implement equations
(3)-(6) of the SP-Transformer paper (arXiv 2309.16889) directly, with the
neighbourhoods of a regular grid (out-of-grid neighbours dropped). Both
implementations are checked (NAIVE, the reference, here; EFFICIENT also
against NAIVE in test_efficient.py), with the interface's other promises:
exact zeros at the border, locality, finite gradients, half precision, XLA.
The layers' operations are called through the interface
(`local_attention.get`); the attentions on keys and values already computed
and the gathers, which the updates rest on, as the functions of naive.py
and efficient.py.
"""

import numpy as np
import pytest
import tensorflow as tf

from deeplab_sp.model import local_attention
from deeplab_sp.model.local_attention import efficient
from deeplab_sp.model.local_attention import naive
from deeplab_sp.model.local_attention import neighbors

IMPLEMENTATIONS = (local_attention.NAIVE, local_attention.EFFICIENT)
_MODULES = {local_attention.NAIVE: naive, local_attention.EFFICIENT: efficient}
# (grid_height, grid_width, cell_height, cell_width)
GEOMETRIES = ((1, 1, 2, 2), (1, 3, 2, 1), (2, 2, 2, 3), (3, 2, 1, 2))


def _tensors(*values):
  """The non-None `values` as tensors of the first one's dtype."""
  dtype = tf.convert_to_tensor(values[0]).dtype
  return [None if value is None else tf.convert_to_tensor(value, dtype)
          for value in values]


def _superpixel_attention(query, key, value, key_position=None,
                          value_position=None, *, implementation):
  """The form's eq. (3) attention on keys and values already computed."""
  return _MODULES[implementation].superpixel_attention(
      *_tensors(query, key, value, key_position, value_position))


def _pixel_attention(query, key, value, key_position=None,
                     value_position=None, *, implementation):
  """The form's eq. (4) attention on queries already computed."""
  return _MODULES[implementation].pixel_attention(
      *_tensors(query, key, value, key_position, value_position))


def _gather_neighbors(values, height, width, implementation):
  """The form's copies of the 9 neighbours' values to every pixel."""
  return _MODULES[implementation].gather_neighbors(
      tf.convert_to_tensor(values), height, width)


def _neighbors(row, col, grid_height, grid_width):
  """(slot, row, col) of the in-grid neighbours of cell (row, col)."""
  result = []
  for slot, (dy, dx) in enumerate(neighbors.NEIGHBOR_OFFSETS):
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
def test_superpixel_attention_matches_reference(implementation, gh, gw, ch, cw):
  x = _random_inputs(0, 2, gh, gw, ch, cw)
  result = _superpixel_attention(
      x['superpixels'], x['pixels'], x['pixels2'], x['sp_key_pos'],
      x['sp_value_pos'], implementation=implementation)
  expected = _reference_superpixel_update(
      x['superpixels'], x['pixels'], x['pixels2'], x['sp_key_pos'],
      x['sp_value_pos'], ch, cw)
  np.testing.assert_allclose(result.numpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('implementation', IMPLEMENTATIONS)
@pytest.mark.parametrize('gh,gw,ch,cw', GEOMETRIES)
def test_pixel_attention_matches_reference(implementation, gh, gw, ch, cw):
  x = _random_inputs(1, 2, gh, gw, ch, cw)
  result = _pixel_attention(
      x['pixels'], x['superpixels'], x['superpixels2'], x['px_key_pos'],
      x['px_value_pos'], implementation=implementation)
  expected = _reference_pixel_update(
      x['pixels'], x['superpixels'], x['superpixels2'], x['px_key_pos'],
      x['px_value_pos'], ch, cw)
  np.testing.assert_allclose(result.numpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('implementation', IMPLEMENTATIONS)
def test_gather_neighbors_matches_ids(implementation):
  gh, gw, height, width = 3, 2, 6, 4
  values = np.arange(1, 1 + 2 * gh * gw * 2, dtype=np.float32).reshape(
      2, gh, gw, 2)
  result = _gather_neighbors(values, height, width,
                                            implementation).numpy()
  ids = neighbors.neighbor_superpixel_ids(height, width, gh, gw).numpy()
  flat = values.reshape(2, gh * gw, 2)
  for y in range(height):
    for x in range(width):
      for slot in range(9):
        expected = 0.0 if ids[y, x, slot] < 0 else flat[:, ids[y, x, slot]]
        np.testing.assert_array_equal(result[:, y, x, slot], expected)


@pytest.mark.parametrize('implementation', IMPLEMENTATIONS)
@pytest.mark.parametrize('gh,gw,ch,cw', GEOMETRIES)
def test_association_logits_match_reference(implementation, gh, gw, ch, cw):
  rng = np.random.default_rng(2)
  pixels = rng.normal(size=(2, gh * ch, gw * cw, 5)).astype(np.float32)
  superpixels = rng.normal(size=(2, gh, gw, 5)).astype(np.float32)
  result = local_attention.get(implementation).association_logits(
      pixels, superpixels).numpy()
  masked = neighbors.masked_logit(tf.float32)
  for y in range(gh * ch):
    for x in range(gw * cw):
      expected = np.full((2, 9), masked, np.float32)
      for slot, r, c in _neighbors(y // ch, x // cw, gh, gw):
        expected[:, slot] = np.sum(pixels[:, y, x] * superpixels[:, r, c], -1)
      np.testing.assert_allclose(result[:, y, x], expected, rtol=1e-6,
                                 atol=1e-6)
  # The softmax of eq. (5) gives exactly 0 to out-of-grid slots.
  weights = tf.nn.softmax(result).numpy()
  ids = neighbors.neighbor_superpixel_ids(gh * ch, gw * cw, gh, gw)
  assert np.all(weights[:, ids.numpy() < 0] == 0.0)
  assert np.all(weights[:, ids.numpy() >= 0] > 0.0)


@pytest.mark.parametrize('implementation', IMPLEMENTATIONS)
def test_combine_neighbors_matches_reference(implementation):
  # The weights may live at a finer resolution than the pixel features: here
  # a 2x3 grid under a 6x9 map (3x3 pixels per cell).
  gh, gw, height, width = 2, 3, 6, 9
  rng = np.random.default_rng(3)
  weights = rng.uniform(size=(2, height, width, 9)).astype(np.float32)
  values = rng.normal(size=(2, gh, gw, 4)).astype(np.float32)
  ids = neighbors.neighbor_superpixel_ids(height, width, gh, gw).numpy()
  # Out-of-grid weights are ignored, even huge ones.
  weights[:, ids < 0] = 1e30
  form = local_attention.get(implementation)
  result = form.combine_neighbors(weights, values).numpy()
  flat = values.reshape(2, gh * gw, 4)
  expected = np.zeros((2, height, width, 4), np.float32)
  for y in range(height):
    for x in range(width):
      for slot in range(9):
        if ids[y, x, slot] >= 0:
          expected[:, y, x] += (weights[:, y, x, slot, None] *
                                flat[:, ids[y, x, slot]])
  np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-6)
  # Weights already 0 outside the grid may skip the masking.
  weights[:, ids < 0] = 0.0
  np.testing.assert_allclose(
      form.combine_neighbors(weights, values, weights_are_masked=True),
      expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('implementation', IMPLEMENTATIONS)
def test_out_of_grid_neighbours_get_exactly_zero_weight(implementation):
  # Huge position embeddings at out-of-grid slots would dominate the output
  # if those slots had any weight at all.
  gh, gw, ch, cw = 1, 2, 2, 1
  x = _random_inputs(4, 1, gh, gw, ch, cw)
  valid = neighbors.neighbor_valid_mask_np(gh, gw)
  outside = ~valid[0, 0] & ~valid[0, 1]  # Slots outside for both cells.
  for key_pos, value_pos in (('sp_key_pos', 'sp_value_pos'),
                             ('px_key_pos', 'px_value_pos')):
    for name in (key_pos, value_pos):
      slots = x[name].reshape(9, -1, *x[name].shape[1:])
      slots[outside] = 1e4
  sp = lambda: _superpixel_attention(
      x['superpixels'], x['pixels'], x['pixels2'], x['sp_key_pos'],
      x['sp_value_pos'], implementation=implementation).numpy()
  px = lambda: _pixel_attention(
      x['pixels'], x['superpixels'], x['superpixels2'], x['px_key_pos'],
      x['px_value_pos'], implementation=implementation).numpy()
  sp_huge, px_huge = sp(), px()
  for name in ('sp_key_pos', 'sp_value_pos', 'px_key_pos', 'px_value_pos'):
    slots = x[name].reshape(9, -1, *x[name].shape[1:])
    slots[outside] = 0.0
  np.testing.assert_array_equal(sp_huge, sp())
  np.testing.assert_array_equal(px_huge, px())
  assert np.all(np.abs(sp_huge) < 10) and np.all(np.abs(px_huge) < 10)


@pytest.mark.parametrize('implementation', IMPLEMENTATIONS)
def test_locality(implementation):
  gh, gw, ch, cw = 4, 4, 2, 2
  x = _random_inputs(5, 1, gh, gw, ch, cw)
  def run(inputs):
    sp = _superpixel_attention(
        inputs['superpixels'], inputs['pixels'], inputs['pixels2'],
        implementation=implementation).numpy()
    px = _pixel_attention(
        inputs['pixels'], inputs['superpixels'], inputs['superpixels2'],
        implementation=implementation).numpy()
    return sp, px
  sp_before, px_before = run(x)
  # Superpixel side: change pixel (7, 7), in cell (3, 3), as key and value.
  changed = {k: v.copy() for k, v in x.items()}
  changed['pixels'][0, 7, 7] += 5.0
  changed['pixels2'][0, 7, 7] += 5.0
  sp_after, _ = run(changed)
  # Superpixels whose 3x3 block misses cell (3, 3) are unchanged ...
  np.testing.assert_array_equal(sp_after[0, :2], sp_before[0, :2])
  np.testing.assert_array_equal(sp_after[0, :, :2], sp_before[0, :, :2])
  # ... and the ones that see it changed.
  assert np.all(sp_after[0, 2:, 2:] != sp_before[0, 2:, 2:])
  # Pixel side: change superpixel (0, 0) as key and value.
  changed = {k: v.copy() for k, v in x.items()}
  changed['superpixels'][0, 0, 0] += 5.0
  changed['superpixels2'][0, 0, 0] += 5.0
  _, px_after = run(changed)
  # Pixels whose cell is not next to cell (0, 0) are unchanged, the others
  # changed.
  np.testing.assert_array_equal(px_after[0, 4:], px_before[0, 4:])
  np.testing.assert_array_equal(px_after[0, :, 4:], px_before[0, :, 4:])
  assert np.all(px_after[0, :4, :4] != px_before[0, :4, :4])


@pytest.mark.parametrize('implementation', IMPLEMENTATIONS)
def test_gradients_are_finite(implementation):
  x = _random_inputs(6, 2, 2, 3, 2, 2)
  tensors = {k: tf.constant(v) for k, v in x.items()}
  with tf.GradientTape() as tape:
    tape.watch(list(tensors.values()))
    sp = _superpixel_attention(
        tensors['superpixels'], tensors['pixels'], tensors['pixels2'],
        tensors['sp_key_pos'], tensors['sp_value_pos'],
        implementation=implementation)
    px = _pixel_attention(
        tensors['pixels'], tensors['superpixels'], tensors['superpixels2'],
        tensors['px_key_pos'], tensors['px_value_pos'],
        implementation=implementation)
    form = local_attention.get(implementation)
    logits = form.association_logits(
        tf.reshape(tensors['pixels'], [2, 4, 6, 6]),
        tf.reshape(tensors['superpixels'], [2, 2, 3, 6]))
    combined = form.combine_neighbors(
        tf.nn.softmax(logits), tensors['superpixels2'][..., 0, :])
    loss = (tf.reduce_sum(sp ** 2) + tf.reduce_sum(px ** 2) +
            tf.reduce_sum(combined ** 2))
  grads = tape.gradient(loss, tensors)
  for name, grad in grads.items():
    assert grad is not None, name
    assert np.all(np.isfinite(grad.numpy())), name
    assert np.any(grad.numpy() != 0), name


@pytest.mark.parametrize('implementation', IMPLEMENTATIONS)
@pytest.mark.parametrize('dtype', (tf.float16, tf.bfloat16))
def test_half_precision(implementation, dtype):
  x = _random_inputs(7, 1, 2, 2, 2, 3)
  def run(cast):
    sp = _superpixel_attention(
        cast(x['superpixels']), cast(x['pixels']), cast(x['pixels2']),
        cast(x['sp_key_pos']), cast(x['sp_value_pos']),
        implementation=implementation)
    px = _pixel_attention(
        cast(x['pixels']), cast(x['superpixels']), cast(x['superpixels2']),
        cast(x['px_key_pos']), cast(x['px_value_pos']),
        implementation=implementation)
    logits = local_attention.get(implementation).association_logits(
        cast(x['pixels'][..., 0, :]), cast(x['superpixels'][..., 0, :]))
    return sp, px, logits
  half = run(lambda v: tf.cast(v, dtype))
  full = run(tf.constant)
  ids = neighbors.neighbor_superpixel_ids(4, 6, 2, 2).numpy()
  for h, f in zip(half, full):
    assert h.dtype == dtype
    h, f = tf.cast(h, tf.float32).numpy(), f.numpy()
    assert np.all(np.isfinite(h))
    if h.shape[-1] == 9:  # The logits: masked value of the dtype.
      np.testing.assert_array_equal(
          h[:, ids < 0], neighbors.masked_logit(dtype))
      h, f = h[:, ids >= 0], f[:, ids >= 0]
    np.testing.assert_allclose(h, f, atol=0.1, rtol=0.05)
  for logits in (half[2], tf.cast(half[2], tf.float32)):
    weights = tf.nn.softmax(tf.cast(logits, tf.float32)).numpy()
    assert np.all(weights[:, ids < 0] == 0.0)
    assert np.all(weights[:, ids >= 0] > 0.0)


@pytest.mark.parametrize('implementation', IMPLEMENTATIONS)
def test_xla_any_batch(implementation):
  gh, gw, ch, cw = 2, 3, 2, 1
  form = local_attention.get(implementation)
  spec = lambda *shape: tf.TensorSpec([None, *shape], tf.float32)
  @tf.function(jit_compile=True, input_signature=[
      spec(gh, gw, 2, 3), spec(gh * ch, gw * cw, 2, 3),
      spec(gh, gw, 9), spec(gh * ch, gw * cw, 6)])
  def run(superpixels, pixels, weights, features):
    return (_superpixel_attention(
                superpixels, pixels, pixels, implementation=implementation),
            _pixel_attention(
                pixels, superpixels, superpixels,
                implementation=implementation),
            _gather_neighbors(
                weights, gh * ch, gw * cw, implementation),
            form.combine_neighbors(
                tf.nn.softmax(form.association_logits(
                    features, tf.reshape(superpixels, [-1, gh, gw, 6]))),
                weights))
  for batch in (1, 3):
    x = _random_inputs(8, batch, gh, gw, ch, cw)
    weights = np.random.default_rng(9).normal(
        size=(batch, gh, gw, 9)).astype(np.float32)
    features = x['pixels'].reshape(batch, gh * ch, gw * cw, 6)
    args = (x['superpixels'], x['pixels'], weights, features)
    compiled = run(*args)
    eager = run.python_function(*[tf.constant(a) for a in args])
    for c, e in zip(compiled, eager):
      assert c.shape[0] == batch
      np.testing.assert_allclose(c.numpy(), e.numpy(), rtol=1e-5, atol=1e-6)


def test_affine_updates_equal_attention_on_projected_features():
  """superpixel_update / pixel_update = project, attend (, project)."""
  rng = np.random.default_rng(11)
  f = lambda *shape: rng.normal(size=shape).astype(np.float32)
  gh, gw, ch, cw, heads, dim, channels = 2, 3, 2, 1, 2, 3, 5
  pixels, superpixels = f(2, gh * ch, gw * cw, channels), f(2, gh, gw, heads,
                                                            dim)
  kernels = [local_attention.Affine(f(channels, heads * dim), f(heads * dim))
             for _ in range(3)]
  output = local_attention.Affine(f(heads * dim, 4), f(4))
  heads_of = lambda affine: np.reshape(
      pixels @ affine.kernel + affine.bias, (2, gh * ch, gw * cw, heads, dim))
  sp_pos, px_pos = f(9 * ch * cw, heads, dim), f(9, heads, dim)
  for implementation in IMPLEMENTATIONS:
    # The updates take and give pixels in the form's pixel order.
    form = local_attention.get(implementation)
    ordered_pixels = form.to_pixel_order(tf.constant(pixels), ch, cw)
    np.testing.assert_allclose(
        form.superpixel_update(
            superpixels, ordered_pixels, kernels[0], kernels[1], sp_pos,
            sp_pos),
        _superpixel_attention(
            superpixels, heads_of(kernels[0]), heads_of(kernels[1]), sp_pos,
            sp_pos, implementation=implementation), rtol=1e-5, atol=1e-5)
    attended = _pixel_attention(
        heads_of(kernels[2]), superpixels, superpixels, px_pos, px_pos,
        implementation=implementation).numpy()
    np.testing.assert_allclose(
        form.from_pixel_order(form.pixel_update(
            ordered_pixels, kernels[2], superpixels, superpixels, output,
            px_pos, px_pos), ch, cw),
        attended.reshape(2, gh * ch, gw * cw, -1) @ output.kernel +
        output.bias, rtol=1e-5, atol=1e-5)


def test_normalize_implementation():
  norm = local_attention.normalize_implementation
  assert norm('NAIVE') == norm('naive') == 'NAIVE'
  assert norm('efficient') == norm('EFFICIENT') == 'EFFICIENT'
  for bad in ('FAST', 0, 2, None, True):
    with pytest.raises(ValueError, match='NAIVE = 0, EFFICIENT = 1'):
      norm(bad)


def test_get_gives_one_form_per_name():
  for name, form_class in ((local_attention.NAIVE, naive.Naive),
                           (local_attention.EFFICIENT, efficient.Efficient)):
    form = local_attention.get(name)
    assert isinstance(form, form_class)
    assert isinstance(form, local_attention.LocalAttention)
    assert form.name == name
    assert local_attention.get(name.lower()) is form
  assert local_attention.IMPLEMENTATIONS == ('NAIVE', 'EFFICIENT')
  with pytest.raises(ValueError, match='NAIVE = 0, EFFICIENT = 1'):
    local_attention.get('FAST')


@pytest.mark.parametrize('dtype', (tf.float32, tf.float16, tf.bfloat16))
def test_masked_logits_survive_bilinear_upsampling(dtype):
  # The paper upsamples the association logits before the softmax (eq. 5):
  # the masked value must stay finite through the interpolation and keep
  # exactly zero weight, with finite gradients.
  rng = np.random.default_rng(10)
  pixels = tf.constant(rng.normal(size=(1, 4, 6, 3)), dtype)
  superpixels = tf.constant(rng.normal(size=(1, 2, 3, 3)), dtype)
  with tf.GradientTape() as tape:
    tape.watch([pixels, superpixels])
    logits = local_attention.get(local_attention.EFFICIENT).association_logits(
        pixels, superpixels)
    upsampled = tf.image.resize(tf.cast(logits, tf.float32), (16, 24))
    weights = tf.nn.softmax(upsampled)
    loss = tf.reduce_sum(weights * tf.range(9, dtype=tf.float32))
  assert np.all(np.isfinite(upsampled.numpy()))
  # Upsampled rows 0-3 interpolate hypercolumn rows 0-1 only, both in the
  # top row of cells, whose slots 0-2 (the row above) are outside the grid.
  np.testing.assert_array_equal(weights.numpy()[0, :4, :, :3], 0.0)
  for grad in tape.gradient(loss, [pixels, superpixels]):
    assert np.all(np.isfinite(tf.cast(grad, tf.float32).numpy()))
