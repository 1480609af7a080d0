"""Exports a segmentation model as a SavedModel for TF Serving.

The SavedModel is written in TF Serving's versioned layout,
`<output_path>/<version>/` (version_writer.py), with three signatures
(serving_module.py):

  serving_default(encoded_images: string [B]): JPEG/PNG/BMP/GIF bytes (what
    TF Serving's REST API receives as {"b64": ...}); decoded by
    tfrecord_format.decode_image, the decoder of the training and evaluation
    records, so a JPEG gives the model the pixels it gave it in training
    (the accurate integer DCT, not tf.io.decode_image's default). Bytes that
    are not an image raise InvalidArgumentError (a client error, not a
    crash).
  serving_float(images: float32 [B, H, W, 3]): RGB in [0, 255], any H, W.
  serving_image_tensor(images: uint8 [B, H, W, 3]): RGB, any H, W (TF Model
    Garden's `image_tensor` input type); otherwise as serving_float.

All return
  'semantic': int32 [B, Hmax, Wmax], the label map (train ids) of each
    image at the image's own size;
  'image_size': int32 [B, 2], each image's (height, width);
  'superpixel_ids': int32 [B, Hmax, Wmax], hard superpixel assignment
    (absolute ids row * grid_width + col), unless disabled or the model has
    no superpixels (the per-pixel baselines);
  'probabilities': float32 [B, Hmax, Wmax, K], unless disabled (off by
    default: it is K times larger than the label map);
  'semantic_pred' and, with 'probabilities', 'semantic_probs': the same
    tensors under DeepLab2's names, unless disabled.
When the images of one batch have different sizes, every output is padded
bottom/right to the largest height and width (Hmax, Wmax) of the batch:
'semantic' with IGNORE_LABEL (255), 'superpixel_ids' with -1,
'probabilities' with 0; 'image_size' tells where each image ends. For a
batch of one size (the common case) there is no padding.

Size handling (resizing.py). The model is built for one input size
(Experiment.input_size: the crop_size of eval_dataset_options, else of
train_dataset_options). Each image is resized, keeping its aspect ratio, to
fit inside that size, padded bottom/right with 127.5 (as the input pipeline
pads), and run through the model; the padding is cropped off the logits,
which are resized back to the image's own size before the argmax (and
softmax); the superpixel ids are cropped and resized with nearest neighbour.

Input limits. Every signature refuses an image with more than
max_input_pixels pixels (height * width; export flag --max_input_pixels,
default image_header.DEFAULT_MAX_INPUT_PIXELS = 4096 * 4096) with an
InvalidArgumentError naming the limit and the image's size. For encoded
images the size is read from the header (JPEG, PNG, GIF, BMP; any other
format is refused) before anything is decoded, so a small file claiming a
huge size costs nothing; a GIF's every frame is read, and its frames
together are held to the same limit (image_header). The outputs are made
at the image's own size, so the limit bounds them too; the softmax is
computed only when 'probabilities' is exported. A batch is padded to its
largest height and width, so the batch too is bounded: batch size x
largest height x largest width at most max_batch_pixels (export flag
--max_batch_pixels, default 4 x max_input_pixels), checked from the
headers before any image of the batch is decoded. An empty batch returns
empty outputs.

What the export is travels with it: the resolved experiment config (after
--config_override) as the asset assets/experiment.textproto, and the
variables class_names, colormap, model_input_size and pixel_limits
(max_input_pixels, max_batch_pixels); tools/inspect_export.py prints them.
"""

import os
import tempfile
from typing import Optional, Sequence

from absl import logging
from google.protobuf import text_format
import tensorflow as tf

from deeplab_sp import experiment as experiment_lib
from deeplab_sp.export import image_header
from deeplab_sp.export import resizing
from deeplab_sp.export import saved_model_info
from deeplab_sp.export import serving_module
from deeplab_sp.export import version_writer
from deeplab_sp.model import builder
from deeplab_sp.model.kernels import profile
from deeplab_sp.protos import model_pb2
from deeplab_sp.trainer import checkpoints

