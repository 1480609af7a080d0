"""Runs an exported SavedModel, or a config plus checkpoint, on image files.

For every image `<name>.<ext>` it writes, into the output directory,
  <name>_labels.png: the label map coloured with the dataset's colormap;
  <name>_superpixels.png: the image with the boundaries of the hard
    superpixel assignment drawn on it (paper Fig. 4 style).
All inputs are decoded first, so an unreadable image stops the run before
anything is written. PNGs are written to a temporary name, then renamed.
"""

import os
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import tensorflow as tf

from deeplab_sp import experiment as experiment_lib
from deeplab_sp.export import export_lib
from deeplab_sp.utils import io
from deeplab_sp.utils import visualization

Predictor = Callable[[tf.Tensor], Dict[str, tf.Tensor]]


def expand_images(patterns: Sequence[str]) -> List[str]:
  """Files matching comma-separated globs, sorted, without duplicates."""
  files = []
  for pattern in patterns:
    pattern = pattern.strip()
    if not pattern:
      continue
    matches = tf.io.gfile.glob(pattern)
    if not matches:
      raise FileNotFoundError(f'--images pattern {pattern!r} matches no file;'
                              ' check the path (quote globs in the shell).')
    directories = [path for path in matches if tf.io.gfile.isdir(path)]
    if directories:
      raise ValueError(
          f'--images {pattern!r} matches the directory {directories[0]}; pass '
          f'image files or a glob of them, e.g. --images="{directories[0]}'
          '/*.png".')
    files.extend(matches)
  if not files:
    raise ValueError('--images is empty; pass files or globs, e.g. '
                     '--images="photos/*.png,other.jpg".')
  return sorted(set(files))


def load_saved_model(saved_model_dir: str
                    ) -> Tuple[Predictor, np.ndarray]:
  """Returns (serving_default function, colormap [K, 3]) of a SavedModel."""
  if not tf.io.gfile.exists(os.path.join(saved_model_dir, 'saved_model.pb')):
    raise FileNotFoundError(
        f'{saved_model_dir} has no saved_model.pb; pass the version '
        'directory written by tools/export_model.py, e.g. exported/1.')
  loaded = tf.saved_model.load(saved_model_dir)
  serve = loaded.signatures[export_lib.SERVING_DEFAULT]
  colormap = loaded.colormap.numpy()

  def predict(encoded_images, loaded=loaded):  # `loaded` keeps variables alive.
    del loaded  # Unused.
    return serve(encoded_images=encoded_images)
  return predict, colormap


def load_checkpoint(config_file: str, checkpoint_path: str
                   ) -> Tuple[Predictor, np.ndarray]:
  """Returns (predict function, colormap [K, 3]) of a config + checkpoint."""
  experiment = experiment_lib.load_experiment(config_file, mode=None)
  module = export_lib.build_serving_module(experiment, checkpoint_path)

  def predict(encoded_images):
    return module.serve_encoded(encoded_images)  # Keeps `module` alive.
  return predict, module.colormap.numpy()


def _read_image(path: str) -> Tuple[bytes, np.ndarray]:
  """(encoded bytes, uint8 [h, w, 3]); ValueError naming an unreadable file."""
  try:
    with tf.io.gfile.GFile(path, 'rb') as f:
      data = f.read()
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
  except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError,
          tf.errors.PermissionDeniedError) as e:
    raise ValueError(f'Cannot read image {path}: {e.message.splitlines()[0]}'
                     '. Pass JPEG, PNG, BMP or GIF files.') from None
  return data, image.numpy()


def _write_png(path: str, image: np.ndarray) -> None:
  io.write_atomically(path, tf.io.encode_png(image).numpy())


def predict_files(predict: Predictor, colormap: np.ndarray,
                  files: Sequence[str], output_dir: str) -> List[str]:
  """Writes the two PNGs of every file; returns the paths written.

  Raises:
    ValueError: naming the first unreadable image (nothing is written).
  """
  images = [_read_image(path) for path in files]  # Fails before writing.
  tf.io.gfile.makedirs(output_dir)
  written = []
  for index, (path, (data, image)) in enumerate(zip(files, images)):
    outputs = predict(tf.constant([data]))
    semantic = outputs['semantic'].numpy()[0]
    ids = outputs['superpixel_ids'].numpy()[0]
    name = os.path.splitext(os.path.basename(path))[0]
    labels_path = os.path.join(output_dir, f'{name}_labels.png')
    overlay_path = os.path.join(output_dir, f'{name}_superpixels.png')
    _write_png(labels_path,
               visualization.colorize_label_map(semantic, colormap))
    _write_png(overlay_path, visualization.overlay_boundaries(image, ids))
    written.extend([labels_path, overlay_path])
    print(f'[{index + 1}/{len(files)}] {path} -> {labels_path}, '
          f'{overlay_path}', flush=True)
  return written
