"""Per-example preprocessing: label mapping, resizing, augmentation, padding.

The paper's recipe (Sec. IV-A: random scaling, cropping, flipping, colour
jittering; or, as DeepLab2's kMaX-DeepLab recipe, AutoAugment's photometric
operations). Functions take one decoded example (image float32
[height, width, 3] in [0, 255], label int32 [height, width]) and, where
random, a `seed` int32 [2] for the stateless random ops, so the result is a
function of the example and the seed (the deterministic mode seeds it from
the experiment seed and the example index).

Padding: labels are padded with IGNORE_LABEL (so padding is excluded from
the loss and the metric); images with PAD_PIXEL_VALUE, the mid-grey of the
[0, 255] range (a stand-in for the mean pixel; every encoder normalises
inside the model).
"""

from typing import Optional, Sequence, Tuple

from official.vision.ops import augment
import tensorflow as tf

from deeplab_sp.data import dataset_info

IGNORE_LABEL = dataset_info.IGNORE_LABEL
# Image value of padded pixels (mid-grey of [0, 255]).
PAD_PIXEL_VALUE = 127.5
# SimCLR-style colour jitter: brightness, contrast and saturation vary by
# up to JITTER_SCALE * strength, hue by up to HUE_SCALE * strength.
JITTER_SCALE = 0.8
HUE_SCALE = 0.2

# The photometric augmentation of training images (dataset.proto,
# ColorAugmentation): the SimCLR-style jitter above, or AutoAugment with
# AUTOAUGMENT_POLICY.
COLOR_JITTER = 'COLOR_JITTER'
AUTOAUGMENT = 'AUTOAUGMENT_SIMPLE_CLASSIFICATION'
COLOR_AUGMENTATIONS = (COLOR_JITTER, AUTOAUGMENT)
# DeepLab2's kMaX-DeepLab recipe, 'simple_classification_policy_magnitude_
# scale_0.2': 5 sub-policies of 2 (operation, probability, magnitude on
# AutoAugment's 0-10 scale, the searched magnitudes x 0.2). One sub-policy
# is drawn per image; each of its operations is applied with its
# probability. The official models library ships it as
# 'panoptic_deeplab_policy'.
AUTOAUGMENT_POLICY = tuple(
    tuple(tuple(op) for op in sub_policy)
    for sub_policy in augment.AutoAugment.panoptic_deeplab_policy())
# Operations that change only pixel values: a policy made of them leaves the
# labels valid. Geometric operations (rotate, shear, translate) and cutout
# are not allowed.
PHOTOMETRIC_OPERATIONS = frozenset((
    'AutoContrast', 'Equalize', 'Invert', 'Posterize', 'Solarize',
    'SolarizeAdd', 'Color', 'Contrast', 'Brightness', 'Sharpness',
    'Grayscale'))


def map_labels(label: tf.Tensor, info: dataset_info.DatasetInfo,
               image_name: tf.Tensor) -> tf.Tensor:
  """Stored label values -> train ids 0..num_classes-1 and IGNORE_LABEL.

  Args:
    label: int32 [height, width], the values stored in the record.
    info: the dataset (its label_table).
    image_name: string scalar, for the error message.

  Returns:
    int32 [height, width] train ids, IGNORE_LABEL where ignored.

  Raises:
    tf.errors.InvalidArgumentError (when run): a stored value the dataset
    does not define; the message names the image and the valid values.
  """
  table = tf.constant(info.label_table, tf.int32)
  inside = (label >= 0) & (label <= info.max_stored_label)
  mapped = tf.gather(table, tf.where(inside, label, 0))
  bad = tf.logical_not(inside) | tf.equal(mapped, dataset_info.INVALID_LABEL)
  check = tf.debugging.Assert(
      tf.logical_not(tf.reduce_any(bad)),
      [tf.strings.join([
          'Label map of image ', image_name, ' has values outside '
          f'{info.describe_stored_values()} for dataset {info.name!r}: '
          'rebuild the records with the right labels or describe the right '
          'dataset in DatasetOptions (for DeepLab2\'s panoptic records, '
          'whose values are semantic * 1000 + instance, set '
          'DatasetOptions.panoptic_label_divisor: 1000). Largest such '
          'value:']),
       tf.reduce_max(tf.where(bad, label, tf.reduce_min(label)))],
      summarize=1)
  with tf.control_dependencies([check]):
    return tf.identity(mapped)