# The names the tools and tests use (defined beside what they name).
IGNORE_LABEL = resizing.IGNORE_LABEL
SUPERPIXEL_ID_PAD = resizing.SUPERPIXEL_ID_PAD
SERVING_DEFAULT = serving_module.SERVING_DEFAULT
SERVING_FLOAT = serving_module.SERVING_FLOAT
SERVING_IMAGE_TENSOR = serving_module.SERVING_IMAGE_TENSOR
ServingModule = serving_module.ServingModule
next_version = version_writer.next_version
# The asset holding the resolved experiment config, under assets/.
CONFIG_ASSET = saved_model_info.CONFIG_ASSET
# The SavedModel attribute of the asset (loaded.experiment_config).
CONFIG_ASSET_ATTRIBUTE = 'experiment_config'


def build_serving_module(experiment: experiment_lib.Experiment,
                         checkpoint_path: Optional[str] = None,
                         include_probabilities: bool = False,
                         include_superpixel_ids: bool = True,
                         max_input_pixels: int = (
                             image_header.DEFAULT_MAX_INPUT_PIXELS),
                         max_batch_pixels: Optional[int] = None,
                         include_deeplab2_names: bool = True
                        ) -> ServingModule:
  """Builds the model of `experiment`, restores a checkpoint, wraps it.

  Args:
    experiment: the Experiment (its model, input size and dataset).
    checkpoint_path: a checkpoint prefix or a directory (its latest
      checkpoint is used); None keeps the initial weights (tests).
    include_probabilities, include_superpixel_ids, max_input_pixels,
      max_batch_pixels, include_deeplab2_names: see ServingModule; a model
      without superpixels (the per-pixel baselines) has no
      'superpixel_ids' output whatever include_superpixel_ids says.

  Raises:
    FileNotFoundError: if checkpoint_path holds no checkpoint.
  """
  # No XLA clusters: TF Serving does not JIT-compile them on CPU.
  model = restored_model(experiment, checkpoint_path,
                         kernels=profile.SERVING)
  if include_superpixel_ids and not experiment.has_superpixels:
    logging.info('%s has no superpixels: the SavedModel has no '
                 "'superpixel_ids' output.", experiment.meta_architecture)
    include_superpixel_ids = False
  info = experiment.dataset
  return ServingModule(
      model, experiment.input_size, experiment.num_classes, info.colormap,
      info.class_names, include_probabilities, include_superpixel_ids,
      max_input_pixels, max_batch_pixels, include_deeplab2_names,
      experiment_text=text_format.MessageToString(experiment.options))


def restored_model(experiment: experiment_lib.Experiment,
                   checkpoint_path: Optional[str] = None,
                   local_attention_implementation: Optional[str] = None,
                   kernels=None) -> tf.keras.Model:
  """The experiment's model at its input size, with a checkpoint's weights.

  Args:
    experiment: the Experiment (its model options, classes and input size).
    checkpoint_path: a checkpoint prefix or a directory (its latest
      checkpoint is used); None keeps the initial weights (tests).
    local_attention_implementation: NAIVE or EFFICIENT for the tokenization
      and the association, whatever the config says (both compute the same
      function with the same variables); None keeps the config's.
    kernels: the kernel profile to build it with (builder.build_model).

  Raises:
    FileNotFoundError: if checkpoint_path holds no checkpoint.
  """
  # The checkpoint holds every weight: do not read the encoder's pretrained
  # (ImageNet) file, which need not exist where the model is exported.
  model_options = type(experiment.options.model_options)()
  model_options.CopyFrom(experiment.options.model_options)
  model_options.encoder.ClearField('pretrained_weights')
  if (local_attention_implementation is not None and
      experiment.has_superpixels):
    value = model_pb2.LocalAttentionImplementation.Value(
        local_attention_implementation)
    model_options.superpixel_tokenization.implementation = value
    model_options.superpixel_association.implementation = value
  input_size = experiment.input_size
  model = builder.build_model(model_options, experiment.num_classes,
                              input_size, kernels=kernels)
  # Create the variables before restoring, so that every checkpoint value
  # is matched (and a checkpoint of another model is a clear error).
  model(tf.zeros([1, *input_size, 3]), training=False)
  if checkpoint_path is not None:
    checkpoints.restore_model(model, checkpoint_path)
  return model


