"""Writes a version directory `<output_path>/<version>/` atomically.

TF Serving loads the numbered directories of a model's base path. The
writer fills a temporary directory beside the version directory (named by
utils/io.temporary_name, so not a number: TF Serving never loads it), then
renames it into place; on local disks nothing half-written is ever visible
under the version's name. With `overwrite`, the old version is renamed
aside first and removed after (version_dir says what may be replaced).
A temporary left by a killed export (its pid is gone) is removed by the
next export to the same output path.
"""

import os
from typing import Callable, Optional

from absl import logging
import tensorflow as tf

from deeplab_sp.export import version_dir
from deeplab_sp.utils import io


def next_version(output_path: str) -> int:
  """1 + the largest numeric version directory under output_path (or 1)."""
  if not tf.io.gfile.isdir(output_path):
    return 1
  versions = [int(name.rstrip('/')) for name in tf.io.gfile.listdir(output_path)
              if name.rstrip('/').isdigit()]
  return max(versions, default=0) + 1


def write_version(output_path: str, write: Callable[[str], None],
                  version: Optional[int] = None,
                  overwrite: bool = False) -> str:
  """Calls `write(directory)` and makes the directory version `version`.

  Args:
    output_path: the model's base directory (TF Serving's
      --model_base_path).
    write: fills the (new, temporary) directory it is given.
    version: positive version number; None = next free version.
    overwrite: replace an existing version directory.

  Returns:
    The version directory.

  Raises:
    ValueError: bad version; FileExistsError: version exists, no overwrite;
    version_dir.UnsafeOverwriteError: the version is not ours to replace;
    io.DiskFullError: the disk filled up (nothing is left behind).
  """
  # Temporaries of killed exports: their pid is gone, and no one else
  # writes such names.
  for path in io.remove_stale_temporaries(output_path, directories=True):
    logging.info('Removed %s, left by an interrupted export.', path)
  if version is None:
    version = next_version(output_path)
  if version <= 0:
    raise ValueError(f'--version must be a positive integer, got {version}.')
  export_dir = os.path.join(output_path, str(version))
  exists = tf.io.gfile.exists(export_dir) or os.path.islink(export_dir)
  if exists and not overwrite:
    raise FileExistsError(
        f'{export_dir} exists; pass --overwrite to replace it or a new '
        '--version (default: the next free version).')
  if exists:
    # Only a SavedModel this tool wrote is replaced; never a link's target.
    version_dir.check_replaceable(export_dir)
  tf.io.gfile.makedirs(output_path)
  temp_dir = io.temporary_name(export_dir)
  old_dir = io.temporary_name(export_dir)
  try:
    logging.info('Writing SavedModel to %s', temp_dir)
    with io.disk_full_names(
        export_dir, ' while writing the SavedModel; nothing was written'):
      write(temp_dir)
    if exists:
      version_dir.check_replaceable(export_dir)
      tf.io.gfile.rename(export_dir, old_dir)
    try:
      tf.io.gfile.rename(temp_dir, export_dir)
    except BaseException:
      if exists:
        tf.io.gfile.rename(old_dir, export_dir)
      raise
    if exists:
      version_dir.remove_tree(old_dir)
  finally:
    if tf.io.gfile.exists(temp_dir):
      version_dir.remove_tree(temp_dir)
  logging.info('Exported SavedModel version %d to %s', version, export_dir)
  return export_dir
