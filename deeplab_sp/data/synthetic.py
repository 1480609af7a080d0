"""The generated 'synthetic' dataset: street-like scenes told apart by shape.

The default experiment's data (tools/build_synthetic_data.py). Six classes,
train ids in CLASS_NAMES order:

  0 ground   the lower part of the image, below a random horizon.
  1 sky      the upper part, above the horizon.
  2 building 1-3 axis-aligned rectangles standing on the horizon.
  3 pole     1-2 thin vertical bars (a few pixels wide) from the ground up
             into the sky.
  4 wire     1-2 thin near-horizontal lines (a few pixels thick, small
             slope) across the whole width, in the sky's band.
  5 vehicle  0-2 blobs (a body ellipse with a smaller cabin ellipse) on the
             ground.

Recipe of one scene (all sizes relative to the image, thicknesses scaled
from a 128-pixel reference):
  1. Draw the horizon row, paint sky above and ground below.
  2. Paint the buildings, then the vehicles, then the poles, then the wires
     (later ones occlude earlier ones; the label is the last painted).
  3. Every painted region takes a colour from one shared palette
     (PALETTE, 10 colours; no colour belongs to a class), different from the
     colours of the other regions of the scene so boundaries are visible, a
     random brightness, and a random texture from one shared set (flat,
     checker, diagonal stripes, speckle).
  4. Add per-pixel Gaussian noise to the whole image.

Because colours and textures are drawn from the same distributions for
every class, a per-pixel colour classifier can only guess the most frequent
class per colour (deeplab_sp/analysis/color_baseline.py measures it); the class
is decided by shape and layout: thin and vertical (pole), thin and
horizontal (wire), top (sky), bottom (ground), rectangles on the horizon
(building), blobs on the ground (vehicle).

Deterministic: image `i` of split `s` is drawn from
numpy.random.default_rng([seed, split_index(s), i]), so it does not depend
on the other images or on the shard count.
"""

from typing import Dict, List, Tuple

import numpy as np

from deeplab_sp.data import dataset_info
from deeplab_sp.data import record_writer
from deeplab_sp.data import tfrecord_format

CLASS_NAMES = ('ground', 'sky', 'building', 'pole', 'wire', 'vehicle')
GROUND, SKY, BUILDING, POLE, WIRE, VEHICLE = range(len(CLASS_NAMES))
assert CLASS_NAMES == dataset_info.get_dataset_info('synthetic').class_names

# The shared palette: every region of every class picks from it.
PALETTE = np.array([
    (200, 60, 50), (60, 160, 70), (50, 90, 200), (220, 200, 60),
    (150, 70, 170), (70, 190, 200), (230, 140, 40), (120, 120, 120),
    (200, 200, 210), (90, 60, 40)], np.float32)
TEXTURES = ('flat', 'checker', 'diagonal', 'speckle')
# Thicknesses are given for this image size and scaled with the image.
REFERENCE_SIZE = 128
POLE_WIDTH_RANGE = (4, 6)     # pixels at REFERENCE_SIZE
WIRE_THICKNESS_RANGE = (3, 4)  # pixels at REFERENCE_SIZE
TEXTURE_PERIOD = 6            # pixels at REFERENCE_SIZE
BRIGHTNESS_RANGE = (0.8, 1.2)
TEXTURE_CONTRAST = 0.25
SPECKLE_STDDEV = 25.0
PIXEL_NOISE_STDDEV = 6.0

SPLITS = ('train', 'val')
DEFAULT_NUM_TRAIN = 500
DEFAULT_NUM_VAL = 100
DEFAULT_SIZE = 128
DEFAULT_NUM_SHARDS = 2


def _scaled(pixels: float, size: int) -> int:
  return max(1, int(round(pixels * size / REFERENCE_SIZE)))


