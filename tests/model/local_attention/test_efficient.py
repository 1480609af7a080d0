"""EFFICIENT local attention equals NAIVE, forward and backward.

NAIVE (the paper's 9x duplication) is the judge; EFFICIENT must agree to
float32 round-off for every geometry: grids of one and two cells, 1xN and
non-square grids, h != w, and the borders. The error measure is relative to
the largest magnitude of the NAIVE result: max |efficient - naive| /
max |naive| < 1e-5, for outputs and for gradients with respect to every
input (queries, keys, values and both position embeddings). The layers'
operations are compared through the interface (`local_attention.get`), the
attentions on keys and values already computed and the gathers as the
functions of naive.py and efficient.py.
"""

import numpy as np
import pytest
import tensorflow as tf

from deeplab_sp.model import local_attention
from deeplab_sp.model.kernels import profile
from deeplab_sp.model.local_attention import efficient
from deeplab_sp.model.local_attention import naive
from deeplab_sp.model.local_attention import neighbors

NAIVE, EFFICIENT = local_attention.NAIVE, local_attention.EFFICIENT
Affine = local_attention.Affine
_MODULES = {NAIVE: naive, EFFICIENT: efficient}
TOLERANCE = 1e-5  # Relative error.
# (grid_height, grid_width, cell_height, cell_width)
GEOMETRIES = (
    (1, 1, 2, 3),  # One cell: everything is border.
    (1, 2, 3, 2),  # Two cells side by side.
    (2, 1, 1, 3),  # Two cells stacked, one pixel per cell row.
    (1, 5, 2, 2),  # 1xN.
    (2, 2, 3, 2),  # 2x2: every cell is a corner.
    (3, 3, 2, 2),  # Square with an interior cell.
    (4, 3, 3, 1),  # Non-square, h != w.
    (3, 5, 2, 3),  # Non-square, h != w, several interior cells.
)


class _EfficientInImageOrder(efficient.Efficient):
  """EFFICIENT on pixel maps in image order (efficient.py's cell_order=False
  path, which transposes to and from cell blocks in each call)."""

  def to_pixel_order(self, pixels, cell_height, cell_width):
    return pixels

  def from_pixel_order(self, pixels, cell_height, cell_width):
    return pixels

  def _superpixel_update(self, *arguments):
    return efficient.superpixel_update(*arguments, cell_order=False,
                                       kernels=self.kernels)

  def _pixel_update(self, *arguments):
    return efficient.pixel_update(*arguments, cell_order=False,
                                  kernels=self.kernels)


def _form(implementation):
  """A form for a name, or the form itself."""
  if isinstance(implementation, local_attention.LocalAttention):
    return implementation
  return local_attention.get(implementation)


def _superpixel_attention(query, key, value, key_position, value_position,
                          implementation):
  return _MODULES[implementation].superpixel_attention(
      query, key, value, key_position, value_position)


def _pixel_attention(query, key, value, key_position, value_position,
                     implementation):
  return _MODULES[implementation].pixel_attention(
      query, key, value, key_position, value_position)


def _relative_error(actual, expected):
  actual, expected = np.asarray(actual), np.asarray(expected)
  scale = np.max(np.abs(expected))
  if scale == 0:  # E.g. the softmax gradient of a single valid slot.
    return np.max(np.abs(actual))
  return np.max(np.abs(actual - expected)) / scale


def _values_and_gradients(function, inputs, implementation, seed,
                          in_graph=False):
  """Output of `function` and the gradient of a random projection of it.

  in_graph: in a tf.function, where the XLA islands are compiled (as in
  the trainer's steps); otherwise eagerly.
  """
  tensors = [tf.constant(x) for x in inputs]

  def call():
    with tf.GradientTape() as tape:
      tape.watch(tensors)
      output = function(*tensors, implementation=implementation)
      cotangent = tf.constant(np.random.default_rng(seed).normal(
          size=output.shape).astype(np.float32))
      loss = tf.reduce_sum(output * cotangent)
    return output, tape.gradient(loss, tensors)

  output, gradients = tf.function(call)() if in_graph else call()
  return output.numpy(), [g.numpy() for g in gradients]


