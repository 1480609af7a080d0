r"""The best per-pixel colour-only classifier of a dataset, and its mIoU.

A floor for the synthetic dataset (deeplab_sp/data/synthetic.py): a model
that only looks at a pixel's colour can do no better than the Bayes-optimal
colour lookup, fitted here on the train split: RGB quantised to
`bins_per_channel` levels per channel, each colour bin predicts the class
most frequent among the training pixels of that bin (bins never seen
predict the most frequent class overall). Its mIoU on the val split says
how much colour alone explains; the synthetic dataset is built so that it
stays low (shape and layout decide the class).

  .venv/bin/python -m deeplab_sp.analysis.color_baseline \
      --data_dir=work_dirs/data/synthetic
"""

import json
import os
from typing import Dict

from absl import app
from absl import flags
import numpy as np

from deeplab_sp.data import dataset_info
from deeplab_sp.data import tfrecord_format

# Quantisation levels per RGB channel (16**3 = 4096 colour bins).
DEFAULT_BINS_PER_CHANNEL = 16


def _bin_index(image: np.ndarray, bins_per_channel: int) -> np.ndarray:
  """uint8 [..., 3] -> int [...] colour bin ids."""
  levels = (image.astype(np.int64) * bins_per_channel) // 256
  return (levels[..., 0] * bins_per_channel + levels[..., 1]) \
      * bins_per_channel + levels[..., 2]


def _mapped_labels(label: np.ndarray,
                   info: dataset_info.DatasetInfo) -> np.ndarray:
  invalid = info.invalid_stored_values(label)
  if invalid.size:
    raise ValueError(
        f'A label map holds values {invalid[:10].tolist()} that dataset '
        f'{info.name!r} does not define (it stores '
        f'{info.describe_stored_values()}); check the records and the '
        'dataset.')
  return info.map_labels(label).astype(np.int64)


def evaluate_color_baseline(
    train_pattern: str, val_pattern: str, dataset: str = 'synthetic',
    bins_per_channel: int = DEFAULT_BINS_PER_CHANNEL) -> Dict[str, object]:
  """Fits the colour lookup on `train_pattern`, evaluates on `val_pattern`.

  Args:
    train_pattern: glob of the training shards.
    val_pattern: glob of the validation shards.
    dataset: registry name (number of classes, label mapping).
    bins_per_channel: quantisation levels per RGB channel.

  Returns:
    {'miou': float, 'per_class_iou': {class name: IoU}, 'pixel_accuracy':
    float}; classes absent from both prediction and ground truth are left
    out of the mean.
  """
  info = dataset_info.get_dataset_info(dataset)
  num_classes = info.num_classes
  num_bins = bins_per_channel ** 3
  counts = np.zeros([num_bins, num_classes], np.int64)
  for example in tfrecord_format.read_examples(train_pattern):
    label = _mapped_labels(example['label'], info).ravel()
    bins = _bin_index(example['image'], bins_per_channel).ravel()
    keep = label != dataset_info.IGNORE_LABEL
    np.add.at(counts, (bins[keep], label[keep]), 1)
  lookup = np.where(counts.sum(1) > 0, counts.argmax(1),
                    counts.sum(0).argmax())  # [num_bins]

  confusion = np.zeros([num_classes, num_classes], np.int64)
  for example in tfrecord_format.read_examples(val_pattern):
    label = _mapped_labels(example['label'], info).ravel()
    prediction = lookup[_bin_index(example['image'],
                                   bins_per_channel).ravel()]
    keep = label != dataset_info.IGNORE_LABEL
    np.add.at(confusion, (label[keep], prediction[keep]), 1)
  true_positive = np.diag(confusion).astype(np.float64)
  union = confusion.sum(0) + confusion.sum(1) - true_positive
  present = union > 0
  iou = np.where(present, true_positive / np.maximum(union, 1), np.nan)
  return {
      'miou': float(np.nanmean(iou)),
      'per_class_iou': {name: (None if np.isnan(value) else float(value))
                        for name, value in zip(info.class_names, iou)},
      'pixel_accuracy': float(true_positive.sum() /
                              max(confusion.sum(), 1)),
  }


_DATA_DIR = flags.DEFINE_string(
    'data_dir', None, 'Directory holding train-*.tfrecord and '
    'val-*.tfrecord shards, e.g. work_dirs/data/synthetic.')
_DATASET = flags.DEFINE_string('dataset', 'synthetic',
                               'Dataset registry name.')
_BINS = flags.DEFINE_integer('bins_per_channel', DEFAULT_BINS_PER_CHANNEL,
                             'Colour quantisation levels per RGB channel.')
_FORMAT = flags.DEFINE_enum('format', 'text', ['text', 'json'],
                            'Print a line of text or a JSON object.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not _DATA_DIR.value:
    raise app.UsageError('--data_dir is required.')
  result = evaluate_color_baseline(
      os.path.join(_DATA_DIR.value, tfrecord_format.shard_glob('train')),
      os.path.join(_DATA_DIR.value, tfrecord_format.shard_glob('val')),
      _DATASET.value, _BINS.value)
  if _FORMAT.value == 'json':
    print(json.dumps(result, indent=2))
  else:
    per_class = ', '.join(f'{name} {value:.3f}'
                          for name, value in result['per_class_iou'].items()
                          if value is not None)
    print(f'Colour-only baseline: val mIoU {result["miou"]:.4f} '
          f'(pixel accuracy {result["pixel_accuracy"]:.4f}; {per_class})')


if __name__ == '__main__':
  app.run(main)
