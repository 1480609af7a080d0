"""Cityscapes (gtFine) -> DeepLab2 semantic-segmentation records.

Layout under the Cityscapes root:

  leftImg8bit/{split}/{city}/{name}_leftImg8bit.png
  gtFine/{split}/{city}/{name}_gtFine_labelTrainIds.png   (preferred)
  gtFine/{split}/{city}/{name}_gtFine_labelIds.png        (otherwise)

Labels are stored as train ids (0..18, 255 = ignore). Where only
*_gtFine_labelIds.png exist they are converted with the official Cityscapes
label table (LABEL_ID_TO_TRAIN_ID: the 19 evaluated classes, everything else
255). The record's image/filename is `{name}` (DeepLab2's convention).
TRAIN_ID_TO_LABEL_ID maps predictions back to labelIds, the values the
official evaluation (cityscapesscripts) and the test server score.
"""

import os
from typing import Dict, List, Sequence

import numpy as np
import tensorflow as tf

from deeplab_sp.data import dataset_info
from deeplab_sp.data import source_files

IGNORE = dataset_info.IGNORE_LABEL
# The official Cityscapes label table, id -> trainId (cityscapesScripts,
# cityscapesscripts/helpers/labels.py, `labels`; Cordts et al., CVPR 2016).
# Ids 0..33 as they appear in *_gtFine_labelIds.png (the table's id -1,
# 'license plate', never occurs in the PNGs).
LABEL_ID_TO_TRAIN_ID = (
    IGNORE,  # 0 unlabeled
    IGNORE,  # 1 ego vehicle
    IGNORE,  # 2 rectification border
    IGNORE,  # 3 out of roi
    IGNORE,  # 4 static
    IGNORE,  # 5 dynamic
    IGNORE,  # 6 ground
    0,       # 7 road
    1,       # 8 sidewalk
    IGNORE,  # 9 parking
    IGNORE,  # 10 rail track
    2,       # 11 building
    3,       # 12 wall
    4,       # 13 fence
    IGNORE,  # 14 guard rail
    IGNORE,  # 15 bridge
    IGNORE,  # 16 tunnel
    5,       # 17 pole
    IGNORE,  # 18 polegroup
    6,       # 19 traffic light
    7,       # 20 traffic sign
    8,       # 21 vegetation
    9,       # 22 terrain
    10,      # 23 sky
    11,      # 24 person
    12,      # 25 rider
    13,      # 26 car
    14,      # 27 truck
    15,      # 28 bus
    IGNORE,  # 29 caravan
    IGNORE,  # 30 trailer
    16,      # 31 train
    17,      # 32 motorcycle
    18,      # 33 bicycle
)
MAX_LABEL_ID = len(LABEL_ID_TO_TRAIN_ID) - 1
# The way back, train id -> labelId, for predictions in the official
# evaluation's and test server's format (they score *_gtFine_labelIds.png
# values): the id of each of the 19 evaluated classes of the table above.
TRAIN_ID_TO_LABEL_ID = (
    7,   # 0 road
    8,   # 1 sidewalk
    11,  # 2 building
    12,  # 3 wall
    13,  # 4 fence
    17,  # 5 pole
    19,  # 6 traffic light
    20,  # 7 traffic sign
    21,  # 8 vegetation
    22,  # 9 terrain
    23,  # 10 sky
    24,  # 11 person
    25,  # 12 rider
    26,  # 13 car
    27,  # 14 truck
    28,  # 15 bus
    31,  # 16 train
    32,  # 17 motorcycle
    33,  # 18 bicycle
)

IMAGE_SUFFIX = '_leftImg8bit.png'
TRAIN_ID_SUFFIX = '_gtFine_labelTrainIds.png'
LABEL_ID_SUFFIX = '_gtFine_labelIds.png'
DEFAULT_SPLITS = ('train', 'val')

_INFO = dataset_info.get_dataset_info('cityscapes')


def label_ids_to_train_ids(label: np.ndarray, path: str) -> np.ndarray:
  """labelIds (0..33) -> train ids (0..18, 255); ValueError naming `path`."""
  source_files.check_label_range(label, path, MAX_LABEL_ID, None,
                                 'Cityscapes labelIds')
  return np.asarray(LABEL_ID_TO_TRAIN_ID, np.uint8)[label]


def train_ids_to_label_ids(train_ids: np.ndarray) -> np.ndarray:
  """Predicted train ids (0..18) -> labelIds (uint8); ValueError otherwise."""
  train_ids = np.asarray(train_ids)
  if train_ids.size and (train_ids.min() < 0 or
                         train_ids.max() >= len(TRAIN_ID_TO_LABEL_ID)):
    raise ValueError(
        f'Cityscapes train ids are 0..{len(TRAIN_ID_TO_LABEL_ID) - 1}; got '
        f'values {train_ids.min()}..{train_ids.max()}. Only a model trained '
        'on Cityscapes\' 19 classes has labelIds.')
  return np.asarray(TRAIN_ID_TO_LABEL_ID, np.uint8)[train_ids]


def check_train_ids(label: np.ndarray, path: str) -> np.ndarray:
  return source_files.check_dataset_labels(label, path, _INFO)


def _glob_by_name(pattern: str, suffix: str) -> Dict[str, str]:
  return {os.path.basename(path)[:-len(suffix)]: path
          for path in tf.io.gfile.glob(pattern)}


def find_pairs(cityscapes_root: str, split: str
               ) -> List[source_files.ImageLabelPair]:
  """The image/label pairs of `split`; the label kind is per image.

  Raises:
    ValueError: an image without a label, a label without an image, or no
      images at all (naming the directory).
  """
  image_dir = os.path.join(cityscapes_root, 'leftImg8bit', split)
  label_dir = os.path.join(cityscapes_root, 'gtFine', split)
  if not tf.io.gfile.isdir(image_dir):
    raise FileNotFoundError(
        f'{image_dir} does not exist: --cityscapes_root must hold '
        f'leftImg8bit/{split}/<city>/*{IMAGE_SUFFIX}.')
  images = _glob_by_name(os.path.join(image_dir, '*', '*' + IMAGE_SUFFIX),
                         IMAGE_SUFFIX)
  train_ids = _glob_by_name(
      os.path.join(label_dir, '*', '*' + TRAIN_ID_SUFFIX), TRAIN_ID_SUFFIX)
  label_ids = _glob_by_name(
      os.path.join(label_dir, '*', '*' + LABEL_ID_SUFFIX), LABEL_ID_SUFFIX)
  labels = dict(label_ids)
  labels.update(train_ids)  # Train ids win where both exist.
  return source_files.pair_files(images, labels, image_dir, label_dir)


def convert_label(label: np.ndarray, path: str) -> np.ndarray:
  """Train-id PNGs are checked; labelIds PNGs are converted."""
  if path.endswith(TRAIN_ID_SUFFIX):
    return check_train_ids(label, path)
  return label_ids_to_train_ids(label, path)


def build(cityscapes_root: str, output_dir: str,
          splits: Sequence[str] = DEFAULT_SPLITS,
          num_shards: int = 10) -> Dict[str, List[str]]:
  """Writes the records of `splits`; returns split -> shard paths.

  Every split is checked for pairing before anything is written; a bad
  file anywhere leaves no shard of any split.
  """
  pairs = {split: find_pairs(cityscapes_root, split) for split in splits}
  return source_files.write_pairs(
      pairs, convert_label, output_dir, num_shards,
      {split: os.path.join(cityscapes_root, 'leftImg8bit', split)
       for split in splits})
