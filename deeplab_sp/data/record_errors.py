"""Damaged TFRecord shards and images, named after the fact.

tf.data reports a damaged shard (truncated, a flipped bit, not a TFRecord
file at all) or an undecodable image inside a record as a DataLossError or
InvalidArgumentError with a byte offset, but not the file: the pipeline
reads many shards at once. Carrying the file name through the pipeline
would cost every example some work, so instead the caller catches the error
where it iterates (`explain_data_errors` around the training / evaluation
loop) and only then scans the shards, in order, to find the first damaged
one: the records' framing and checksums first (fast), then the decoding of
each record's image and label. The error is re-raised as a
DamagedRecordError naming the shard (and the record's index and image name
when an image or label is damaged) with the fix: rebuild the records.

When the scan finds nothing wrong, the original error is re-raised
unchanged (it was not caused by damaged data), except for a record without
a label (input_pipeline.MISSING_LABEL_MESSAGE), which is re-raised as a
MissingLabelError with the pipeline's message (it names the shard and the
fix), so the tools print it as one line.

A label map that does not fit (values outside the dataset's range, another
size than its image) is not damage: the pipeline's assertion names the image
and the fix, and its record is looked up by that name (the image names
only, nothing decoded) to name the shard too, as a LabelMapError.
"""

import contextlib
import re
from typing import Iterator, Optional, Sequence, Tuple

from absl import logging
import tensorflow as tf

from deeplab_sp.data import input_pipeline
from deeplab_sp.data import tfrecord_format
from deeplab_sp.utils import cli

REBUILD_HINT = ('rebuild the records with {tool} (or restore the shard from '
                'a copy)')
# Datasets with a builder in tools/ (tools/build_<name>_data.py).
_BUILDERS = ('ade20k', 'cityscapes', 'synthetic')
# InvalidArgumentErrors of tf.data that can come from damaged records or
# images; others (e.g. a shape error of the model) are not scanned for.
_DATA_ERROR = re.compile(
    r'record|PNG|JPEG|jpeg|png|GIF|BMP|decode|Decode|image format|'
    r'parse|Parse|Example|corrupt|truncated|checksum|zlib|inflate',
    re.IGNORECASE)


class DamagedRecordError(ValueError):
  """A TFRecord shard, or an image or label inside one, is damaged."""


class MissingLabelError(ValueError):
  """A record without a label was read for training or evaluation."""


class LabelMapError(ValueError):
  """A record's label map does not fit its dataset or its image."""


# The assertions of preprocessing.map_labels and check_sizes_match: they
# name the image (group 'image') but not its shard.
_LABEL_MAP_ASSERTION = re.compile(
    r'^(?:The label map|Label map) of image (?P<image>.+?) '
    r'(?:has values|does not have)')


def _assertion_message(error: BaseException) -> str:
  """The text of a failed tf.debugging.Assert, without TF's brackets."""
  text = getattr(error, 'message', None) or str(error)
  for line in text.splitlines():
    if 'assertion failed:' in line:
      return line.split('assertion failed:', 1)[1].strip().strip('[]')
  return _first_line(error)


def _first_line(error: BaseException) -> str:
  """The line of a (graph) error that says what failed."""
  lines = [line.strip() for line in
           (getattr(error, 'message', None) or str(error)).splitlines()
           if line.strip() and not line.strip().startswith(
               ('Graph execution error', 'Detected at node', '<stack',
                '[[', 'File '))]
  if not lines:
    return type(error).__name__
  # Without TensorFlow's op decorations: `{{function_node ...}}`, `[Op:...]`.
  line = re.sub(r'\{\{function_node [^}]*\}\}\s*', '', lines[0])
  return re.sub(r'\s*\[Op:[^\]]*\].*$', '', line)


def _check_framing(shard: str) -> Optional[str]:
  """A description of the first framing/checksum error of `shard`, or None."""
  count = 0
  try:
    for _ in tf.data.TFRecordDataset(shard):
      count += 1
  except tf.errors.OpError as e:
    kind = ('not a TFRecord file' if count == 0 else
            f'unreadable from record {count} on')
    return (f'TFRecord shard {shard} is damaged ({kind}: {_first_line(e)})')
  return None