def _assert_equivalent(function, inputs, seed=0, zero_gradients=()):
  """Outputs and gradients agree; `zero_gradients`: inputs whose gradient is
  exactly 0 in exact arithmetic (then both must be round-off: below
  TOLERANCE times the largest gradient of any input)."""
  naive, naive_grads = _values_and_gradients(function, inputs, NAIVE, seed)
  efficient, efficient_grads = _values_and_gradients(function, inputs,
                                                     EFFICIENT, seed)
  _assert_agree(efficient, efficient_grads, naive, naive_grads,
                zero_gradients)


def _assert_agree(actual, actual_grads, expected, expected_grads,
                  zero_gradients):
  """See _assert_equivalent; `expected` from NAIVE."""
  assert _relative_error(actual, expected) < TOLERANCE
  scale = max(np.max(np.abs(g)) for g in expected_grads)
  for index, (a, e) in enumerate(zip(actual_grads, expected_grads)):
    if index in zero_gradients:
      assert np.max(np.abs(a)) < TOLERANCE * scale, f'gradient of {index}'
      assert np.max(np.abs(e)) < TOLERANCE * scale, f'gradient of {index}'
    else:
      assert _relative_error(a, e) < TOLERANCE, f'gradient of input {index}'


def _normal(rng, *shape, scale=1.0):
  return (scale * rng.normal(size=shape)).astype(np.float32)


@pytest.mark.parametrize('gh,gw,ch,cw', GEOMETRIES)
def test_superpixel_attention(gh, gw, ch, cw):
  rng = np.random.default_rng(gh * 100 + gw * 10 + ch)
  batch, heads, dim = 2, 2, 4
  # Scaled-up queries give peaked softmaxes, which exercise the max
  # subtraction.
  inputs = [_normal(rng, batch, gh, gw, heads, dim, scale=3.0),
            _normal(rng, batch, gh * ch, gw * cw, heads, dim),
            _normal(rng, batch, gh * ch, gw * cw, heads, dim),
            _normal(rng, 9 * ch * cw, heads, dim),
            _normal(rng, 9 * ch * cw, heads, dim)]
  _assert_equivalent(_superpixel_attention, inputs)


@pytest.mark.parametrize('gh,gw,ch,cw', GEOMETRIES)
def test_pixel_attention(gh, gw, ch, cw):
  rng = np.random.default_rng(gh * 100 + gw * 10 + ch + 1)
  batch, heads, dim = 2, 2, 4
  inputs = [_normal(rng, batch, gh * ch, gw * cw, heads, dim, scale=3.0),
            _normal(rng, batch, gh, gw, heads, dim),
            _normal(rng, batch, gh, gw, heads, dim),
            _normal(rng, 9, heads, dim),
            _normal(rng, 9, heads, dim)]
  _assert_equivalent(_pixel_attention, inputs)


@pytest.mark.parametrize('gh,gw,ch,cw', GEOMETRIES)
def test_association_logits(gh, gw, ch, cw):
  rng = np.random.default_rng(gh * 100 + gw * 10 + ch + 2)
  inputs = [_normal(rng, 2, gh * ch, gw * cw, 5),
            _normal(rng, 2, gh, gw, 5)]
  # The masked slots carry the same constant in both; compare the softmax,
  # which is how the logits are used (eq. 5).
  softmax_of_logits = lambda p, s, implementation: tf.nn.softmax(
      local_attention.get(implementation).association_logits(p, s))
  _assert_equivalent(softmax_of_logits, inputs)
  expected = local_attention.get(NAIVE).association_logits(*inputs).numpy()
  actual = local_attention.get(EFFICIENT).association_logits(*inputs).numpy()
  masked = neighbors.neighbor_superpixel_ids_np(
      gh * ch, gw * cw, gh, gw) < 0
  np.testing.assert_array_equal(actual[:, masked], expected[:, masked])
  assert _relative_error(actual[:, ~masked], expected[:, ~masked]) < TOLERANCE