def check_sizes_match(image: tf.Tensor, label: tf.Tensor,
                      image_name: tf.Tensor) -> tf.Tensor:
  """Returns `label` after asserting it has the image's height and width."""
  check = tf.debugging.Assert(
      tf.reduce_all(tf.equal(tf.shape(image)[:2], tf.shape(label))),
      [tf.strings.join([
          'The label map of image ', image_name, ' does not have the '
          'size of the image; rebuild the record from a matching image/label '
          'pair. Image and label sizes:']),
       tf.shape(image)[:2], tf.shape(label)])
  with tf.control_dependencies([check]):
    return tf.identity(label)


def resize(image: tf.Tensor, label: tf.Tensor,
           size: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
  """Bilinear image and nearest-neighbour label resize to `size` [2]."""
  image = tf.image.resize(image, size, method='bilinear')
  label = tf.image.resize(label[..., tf.newaxis], size,
                          method='nearest')[..., 0]
  return image, label


def resize_longer_side(image: tf.Tensor, label: tf.Tensor,
                       longer_side: int) -> Tuple[tf.Tensor, tf.Tensor]:
  """Resizes (aspect ratio kept) so the longer side is `longer_side`."""
  return resize(image, label,
                longer_side_size(tf.shape(image)[:2], longer_side))


def longer_side_size(size: tf.Tensor, longer_side: int) -> tf.Tensor:
  """int32 [2]: `size` [height, width] scaled so its longer side is that."""
  shape = tf.cast(size[:2], tf.float32)
  scale = longer_side / tf.reduce_max(shape)
  return tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), 1)


def random_scale_factor(seed: tf.Tensor, min_scale: float, max_scale: float,
                        step: float) -> tf.Tensor:
  """A factor from {min, min + step, ..., max} (step 0: from [min, max])."""
  if min_scale == max_scale:
    return tf.constant(min_scale, tf.float32)
  if step > 0:
    num_steps = int(round((max_scale - min_scale) / step)) + 1
    index = tf.random.stateless_uniform([], seed, 0, num_steps, tf.int32)
    return min_scale + tf.cast(index, tf.float32) * step
  return tf.random.stateless_uniform([], seed, min_scale, max_scale)


def pad_to_size(image: tf.Tensor, label: tf.Tensor, height,
                width) -> Tuple[tf.Tensor, tf.Tensor]:
  """Pads bottom/right to at least [height, width] (ignore label, grey)."""
  shape = tf.shape(image)
  pad_height = tf.maximum(height - shape[0], 0)
  pad_width = tf.maximum(width - shape[1], 0)
  image = tf.pad(image, [[0, pad_height], [0, pad_width], [0, 0]],
                 constant_values=PAD_PIXEL_VALUE)
  label = tf.pad(label, [[0, pad_height], [0, pad_width]],
                 constant_values=IGNORE_LABEL)
  return image, label


