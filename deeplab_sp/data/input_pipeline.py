"""The tf.data input pipeline: records -> preprocessed, batched examples.

`build_dataset` reads the DeepLab2-format shards of a DatasetOptions and
yields dicts

  'image'      float32 [batch, crop_height, crop_width, 3], RGB in [0, 255]
  'label'      int32 [batch, crop_height, crop_width], train ids, 255 ignore
  'image_name' string [batch]

with static shapes. `batch` is the per-replica batch under tf.distribute
(input_context.get_per_replica_batch_size(batch_size)), else batch_size.

Labels: a panoptic label (DatasetOptions.panoptic_label_divisor > 0, e.g.
1000 for DeepLab2's records) becomes its semantic label value // divisor;
then the dataset's mapping gives train ids (dataset_info). A record without
a label (e.g. DeepLab2's test split) cannot be trained or evaluated on: the
pipeline stops with an error naming the shard and the image (such records
are still readable by tfrecord_format.read_examples, for prediction).

Training: files read in parallel (interleaved), examples shuffled, repeated,
labels mapped to train ids (checked against the dataset's range), then
resize_longer_side, random scale, pad to crop_size (ignore label), random
crop, left-right flip and colour jitter (preprocessing.py); full batches
only.

Evaluation: files and examples in order, read once (repeat unset or
false); resize
(resize_longer_side, if set) and pad bottom/right to crop_size with the
ignore label; an image larger than crop_size is an error naming it. Every
example is kept: the last batch is completed with all-ignore filler
examples (image_name '') so shapes stay static and the metric is
unaffected. When resize_longer_side resizes the images (ADE20K), the batch
also holds the label at its original size ('original_label', padded to the
batch's largest, so not a static shape), its size ('original_size') and
the size of the resized image ('resized_size'): the evaluator scores
predictions resized back to the annotation's resolution (paper Sec. IV-A
follows the standard ADE20K protocol), never resized labels. 'label' stays the resized label (for the
superpixel metrics and the summaries).

Sharding under tf.distribute: by file when there are at least as many files
as input pipelines, else by example.

Deterministic mode (augmentations.deterministic): fixed file and example
order (a seeded shuffle), deterministic parallel maps, and every random
choice drawn by stateless ops seeded from (seed, example index): two runs
give identical batches.
"""

from typing import Iterator, Optional, Tuple

import numpy as np

import tensorflow as tf

from deeplab_sp.data import dataset_info
from deeplab_sp.data import preprocessing
from deeplab_sp.data import tfrecord_format
from deeplab_sp.protos import dataset_pb2

# Keys of evaluation batches whose images are resized (resize_longer_side):
# the label at its original size, int32 [batch, H_max, W_max] (padded with
# the ignore label to the largest of the batch), its size int32 [batch, 2],
# and the size int32 [batch, 2] of the resized image inside the padded crop.
ORIGINAL_LABEL = 'original_label'
ORIGINAL_SIZE = 'original_size'
RESIZED_SIZE = 'resized_size'


def repeats(options: dataset_pb2.DatasetOptions, is_training: bool) -> bool:
  """Whether the split is read forever: `repeat` if set, else `is_training`."""
  return options.repeat if options.HasField('repeat') else is_training


def _crop_size(options: dataset_pb2.DatasetOptions):
  if len(options.crop_size) != 2 or min(options.crop_size) <= 0:
    raise ValueError(
        f'DatasetOptions.crop_size must be two positive numbers '
        f'[height, width], got {list(options.crop_size)}: add e.g. '
        '`crop_size: 128 crop_size: 128` to the dataset options.')
  return tuple(options.crop_size)


# Starts the error of a record without a label (record_errors turns it into
# a one-line error of the tools).
MISSING_LABEL_MESSAGE = 'has a record without a label'


def _require_label(example, shard: tf.Tensor) -> tf.Tensor:
  """The example's label, after asserting the record has one."""
  check = tf.debugging.Assert(
      example['has_label'],
      [tf.strings.join([
          'TFRecord shard ', shard, f' {MISSING_LABEL_MESSAGE} '
          '(image/segmentation/class/encoded is missing; image ',
          example['image_name'], '), e.g. a test split: such records can be '
          'used for prediction only. Fix: point the file_pattern of the '
          'training / evaluation dataset at a split with labels (train or '
          'val).'])])
  with tf.control_dependencies([check]):
    return tf.identity(example['label'])


