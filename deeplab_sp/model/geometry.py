"""The model's feature-map sizes for one input size, checked once.

An input of H x W pixels gives a hypercolumn of H/s x W/s pixels (s: the
hypercolumn's output stride) tiled by a regular Hs x Ws grid of superpixel
cells of h x w hypercolumn pixels each (paper Sec. III-B). Every size below
follows from (H, W, s, Hs, Ws); `compute_geometry` is the one place that
checks they divide, so the layers can assume it.
"""

import dataclasses
import math
from typing import Sequence, Tuple


class GeometryError(ValueError):
  """The input size does not fit the model's stride and superpixel grid."""


@dataclasses.dataclass(frozen=True)
class Geometry:
  """Sizes of the model's feature maps for one input size.

  Attributes:
    input_height, input_width: image size fed to the model, in pixels.
    hypercolumn_height, hypercolumn_width: input size / output stride.
    grid_height, grid_width: superpixel grid Hs x Ws.
    superpixel_height, superpixel_width: h x w hypercolumn pixels per
      superpixel cell.
  """
  input_height: int
  input_width: int
  hypercolumn_height: int
  hypercolumn_width: int
  grid_height: int
  grid_width: int
  superpixel_height: int
  superpixel_width: int

  @property
  def output_stride(self) -> int:
    return self.input_height // self.hypercolumn_height

  @property
  def input_size(self):
    return (self.input_height, self.input_width)


def compute_geometry(input_size: Sequence[int], output_stride: int,
                     grid_height: int, grid_width: int) -> Geometry:
  """Returns the Geometry for `input_size` (height, width).

  Raises:
    GeometryError: if a size is not positive, or the stride times the grid
      does not divide the input size; the message gives the nearest sizes
      that fit.
  """
  if len(input_size) != 2:
    raise GeometryError(f'Input size must be (height, width), got '
                        f'{input_size}.')
  height, width = int(input_size[0]), int(input_size[1])
  if output_stride <= 0 or grid_height <= 0 or grid_width <= 0:
    raise GeometryError(
        'hypercolumn.output_stride and superpixel_tokenization.grid_height/'
        f'grid_width must be positive (got {output_stride}, {grid_height}, '
        f'{grid_width}).')
  cell_h, cell_w = output_stride * grid_height, output_stride * grid_width
  if height <= 0 or width <= 0 or height % cell_h or width % cell_w:
    raise GeometryError(
        f'Input size {height}x{width} is not divisible by output_stride * '
        f'superpixel grid = {output_stride}*{grid_height} x '
        f'{output_stride}*{grid_width} = {cell_h}x{cell_w}: every superpixel '
        'cell must cover a whole number of hypercolumn pixels. Use a size '
        f'that is a multiple of {cell_h}x{cell_w} (e.g. '
        f'{max(1, round(height / cell_h)) * cell_h}x'
        f'{max(1, round(width / cell_w)) * cell_w}), or change '
        'hypercolumn.output_stride / superpixel_tokenization.grid_height / '
        'grid_width.')
  return Geometry(
      input_height=height,
      input_width=width,
      hypercolumn_height=height // output_stride,
      hypercolumn_width=width // output_stride,
      grid_height=grid_height,
      grid_width=grid_width,
      superpixel_height=height // cell_h,
      superpixel_width=width // cell_w)


def scaled_size(input_size: Sequence[int], scale: float) -> Tuple[int, int]:
  """(height, width) of `input_size` resized by `scale`, rounded half up.

  The one rounding rule of multi-scale evaluation: the config check of the
  evaluation scales and the evaluator both use it, so a scale that passed
  the check gives the size it was checked at.
  """
  return tuple(int(math.floor(scale * side + 0.5))
               for side in (input_size[0], input_size[1]))


def check_input_multiple(input_size: Sequence[int], multiple: int,
                         reason: str):
  """(height, width) of `input_size` if both are positive multiples.

  The input-size check of the per-pixel networks, which have no superpixel
  grid: their feature maps only need the input to be a multiple of their
  deepest stride.

  Args:
    input_size: (height, width).
    multiple: what both must be a positive multiple of.
    reason: why, for the message (e.g. "the encoder's output stride").

  Raises:
    GeometryError: naming the size, the multiple and the nearest size that
      fits.
  """
  if len(input_size) != 2:
    raise GeometryError(f'Input size must be (height, width), got '
                        f'{input_size}.')
  height, width = int(input_size[0]), int(input_size[1])
  if height <= 0 or width <= 0 or height % multiple or width % multiple:
    raise GeometryError(
        f'Input size {height}x{width} is not a multiple of {multiple} '
        f'({reason}). Use a size that is (e.g. '
        f'{max(1, round(height / multiple)) * multiple}x'
        f'{max(1, round(width / multiple)) * multiple}).')
  return height, width