@pytest.mark.parametrize('gh,gw,ch,cw', GEOMETRIES)
@pytest.mark.parametrize('upsampling', (1, 2))
def test_combine_and_gather_neighbors(gh, gw, ch, cw, upsampling):
  rng = np.random.default_rng(gh * 100 + gw * 10 + ch + 3)
  height, width = gh * ch * upsampling, gw * cw * upsampling
  inputs = [tf.nn.softmax(_normal(rng, 2, height, width, 9)).numpy(),
            _normal(rng, 2, gh, gw, 7)]
  combine = lambda weights, values, implementation: local_attention.get(
      implementation).combine_neighbors(weights, values)
  _assert_equivalent(combine, inputs)
  gather = lambda values, implementation: _MODULES[
      implementation].gather_neighbors(values, height, width)
  _assert_equivalent(gather, inputs[1:])


def _superpixel_update_inputs(gh, gw, ch, cw):
  rng = np.random.default_rng(gh * 100 + gw * 10 + ch + 4)
  batch, heads, dim, channels = 2, 2, 4, 6
  return [_normal(rng, batch, gh, gw, heads, dim, scale=3.0),
          _normal(rng, batch, gh * ch, gw * cw, channels),
          _normal(rng, channels, heads * dim),  # Key kernel.
          _normal(rng, heads * dim),             # Key bias.
          _normal(rng, channels, heads * dim),  # Value kernel.
          _normal(rng, heads * dim),             # Value bias.
          _normal(rng, 9 * ch * cw, heads, dim),
          _normal(rng, 9 * ch * cw, heads, dim)]


