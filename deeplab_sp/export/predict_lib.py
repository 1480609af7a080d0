"""Runs an exported SavedModel, or a config plus checkpoint, on image files.

For every image `<name>.<ext>` it writes, into the output directory,
  <name>_labels.png: the label map coloured with the dataset's colormap;
  <name>_superpixels.png: the image with the boundaries of the hard
    superpixel assignment drawn on it (paper Fig. 4 style), when the model
    outputs 'superpixel_ids' (not the per-pixel baselines, nor a SavedModel
    exported without them).
All inputs are decoded first, so an unreadable image stops the run before
anything is written. An image larger than max_input_pixels (height *
width, read from its header before decoding) is refused the same way.
Inputs that share a name (a.png and a.jpg, or dir1/a.png and dir2/a.png)
get distinct outputs (`a_labels.png`, `a_2_labels.png`, ...), so no output
overwrites another. PNGs are written to a temporary name, then renamed.
"""

import os
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import tensorflow as tf

from deeplab_sp import experiment as experiment_lib
from deeplab_sp.data import tfrecord_format
from deeplab_sp.export import export_lib
from deeplab_sp.export import image_header
from deeplab_sp.utils import io
from deeplab_sp import visualization

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


def _check_size(path: str, data: bytes, max_input_pixels: int) -> None:
  """ValueError unless `data` is a known format within the pixel limit."""
  height, width, known = image_header.encoded_image_size(tf.constant(data))
  if not known:
    raise ValueError(f'Cannot read image {path}: unsupported format. Pass '
                     f'{image_header.SUPPORTED_FORMATS} files.')
  height, width = int(height), int(width)
  if height * width > max_input_pixels:
    raise ValueError(
        f'Image {path} is {height}x{width} (height x width) pixels, more '
        f'than the limit of {max_input_pixels} pixels (--max_input_pixels);'
        ' resize it or raise the limit.')


def _read_image(path: str,
                max_input_pixels: int = image_header.DEFAULT_MAX_INPUT_PIXELS
               ) -> Tuple[bytes, np.ndarray]:
  """(encoded bytes, uint8 [h, w, 3]); ValueError naming an unreadable file.

  The size is read from the header and checked before decoding.
  """
  try:
    with tf.io.gfile.GFile(path, 'rb') as f:
      data = f.read()
    _check_size(path, data, max_input_pixels)
    # The decoding of the records and of the SavedModel, so the overlay
    # shows the pixels the model saw.
    image = tfrecord_format.decode_image(data)
  except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError,
          tf.errors.PermissionDeniedError) as e:
    raise ValueError(f'Cannot read image {path}: {e.message.splitlines()[0]}'
                     '. Pass JPEG, PNG, BMP or GIF files.') from None
  return data, image.numpy()


def _error_summary(error: tf.errors.OpError) -> str:
  """The line of a graph error that says what failed."""
  lines = [line.strip() for line in error.message.splitlines()
           if line.strip()]
  for line in lines:
    if 'assertion failed:' in line:
      return line.split('assertion failed:', 1)[1].strip(' []')
  return lines[-1] if lines else type(error).__name__


def _write_png(path: str, image: np.ndarray) -> None:
  io.write_atomically(path, tf.io.encode_png(image).numpy())


def output_names(files: Sequence[str]) -> List[str]:
  """A distinct output name per file: its stem, then `<stem>_2`, ..."""
  stems = [os.path.splitext(os.path.basename(path))[0] for path in files]
  used = set()
  names = []
  for stem in stems:
    name, count = stem, 1
    while name in used:
      count += 1
      name = f'{stem}_{count}'
    used.add(name)
    names.append(name)
  return names


def predict_files(predict: Predictor, colormap: np.ndarray,
                  files: Sequence[str], output_dir: str,
                  max_input_pixels: int = image_header.DEFAULT_MAX_INPUT_PIXELS
                 ) -> List[str]:
  """Writes the PNGs of every file; returns the paths written.

  Raises:
    ValueError: naming the first unreadable or too large image (nothing is
      written).
  """
  # Fails before writing.
  images = [_read_image(path, max_input_pixels) for path in files]
  tf.io.gfile.makedirs(output_dir)
  written = []
  names = output_names(files)
  for index, (path, name, (data, image)) in enumerate(
      zip(files, names, images)):
    try:
      outputs = predict(tf.constant([data]))
    except tf.errors.InvalidArgumentError as e:  # E.g. the model's limit.
      raise ValueError(f'The model refused image {path}: '
                       f'{_error_summary(e)}') from None
    semantic = outputs['semantic'].numpy()[0]
    labels_path = os.path.join(output_dir, f'{name}_labels.png')
    _write_png(labels_path,
               visualization.colorize_label_map(semantic, colormap))
    paths = [labels_path]
    if 'superpixel_ids' in outputs:
      ids = outputs['superpixel_ids'].numpy()[0]
      overlay_path = os.path.join(output_dir, f'{name}_superpixels.png')
      _write_png(overlay_path, visualization.overlay_boundaries(image, ids))
      paths.append(overlay_path)
    written.extend(paths)
    print(f'[{index + 1}/{len(files)}] {path} -> {", ".join(paths)}',
          flush=True)
  return written
