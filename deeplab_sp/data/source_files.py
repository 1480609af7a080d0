"""Reading a dataset's source image/label files into DeepLab2 records.

Shared by the Cityscapes and ADE20K builders (cityscapes.py, ade20k.py):
pairing images with labels, reading and checking each file, and writing a
split through record_writer (temporary names, renamed when complete). Every
problem with the source files is a ValueError or FileNotFoundError naming
the file and saying what to do:

  - an image without its label, or a label without its image;
  - an unreadable or truncated image or label;
  - an image whose size differs from its label's;
  - label values outside the dataset's stored range;
  - a split with no images.

The image bytes are stored as they are in the source file (no re-encoding,
so pixels are exact); the label map is stored as an 8-bit PNG.
"""

import dataclasses
import io
import os
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
from PIL import Image
import tensorflow as tf

from deeplab_sp.data import dataset_info
from deeplab_sp.data import record_writer
from deeplab_sp.data import tfrecord_format

# BMP images are stored re-encoded as PNG (records hold PNG or JPEG).
_FORMATS = {'.png': 'png', '.jpg': 'jpeg', '.jpeg': 'jpeg', '.bmp': 'bmp'}


@dataclasses.dataclass(frozen=True)
class ImageLabelPair:
  """One source example: image file, label file and the stored name."""
  name: str
  image_path: str
  label_path: str


def pair_files(images: Dict[str, str], labels: Dict[str, str],
               image_dir: str, label_dir: str) -> List[ImageLabelPair]:
  """Pairs images and labels by key; ValueError naming any unmatched file.

  Args:
    images: key -> image path.
    labels: key -> label path.
    image_dir: the image directory, for the error message.
    label_dir: the label directory, for the error message.

  Returns:
    The pairs, sorted by key.
  """
  for key, path in sorted(images.items()):
    if key not in labels:
      raise ValueError(
          f'Image {path} has no label file in {label_dir}: add its label '
          'or remove the image.')
  for key, path in sorted(labels.items()):
    if key not in images:
      raise ValueError(
          f'Label {path} has no image file in {image_dir}: add its image '
          'or remove the label.')
  return [ImageLabelPair(key, images[key], labels[key])
          for key in sorted(images)]


def _read_bytes(path: str) -> bytes:
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f'{path} does not exist.')
  with tf.io.gfile.GFile(path, 'rb') as f:
    return f.read()


def _decode(path: str, data: bytes, kind: str) -> Image.Image:
  try:
    image = Image.open(io.BytesIO(data))
    image.load()
  except Exception as error:  # PIL raises several types.
    raise ValueError(
        f'Cannot read {kind} {path} (unreadable or truncated file: '
        f'{error}); re-download or re-extract it.') from error
  return image


def read_image(path: str):
  """Returns (file bytes, format, uint8 [height, width, 3] RGB pixels)."""
  extension = os.path.splitext(path)[1].lower()
  if extension not in _FORMATS:
    raise ValueError(f'Image {path} is not PNG, JPEG or BMP; convert it.')
  data = _read_bytes(path)
  image = _decode(path, data, 'image')
  pixels = np.asarray(image.convert('RGB'))
  if image.format == 'BMP':
    return tfrecord_format.encode_image_png(pixels), 'png', pixels
  # The bytes say what the file is (a JPEG may be named .png).
  image_format = tfrecord_format.detect_image_format(data)
  if image_format is None:
    raise ValueError(f'Image {path} is not PNG or JPEG (its content is '
                     f'{image.format}); convert it.')
  return data, image_format, pixels


def read_label(path: str) -> np.ndarray:
  """The label PNG's values, int32 [height, width] (single channel)."""
  image = _decode(path, _read_bytes(path), 'label')
  if image.mode not in ('L', 'P', 'I', 'I;16'):
    raise ValueError(
        f'Label {path} has mode {image.mode}, not a single-channel label '
        'map; use the dataset\'s label PNGs (one value per pixel).')
  return np.asarray(image).astype(np.int32)


def check_label_range(label: np.ndarray, path: str, max_value: int,
                      ignore_value: Optional[int], what: str):
  """ValueError naming `path` if a value is outside 0..max (and not ignore)."""
  bad = (label < 0) | (label > max_value)
  if ignore_value is not None:
    bad &= label != ignore_value
  if bad.any():
    values = sorted(set(np.unique(label[bad]).tolist()))[:10]
    allowed = f'0..{max_value}' + (f' or {ignore_value}'
                                   if ignore_value is not None else '')
    raise ValueError(
        f'Label {path} has values {values} outside {allowed} ({what}); '
        'check that it is the right annotation file.')


def check_dataset_labels(label: np.ndarray, path: str,
                         info: dataset_info.DatasetInfo) -> np.ndarray:
  """Returns `label` if every value is one `info` defines; else ValueError
  naming `path`, the values and the ones the dataset stores."""
  invalid = info.invalid_stored_values(label)
  if invalid.size:
    raise ValueError(
        f'Label {path} has values {invalid[:10].tolist()} outside '
        f'{info.describe_stored_values()} (dataset {info.name!r}); check '
        'that it is the right annotation file, or add the values to the '
        'dataset description (a class\'s stored_values or ignore_values).')
  return label


def make_record(pair: ImageLabelPair,
                convert_label: Callable[[np.ndarray, str], np.ndarray]
                ) -> 'tf.train.Example':
  """Reads and checks one pair; returns its record.

  Args:
    pair: the source files.
    convert_label: (stored label int32 [h, w], label path) -> label to store
      (values 0..255); raises ValueError naming the path on a bad value.
  """
  image_bytes, image_format, pixels = read_image(pair.image_path)
  label = read_label(pair.label_path)
  if label.shape != pixels.shape[:2]:
    raise ValueError(
        f'Image {pair.image_path} is {pixels.shape[0]}x{pixels.shape[1]} '
        f'but its label {pair.label_path} is {label.shape[0]}x'
        f'{label.shape[1]}: they must be the same size; check the pair.')
  label = convert_label(label, pair.label_path)
  if image_format == 'png' and Image.open(io.BytesIO(image_bytes)).mode != \
      'RGB':
    # Stored images must decode to these RGB pixels: re-encode non-RGB PNGs.
    image_bytes = tfrecord_format.encode_image_png(pixels)
  return tfrecord_format.make_example(
      image_bytes, image_format, pair.name, pixels.shape[0], pixels.shape[1],
      tfrecord_format.encode_label_png(label.astype(np.uint8)))


def write_pairs(pairs: Dict[str, Sequence[ImageLabelPair]],
                convert_label: Callable[[np.ndarray, str], np.ndarray],
                output_dir: str, num_shards: int,
                source_dirs: Dict[str, str]) -> Dict[str, List[str]]:
  """Writes every split's pairs, all or nothing; prints a summary.

  Args:
    pairs: split -> its pairs.
    convert_label: see make_record.
    output_dir: directory of the shards.
    num_shards: shards per split.
    source_dirs: split -> its image directory, for the empty-split error.

  Returns:
    split -> shard paths.
  """
  for split, split_pairs in pairs.items():
    if not split_pairs:
      raise ValueError(
          f'Split {split!r} is empty: no images found under '
          f'{source_dirs[split]}. Check the dataset root and the --splits '
          'flag.')
  jobs = [record_writer.SplitJob(
      split, lambda index, p=split_pairs: make_record(p[index], convert_label),
      len(split_pairs)) for split, split_pairs in pairs.items()]
  written = record_writer.write_splits(jobs, output_dir, num_shards)
  print(record_writer.format_summary(
      written, {split: len(p) for split, p in pairs.items()}, output_dir))
  return written
