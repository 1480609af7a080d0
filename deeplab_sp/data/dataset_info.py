"""Datasets: classes, colours, ignore values and the stored-label mapping.

A dataset is either registered here (Cityscapes, ADE20K, the generated
`synthetic` data) or described in the config (a DatasetDescription proto,
inline or in a file; `from_description`). Both become one `DatasetInfo`,
and each registered entry could be written as a description
(`to_description`): the registry is a set of ready-made descriptions.

Every dataset's labels are mapped at load time to train ids 0..num_classes-1,
with IGNORE_LABEL for pixels excluded from the loss and the metric, through
one lookup table (DatasetInfo.label_table): stored value -> train id. A
stored value the dataset does not define is a data error naming the image.

Stored labels are semantic (this repository's builders) or panoptic
(DeepLab2's builders). DeepLab2 stores semantic * 1000 + instance as raw
int32: Cityscapes with semantic = train id (0..18, 255 ignore, so ignored
pixels hold 255000 + instance), ADE20K with semantic = 0..150 (0 unlabeled).
DatasetOptions.panoptic_label_divisor says which one a split holds (0:
semantic, the default; DEEPLAB2_PANOPTIC_LABEL_DIVISOR for DeepLab2's
records); it is an option rather than a guess from the bytes because both
kinds of record may use the raw format. The semantic label (value // divisor)
then goes through the mapping below, which is the same for both.
"""

import dataclasses
import re
from typing import Iterable, Mapping, Optional, Sequence, Tuple

import numpy as np

# The label value of pixels that are ignored by the loss and the metric,
# after the dataset's label mapping (Cityscapes' convention). Train ids are
# therefore 0..254 at most.
IGNORE_LABEL = 255
MAX_CLASSES = IGNORE_LABEL

# Entry of DatasetInfo.label_table for a stored value that the dataset does
# not define: finding one in a label map is a data error.
INVALID_LABEL = -1

# Stored label values are PNG samples (8 or 16 bits).
MAX_STORED_VALUE = 65535

# The label divisor of DeepLab2's panoptic records (its Cityscapes and
# ADE20K builders): stored value = semantic * 1000 + instance.
DEEPLAB2_PANOPTIC_LABEL_DIVISOR = 1000

_NAME_PATTERN = re.compile(r'^[A-Za-z0-9_.\-]+$')


