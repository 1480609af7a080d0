r"""Converts a folder of image/label pairs into DeepLab2-format TFRecord shards.

For your own dataset: the labels must be values of the dataset you describe
(--dataset_info_file, a text DatasetDescription; see protos/dataset.proto)
or of a registered dataset (--dataset). Pairs come either from two globs
matched by file name (`{split}` in a glob stands for the split's name), or
from split list files of "image label" lines (SegNet / CamVid style).
Images: PNG, JPEG or BMP; labels: single-channel or palette PNGs (palette
indices are the labels). A failure (unmatched file, unreadable or truncated
file, size mismatch, a label value the dataset does not define) names the
file and leaves no partial shard.

Usage (from the repository root), globs:

  .venv/bin/python tools/build_folder_data.py \
      --dataset_info_file=my_data/my_dataset.textproto \
      --images='my_data/{split}/images/*.jpg' \
      --labels='my_data/{split}/labels/*.png' --splits=train,val \
      --output_dir=data/my_data

CamVid as the SegNet tutorial ships it (split lists with /SegNet/CamVid/
paths):

  .venv/bin/python tools/build_folder_data.py \
      --dataset_info_file=configs/camvid/camvid.dataset.textproto \
      --split_lists=train=/data/CamVid/train.txt,val=/data/CamVid/val.txt,test=/data/CamVid/test.txt \
      --rewrite_prefix=/SegNet/CamVid=/data/CamVid \
      --output_dir=work_dirs/data/camvid
"""

# First, before anything loads TensorFlow: hides its start-up log lines
# unless TF_CPP_MIN_LOG_LEVEL is set (deeplab_sp/utils/tf_startup.py).
from deeplab_sp.utils import tf_startup  # pylint: disable=g-bad-import-order,unused-import

from absl import app
from absl import flags
from absl import logging

from deeplab_sp import experiment
from deeplab_sp.data import dataset_info
from deeplab_sp.data import folder
from deeplab_sp.protos import config_pb2
from deeplab_sp.utils import cli

_DATASET_INFO_FILE = flags.DEFINE_string(
    'dataset_info_file', None, 'Text DatasetDescription of the dataset '
    '(classes, colours, ignore values, stored label values); the same file '
    'the config names in DatasetOptions.dataset_info_file.')
_DATASET = flags.DEFINE_string(
    'dataset', None, 'Instead of --dataset_info_file: a registered dataset '
    f'({", ".join(dataset_info.dataset_names())}).')
_IMAGES = flags.DEFINE_string(
    'images', None, 'Glob of the images, e.g. "data/{split}/img/*.png" '
    '({split} is replaced by each split of --splits).')
_LABELS = flags.DEFINE_string(
    'labels', None, 'Glob of the label PNGs, matched to the images by file '
    'name without extension.')
_LABEL_SUFFIX = flags.DEFINE_string(
    'label_suffix', '', 'Removed from label file names before matching, '
    'e.g. "_mask" pairs a.jpg with a_mask.png.')
_IMAGE_SUFFIX = flags.DEFINE_string(
    'image_suffix', '', 'Removed from image file names before matching, '
    'e.g. "_leftImg8bit" for Cityscapes-style names.')
_SPLITS = flags.DEFINE_list(
    'splits', ['train', 'val'], 'With --images/--labels: the splits to '
    'write (the globs must contain {split} when there are several).')
_SPLIT_LISTS = flags.DEFINE_list(
    'split_lists', None, 'Instead of globs: comma-separated SPLIT=LIST_FILE, '
    'each list holding "image_path label_path" lines.')
_LIST_ROOT = flags.DEFINE_string(
    'list_root', '', 'Directory that relative paths in the split lists start '
    'from (default: the current directory).')
_REWRITE_PREFIX = flags.DEFINE_string(
    'rewrite_prefix', None, 'FROM=TO: list paths starting with FROM are read '
    'under TO instead (the SegNet lists name /SegNet/CamVid/...).')
_OUTPUT_DIR = flags.DEFINE_string(
    'output_dir', None, 'Directory the shards are written to (created if '
    'missing).', required=True)
_NUM_SHARDS = flags.DEFINE_integer('num_shards', 4, 'Shards per split.')


def _dataset() -> dataset_info.DatasetInfo:
  if bool(_DATASET_INFO_FILE.value) == bool(_DATASET.value):
    raise ValueError('Pass exactly one of --dataset_info_file (your '
                     'dataset\'s description) and --dataset (a registered '
                     'one).')
  if _DATASET.value:
    return dataset_info.get_dataset_info(_DATASET.value)
  # The config loader reads and checks description files: the same errors
  # as when a config names this file.
  options = config_pb2.ExperimentOptions()
  options.eval_dataset_options.dataset_info_file = _DATASET_INFO_FILE.value
  try:
    experiment.resolve_dataset_info_files(options, '--dataset_info_file')
    return dataset_info.from_options(options.eval_dataset_options)
  except dataset_info.DescriptionError as e:
    raise ValueError(f'{_DATASET_INFO_FILE.value}: {e}') from None


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.INFO)
  sources = folder.sources_from_flags(
      images=_IMAGES.value, labels=_LABELS.value,
      label_suffix=_LABEL_SUFFIX.value, splits=_SPLITS.value,
      split_lists=_SPLIT_LISTS.value, list_root=_LIST_ROOT.value,
      rewrite_prefix=_REWRITE_PREFIX.value, image_suffix=_IMAGE_SUFFIX.value)
  folder.build(sources, _dataset(), _OUTPUT_DIR.value, _NUM_SHARDS.value)


if __name__ == '__main__':
  app.run(cli.main_with_clear_errors('build_folder_data', main))
