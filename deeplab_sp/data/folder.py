"""Any folder of image/label pairs -> DeepLab2 records.

For a user's own dataset (and for CamVid as the SegNet tutorial ships it),
described in the config by a DatasetDescription (dataset_info.py). The pairs
of a split come in one of two ways:

  - two globs, `images` and `labels`, matched by file stem (the name without
    directory and extension; `label_suffix`, e.g. '_mask', is removed from
    label stems and `image_suffix` from image stems first; what remains is
    the name stored in the record). `{split}` in a glob is replaced by the split's name,
    so one pair of globs can describe every split:
    `CamVid/{split}/*.png` and `CamVid/{split}annot/*.png`;
  - a split list file of "image label" lines (the SegNet / CamVid style),
    relative paths resolved against the list's `root`; absolute paths
    starting with a `rewrite_prefix` FROM are moved under TO (the SegNet
    lists name /SegNet/CamVid/...).

Images are PNG, JPEG or BMP (BMP is stored as PNG; the records hold PNG or
JPEG). Labels are single-channel or palette PNGs; a palette PNG's indices
are its labels (PASCAL VOC's convention), never its colours. Stored label
values are kept as they are (8-bit) and must be values the dataset
description defines; the input pipeline maps them to train ids.

Writing goes through source_files.write_pairs: all or nothing, progress
every 100 examples, exact-name cleanup of older shards.
"""

import dataclasses
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from deeplab_sp.data import dataset_info
from deeplab_sp.data import source_files

SPLIT_PLACEHOLDER = '{split}'
# Stored labels are written as 8-bit PNGs, DeepLab2's semantic format.
MAX_STORED_LABEL = 255


@dataclasses.dataclass(frozen=True)
class GlobSource:
  """Pairs from two globs matched by file stem (see the module docstring)."""
  images: str
  labels: str
  label_suffix: str = ''
  image_suffix: str = ''


@dataclasses.dataclass(frozen=True)
class ListSource:
  """Pairs from a split list file of 'image label' lines."""
  list_file: str
  root: str = ''
  rewrite_prefix: Optional[Tuple[str, str]] = None


def _stem(path: str) -> str:
  return os.path.splitext(os.path.basename(path))[0]


def _by_stem(paths: Sequence[str], kind: str, pattern: str,
             suffix: str = '') -> Dict[str, str]:
  """stem -> path; ValueError naming two files with the same stem."""
  found = {}
  for path in sorted(paths):
    stem = _stem(path)
    if suffix and stem.endswith(suffix):
      stem = stem[:-len(suffix)]
    if stem in found:
      raise ValueError(
          f'{kind} glob {pattern!r} matches {found[stem]} and {path}, which '
          'have the same name: pairs are matched by name, so narrow the '
          'glob to one directory.')
    found[stem] = path
  return found


def _glob_files(pattern: str, flag: str) -> List[str]:
  paths = [path for path in tf.io.gfile.glob(pattern)
           if not tf.io.gfile.isdir(path)]
  if not paths:
    raise FileNotFoundError(
        f'{flag} {pattern!r} matches no file; check the path (quote the glob '
        'so that the shell does not expand it).')
  return paths


def pairs_from_globs(source: GlobSource, split: str
                     ) -> List[source_files.ImageLabelPair]:
  """The pairs of `split` from two globs; every unmatched file is named."""
  images_pattern = source.images.replace(SPLIT_PLACEHOLDER, split)
  labels_pattern = source.labels.replace(SPLIT_PLACEHOLDER, split)
  images = _by_stem(_glob_files(images_pattern, '--images'), 'Image',
                    images_pattern, source.image_suffix)
  labels = _by_stem(_glob_files(labels_pattern, '--labels'), 'Label',
                    labels_pattern, source.label_suffix)
  unmatched_images = sorted(set(images) - set(labels))
  unmatched_labels = sorted(set(labels) - set(images))
  if unmatched_images or unmatched_labels:
    lines = [f'image {images[stem]} has no label' for stem in
             unmatched_images[:5]]
    lines += [f'label {labels[stem]} has no image' for stem in
              unmatched_labels[:5]]
    count = len(unmatched_images) + len(unmatched_labels)
    raise ValueError(
        f'Split {split!r}: {count} file(s) without a partner ('
        f'{"; ".join(lines)}{"; ..." if count > len(lines) else ""}). Pairs '
        'are matched by file name without extension (and without '
        '--image_suffix / --label_suffix): add the missing files, remove the '
        'extra ones, or set the suffixes.')
  return [source_files.ImageLabelPair(stem, images[stem], labels[stem])
          for stem in sorted(images)]


def _resolve_list_path(path: str, source: ListSource) -> str:
  if source.rewrite_prefix is not None:
    old, new = source.rewrite_prefix
    if path.startswith(old):
      path = new.rstrip('/') + '/' + path[len(old):].lstrip('/')
  if not os.path.isabs(path) and '://' not in path:
    path = os.path.join(source.root, path)
  return path


