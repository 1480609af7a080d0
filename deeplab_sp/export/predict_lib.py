"""Runs an exported SavedModel, or a config plus checkpoint, on image files.

For every image `<name>.<ext>` it writes one label map into the output
directory, in one of OUTPUT_FORMATS:
  color:     <name>_color.png, RGB in the dataset's colours (to look at);
  train_ids: <name>_trainIds.png, one channel, the class index (train id);
  label_ids: <name>_labelIds.png, one channel, Cityscapes labelIds: what the
    official Cityscapes evaluation (cityscapesscripts) and its test server
    score (Cityscapes models only).
With an overlay directory it also writes there <name>_superpixels.png, the
image with the boundaries of the hard superpixel assignment drawn on it
(paper Fig. 4 style), when the model outputs 'superpixel_ids' (not the
per-pixel baselines, nor a SavedModel exported without them). Overlays
never share the label maps' directory: the official evaluation takes every
PNG under its results directory whose name starts with an image's
`<city>_<seq>_<frame>` as that image's prediction.
All inputs are decoded first, so an unreadable image stops the run before
anything is written; each is dropped once checked and read again to be
predicted, so memory holds one image at a time, however many are given.
An image larger than max_input_pixels (height * width, read from its
header before decoding; for a GIF every frame) is refused the same way.
Inputs that share a name (a.png and a.jpg, or dir1/a.png and dir2/a.png,
or A.png and a.png, one file on a case-insensitive disk) get distinct
outputs (`a_color.png`, `a_2_color.png`, ...), so no output overwrites
another. No output may be an input: an output path that names an input
file (e.g. `--images="d/*" --output_dir=d` with an input `a_color.png`)
is refused before anything is written. PNGs are written to a temporary
name, then renamed.
"""

import dataclasses
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from deeplab_sp import experiment as experiment_lib
from deeplab_sp.data import cityscapes
from deeplab_sp.data import dataset_info
from deeplab_sp.data import tfrecord_format
from deeplab_sp.export import export_lib
from deeplab_sp.export import image_header
from deeplab_sp.utils import io
from deeplab_sp import visualization

Predictor = Callable[[tf.Tensor], Dict[str, tf.Tensor]]

COLOR = 'color'
TRAIN_IDS = 'train_ids'
LABEL_IDS = 'label_ids'
OUTPUT_FORMATS = (COLOR, TRAIN_IDS, LABEL_IDS)
# The file name suffix of each format (after Cityscapes' gtFine names).
_SUFFIXES = {COLOR: '_color.png', TRAIN_IDS: '_trainIds.png',
             LABEL_IDS: '_labelIds.png'}
OVERLAY_SUFFIX = '_superpixels.png'


@dataclasses.dataclass(frozen=True)
class LoadedModel:
  """A model to predict with, and the facts of its dataset it carries.

  Attributes:
    predict: encoded images (string [B]) -> the serving outputs.
    colormap: int [K, 3], one colour per class.
    class_names: the K class names.
  """
  predict: Predictor
  colormap: np.ndarray
  class_names: Tuple[str, ...]


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


def load_saved_model(saved_model_dir: str) -> LoadedModel:
  """The serving_default function of a SavedModel, with its dataset facts."""
  if not tf.io.gfile.exists(os.path.join(saved_model_dir, 'saved_model.pb')):
    raise FileNotFoundError(
        f'{saved_model_dir} has no saved_model.pb; pass the version '
        'directory written by tools/export_model.py, e.g. exported/1.')
  loaded = tf.saved_model.load(saved_model_dir)
  serve = loaded.signatures[export_lib.SERVING_DEFAULT]

  def predict(encoded_images, loaded=loaded):  # `loaded` keeps variables alive.
    del loaded  # Unused.
    return serve(encoded_images=encoded_images)
  return LoadedModel(predict, loaded.colormap.numpy(),
                     _names(loaded.class_names))


def load_checkpoint(config_file: str, checkpoint_path: str,
                    max_input_pixels: int = (
                        image_header.DEFAULT_MAX_INPUT_PIXELS),
                    overrides: Sequence[str] = ()) -> LoadedModel:
  """The predict function of a config + checkpoint, with its dataset facts.

  `overrides` are text-format ExperimentOptions fragments applied on top of
  `config_file` (--config_override; see experiment.apply_overrides).
  """
  experiment = experiment_lib.load_experiment(config_file, mode=None,
                                              overrides=overrides)
  module = export_lib.build_serving_module(
      experiment, checkpoint_path, max_input_pixels=max_input_pixels)

  def predict(encoded_images):
    return module.serve_encoded(encoded_images)  # Keeps `module` alive.
  return LoadedModel(predict, module.colormap.numpy(),
                     _names(module.class_names))