def _decode_and_map(serialized: tf.Tensor, shard: tf.Tensor,
                    info: dataset_info.DatasetInfo,
                    panoptic_label_divisor: int):
  """Record -> image float32 [h, w, 3], label int32 [h, w] (train ids)."""
  example = tfrecord_format.parse_example(serialized)
  name = example['image_name']
  label = _require_label(example, shard)
  label = preprocessing.check_sizes_match(example['image'], label, name)
  if panoptic_label_divisor > 0:
    # semantic * divisor + instance -> semantic (values are non-negative).
    label = tf.math.floordiv(label, panoptic_label_divisor)
  label = preprocessing.map_labels(label, info, name)
  return tf.cast(example['image'], tf.float32), label, name


def _filler_examples(count: int, crop_size,
                     original_labels: bool) -> tf.data.Dataset:
  """`count` all-ignore examples that complete the last evaluation batch."""
  height, width = crop_size
  filler = {
      'image': tf.fill([height, width, 3],
                       tf.constant(preprocessing.PAD_PIXEL_VALUE)),
      'label': tf.fill([height, width],
                       tf.constant(dataset_info.IGNORE_LABEL, tf.int32)),
      'image_name': tf.constant(''),
  }
  if original_labels:
    filler[ORIGINAL_LABEL] = filler['label']
    filler[ORIGINAL_SIZE] = tf.constant([height, width], tf.int32)
    filler[RESIZED_SIZE] = filler[ORIGINAL_SIZE]
  return tf.data.Dataset.from_tensors(filler).repeat(count)