def pairs_from_list(source: ListSource, split: str
                    ) -> List[source_files.ImageLabelPair]:
  """The pairs of a split list file; a malformed line or a missing file is
  named with its line number."""
  if not tf.io.gfile.exists(source.list_file):
    raise FileNotFoundError(
        f'Split list {source.list_file} of split {split!r} does not exist; '
        'check --split_lists.')
  with tf.io.gfile.GFile(source.list_file, 'r') as f:
    lines = f.read().splitlines()
  pairs = []
  names = {}
  for number, line in enumerate(lines, start=1):
    if not line.strip() or line.lstrip().startswith('#'):
      continue
    fields = line.split()
    where = f'{source.list_file}:{number}'
    if len(fields) != 2:
      raise ValueError(
          f'{where}: expected "image_path label_path", got {line.strip()!r}; '
          'write one pair per line, separated by whitespace.')
    image_path, label_path = (_resolve_list_path(p, source) for p in fields)
    for kind, path in (('image', image_path), ('label', label_path)):
      if not tf.io.gfile.exists(path):
        hint = ('set --list_root to the folder the relative paths start from'
                if not os.path.isabs(fields[0]) else
                'set --rewrite_prefix=FROM=TO to move the list\'s absolute '
                'paths to your copy (e.g. /SegNet/CamVid=/data/CamVid)')
        raise FileNotFoundError(f'{where}: {kind} {path} does not exist; '
                                f'{hint}.')
    name = _stem(image_path)
    if name in names:
      raise ValueError(
          f'{where}: image name {name!r} was already listed on line '
          f'{names[name]}; each image may appear once per split.')
    names[name] = number
    pairs.append(source_files.ImageLabelPair(name, image_path, label_path))
  if not pairs:
    raise ValueError(f'Split list {source.list_file} lists no pair; add '
                     '"image_path label_path" lines.')
  return pairs


def label_checker(info: dataset_info.DatasetInfo):
  """(label int32 [h, w], path) -> label to store; ValueError naming the
  file for values the dataset does not define or that do not fit 8 bits."""

  def check(label: np.ndarray, path: str) -> np.ndarray:
    source_files.check_dataset_labels(label, path, info)
    if label.size and label.max() > MAX_STORED_LABEL:
      raise ValueError(
          f'Label {path} holds value {int(label.max())}; records store 8-bit '
          f'labels (0..{MAX_STORED_LABEL}): renumber the dataset\'s stored '
          'values.')
    return label

  return check


def sources_from_flags(images: Optional[str], labels: Optional[str],
                       label_suffix: str, splits: Sequence[str],
                       split_lists: Optional[Sequence[str]], list_root: str,
                       rewrite_prefix: Optional[str],
                       image_suffix: str = '') -> Dict[str, object]:
  """split -> GlobSource or ListSource, from the builder's flags.

  Raises:
    ValueError: naming the flag and the fix.
  """
  uses_globs = images is not None or labels is not None
  if uses_globs == bool(split_lists):
    raise ValueError('Give the pairs either as --images and --labels (globs) '
                     'or as --split_lists, not both and not neither.')
  if split_lists:
    rewrite = None
    if rewrite_prefix:
      old, separator, new = rewrite_prefix.partition('=')
      if not separator or not old:
        raise ValueError(f'--rewrite_prefix={rewrite_prefix!r}: write '
                         'FROM=TO, e.g. /SegNet/CamVid=/data/CamVid.')
      rewrite = (old, new)
    sources = {}
    for entry in split_lists:
      split, separator, list_file = entry.partition('=')
      if not separator or not split or not list_file:
        raise ValueError(f'--split_lists entry {entry!r}: write '
                         'SPLIT=LIST_FILE, e.g. train=CamVid/train.txt.')
      if split in sources:
        raise ValueError(f'--split_lists names split {split!r} twice.')
      sources[split] = ListSource(list_file, list_root, rewrite)
    return sources
  if not images or not labels:
    raise ValueError('--images and --labels go together: pass both globs.')
  splits = [split for split in splits if split]
  if not splits:
    raise ValueError('--splits is empty; name at least one split.')
  if len(splits) > 1 and SPLIT_PLACEHOLDER not in images + labels:
    raise ValueError(
        f'--splits names {len(splits)} splits but the globs have no '
        '{split}: every split would get the same files. Put {split} in the '
        'globs, or build one split at a time.')
  return {split: GlobSource(images, labels, label_suffix, image_suffix)
          for split in splits}


def build(sources: Dict[str, object], info: dataset_info.DatasetInfo,
          output_dir: str, num_shards: int = 10) -> Dict[str, List[str]]:
  """Writes the records of every split; returns split -> shard paths.

  Args:
    sources: split name -> GlobSource or ListSource.
    info: the dataset the labels must belong to.
    output_dir: directory of the shards.
    num_shards: shards per split.
  """
  pairs = {}
  for split, source in sources.items():
    if isinstance(source, GlobSource):
      pairs[split] = pairs_from_globs(source, split)
    else:
      pairs[split] = pairs_from_list(source, split)
  return source_files.write_pairs(
      pairs, label_checker(info), output_dir, num_shards,
      {split: str(getattr(source, 'images', getattr(source, 'list_file', '')))
       for split, source in sources.items()})