def _check_records(shard: str) -> Optional[str]:
  """A description of the first undecodable record of `shard`, or None."""

  def check(serialized):
    example = tfrecord_format.parse_example(serialized)
    return tf.shape(example['image'])[0] + tf.shape(example['label'])[0]

  try:
    for _ in tf.data.TFRecordDataset(shard).map(check):
      pass
    return None
  except tf.errors.OpError:
    pass
  # Slow path, only for the shard known to be damaged: one record at a time.
  for index, serialized in enumerate(tf.data.TFRecordDataset(shard)):
    name = ''
    try:
      parsed = tf.io.parse_single_example(
          serialized, {tfrecord_format.IMAGE_FILENAME_KEY:
                       tf.io.FixedLenFeature((), tf.string, default_value='')})
      name = parsed[tfrecord_format.IMAGE_FILENAME_KEY].numpy().decode(
          'utf-8', 'replace')
      check(serialized)
    except (tf.errors.OpError, ValueError) as e:
      image = f' (image {name!r})' if name else ''
      return (f'Record {index} of TFRecord shard {shard}{image} cannot be '
              f'decoded: {_first_line(e)}')
  return None


def find_damaged_shard(shards: Sequence[str]) -> Optional[str]:
  """Scans `shards`; a description of the first damage found, or None."""
  for shard in shards:
    problem = _check_framing(shard)
    if problem:
      return problem
  for shard in shards:
    problem = _check_records(shard)
    if problem:
      return problem
  return None


def find_record(shards: Sequence[str],
                image_name: str) -> Optional[Tuple[str, int]]:
  """(shard, record index) of the first record named `image_name`."""
  spec = {tfrecord_format.IMAGE_FILENAME_KEY:
          tf.io.FixedLenFeature((), tf.string, default_value='')}
  wanted = image_name.encode('utf-8')
  for shard in shards:
    index = 0
    try:
      # Only the names are parsed, a batch at a time: no image is decoded.
      for batch in tf.data.TFRecordDataset(shard).batch(256):
        names = tf.io.parse_example(batch, spec)[
            tfrecord_format.IMAGE_FILENAME_KEY].numpy()
        for offset, name in enumerate(names):
          if name == wanted:
            return shard, index + offset
        index += len(names)
    except tf.errors.OpError:
      continue  # A damaged shard cannot be the one that was read.
  return None


def _label_map_error(error: BaseException,
                     dataset_options: Sequence) -> Optional[LabelMapError]:
  """A LabelMapError naming the shard of a failed label check, or None."""
  text = cli.assertion_text(error)
  match = _LABEL_MAP_ASSERTION.match(text or '')
  if not match:
    return None
  image = match.group('image')
  shards = sorted({shard for options in dataset_options
                   for shard in _shards(options)})
  found = find_record(shards, image)
  if found:
    shard, index = found
    text = text.replace(f'of image {image} ',
                        f'of image {image} (record {index} of shard {shard}) ',
                        1)
  return LabelMapError(text)


def _shards(dataset_options) -> Sequence[str]:
  try:
    return tfrecord_format.list_record_files(
        list(dataset_options.file_pattern))
  except FileNotFoundError:
    return []


@contextlib.contextmanager
def explain_data_errors(dataset_options: Sequence) -> Iterator[None]:
  """Turns tf.data errors caused by damaged records into DamagedRecordError.

  Args:
    dataset_options: the DatasetOptions whose shards the block reads.
  """
  try:
    yield
  except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
    if isinstance(e, tf.errors.InvalidArgumentError):
      label_map_error = _label_map_error(e, dataset_options)
      if label_map_error is not None:
        raise label_map_error from e
      if not _DATA_ERROR.search(getattr(e, 'message', '') or str(e)):
        raise
    shards = sorted({shard for options in dataset_options
                     for shard in _shards(options)})
    logging.info('Input error (%s); scanning %d shard(s) for damage.',
                 _first_line(e), len(shards))
    problem = find_damaged_shard(shards)
    if problem is None:
      if input_pipeline.MISSING_LABEL_MESSAGE in str(e):
        raise MissingLabelError(_assertion_message(e)) from e
      raise
    builders = sorted({f'tools/build_{options.dataset}_data.py'
                       for options in dataset_options
                       if options.dataset in _BUILDERS})
    tool = ' / '.join(builders) or 'tools/build_<dataset>_data.py'
    raise DamagedRecordError(
        f'{problem}. Fix: {REBUILD_HINT.format(tool=tool)}.') from e