def build_dataset(dataset_options: dataset_pb2.DatasetOptions,
                  is_training: bool,
                  input_context: Optional[tf.distribute.InputContext] = None
                  ) -> tf.data.Dataset:
  """Builds the input pipeline of one split.

  Args:
    dataset_options: the DatasetOptions (dataset, file_pattern, batch_size,
      crop_size, resize_longer_side, augmentations, shuffle_buffer_size,
      repeat, num_parallel_reads, max_examples).
    is_training: training (augmentation, shuffling, full batches) or
      evaluation (in order, padding only, every example kept).
    input_context: given by strategy.distribute_datasets_from_function; sets
      the per-replica batch and this pipeline's shard.

  Returns:
    A tf.data.Dataset of dicts 'image' float32 [b, H, W, 3], 'label' int32
    [b, H, W], 'image_name' string [b] (see the module docstring).

  Raises:
    ValueError: unknown dataset, bad crop_size or batch_size.
    FileNotFoundError: a file_pattern matches no file.
  """
  options = dataset_options
  info = dataset_info.from_options(options)
  crop_size = _crop_size(options)
  if options.batch_size <= 0:
    raise ValueError(f'DatasetOptions.batch_size must be positive, got '
                     f'{options.batch_size}.')
  batch_size = options.batch_size
  if input_context is not None:
    batch_size = input_context.get_per_replica_batch_size(batch_size)
  files = tfrecord_format.list_record_files(list(options.file_pattern))
  augment = options.augmentations
  deterministic = augment.deterministic or not is_training
  parallel = (options.num_parallel_reads if options.num_parallel_reads > 0
              else tf.data.AUTOTUNE)

  dataset = tf.data.Dataset.from_tensor_slices(files)
  shard_by_file = False
  if input_context is not None and input_context.num_input_pipelines > 1:
    shard_by_file = len(files) >= input_context.num_input_pipelines
    if shard_by_file:
      dataset = dataset.shard(input_context.num_input_pipelines,
                              input_context.input_pipeline_id)
  if is_training and not augment.deterministic:
    dataset = dataset.shuffle(len(files), reshuffle_each_iteration=True)
  # Each record travels with its shard's path, for the error of a record
  # without a label.
  dataset = dataset.interleave(
      lambda shard: tf.data.TFRecordDataset(shard).map(
          lambda serialized: (serialized, shard)),
      cycle_length=parallel,
      num_parallel_calls=parallel, deterministic=deterministic)
  if (input_context is not None and input_context.num_input_pipelines > 1
      and not shard_by_file):
    dataset = dataset.shard(input_context.num_input_pipelines,
                            input_context.input_pipeline_id)
  if not is_training and options.max_examples > 0:
    dataset = dataset.take(options.max_examples)
  if is_training and options.shuffle_buffer_size > 1:
    dataset = dataset.shuffle(
        options.shuffle_buffer_size,
        seed=augment.seed if augment.deterministic else None,
        reshuffle_each_iteration=True)
  repeat = repeats(options, is_training)
  if repeat:
    dataset = dataset.repeat()
  color_augmentation = dataset_pb2.ColorAugmentation.Name(
      augment.color_augmentation)
  # Example index (counted across epochs): the deterministic seed.
  dataset = dataset.enumerate()

  def _preprocess(index, record):
    serialized, shard = record
    image, label, name = _decode_and_map(serialized, shard, info,
                                         options.panoptic_label_divisor)
    if is_training:
      seed = (preprocessing.seed_from_index(augment.seed, index)
              if augment.deterministic else preprocessing.random_seed())
      image, label = preprocessing.preprocess_for_training(
          image, label, crop_size, seed,
          resize_longer_side_to=options.resize_longer_side,
          min_scale=augment.min_scale_factor,
          max_scale=augment.max_scale_factor,
          scale_step=augment.scale_factor_step_size,
          flip=augment.random_flip,
          jitter_strength=augment.color_jitter_strength,
          color_augmentation=color_augmentation)
    else:
      original_label = label
      image, label = preprocessing.preprocess_for_eval(
          image, label, crop_size, name,
          resize_longer_side_to=options.resize_longer_side)
      if options.resize_longer_side > 0:
        # Scored at the annotation's own resolution (evaluator).
        return {'image': image, 'label': label, 'image_name': name,
                ORIGINAL_LABEL: original_label,
                ORIGINAL_SIZE: tf.shape(original_label),
                RESIZED_SIZE: preprocessing.longer_side_size(
                    tf.shape(original_label), options.resize_longer_side)}
    return {'image': image, 'label': label, 'image_name': name}

  dataset = dataset.map(_preprocess, num_parallel_calls=tf.data.AUTOTUNE,
                        deterministic=deterministic)
  original_labels = not is_training and options.resize_longer_side > 0
  if not is_training and not repeat and batch_size > 1:
    # Completes the last batch; a whole batch of fillers is dropped below.
    dataset = dataset.concatenate(_filler_examples(batch_size - 1,
                                                   crop_size, original_labels))
  if original_labels:
    # The original labels differ in size: padded to the batch's largest.
    dataset = dataset.padded_batch(
        batch_size, drop_remainder=True,
        padding_values={'image': 0.0, 'label': dataset_info.IGNORE_LABEL,
                        'image_name': '',
                        ORIGINAL_LABEL: dataset_info.IGNORE_LABEL,
                        ORIGINAL_SIZE: 0, RESIZED_SIZE: 0})
  else:
    dataset = dataset.batch(batch_size, drop_remainder=True)
  return dataset.prefetch(tf.data.AUTOTUNE)


def first_examples(dataset_options: dataset_pb2.DatasetOptions, count: int
                  ) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
  """The first `count` examples of a split, as evaluation preprocesses them.

  In file order, one at a time, without augmentation: (image float32
  [crop_height, crop_width, 3], label int32 [crop_height, crop_width],
  padding at the ignore label). Fewer when the split holds fewer. For
  tools that run a model outside TensorFlow on real images (calibrating an
  int8 model, scoring an exported file).

  Raises:
    FileNotFoundError: the file_pattern matches no file.
  """
  options = dataset_pb2.DatasetOptions()
  options.CopyFrom(dataset_options)
  options.batch_size = 1
  options.max_examples = count
  options.ClearField('repeat')
  for example in build_dataset(options, is_training=False).take(count):
    yield example['image'].numpy()[0], example['label'].numpy()[0]
