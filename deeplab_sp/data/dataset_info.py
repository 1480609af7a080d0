"""Registry of the supported datasets: classes, ignore label, label mapping.

Every dataset's labels are mapped at load time to train ids 0..num_classes-1,
with IGNORE_LABEL for pixels excluded from the loss and the metric.

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
from typing import Optional, Sequence, Tuple

# The label value of pixels that are ignored by the loss and the metric,
# after the dataset's label mapping (Cityscapes' convention).
IGNORE_LABEL = 255

# The label divisor of DeepLab2's panoptic records (its Cityscapes and
# ADE20K builders): stored value = semantic * 1000 + instance.
DEEPLAB2_PANOPTIC_LABEL_DIVISOR = 1000


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """Static facts about one dataset.

  Attributes:
    name: registry key, as written in DatasetOptions.dataset.
    num_classes: number of evaluated classes.
    class_names: one name per train id.
    colormap: one (r, g, b) per train id, for visualisation.
    label_offset: added to the stored label before use; ADE20K stores
      0 = unlabeled and 1..150 = classes, so -1 maps them to -1 (then
      ignored) and 0..149.
    max_stored_label: largest valid value in the stored label PNGs, other
      than `stored_ignore_label`; larger values are a data error.
    stored_ignore_label: stored value that means "ignore" (before mapping),
      or None.
    default_crop_size: (height, width) of training crops in the paper.
    default_eval_size: (height, width) evaluation images are padded to.
  """
  name: str
  num_classes: int
  class_names: Tuple[str, ...]
  colormap: Tuple[Tuple[int, int, int], ...]
  label_offset: int
  max_stored_label: int
  stored_ignore_label: Optional[int]
  default_crop_size: Tuple[int, int]
  default_eval_size: Tuple[int, int]


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

CITYSCAPES = DatasetInfo(
    name='cityscapes',
    num_classes=19,
    class_names=_CITYSCAPES_CLASSES,
    colormap=_CITYSCAPES_COLORS,
    label_offset=0,
    max_stored_label=18,
    stored_ignore_label=255,
    default_crop_size=(1024, 2048),
    default_eval_size=(1024, 2048),
)

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

ADE20K = DatasetInfo(
    name='ade20k',
    num_classes=150,
    class_names=_ADE20K_CLASSES,
    colormap=_ADE20K_COLORS,
    label_offset=-1,
    max_stored_label=150,
    stored_ignore_label=0,
    default_crop_size=(640, 640),
    default_eval_size=(640, 640),
)

# The generated dataset of deeplab_sp/data/synthetic.py (its docstring has
# the recipe); class order = synthetic.CLASS_NAMES.
_SYNTHETIC_CLASSES = ('ground', 'sky', 'building', 'pole', 'wire', 'vehicle')
_SYNTHETIC_COLORS = (
    (128, 64, 128), (70, 130, 180), (70, 70, 70), (153, 153, 153),
    (250, 170, 30), (0, 0, 142))

SYNTHETIC = DatasetInfo(
    name='synthetic',
    num_classes=6,
    class_names=_SYNTHETIC_CLASSES,
    colormap=_SYNTHETIC_COLORS,
    label_offset=0,
    max_stored_label=5,
    stored_ignore_label=255,
    default_crop_size=(128, 128),
    default_eval_size=(128, 128),
)

DATASETS = {info.name: info for info in (CITYSCAPES, ADE20K, SYNTHETIC)}


def get_dataset_info(name: str) -> DatasetInfo:
  """Returns the DatasetInfo of `name`; ValueError naming the known ones."""
  if name not in DATASETS:
    raise ValueError(
        f'Unknown dataset {name!r}: set DatasetOptions.dataset to one of '
        f'{", ".join(sorted(DATASETS))}.')
  return DATASETS[name]


def dataset_names() -> Sequence[str]:
  """The registered dataset names, sorted."""
  return tuple(sorted(DATASETS))
