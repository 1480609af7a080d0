"""DeepLab2's semantic-segmentation tf.train.Example layout and shard names.

Records use the keys of DeepLab2's data builders, so that
records written by DeepLab2's own `build_cityscapes_data.py` (and any other
builder using those keys) load unchanged:

  image/encoded                      encoded image bytes (PNG or JPEG)
  image/filename                     the image's name, bytes
  image/format                       'png', 'jpeg' or 'jpg'
  image/height, image/width          int64
  image/channels                     int64, 3
  image/segmentation/class/encoded   PNG of the label map, or raw int32 bytes
                                     (absent in records without a label,
                                     e.g. DeepLab2's test split)
  image/segmentation/class/format    'png' or 'raw'

Stored label values are the dataset's own (e.g. ADE20K 0..150), or panoptic
values semantic * divisor + instance (DeepLab2's records); the conversion to
train ids happens at load time (deeplab_sp.data.input_pipeline).

Shards are named `{split}-{index:05d}-of-{count:05d}.tfrecord`.
"""

import io
import os
from typing import Dict, List, Optional

import numpy as np
from PIL import Image
import tensorflow as tf

from deeplab_sp.utils import io as io_lib

IMAGE_ENCODED_KEY = 'image/encoded'
IMAGE_FILENAME_KEY = 'image/filename'
IMAGE_FORMAT_KEY = 'image/format'
IMAGE_HEIGHT_KEY = 'image/height'
IMAGE_WIDTH_KEY = 'image/width'
IMAGE_CHANNELS_KEY = 'image/channels'
LABEL_ENCODED_KEY = 'image/segmentation/class/encoded'
LABEL_FORMAT_KEY = 'image/segmentation/class/format'

IMAGE_FORMATS = ('png', 'jpeg', 'jpg')
LABEL_FORMAT_PNG = 'png'
LABEL_FORMAT_RAW = 'raw'
LABEL_FORMATS = (LABEL_FORMAT_PNG, LABEL_FORMAT_RAW)
# Every image is stored and decoded as RGB.
IMAGE_CHANNELS = 3

SHARD_SUFFIX = '.tfrecord'

# The 'label' of a record without one: every pixel holds this value, which
# no dataset stores, and 'has_label' is false.
MISSING_LABEL_VALUE = -1


def shard_filename(split: str, index: int, count: int) -> str:
  """DeepLab2's shard name, e.g. `train-00003-of-00010.tfrecord`."""
  assert 0 <= index < count, (index, count)
  return f'{split}-{index:05d}-of-{count:05d}{SHARD_SUFFIX}'


def shard_glob(split: str) -> str:
  """Glob matching every shard of `split`, e.g. `val-*-of-*.tfrecord`."""
  return f'{split}-*-of-*{SHARD_SUFFIX}'


def _bytes_feature(value: bytes) -> tf.train.Feature:
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int64_feature(value: int) -> tf.train.Feature:
  return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def encode_label_png(label: np.ndarray) -> bytes:
  """uint8-range label map [height, width] -> PNG bytes (8-bit grey)."""
  assert label.ndim == 2, label.shape
  assert label.min() >= 0 and label.max() <= 255, (label.min(), label.max())
  buffer = io.BytesIO()
  Image.fromarray(label.astype(np.uint8), mode='L').save(buffer, format='PNG')
  return buffer.getvalue()


def encode_label_raw(label: np.ndarray) -> bytes:
  """Label map [height, width] -> raw int32 bytes (little-endian, row-major).

  DeepLab2's `raw` format; tf.io.decode_raw(..., tf.int32) reads it back.
  """
  assert label.ndim == 2, label.shape
  return label.astype('<i4').tobytes()


def encode_image_png(image: np.ndarray) -> bytes:
  """uint8 RGB image [height, width, 3] -> PNG bytes."""
  assert image.ndim == 3 and image.shape[2] == IMAGE_CHANNELS, image.shape
  buffer = io.BytesIO()
  Image.fromarray(image.astype(np.uint8), mode='RGB').save(buffer, format='PNG')
  return buffer.getvalue()


def detect_image_format(data: bytes) -> Optional[str]:
  """'png' or 'jpeg' from the bytes' magic number; None for other bytes."""
  if data.startswith(b'\x89PNG\r\n\x1a\n'):
    return 'png'
  if data.startswith(b'\xff\xd8\xff'):
    return 'jpeg'
  return None