class DescriptionError(ValueError):
  """A dataset description that cannot be used; the message names the
  field (relative to the DatasetDescription) and the fix."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """Static facts about one dataset.

  Attributes:
    name: the dataset's name (the registry key of a registered dataset).
    class_names: one name per train id.
    colormap: one (r, g, b) per train id, for visualisation.
    label_table: stored label value -> train id, for stored values
      0..len - 1: a train id 0..num_classes-1, IGNORE_LABEL for values that
      mean "ignore", INVALID_LABEL for values the dataset never stores (a
      data error when found). Values beyond the table are data errors too.
  """
  name: str
  class_names: Tuple[str, ...]
  colormap: Tuple[Tuple[int, int, int], ...]
  label_table: Tuple[int, ...]

  @property
  def num_classes(self) -> int:
    """Number of evaluated classes (train ids 0..num_classes-1)."""
    return len(self.class_names)

  @property
  def max_stored_label(self) -> int:
    """The largest stored value the table covers."""
    return len(self.label_table) - 1

  def describe_stored_values(self) -> str:
    """The valid stored values, e.g. '0..10 (classes), 11 (ignored)'."""
    table = np.asarray(self.label_table)
    parts = []
    classes = np.flatnonzero((table >= 0) & (table != IGNORE_LABEL))
    ignored = np.flatnonzero(table == IGNORE_LABEL)
    for kind, values in (('classes', classes), ('ignored', ignored)):
      if values.size:
        parts.append(f'{_ranges(values.tolist())} ({kind})')
    return ', '.join(parts)

  def invalid_stored_values(self, label: np.ndarray) -> np.ndarray:
    """The sorted distinct values of `label` that the dataset does not
    define (int array, empty when all are valid)."""
    values = np.unique(label)
    inside = (values >= 0) & (values < len(self.label_table))
    table = np.asarray(self.label_table)
    valid = np.zeros(values.shape, bool)
    valid[inside] = table[values[inside]] != INVALID_LABEL
    return values[~valid]

  def map_labels(self, label: np.ndarray) -> np.ndarray:
    """Stored values -> train ids (IGNORE_LABEL where ignored), as int32.

    The values must be valid (see invalid_stored_values)."""
    assert not self.invalid_stored_values(label).size
    return np.asarray(self.label_table, np.int32)[label]


def _ranges(values: Sequence[int]) -> str:
  """[0, 1, 2, 5] -> '0..2, 5'."""
  parts = []
  start = previous = None
  for value in list(values) + [None]:
    if value is not None and previous is not None and value == previous + 1:
      previous = value
      continue
    if start is not None:
      parts.append(str(start) if start == previous else
                   f'{start}..{previous}')
    start = previous = value
  return ', '.join(parts)


def make_dataset_info(name: str, class_names: Sequence[str],
                      colormap: Sequence[Sequence[int]],
                      ignore_values: Iterable[int] = (),
                      label_offset: int = 0,
                      stored_values: Optional[
                          Mapping[int, Sequence[int]]] = None
                     ) -> DatasetInfo:
  """A checked DatasetInfo.

  Args:
    name: the dataset's name.
    class_names: one name per train id.
    colormap: one (r, g, b) per train id, each 0..255.
    ignore_values: stored values that mean "ignore".
    label_offset: without `stored_values`, train id t is stored as
      t - label_offset.
    stored_values: train id -> the stored values of that class (a lookup
      table); then label_offset must be 0.

  Raises:
    DescriptionError: naming the field of DatasetDescription and the fix.
  """
  if not name or not _NAME_PATTERN.match(name):
    raise DescriptionError(
        f"name {name!r} must be set, with letters, digits, '_', '-' and '.' "
        'only.')
  num_classes = len(class_names)
  if not 2 <= num_classes <= MAX_CLASSES:
    raise DescriptionError(
        f'classes: {num_classes} class(es) given; a dataset needs 2 to '
        f'{MAX_CLASSES} classes (train ids 0..{MAX_CLASSES - 1}; '
        f'{IGNORE_LABEL} is the ignore label). Add one `classes {{ name: ... '
        'color: [r, g, b] }` per class.')
  for index, class_name in enumerate(class_names):
    if not class_name:
      raise DescriptionError(f'classes[{index}].name is empty: name every '
                             'class.')
  duplicates = sorted({n for n in class_names if class_names.count(n) > 1})
  if duplicates:
    raise DescriptionError(f'classes: the names {duplicates} occur more '
                           'than once; give each class its own name.')
  if len(colormap) != num_classes:
    raise DescriptionError(
        f'classes: {len(colormap)} colours for {num_classes} classes; give '
        'every class `color: [r, g, b]`.')
  for index, color in enumerate(colormap):
    if len(color) != 3 or not all(0 <= c <= 255 for c in color):
      raise DescriptionError(
          f'classes[{index}].color is {list(color)}; write three values '
          '0..255, e.g. color: [128, 64, 128].')

  value_to_id = {}

  def add(value: int, train_id: int, field: str) -> None:
    if not 0 <= value <= MAX_STORED_VALUE:
      raise DescriptionError(
          f'{field}: stored value {value} is outside 0..{MAX_STORED_VALUE} '
          '(label PNGs hold 8- or 16-bit values).')
    if value in value_to_id:
      raise DescriptionError(
          f'{field}: stored value {value} is mapped twice; each stored value '
          'may appear once (in one class or in ignore_values).')
    value_to_id[value] = train_id

  for value in ignore_values:
    add(value, IGNORE_LABEL, 'ignore_values')
  if stored_values is not None:
    if label_offset:
      raise DescriptionError(
          'label_offset is set, and the classes list their stored_values: '
          'use one of the two mappings.')
    for train_id in range(num_classes):
      values = stored_values.get(train_id, ())
      if not values:
        raise DescriptionError(
            f'classes[{train_id}].stored_values is empty while other '
            'classes list theirs: list the stored values of every class, or '
            'of none (then label_offset maps them).')
      for value in values:
        add(value, train_id, f'classes[{train_id}].stored_values')
  else:
    for train_id in range(num_classes):
      add(train_id - label_offset, train_id,
          f'label_offset ({label_offset}) for classes[{train_id}]')
  table = [INVALID_LABEL] * (max(value_to_id) + 1)
  for value, train_id in value_to_id.items():
    table[value] = train_id
  return DatasetInfo(
      name=name, class_names=tuple(class_names),
      colormap=tuple(tuple(int(c) for c in color) for color in colormap),
      label_table=tuple(table))


_CITYSCAPES_CLASSES = (
    'road', 'sidewalk', 'building', 'wall', 'fence', 'pole', 'traffic light',
    'traffic sign', 'vegetation', 'terrain', 'sky', 'person', 'rider', 'car',
    'truck', 'bus', 'train', 'motorcycle', 'bicycle')

# The Cityscapes benchmark's official colours of the 19 train ids.
_CITYSCAPES_COLORS = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156),
    (190, 153, 153), (153, 153, 153), (250, 170, 30), (220, 220, 0),
    (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100),
    (0, 0, 230), (119, 11, 32))

# Stored as train ids (0..18), 255 = ignore: the labelTrainIds PNGs of the
# Cityscapes scripts, and what this repository's builder writes.
CITYSCAPES = make_dataset_info(
    'cityscapes', _CITYSCAPES_CLASSES, _CITYSCAPES_COLORS,
    ignore_values=(IGNORE_LABEL,))

# ADE20K SceneParsing (ADEChallengeData2016): the 150 classes of
# objectInfo150.csv (first short name of each), in annotation order 1..150.
_ADE20K_CLASSES = (
    'wall', 'building', 'sky', 'floor', 'tree', 'ceiling', 'road', 'bed',
    'windowpane', 'grass', 'cabinet', 'sidewalk', 'person', 'earth', 'door',
    'table', 'mountain', 'plant', 'curtain', 'chair', 'car', 'water',
    'painting', 'sofa', 'shelf', 'house', 'sea', 'mirror', 'rug', 'field',
    'armchair', 'seat', 'fence', 'desk', 'rock', 'wardrobe', 'lamp',
    'bathtub', 'railing', 'cushion', 'base', 'box', 'column', 'signboard',
    'chest of drawers', 'counter', 'sand', 'sink', 'skyscraper',
    'fireplace', 'refrigerator', 'grandstand', 'path', 'stairs', 'runway',
    'case', 'pool table', 'pillow', 'screen door', 'stairway', 'river',
    'bridge', 'bookcase', 'blind', 'coffee table', 'toilet', 'flower',
    'book', 'hill', 'bench', 'countertop', 'stove', 'palm',
    'kitchen island', 'computer', 'swivel chair', 'boat', 'bar',
    'arcade machine', 'hovel', 'bus', 'towel', 'light', 'truck', 'tower',
    'chandelier', 'awning', 'streetlight', 'booth', 'television receiver',
    'airplane', 'dirt track', 'apparel', 'pole', 'land', 'bannister',
    'escalator', 'ottoman', 'bottle', 'buffet', 'poster', 'stage', 'van',
    'ship', 'fountain', 'conveyer belt', 'canopy', 'washer', 'plaything',
    'swimming pool', 'stool', 'barrel', 'basket', 'waterfall', 'tent',
    'bag', 'minibike', 'cradle', 'oven', 'ball', 'food', 'step', 'tank',
    'trade name', 'microwave', 'pot', 'animal', 'bicycle', 'lake',
    'dishwasher', 'screen', 'blanket', 'sculpture', 'hood', 'sconce',
    'vase', 'traffic light', 'tray', 'ashcan', 'fan', 'pier', 'crt screen',
    'plate', 'monitor', 'bulletin board', 'shower', 'radiator', 'glass',
    'clock', 'flag')

# The ADE20K palette in common use for visualisation (the one distributed
# with the SceneParsing toolkit's color150; entries 6 and 48 share a colour
# there, and here).
_ADE20K_COLORS = (
    (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50),
    (4, 200, 3), (120, 120, 80), (140, 140, 140), (204, 5, 255),
    (230, 230, 230), (4, 250, 7), (224, 5, 255), (235, 255, 7),
    (150, 5, 61), (120, 120, 70), (8, 255, 51), (255, 6, 82),
    (143, 255, 140), (204, 255, 4), (255, 51, 7), (204, 70, 3),
    (0, 102, 200), (61, 230, 250), (255, 6, 51), (11, 102, 255),
    (255, 7, 71), (255, 9, 224), (9, 7, 230), (220, 220, 220), (255, 9, 92),
    (112, 9, 255), (8, 255, 214), (7, 255, 224), (255, 184, 6),
    (10, 255, 71), (255, 41, 10), (7, 255, 255), (224, 255, 8),
    (102, 8, 255), (255, 61, 6), (255, 194, 7), (255, 122, 8), (0, 255, 20),
    (255, 8, 41), (255, 5, 153), (6, 51, 255), (235, 12, 255),
    (160, 150, 20), (0, 163, 255), (140, 140, 140), (250, 10, 15),
    (20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0), (153, 255, 0),
    (0, 0, 255), (255, 71, 0), (0, 235, 255), (0, 173, 255), (31, 0, 255),
    (11, 200, 200), (255, 82, 0), (0, 255, 245), (0, 61, 255),
    (0, 255, 112), (0, 255, 133), (255, 0, 0), (255, 163, 0), (255, 102, 0),
    (194, 255, 0), (0, 143, 255), (51, 255, 0), (0, 82, 255), (0, 255, 41),
    (0, 255, 173), (10, 0, 255), (173, 255, 0), (0, 255, 153), (255, 92, 0),
    (255, 0, 255), (255, 0, 245), (255, 0, 102), (255, 173, 0),
    (255, 0, 20), (255, 184, 184), (0, 31, 255), (0, 255, 61), (0, 71, 255),
    (255, 0, 204), (0, 255, 194), (0, 255, 82), (0, 10, 255), (0, 112, 255),
    (51, 0, 255), (0, 194, 255), (0, 122, 255), (0, 255, 163),
    (255, 153, 0), (0, 255, 10), (255, 112, 0), (143, 255, 0), (82, 0, 255),
    (163, 255, 0), (255, 235, 0), (8, 184, 170), (133, 0, 255),
    (0, 255, 92), (184, 0, 255), (255, 0, 31), (0, 184, 255), (0, 214, 255),
    (255, 0, 112), (92, 255, 0), (0, 224, 255), (112, 224, 255),
    (70, 184, 160), (163, 0, 255), (153, 0, 255), (71, 255, 0),
    (255, 0, 163), (255, 204, 0), (255, 0, 143), (0, 255, 235),
    (133, 255, 0), (255, 0, 235), (245, 0, 255), (255, 0, 122),
    (255, 245, 0), (10, 190, 212), (214, 255, 0), (0, 204, 255),
    (20, 0, 255), (255, 255, 0), (0, 153, 255), (0, 41, 255), (0, 255, 204),
    (41, 0, 255), (41, 255, 0), (173, 0, 255), (0, 245, 255), (71, 0, 255),
    (122, 0, 255), (0, 255, 184), (0, 92, 255), (184, 255, 0),
    (0, 133, 255), (255, 214, 0), (25, 194, 194), (102, 255, 0),
    (92, 0, 255))

# Stored as 0 = unlabeled (ignored), 1..150 = classes.
ADE20K = make_dataset_info('ade20k', _ADE20K_CLASSES, _ADE20K_COLORS,
                           ignore_values=(0,), label_offset=-1)

# The generated dataset of deeplab_sp/data/synthetic.py (its docstring has
# the recipe); class order = synthetic.CLASS_NAMES.
_SYNTHETIC_CLASSES = ('ground', 'sky', 'building', 'pole', 'wire', 'vehicle')
_SYNTHETIC_COLORS = (
    (128, 64, 128), (70, 130, 180), (70, 70, 70), (153, 153, 153),
    (250, 170, 30), (0, 0, 142))

SYNTHETIC = make_dataset_info('synthetic', _SYNTHETIC_CLASSES,
                              _SYNTHETIC_COLORS,
                              ignore_values=(IGNORE_LABEL,))

DATASETS = {info.name: info for info in (CITYSCAPES, ADE20K, SYNTHETIC)}


def get_dataset_info(name: str) -> DatasetInfo:
  """Returns the DatasetInfo of `name`; ValueError naming the known ones."""
  if name not in DATASETS:
    raise ValueError(
        f'Unknown dataset {name!r}: set DatasetOptions.dataset to one of '
        f'{", ".join(sorted(DATASETS))}, or describe the dataset with '
        'DatasetOptions.dataset_description or dataset_info_file.')
  return DATASETS[name]


def dataset_names() -> Sequence[str]:
  """The registered dataset names, sorted."""
  return tuple(sorted(DATASETS))


def from_description(description) -> DatasetInfo:
  """The DatasetInfo of a DatasetDescription proto.

  Raises:
    DescriptionError: naming the field and the fix.
  """
  classes = description.classes
  listed = [bool(c.stored_values) for c in classes]
  stored_values = None
  if any(listed):
    stored_values = {train_id: tuple(c.stored_values)
                     for train_id, c in enumerate(classes)}
  return make_dataset_info(
      description.name, [c.name for c in classes],
      [tuple(c.color) for c in classes],
      ignore_values=tuple(description.ignore_values),
      label_offset=description.label_offset, stored_values=stored_values)


def to_description(info: DatasetInfo, description) -> None:
  """Writes `info` into the (empty) DatasetDescription proto `description`,
  with one stored value list per class (the general form of the table)."""
  description.name = info.name
  values_of = {train_id: [] for train_id in range(info.num_classes)}
  for value, train_id in enumerate(info.label_table):
    if train_id == IGNORE_LABEL:
      description.ignore_values.append(value)
    elif train_id != INVALID_LABEL:
      values_of[train_id].append(value)
  for train_id, class_name in enumerate(info.class_names):
    entry = description.classes.add(name=class_name)
    entry.color.extend(info.colormap[train_id])
    entry.stored_values.extend(values_of[train_id])


def from_options(dataset_options) -> DatasetInfo:
  """The DatasetInfo of a resolved DatasetOptions: its registered `dataset`
  or its `dataset_description` (experiment.py turns dataset_info_file into
  dataset_description when it loads the config).

  Raises:
    ValueError: an unknown registered name; DescriptionError for a bad
      description.
  """
  source = dataset_options.WhichOneof('source')
  if source == 'dataset_description':
    return from_description(dataset_options.dataset_description)
  if source == 'dataset_info_file':
    raise ValueError(
        f'DatasetOptions.dataset_info_file {dataset_options.dataset_info_file}'
        ' is not resolved: load the config with experiment.load_experiment, '
        'which reads the file.')
  return get_dataset_info(dataset_options.dataset)