def random_crop(image: tf.Tensor, label: tf.Tensor, height: int, width: int,
                seed: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
  """A random [height, width] window of an image at least that large."""
  shape = tf.shape(image)
  offset_row = tf.random.stateless_uniform(
      [], seed, 0, shape[0] - height + 1, tf.int32)
  offset_col = tf.random.stateless_uniform(
      [], seed + 1, 0, shape[1] - width + 1, tf.int32)
  image = image[offset_row:offset_row + height,
                offset_col:offset_col + width]
  label = label[offset_row:offset_row + height,
                offset_col:offset_col + width]
  return image, label


def random_flip(image: tf.Tensor, label: tf.Tensor,
                seed: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
  """Left-right flip of both with probability 0.5."""
  flip = tf.random.stateless_uniform([], seed) < 0.5
  image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
  label = tf.cond(flip, lambda: tf.reverse(label, [1]), lambda: label)
  return image, label


def color_jitter(image: tf.Tensor, strength: float,
                 seed: tf.Tensor) -> tf.Tensor:
  """Brightness, contrast, saturation and hue jitter (fixed order).

  Args:
    image: float32 [height, width, 3] in [0, 255].
    strength: in [0, 1]; 0 returns the image unchanged.
    seed: int32 [2].

  Returns:
    float32 [height, width, 3] in [0, 255].
  """
  if strength <= 0:
    return image
  amount = JITTER_SCALE * strength
  image = image / 255.0
  seeds = tf.random.experimental.stateless_split(seed, 4)
  image = tf.image.stateless_random_brightness(image, amount, seeds[0])
  image = tf.image.stateless_random_contrast(image, 1 - amount, 1 + amount,
                                             seeds[1])
  image = tf.image.stateless_random_saturation(
      tf.clip_by_value(image, 0, 1), 1 - amount, 1 + amount, seeds[2])
  image = tf.image.stateless_random_hue(
      tf.clip_by_value(image, 0, 1), min(HUE_SCALE * strength, 0.5),
      seeds[3])
  return tf.clip_by_value(image, 0, 1) * 255.0


def autoaugment(image: tf.Tensor, seed: tf.Tensor,
                policy=AUTOAUGMENT_POLICY) -> tf.Tensor:
  """AutoAugment's photometric operations, drawn from stateless seeds.

  The operations are those of official.vision.ops.augment, with its mapping
  from magnitudes to arguments; the draws (which sub-policy, which of its
  operations) are stateless, so the result is a function of the image and
  the seed (official's AutoAugment draws from the global random state).

  Args:
    image: float32 [height, width, 3] in [0, 255] (whole numbers: the
      operations work on uint8).
    seed: int32 [2].
    policy: sub-policies of (operation, probability, magnitude); only
      PHOTOMETRIC_OPERATIONS.

  Returns:
    float32 [height, width, 3] in [0, 255].

  Raises:
    ValueError: if the policy has a non-photometric operation.
  """
  for sub_policy in policy:
    for name, _, _ in sub_policy:
      if name not in PHOTOMETRIC_OPERATIONS:
        raise ValueError(f'AutoAugment operation {name} is not photometric: '
                         'it would move pixels away from their labels.')
  arguments = augment.level_to_arg(cutout_const=0.0, translate_const=0.0)
  pixels = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
  longest = max(len(sub_policy) for sub_policy in policy)
  seeds = tf.random.experimental.stateless_split(seed, 1 + longest)
  choice = tf.random.stateless_uniform([], seeds[0], 0, len(policy),
                                       tf.int32)

  def apply_sub_policy(sub_policy):
    result = pixels
    for i, (name, probability, magnitude) in enumerate(sub_policy):
      args = arguments[name](magnitude)
      operation = augment.NAME_TO_FUNC[name]
      result = tf.cond(
          tf.random.stateless_uniform([], seeds[1 + i]) < probability,
          lambda x=result, op=operation, a=args: op(x, *a),
          lambda x=result: x)
    return result

  branches = [lambda p=sub_policy: apply_sub_policy(p)
              for sub_policy in policy]
  result = tf.switch_case(choice, branches)
  return tf.cast(tf.ensure_shape(result, image.shape), tf.float32)


def preprocess_for_training(image: tf.Tensor, label: tf.Tensor,
                            crop_size: Sequence[int],
                            seed: tf.Tensor,
                            resize_longer_side_to: int = 0,
                            min_scale: float = 1.0, max_scale: float = 1.0,
                            scale_step: float = 0.0, flip: bool = False,
                            jitter_strength: float = 0.0,
                            color_augmentation: str = COLOR_JITTER
                            ) -> Tuple[tf.Tensor, tf.Tensor]:
  """Resize, random scale, pad, random crop, flip and colour augmentation.

  Args:
    image: float32 [height, width, 3] in [0, 255].
    label: int32 [height, width], train ids and IGNORE_LABEL.
    crop_size: (crop_height, crop_width).
    seed: int32 [2], seed of every random choice.
    resize_longer_side_to: if > 0, first resize so the longer side is this.
    min_scale: smallest random scale factor.
    max_scale: largest random scale factor.
    scale_step: step between scale factors (0: continuous).
    flip: random left-right flip.
    jitter_strength: colour jitter strength in [0, 1] (COLOR_JITTER only).
    color_augmentation: COLOR_JITTER (after the crop) or AUTOAUGMENT
      (first, on the decoded image: the grey padding then does not enter
      its image statistics, e.g. Equalize's histogram). Labels are never
      changed by either.

  Returns:
    image float32 [crop_height, crop_width, 3], label int32 [crop_height,
    crop_width].
  """
  if color_augmentation not in COLOR_AUGMENTATIONS:
    raise ValueError(f'Unknown colour augmentation {color_augmentation!r}: '
                     f'use one of {COLOR_AUGMENTATIONS}.')
  crop_height, crop_width = crop_size
  seeds = tf.random.experimental.stateless_split(seed, 4)
  if color_augmentation == AUTOAUGMENT:
    # seeds[3] is the jitter's, unused here.
    image = autoaugment(image, seeds[3])
  if resize_longer_side_to > 0:
    image, label = resize_longer_side(image, label, resize_longer_side_to)
  factor = random_scale_factor(seeds[0], min_scale, max_scale, scale_step)
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  scaled = tf.maximum(tf.cast(tf.round(shape * factor), tf.int32), 1)
  image, label = resize(image, label, scaled)
  image, label = pad_to_size(image, label, crop_height, crop_width)
  image, label = random_crop(image, label, crop_height, crop_width, seeds[1])
  if flip:
    image, label = random_flip(image, label, seeds[2])
  if color_augmentation == COLOR_JITTER:
    image = color_jitter(image, jitter_strength, seeds[3])
  image = tf.ensure_shape(image, [crop_height, crop_width, 3])
  label = tf.ensure_shape(label, [crop_height, crop_width])
  return image, label


def preprocess_for_eval(image: tf.Tensor, label: tf.Tensor,
                        crop_size: Sequence[int], image_name: tf.Tensor,
                        resize_longer_side_to: int = 0
                        ) -> Tuple[tf.Tensor, tf.Tensor]:
  """Optional resize, then pad bottom/right to crop_size (ignore label).

  Args:
    image: float32 [height, width, 3] in [0, 255].
    label: int32 [height, width].
    crop_size: (crop_height, crop_width).
    image_name: string scalar, for the error message.
    resize_longer_side_to: if > 0, first resize so the longer side is this.

  Returns:
    image float32 [crop_height, crop_width, 3], label int32 [crop_height,
    crop_width]. An image larger than crop_size (after the resize) fails
    with an InvalidArgumentError naming it.
  """
  crop_height, crop_width = crop_size
  if resize_longer_side_to > 0:
    image, label = resize_longer_side(image, label, resize_longer_side_to)
  shape = tf.shape(image)
  check = tf.debugging.Assert(
      (shape[0] <= crop_height) & (shape[1] <= crop_width),
      [tf.strings.join([
          'Evaluation image ', image_name, ' is larger than crop_size '
          f'{crop_height}x{crop_width}: set eval_dataset_options.crop_size '
          'to at least the largest image size, or set resize_longer_side. '
          'Image size:']), shape[:2]])
  with tf.control_dependencies([check]):
    image, label = pad_to_size(image, label, crop_height, crop_width)
  image = tf.ensure_shape(image, [crop_height, crop_width, 3])
  label = tf.ensure_shape(label, [crop_height, crop_width])
  return image, label


def seed_from_index(seed: int, index: tf.Tensor) -> tf.Tensor:
  """The stateless seed [2] of example `index` in deterministic mode."""
  return tf.stack([tf.constant(seed, tf.int64),
                   tf.cast(index, tf.int64)])


def random_seed(unused_index: Optional[tf.Tensor] = None) -> tf.Tensor:
  """A fresh random seed [2] (non-deterministic mode)."""
  return tf.random.uniform([2], 0, 2**31 - 1, dtype=tf.int64)