def _superpixel_update(query, pixels, key_kernel, key_bias, value_kernel,
                       value_bias, key_position, value_position,
                       implementation):
  """The form's superpixel_update on image-order pixels, put in its pixel
  order here (the result, per superpixel, has no pixel order)."""
  form = _form(implementation)
  pixels = form.to_pixel_order(pixels, pixels.shape[1] // query.shape[1],
                               pixels.shape[2] // query.shape[2])
  return form.superpixel_update(
      query, pixels, Affine(key_kernel, key_bias),
      Affine(value_kernel, value_bias), key_position, value_position)


def _pixel_update_inputs(gh, gw, ch, cw):
  rng = np.random.default_rng(gh * 100 + gw * 10 + ch + 5)
  batch, heads, dim, channels, out_channels = 2, 2, 4, 6, 5
  return [_normal(rng, batch, gh * ch, gw * cw, channels),
          _normal(rng, channels, heads * dim, scale=3.0),  # Query kernel.
          _normal(rng, heads * dim),                       # Query bias.
          _normal(rng, batch, gh, gw, heads, dim),
          _normal(rng, batch, gh, gw, heads, dim),
          _normal(rng, heads * dim, out_channels),  # Output kernel.
          _normal(rng, out_channels),               # Output bias.
          _normal(rng, 9, heads, dim),
          _normal(rng, 9, heads, dim)]


def _pixel_update(pixels, query_kernel, query_bias, key, value, output_kernel,
                  output_bias, key_position, value_position, implementation):
  """The form's pixel_update on image-order pixels: they go in and come out
  in its pixel order (converted here, so the results are comparable)."""
  form = _form(implementation)
  cell_size = (pixels.shape[1] // key.shape[1], pixels.shape[2] // key.shape[2])
  result = form.pixel_update(
      form.to_pixel_order(pixels, *cell_size),
      Affine(query_kernel, query_bias), key, value,
      Affine(output_kernel, output_bias), key_position, value_position)
  return form.from_pixel_order(result, *cell_size)


@pytest.mark.parametrize('gh,gw,ch,cw', GEOMETRIES)
def test_superpixel_update(gh, gw, ch, cw):
  """The folded projections (keys and values never computed per pixel)."""
  # The key bias adds q . b_k to all logits of a superpixel: the softmax
  # does not depend on it, so its gradient is 0.
  _assert_equivalent(_superpixel_update,
                     _superpixel_update_inputs(gh, gw, ch, cw),
                     zero_gradients=(3,))


@pytest.mark.parametrize('gh,gw,ch,cw', GEOMETRIES)
def test_pixel_update(gh, gw, ch, cw):
  """The folded query and output projections."""
  _assert_equivalent(_pixel_update, _pixel_update_inputs(gh, gw, ch, cw))


def test_pixel_orders():
  """NAIVE takes pixel maps in image order, EFFICIENT in cell order."""
  pixels = tf.reshape(tf.range(2 * 4 * 6 * 3, dtype=tf.float32),
                      [2, 4, 6, 3])
  for implementation, expected in (
      (NAIVE, pixels), (EFFICIENT, neighbors.to_cell_order(pixels, 2, 3))):
    form = local_attention.get(implementation)
    ordered = form.to_pixel_order(pixels, 2, 3)
    np.testing.assert_array_equal(ordered, expected)
    np.testing.assert_array_equal(form.from_pixel_order(ordered, 2, 3),
                                  pixels)


@pytest.mark.parametrize('gh,gw,ch,cw', GEOMETRIES[-3:])
def test_efficient_updates_on_pixels_in_image_order(gh, gw, ch, cw):
  """efficient.py's updates also take pixel maps in image order.

  The layers hand EFFICIENT pixel maps in cell order (the tests above);
  here NAIVE judges its other path, which transposes the maps to and from
  cell blocks in each call.
  """
  for update, inputs, zero_gradients in (
      (_superpixel_update, _superpixel_update_inputs(gh, gw, ch, cw), (3,)),
      (_pixel_update, _pixel_update_inputs(gh, gw, ch, cw), ())):
    expected, expected_grads = _values_and_gradients(update, inputs, NAIVE,
                                                     seed=1)
    actual, actual_grads = _values_and_gradients(
        update, inputs, _EfficientInImageOrder(profile.default()), seed=1)
    _assert_agree(actual, actual_grads, expected, expected_grads,
                  zero_gradients)


@pytest.mark.parametrize('gh,gw,ch,cw', GEOMETRIES[:1] + GEOMETRIES[-2:])
def test_in_graphs_with_xla_islands(gh, gw, ch, cw):
  """EFFICIENT in a graph, with its XLA-compiled softmaxes and slot sums."""
  rng = np.random.default_rng(gh * 100 + gw * 10 + ch + 2)
  batch, heads, dim = 2, 2, 4
  attention_inputs = [
      _normal(rng, batch, gh, gw, heads, dim, scale=3.0),
      _normal(rng, batch, gh * ch, gw * cw, heads, dim),
      _normal(rng, batch, gh * ch, gw * cw, heads, dim),
      _normal(rng, 9 * ch * cw, heads, dim),
      _normal(rng, 9 * ch * cw, heads, dim)]
  # On a 1x1 grid every pixel has one valid superpixel: its softmax is
  # exactly 1, so the pixel update depends neither on the queries (the
  # pixels and the query projection, inputs 0-2) nor on the keys (the
  # superpixel keys and the key position embedding, inputs 3 and 7): both
  # forms give round-off (or exact 0) there.
  pixel_query = (0, 1, 2, 3, 7) if gh * gw == 1 else ()
  for function, inputs, zero_gradients in (
      (_superpixel_attention, attention_inputs, ()),
      (_superpixel_update, _superpixel_update_inputs(gh, gw, ch, cw), (3,)),
      (_pixel_update, _pixel_update_inputs(gh, gw, ch, cw), pixel_query)):
    expected, expected_grads = _values_and_gradients(function, inputs, NAIVE,
                                                     seed=2)
    actual, actual_grads = _values_and_gradients(function, inputs, EFFICIENT,
                                                 seed=2, in_graph=True)
    _assert_agree(actual, actual_grads, expected, expected_grads,
                  zero_gradients)
