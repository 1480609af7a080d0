"""Replacing an exported version directory without touching anything else.

`--overwrite` replaces `<output_path>/<version>/`. tf.io.gfile.rmtree
follows symbolic links, so removing a version directory that is a link, or
that holds a link to a directory, would empty the link's target: files the
exporter never wrote. The rules here:

  - a version directory that is a symbolic link is refused (the message
    names its target): the link may point anywhere;
  - a version directory is replaced only if it looks like a SavedModel this
    tool wrote: `saved_model.pb` and nothing but SavedModel entries
    (variables/, assets/, assets.extra/, fingerprint.pb, ...);
  - any symbolic link inside it is refused too (not followed, not removed);
  - the old version is renamed aside first, the new one renamed into place,
    then the old one is removed without following links (shutil.rmtree,
    which unlinks a link instead of descending into it).

gs:// and other object stores have no symbolic links; there the same
content check applies and tf.io.gfile removes the old version.
"""

import os
import shutil
from typing import List

import tensorflow as tf

# What tf.saved_model.save writes (and TF Serving's optional assets.extra).
SAVED_MODEL_ENTRIES = frozenset({
    'saved_model.pb', 'saved_model.pbtxt', 'fingerprint.pb', 'variables',
    'assets', 'assets.extra', 'keras_metadata.pb'})


class UnsafeOverwriteError(ValueError):
  """The version directory is not ours to replace."""


def _is_local(path: str) -> bool:
  return '://' not in path


def _links_inside(directory: str) -> List[str]:
  links = []
  for root, dirs, files in os.walk(directory, followlinks=False):
    for name in dirs + files:
      path = os.path.join(root, name)
      if os.path.islink(path):
        links.append(path)
  return sorted(links)


def check_replaceable(export_dir: str) -> None:
  """Raises UnsafeOverwriteError unless `export_dir` is our SavedModel.

  Args:
    export_dir: an existing version directory.
  """
  fix = ('Remove it yourself if it should go, or pass another --version / '
         '--output_path.')
  if _is_local(export_dir) and os.path.islink(export_dir):
    raise UnsafeOverwriteError(
        f'--overwrite refuses to replace {export_dir}: it is a symbolic link '
        f'(to {os.readlink(export_dir)}), and replacing it could delete files '
        f'outside {os.path.dirname(export_dir)}. {fix}')
  if not tf.io.gfile.isdir(export_dir):
    raise UnsafeOverwriteError(
        f'--overwrite refuses to replace {export_dir}: it is not a directory '
        f'(so not a SavedModel this tool wrote). {fix}')
  entries = {name.rstrip('/') for name in tf.io.gfile.listdir(export_dir)}
  unexpected = sorted(entries - SAVED_MODEL_ENTRIES)
  if 'saved_model.pb' not in entries or unexpected:
    what = (f'it holds {unexpected[:5]}, which a SavedModel does not'
            if unexpected else 'it holds no saved_model.pb')
    raise UnsafeOverwriteError(
        f'--overwrite refuses to replace {export_dir}: {what}, so it is not '
        f'an export of this tool. {fix}')
  if _is_local(export_dir):
    links = _links_inside(export_dir)
    if links:
      raise UnsafeOverwriteError(
          f'--overwrite refuses to replace {export_dir}: it holds symbolic '
          f'links ({", ".join(links[:3])}), which a SavedModel written by '
          f'this tool does not. {fix}')


def remove_tree(path: str) -> None:
  """Removes a directory we made, never following symbolic links."""
  if _is_local(path):
    if os.path.islink(path):
      os.remove(path)
    else:
      shutil.rmtree(path)
  else:
    tf.io.gfile.rmtree(path)