def resolve_checkpoint(checkpoint_path: str) -> str:
  """The checkpoint prefix of a prefix or a directory (restore_model's)."""
  return checkpoints.restore_model(None, checkpoint_path)


def restore_checkpoint(model: tf.keras.Model, checkpoint_path: str) -> str:
  """Restores `model` from a trainer checkpoint; returns the prefix used."""
  return checkpoints.restore_model(model, checkpoint_path)


def save(module: ServingModule, directory: str) -> None:
  """Writes `module` as a SavedModel into `directory` (which must be new).

  The gradient functions of the kernels' custom gradients are saved with
  it (TensorFlow's default, kept on purpose): a loaded export can be
  differentiated, and its functions import without a warning about unsaved
  gradients. SavedModel saves one level: a custom gradient inside the
  gradient function of another would be unsaved (and warned about at every
  load), so the kernels' gradient functions use plain ops.
  """
  options = tf.saved_model.SaveOptions(experimental_custom_gradients=True)
  if module.experiment_text is None:
    tf.saved_model.save(module, directory, signatures=module.signatures(),
                        options=options)
    return
  with tempfile.TemporaryDirectory() as source:
    # tf.saved_model.save copies the file into assets/ under its name.
    path = os.path.join(source, CONFIG_ASSET)
    with open(path, 'w', encoding='utf-8') as f:
      f.write(module.experiment_text)
    setattr(module, CONFIG_ASSET_ATTRIBUTE, tf.saved_model.Asset(path))
    try:
      tf.saved_model.save(module, directory, signatures=module.signatures(),
                          options=options)
    finally:
      # The file goes with this block; a later save makes its own.
      delattr(module, CONFIG_ASSET_ATTRIBUTE)


def export_saved_model(module: ServingModule, output_path: str,
                       version: Optional[int] = None,
                       overwrite: bool = False) -> str:
  """Writes `module` to <output_path>/<version>/ atomically.

  Args:
    module: the ServingModule.
    output_path: the model's base directory (TF Serving's --model_base_path).
    version: positive version number; None = next free version.
    overwrite: replace an existing version directory.

  Returns:
    The version directory.

  Raises:
    ValueError: bad version; FileExistsError: version exists, no overwrite;
    io.DiskFullError: the disk filled up (nothing is left behind).
  """
  return version_writer.write_version(
      output_path, lambda directory: save(module, directory), version,
      overwrite)


def export_from_config(config_file: str, checkpoint_path: str,
                       output_path: str, version: Optional[int] = None,
                       overwrite: bool = False,
                       include_probabilities: bool = False,
                       include_superpixel_ids: bool = True,
                       max_input_pixels: int = (
                           image_header.DEFAULT_MAX_INPUT_PIXELS),
                       max_batch_pixels: Optional[int] = None,
                       overrides: Sequence[str] = (),
                       include_deeplab2_names: bool = True) -> str:
  """tools/export_model.py: config + checkpoint -> versioned SavedModel.

  `overrides` are text-format ExperimentOptions fragments applied on top of
  `config_file` (--config_override; see experiment.apply_overrides).
  """
  experiment = experiment_lib.load_experiment(config_file, mode=None,
                                              overrides=overrides)
  module = build_serving_module(experiment, checkpoint_path,
                                include_probabilities, include_superpixel_ids,
                                max_input_pixels, max_batch_pixels,
                                include_deeplab2_names)
  return export_saved_model(module, output_path, version, overwrite)