def make_example(image_bytes: bytes, image_format: str, filename: str,
                 height: int, width: int, label_bytes: bytes,
                 label_format: str = LABEL_FORMAT_PNG) -> tf.train.Example:
  """Builds one example with DeepLab2's keys.

  Args:
    image_bytes: the encoded image (PNG or JPEG file contents).
    image_format: 'png', 'jpeg' or 'jpg'; the format detected from the
      bytes' magic number wins over it (a JPEG file named .png is stored as
      'jpeg').
    filename: the image's name (DeepLab2 stores the file name without the
      dataset suffix, e.g. `frankfurt_000000_000294`).
    height: image height in pixels.
    width: image width in pixels.
    label_bytes: the label map, PNG bytes or raw int32 bytes.
    label_format: 'png' or 'raw'.

  Returns:
    A tf.train.Example.
  """
  image_format = detect_image_format(image_bytes) or image_format
  assert image_format in IMAGE_FORMATS, image_format
  assert label_format in LABEL_FORMATS, label_format
  feature = {
      IMAGE_ENCODED_KEY: _bytes_feature(image_bytes),
      IMAGE_FILENAME_KEY: _bytes_feature(filename.encode('utf-8')),
      IMAGE_FORMAT_KEY: _bytes_feature(image_format.encode('utf-8')),
      IMAGE_HEIGHT_KEY: _int64_feature(height),
      IMAGE_WIDTH_KEY: _int64_feature(width),
      IMAGE_CHANNELS_KEY: _int64_feature(IMAGE_CHANNELS),
      LABEL_ENCODED_KEY: _bytes_feature(label_bytes),
      LABEL_FORMAT_KEY: _bytes_feature(label_format.encode('utf-8')),
  }
  return tf.train.Example(features=tf.train.Features(feature=feature))


_FEATURES = {
    IMAGE_ENCODED_KEY: tf.io.FixedLenFeature((), tf.string),
    IMAGE_FILENAME_KEY: tf.io.FixedLenFeature((), tf.string, default_value=''),
    IMAGE_FORMAT_KEY: tf.io.FixedLenFeature((), tf.string,
                                            default_value='png'),
    IMAGE_HEIGHT_KEY: tf.io.FixedLenFeature((), tf.int64, default_value=0),
    IMAGE_WIDTH_KEY: tf.io.FixedLenFeature((), tf.int64, default_value=0),
    # Absent (read as b'') in records without a label.
    LABEL_ENCODED_KEY: tf.io.FixedLenFeature((), tf.string,
                                             default_value=''),
    LABEL_FORMAT_KEY: tf.io.FixedLenFeature((), tf.string,
                                            default_value=LABEL_FORMAT_PNG),
}


