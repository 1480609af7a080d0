"""ADE20K SceneParsing (ADEChallengeData2016) -> DeepLab2 records.

Layout under the ADEChallengeData2016 root:

  images/{training,validation}/{name}.jpg
  annotations/{training,validation}/{name}.png   values 0..150, 0 = unlabeled

Labels are stored as they are (0..150); the input pipeline maps them at load
time (0 -> ignore, 1..150 -> 0..149; dataset_info.ADE20K). Output splits are
named 'train' (training) and 'val' (validation), so shards are
`train-*.tfrecord` and `val-*.tfrecord`.
"""

import os
from typing import Dict, List, Sequence

import numpy as np
import tensorflow as tf

from deeplab_sp.data import dataset_info
from deeplab_sp.data import source_files

# ADE20K's directory name of each output split.
SPLIT_DIRECTORIES = {'train': 'training', 'val': 'validation'}
DEFAULT_SPLITS = ('train', 'val')
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')

_INFO = dataset_info.get_dataset_info('ade20k')


def check_label(label: np.ndarray, path: str) -> np.ndarray:
  """Stored labels must be 0..150; ValueError naming `path` otherwise."""
  return source_files.check_dataset_labels(label, path, _INFO)


def find_pairs(ade20k_root: str, split: str
               ) -> List[source_files.ImageLabelPair]:
  """The image/annotation pairs of `split` ('train' or 'val')."""
  if split not in SPLIT_DIRECTORIES:
    raise ValueError(f'Unknown ADE20K split {split!r}: use one of '
                     f'{", ".join(SPLIT_DIRECTORIES)} in --splits.')
  directory = SPLIT_DIRECTORIES[split]
  image_dir = os.path.join(ade20k_root, 'images', directory)
  label_dir = os.path.join(ade20k_root, 'annotations', directory)
  for path in (image_dir, label_dir):
    if not tf.io.gfile.isdir(path):
      raise FileNotFoundError(
          f'{path} does not exist: --ade20k_root must be the '
          'ADEChallengeData2016 directory (images/ and annotations/).')
  images = {}
  for path in tf.io.gfile.glob(os.path.join(image_dir, '*')):
    name, extension = os.path.splitext(os.path.basename(path))
    if extension.lower() in IMAGE_EXTENSIONS:
      images[name] = path
  labels = {os.path.splitext(os.path.basename(path))[0]: path
            for path in tf.io.gfile.glob(os.path.join(label_dir, '*.png'))}
  return source_files.pair_files(images, labels, image_dir, label_dir)


def build(ade20k_root: str, output_dir: str,
          splits: Sequence[str] = DEFAULT_SPLITS,
          num_shards: int = 10) -> Dict[str, List[str]]:
  """Writes the records of `splits`; returns split -> shard paths."""
  pairs = {split: find_pairs(ade20k_root, split) for split in splits}
  return source_files.write_pairs(
      pairs, check_label, output_dir, num_shards,
      {split: os.path.join(ade20k_root, 'images', SPLIT_DIRECTORIES[split])
       for split in splits})
