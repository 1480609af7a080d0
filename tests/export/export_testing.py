"""The tiny experiment and test images for the export and predict tests."""

import io
import os

from google.protobuf import text_format
import numpy as np
from PIL import Image

from deeplab_sp import experiment as experiment_lib
from deeplab_sp.protos import config_pb2
import tiny_experiment

# Model input size of tiny_options().
SIZE = 64


def tiny_options() -> config_pb2.ExperimentOptions:
  """The tiny experiment at FAST widths on 'cityscapes' ids, 64x64 input.

  A 4x4 superpixel grid of 4x4 hypercolumn pixels; one layer per stack.
  """
  overrides = {
      'experiment_name': 'export_test',
      'model_options.superpixel_tokenization.grid_height': 4,
      'model_options.superpixel_tokenization.grid_width': 4,
      'model_options.superpixel_tokenization.num_layers': 1,
      'model_options.superpixel_classifier.num_layers': 1,
      'model_options.superpixel_classifier.num_heads': 2,
  }
  for field in ('train_dataset_options', 'eval_dataset_options'):
    overrides[f'{field}.dataset'] = 'cityscapes'
    overrides[f'{field}.file_pattern'] = ['unused-*.tfrecord']
    overrides[f'{field}.batch_size'] = 2
    overrides[f'{field}.crop_size'] = [SIZE, SIZE]
  return tiny_experiment.options(overrides, fast=True)


def tiny() -> experiment_lib.Experiment:
  """The Experiment of tiny_options() (as export and predict load it)."""
  return experiment_lib.experiment_from_options(tiny_options(), mode=None)


def tiny_baseline(meta_architecture: str) -> experiment_lib.Experiment:
  """A per-pixel baseline's tiny experiment, FAST widths, 'cityscapes' ids,
  64x64 input."""
  overrides = {'experiment_name': 'export_test'}
  for field in ('train_dataset_options', 'eval_dataset_options'):
    overrides[f'{field}.dataset'] = 'cityscapes'
    overrides[f'{field}.file_pattern'] = ['unused-*.tfrecord']
    overrides[f'{field}.batch_size'] = 2
    overrides[f'{field}.crop_size'] = [SIZE, SIZE]
  return experiment_lib.experiment_from_options(
      tiny_experiment.options(overrides, fast=True,
                              meta_architecture=meta_architecture),
      mode=None)


def write_config_and_checkpoint(root, seed: int = 0):
  """tiny_options() as a file and a checkpoint of its model, under `root`.

  Returns:
    (config file, checkpoint prefix).
  """
  # Imported here: the helpers above need no model code.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from deeplab_sp.export import export_lib  # pylint: disable=g-import-not-at-top
  tf.keras.utils.set_random_seed(seed)
  config_file = os.path.join(root, 'config.textproto')
  with open(config_file, 'w') as f:
    f.write(text_format.MessageToString(tiny_options()))
  model = export_lib.restored_model(tiny())
  prefix = tf.train.Checkpoint(model=model).write(
      os.path.join(root, 'ckpt-1'))
  return config_file, prefix


def png_bytes(image: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format='PNG')
  return buffer.getvalue()


def random_image(height, width, seed=0) -> np.ndarray:
  return np.random.RandomState(seed).randint(
      0, 256, [height, width, 3]).astype(np.uint8)


def assert_labels_are_argmax(labels: np.ndarray, logits: np.ndarray,
                             tolerance: float = 1e-4) -> None:
  """Asserts each label is a largest logit of its pixel, up to round-off.

  Two processes, or a graph with and without XLA islands, compute the same
  logits to float32 round-off, so where two classes tie to within that the
  argmax may pick either. A label passes if its logit is within `tolerance`
  (relative to the pixel's largest logit) of the largest; every other label
  must equal the argmax.

  Args:
    labels: int [..., H, W].
    logits: float [..., H, W, C], the reference computation's.
    tolerance: the relative round-off allowed.
  """
  labels = np.asarray(labels)
  logits = np.asarray(logits, np.float64)
  assert labels.shape == logits.shape[:-1], (labels.shape, logits.shape)
  assert labels.min() >= 0 and labels.max() < logits.shape[-1], (
      labels.min(), labels.max())
  best = logits.max(-1)
  chosen = np.take_along_axis(logits, labels[..., np.newaxis], -1)[..., 0]
  slack = tolerance * np.maximum(np.abs(best), 1.0)
  near_ties = best - chosen <= slack
  differ = labels != logits.argmax(-1)
  assert not (differ & ~near_ties).any(), (
      f'{(differ & ~near_ties).sum()} labels are not the largest logit; '
      f'largest gap {(best - chosen).max()}')
  # Ties are rare: more than a few differing labels means a real change.
  assert differ.mean() < 0.01, differ.mean()
