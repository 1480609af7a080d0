"""Registry of the supported datasets: classes, ignore label, label mapping.

Every dataset's labels are mapped at load time to train ids 0..num_classes-1,
with IGNORE_LABEL for pixels excluded from the loss and the metric.
"""

import dataclasses
from typing import Optional, Sequence, Tuple

# The label value of pixels that are ignored by the loss and the metric,
# after the dataset's label mapping (Cityscapes' convention).
IGNORE_LABEL = 255


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

# TODO(data): ADE20K class names and palette, synthetic dataset facts.
DATASETS = {info.name: info for info in (CITYSCAPES,)}


def get_dataset_info(name: str) -> DatasetInfo:
  """Returns the DatasetInfo of `name`; ValueError naming the known ones."""
  if name not in DATASETS:
    raise ValueError(
        f'Unknown dataset {name!r}: set DatasetOptions.dataset to one of '
        f'{", ".join(sorted(DATASETS))}.')
  return DATASETS[name]


def dataset_names() -> Sequence[str]:
  return tuple(sorted(DATASETS))