class _Painter:
  """Paints textured regions into an image and its label map."""

  def __init__(self, height: int, width: int, rng: np.random.Generator):
    self.rng = rng
    self.image = np.zeros([height, width, 3], np.float32)
    self.label = np.zeros([height, width], np.uint8)
    self.rows, self.cols = np.mgrid[0:height, 0:width]
    self.period = _scaled(TEXTURE_PERIOD, min(height, width))
    # A different palette colour for each region of the scene.
    self._colors = iter(rng.permutation(len(PALETTE)))

  def next_color(self) -> np.ndarray:
    return PALETTE[next(self._colors)] * self.rng.uniform(*BRIGHTNESS_RANGE)

  def paint(self, mask: np.ndarray, class_id: int, color: np.ndarray):
    """Paints `color` with a random texture where `mask`; labels class_id."""
    texture = TEXTURES[self.rng.integers(len(TEXTURES))]
    pixels = np.broadcast_to(color, self.image.shape).copy()
    if texture == 'checker':
      cells = (self.rows // self.period + self.cols // self.period) % 2
      pixels *= (1 + TEXTURE_CONTRAST * (2 * cells[..., None] - 1))
    elif texture == 'diagonal':
      stripes = ((self.rows + self.cols) // self.period) % 2
      pixels *= (1 + TEXTURE_CONTRAST * (2 * stripes[..., None] - 1))
    elif texture == 'speckle':
      pixels += self.rng.normal(0, SPECKLE_STDDEV, pixels.shape)
    self.image[mask] = pixels[mask]
    self.label[mask] = class_id


def generate_scene(height: int, width: int,
                   rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
  """One scene.

  Args:
    height: image height in pixels.
    width: image width in pixels.
    rng: the random generator (the scene is a function of its state).

  Returns:
    image: uint8 [height, width, 3] RGB.
    label: uint8 [height, width], train ids 0..5 (CLASS_NAMES).
  """
  painter = _Painter(height, width, rng)
  rows, cols = painter.rows, painter.cols
  size = min(height, width)

  horizon = int(rng.uniform(0.40, 0.62) * height)
  painter.paint(rows < horizon, SKY, painter.next_color())
  painter.paint(rows >= horizon, GROUND, painter.next_color())

  for _ in range(rng.integers(1, 4)):
    building_width = int(rng.uniform(0.12, 0.3) * width)
    left = rng.integers(0, width - building_width)
    top = int(rng.uniform(0.12, max(0.13, horizon / height - 0.1)) * height)
    bottom = horizon + int(rng.uniform(0.0, 0.05) * height)
    mask = ((rows >= top) & (rows < bottom) & (cols >= left) &
            (cols < left + building_width))
    painter.paint(mask, BUILDING, painter.next_color())

  for _ in range(rng.integers(0, 3)):
    center_row = rng.uniform(horizon + 0.12 * height, 0.92 * height)
    center_col = rng.uniform(0.1, 0.9) * width
    radius_col = rng.uniform(0.08, 0.16) * width
    radius_row = rng.uniform(0.05, 0.09) * height
    body = (((rows - center_row) / radius_row) ** 2 +
            ((cols - center_col) / radius_col) ** 2) <= 1
    cabin = (((rows - (center_row - 0.8 * radius_row)) /
              (0.7 * radius_row)) ** 2 +
             ((cols - center_col) / (0.55 * radius_col)) ** 2) <= 1
    painter.paint(body | cabin, VEHICLE, painter.next_color())

  pole_color = painter.next_color()
  for _ in range(rng.integers(1, 3)):
    pole_width = _scaled(rng.integers(POLE_WIDTH_RANGE[0],
                                      POLE_WIDTH_RANGE[1] + 1), size)
    left = rng.integers(0, width - pole_width)
    top = int(rng.uniform(0.05, 0.3) * height)
    bottom = int(rng.uniform(horizon / height + 0.05, 0.95) * height)
    mask = ((rows >= top) & (rows < bottom) & (cols >= left) &
            (cols < left + pole_width))
    painter.paint(mask, POLE, pole_color)

  wire_color = painter.next_color()
  for _ in range(rng.integers(1, 3)):
    thickness = _scaled(rng.integers(WIRE_THICKNESS_RANGE[0],
                                     WIRE_THICKNESS_RANGE[1] + 1), size)
    start_row = rng.uniform(0.08 * height, max(0.09 * height,
                                               horizon - 0.15 * height))
    slope = rng.uniform(-0.15, 0.15) * height / width
    center = start_row + slope * cols
    mask = np.abs(rows - center) < thickness / 2
    painter.paint(mask, WIRE, wire_color)

  image = painter.image + rng.normal(0, PIXEL_NOISE_STDDEV,
                                     painter.image.shape)
  image = np.clip(np.round(image), 0, 255).astype(np.uint8)
  return image, painter.label


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
  """The generator of image `index` of `split` (see the module docstring)."""
  return np.random.default_rng([seed, SPLITS.index(split), index])


def generate_split(split: str, num_images: int, height: int, width: int,
                   seed: int) -> List[Tuple[np.ndarray, np.ndarray]]:
  """The (image, label) pairs of a split, in memory (for tests and tools)."""
  return [generate_scene(height, width, scene_rng(seed, split, index))
          for index in range(num_images)]


def image_name(split: str, index: int) -> str:
  return f'synthetic_{split}_{index:06d}'


def write_dataset(output_dir: str,
                  num_train: int = DEFAULT_NUM_TRAIN,
                  num_val: int = DEFAULT_NUM_VAL,
                  height: int = DEFAULT_SIZE,
                  width: int = DEFAULT_SIZE,
                  seed: int = 0,
                  num_shards: int = DEFAULT_NUM_SHARDS) -> Dict[str, List[str]]:
  """Generates both splits and writes them as DeepLab2-format shards.

  Args:
    output_dir: directory of the shards, e.g. work_dirs/data/synthetic.
    num_train: number of training images.
    num_val: number of validation images.
    height: image height in pixels.
    width: image width in pixels.
    seed: the dataset's seed; same seed, same dataset.
    num_shards: shards per split (at most one per image).

  Returns:
    split -> shard paths.

  Raises:
    ValueError: on a non-positive count or an image smaller than 32 pixels.
  """
  min_size = 32
  if height < min_size or width < min_size:
    raise ValueError(f'--height and --width must be at least {min_size}, '
                     f'got {height}x{width}.')
  counts = {'train': num_train, 'val': num_val}
  for split in SPLITS:
    if counts[split] <= 0:
      raise ValueError(f'--num_{split} must be positive, got '
                       f'{counts[split]}.')

  def make_example_fn(split):
    def make_example(index):
      image, label = generate_scene(height, width,
                                    scene_rng(seed, split, index))
      return tfrecord_format.make_example(
          tfrecord_format.encode_image_png(image), 'png',
          image_name(split, index), height, width,
          tfrecord_format.encode_label_png(label))
    return make_example

  return record_writer.write_splits(
      [record_writer.SplitJob(split, make_example_fn(split), counts[split])
       for split in SPLITS], output_dir, num_shards)