def _decode_label(encoded: tf.Tensor, label_format: tf.Tensor,
                  height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
  """Stored label bytes -> int32 [height, width] (values as stored)."""

  def decode_raw():
    flat = tf.io.decode_raw(encoded, tf.int32)  # [height * width]
    return tf.reshape(flat, tf.stack([height, width]))

  def decode_png():
    return tf.cast(tf.io.decode_png(encoded, channels=1)[:, :, 0], tf.int32)

  return tf.cond(tf.equal(label_format, LABEL_FORMAT_RAW), decode_raw,
                 decode_png)


def decode_image(encoded: tf.Tensor) -> tf.Tensor:
  """Image file bytes (PNG, JPEG, BMP, GIF) -> uint8 [height, width, 3] RGB.

  The decoder is chosen from the bytes, not from the record's image/format
  (which may be wrong in records written by other tools).

  JPEGs are decoded with the accurate integer DCT (libjpeg's default, as
  PIL uses), so the pixels equal those of the source file opened with PIL.
  The one decoder of the project: the input pipeline, the SavedModel's
  serving signature (export_lib) and tools/predict.py all call it, so a
  served image reaches the model with the pixels of training and evaluation
  (tf.io.decode_image's default DCT gives different pixels).

  Args:
    encoded: string scalar, the image file's bytes (PNG, JPEG, BMP or GIF;
      a GIF's first frame).

  Returns:
    uint8 [height, width, 3].
  """
  def decode_jpeg():
    return tf.io.decode_jpeg(encoded, channels=IMAGE_CHANNELS,
                             dct_method='INTEGER_ACCURATE')

  def decode_other():
    return tf.io.decode_image(encoded, channels=IMAGE_CHANNELS,
                              expand_animations=False)

  return tf.cond(tf.io.is_jpeg(encoded), decode_jpeg, decode_other)


def parse_example(serialized: tf.Tensor) -> Dict[str, tf.Tensor]:
  """Parses and decodes one serialized example (graph mode friendly).

  Args:
    serialized: string scalar, one serialized tf.train.Example.

  Returns:
    A dict with 'image' uint8 [height, width, 3], 'label' int32
    [height, width] (stored values, before the dataset's label mapping),
    'has_label' bool scalar (false for a record without a label, whose
    'label' is MISSING_LABEL_VALUE everywhere) and 'image_name' string
    scalar. The image and label sizes are not checked against each other
    here (the input pipeline does it, naming the image).
  """
  parsed = tf.io.parse_single_example(serialized, _FEATURES)
  image = decode_image(parsed[IMAGE_ENCODED_KEY])
  image.set_shape([None, None, IMAGE_CHANNELS])  # [height, width, 3]
  height = tf.cast(parsed[IMAGE_HEIGHT_KEY], tf.int32)
  width = tf.cast(parsed[IMAGE_WIDTH_KEY], tf.int32)
  # Records without height/width (allowed by DeepLab2's PNG labels) take
  # the decoded image's size for a raw label.
  image_shape = tf.shape(image)
  height = tf.where(height > 0, height, image_shape[0])
  width = tf.where(width > 0, width, image_shape[1])
  has_label = tf.strings.length(parsed[LABEL_ENCODED_KEY]) > 0
  label = tf.cond(
      has_label,
      lambda: _decode_label(parsed[LABEL_ENCODED_KEY],
                            parsed[LABEL_FORMAT_KEY], height, width),
      lambda: tf.fill(tf.stack([height, width]), MISSING_LABEL_VALUE))
  label.set_shape([None, None])  # [height, width]
  return {
      'image': image,
      'label': label,
      'has_label': has_label,
      'image_name': parsed[IMAGE_FILENAME_KEY],
  }


def list_record_files(file_patterns, field: str = 'file_pattern') -> List[str]:
  """Expands globs (local or gs://) into a sorted list of files.

  Args:
    file_patterns: a string or a sequence of glob patterns.
    field: how the patterns were given, for the error message.

  Returns:
    The sorted, de-duplicated matching files.

  Raises:
    FileNotFoundError: a pattern matches nothing.
  """
  if isinstance(file_patterns, (str, bytes)):
    file_patterns = [file_patterns]
  if not file_patterns:
    raise FileNotFoundError(
        f'{field} is empty: name the TFRecord shards, e.g. '
        'work_dirs/data/synthetic/train-*.tfrecord.')
  files = []
  for pattern in file_patterns:
    matches = tf.io.gfile.glob(pattern)
    if not matches:
      raise FileNotFoundError(
          f'{field} {pattern!r} matches no file: build the records first '
          '(tools/build_*_data.py) or fix the pattern.')
    files.extend(matches)
  return sorted(set(files))


def read_examples(file_patterns, max_examples: Optional[int] = None):
  """Yields decoded examples as numpy dicts (eager; for tools and tests).

  Args:
    file_patterns: glob(s) of TFRecord files.
    max_examples: stop after this many; None reads everything.

  Yields:
    dicts with 'image' uint8 [height, width, 3], 'label' int32 [height,
    width] (stored values; None for a record without a label) and
    'image_name' str.
  """
  files = list_record_files(file_patterns)
  dataset = tf.data.TFRecordDataset(files).map(parse_example)
  if max_examples is not None:
    dataset = dataset.take(max_examples)
  for example in dataset.as_numpy_iterator():
    yield {
        'image': example['image'],
        'label': example['label'] if example['has_label'] else None,
        'image_name': example['image_name'].decode('utf-8'),
    }


def write_images_from_records(file_patterns, output_dir: str,
                              count: int) -> List[str]:
  """Writes the images of the first `count` records as PNG files.

  Files are named `<image_name>.png` (written to a temporary name, then
  renamed). Used to get example inputs for tools/predict.py.

  Args:
    file_patterns: glob(s) of TFRecord files.
    output_dir: directory to write to (created if needed).
    count: number of images.

  Returns:
    The paths written, in record order.
  """
  tf.io.gfile.makedirs(output_dir)
  paths = []
  for index, example in enumerate(read_examples(file_patterns, count)):
    name = example['image_name'] or f'image_{index:05d}'
    path = os.path.join(output_dir, f'{os.path.basename(name)}.png')
    io_lib.write_atomically(path, encode_image_png(example['image']))
    paths.append(path)
  return paths