def _names(class_names: tf.Variable) -> Tuple[str, ...]:
  return tuple(name.decode() for name in class_names.numpy())


def check_output_format(model: LoadedModel, output_format: str) -> None:
  """ValueError unless `model` can write label maps in `output_format`."""
  if output_format not in OUTPUT_FORMATS:
    raise ValueError(f'Unknown output format {output_format!r}; use one of '
                     f'{", ".join(OUTPUT_FORMATS)}.')
  cityscapes_names = dataset_info.CITYSCAPES.class_names
  if output_format == LABEL_IDS and model.class_names != cityscapes_names:
    shown = ', '.join(model.class_names[:4])
    if len(model.class_names) > 4:
      shown += ', ...'
    raise ValueError(
        f'--output_format={LABEL_IDS} writes Cityscapes labelIds, but the '
        f"model's {len(model.class_names)} classes ({shown}) are not the 19 "
        f'Cityscapes classes; use --output_format={TRAIN_IDS} (class '
        f'indices) or {COLOR}.')


def encode_label_map(semantic: np.ndarray, model: LoadedModel,
                     output_format: str) -> np.ndarray:
  """int [H, W] class indices -> the PNG's pixels in `output_format`.

  Returns uint8 [H, W, 3] for COLOR, uint8 [H, W] for LABEL_IDS and for
  TRAIN_IDS of up to 256 classes (uint16 above).
  """
  if output_format == COLOR:
    return visualization.colorize_label_map(semantic, model.colormap)
  if output_format == LABEL_IDS:
    return cityscapes.train_ids_to_label_ids(semantic)
  dtype = np.uint8 if len(model.class_names) <= 256 else np.uint16
  return semantic.astype(dtype)


def _check_size(path: str, data: bytes, max_input_pixels: int) -> None:
  """ValueError unless `data` is a known format within the pixel limit."""
  size = image_header.encoded_image_size(tf.constant(data))
  if not size.known:
    raise ValueError(f'Cannot read image {path}: unsupported format. Pass '
                     f'{image_header.SUPPORTED_FORMATS} files.')
  problem = image_header.first_problem(
      size, max_input_pixels, fix='resize it, or raise --max_input_pixels')
  if problem:
    raise ValueError(f'Image {path} refused: {problem}')


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
  """Writes uint8 or uint16 [H, W] (one channel) or [H, W, 3] (RGB)."""
  if image.ndim == 2:
    image = image[:, :, np.newaxis]
  io.write_atomically(path, tf.io.encode_png(image).numpy())


def output_names(files: Sequence[str]) -> List[str]:
  """A distinct output name per file: its stem, then `<stem>_2`, ...

  Names are distinct ignoring case too: on a case-insensitive disk (macOS,
  Windows) `A_color.png` and `a_color.png` are one file.
  """
  stems = [os.path.splitext(os.path.basename(path))[0] for path in files]
  used = set()
  names = []
  for stem in stems:
    name, count = stem, 1
    while name.lower() in used:
      count += 1
      name = f'{stem}_{count}'
    used.add(name.lower())
    names.append(name)
  return names


def _entry(path: str) -> str:
  """The directory entry `path` names: its directory resolved, its name not.

  Writing renames a temporary over the entry, so a link there is replaced,
  never followed; a link in the directory part leads to the real directory.
  """
  if '://' in path:
    return path
  directory, name = os.path.split(os.path.abspath(path))
  return os.path.join(os.path.realpath(directory), name)


def _file_id(path: str) -> Optional[Tuple[int, int]]:
  """(device, inode) of an existing local file, else None."""
  if '://' in path:
    return None
  try:
    status = os.stat(path)
  except OSError:
    return None
  return status.st_dev, status.st_ino


def check_outputs(inputs: Sequence[str],
                  outputs: Sequence[Tuple[str, str]]) -> None:
  """ValueError unless every output is a new, distinct, non-input path.

  Args:
    inputs: the input image files.
    outputs: (output path, what it is, e.g. 'label map of x/a.png').

  Raises:
    ValueError: an output that is an input (the same entry, or an existing
      file that is one of the inputs: a case-insensitive disk, a link, a
      hard link), that is an existing directory, or that another output
      also is; nothing has been written.
  """
  by_entry = {_entry(path): path for path in inputs}
  by_id = {}
  for path in inputs:
    file_id = _file_id(path)
    if file_id is not None:
      by_id[file_id] = path
  fix = ('Nothing was written. Pass an --output_dir (and --overlay_dir) '
         'that holds no input image, e.g. a new directory.')
  clashes = []
  seen = {}
  for path, what in outputs:
    entry = _entry(path)
    source = by_entry.get(entry) or by_id.get(_file_id(path))
    if source is not None:
      clashes.append(f'{path} (the {what}) would overwrite the input image '
                     f'{source}')
    elif tf.io.gfile.isdir(path):
      raise ValueError(f'{path} (the {what}) is an existing directory. '
                       f'{fix}')
    elif entry.lower() in seen:
      raise ValueError(f'{path} (the {what}) is also the '
                       f'{seen[entry.lower()]}. {fix}')
    seen[entry.lower()] = what
  if clashes:
    more = f' (and {len(clashes) - 1} more)' if len(clashes) > 1 else ''
    raise ValueError(f'{clashes[0]}{more}. {fix}')


def planned_outputs(files: Sequence[str], output_dir: str,
                    output_format: str = COLOR,
                    overlay_dir: Optional[str] = None
                   ) -> List[Tuple[str, str]]:
  """(path, what it is) of every output predict_files may write."""
  names = output_names(files)
  planned = [(os.path.join(output_dir, name + _SUFFIXES[output_format]),
              f'label map of {path}') for path, name in zip(files, names)]
  if overlay_dir is not None:
    planned += [(os.path.join(overlay_dir, name + OVERLAY_SUFFIX),
                 f'overlay of {path}') for path, name in zip(files, names)]
  return planned


def predict_files(model: LoadedModel, files: Sequence[str], output_dir: str,
                  output_format: str = COLOR,
                  overlay_dir: Optional[str] = None,
                  max_input_pixels: int = image_header.DEFAULT_MAX_INPUT_PIXELS
                 ) -> List[str]:
  """Writes a label map per file (and an overlay); returns the paths written.

  Args:
    model: from load_saved_model or load_checkpoint.
    files: the image files.
    output_dir: where the label maps go (created).
    output_format: one of OUTPUT_FORMATS.
    overlay_dir: where the superpixel overlays go (created); None: none are
      written. It must not be output_dir, nor inside it.
    max_input_pixels: the largest image (height * width) read.

  Raises:
    ValueError: naming the first unreadable or too large image, or a format
      the model cannot write, or an overlay_dir in output_dir, or an output
      that would replace an input (nothing is written).
  """
  check_output_format(model, output_format)
  if overlay_dir is not None and _is_within(overlay_dir, output_dir):
    raise ValueError(
        f'The overlay directory {overlay_dir} is inside the output directory '
        f'{output_dir}: the official Cityscapes evaluation would take each '
        'overlay for a second prediction. Pass a directory beside it.')
  # Fails before writing: no output replaces an input, every image reads.
  check_outputs(files, planned_outputs(files, output_dir, output_format,
                                       overlay_dir))
  for path in files:
    _read_image(path, max_input_pixels)  # Dropped: one image in memory.
  tf.io.gfile.makedirs(output_dir)
  if overlay_dir is not None:
    tf.io.gfile.makedirs(overlay_dir)
  written = []
  for index, (path, name) in enumerate(zip(files, output_names(files))):
    data, image = _read_image(path, max_input_pixels)
    try:
      outputs = model.predict(tf.constant([data]))
    except tf.errors.InvalidArgumentError as e:  # E.g. the model's limit.
      raise ValueError(f'The model refused image {path}: '
                       f'{_error_summary(e)}') from None
    semantic = outputs['semantic'].numpy()[0]
    paths = [os.path.join(output_dir, name + _SUFFIXES[output_format])]
    _write_png(paths[0], encode_label_map(semantic, model, output_format))
    if overlay_dir is not None and 'superpixel_ids' in outputs:
      paths.append(os.path.join(overlay_dir, name + OVERLAY_SUFFIX))
      ids = outputs['superpixel_ids'].numpy()[0]
      _write_png(paths[1], visualization.overlay_boundaries(image, ids))
    written.extend(paths)
    print(f'[{index + 1}/{len(files)}] {path} -> {", ".join(paths)}',
          flush=True)
  return written


def _is_within(path: str, directory: str) -> bool:
  """Whether `path` is `directory` or below it (local paths resolved)."""
  if '://' not in path and '://' not in directory:
    path, directory = os.path.realpath(path), os.path.realpath(directory)
  path, directory = path.rstrip('/'), directory.rstrip('/')
  return path == directory or path.startswith(directory + '/')
