"""Damaged checkpoints: found when they are restored, named, recoverable.

A checkpoint can be damaged on disk (a copy cut short, a disk or bucket
error, a bit flip). TensorFlow notices only when a damaged value is read:
a truncated `.data` file raises a bare IndexError, a damaged `.index` looks
like a checkpoint of another model, and damaged optimizer state is read at
the first training step, long after the restore. `verify_checkpoint` reads
every value of a checkpoint through a CheckpointReader, which checks each
value's checksum, so damage surfaces before anything is restored, as a
DamagedCheckpointError naming the checkpoint, what is wrong and the fix.

Recovery: `check_latest_checkpoint` verifies the checkpoint training would
resume from. Without `restore_previous` the error names the newest older
checkpoint that is intact; with it, the damaged files are renamed aside
(`<file>.damaged`, kept for inspection) and the experiment's checkpoint
list is rewritten so training resumes from that older checkpoint. A lost
checkpoint list (the `checkpoint` file of the experiment directory) is
rebuilt from the `ckpt-N` files on disk, so training resumes instead of
starting again at step 0 over its own checkpoints.

Reading every value costs one read of the checkpoint (its size in I/O, one
tensor in memory at a time); restoring reads it again, from the page cache
on local disks.
"""

import os
import re
import shutil
from typing import List, Optional

from absl import logging
import tensorflow as tf

RESTORE_PREVIOUS_FLAG = '--restore_previous_checkpoint_on_error'
DAMAGED_SUFFIX = '.damaged'
# Temporary directories of TensorFlow's sharded checkpoint writes.
_TEMP_DIR = re.compile(r'^ckpt-\d+_temp(_[0-9a-f]+)?/?$')
# The files of the trainer's checkpoints (tf.train.CheckpointManager's
# default name `ckpt`): the step and, for data files, the shard count.
_CHECKPOINT_FILE = re.compile(
    r'^ckpt-(\d+)\.(index|data-\d{5}-of-(\d{5}))$')
# What a checkpoint's file names add to its prefix.
_CHECKPOINT_FILE_SUFFIX = re.compile(r'\.(index|data-\d{5}-of-\d{5})$')
# The checkpoint list tf.train.CheckpointManager keeps in the directory.
STATE_FILENAME = 'checkpoint'


class DamagedCheckpointError(ValueError):
  """A checkpoint's files are missing, truncated or corrupt."""


def _describe(error: BaseException) -> str:
  """One line on what went wrong, from TensorFlow's error."""
  message = getattr(error, 'message', None) or str(error)
  message = message.strip().splitlines()[0] if message.strip() else ''
  if isinstance(error, IndexError):
    return f'a file is shorter than its index says (truncated): {message}'
  if 'sstable' in message or 'Unable to read file' in message:
    return f'its .index file is corrupt or truncated: {message}'
  if 'Checksum does not match' in message:
    return f'a value fails its checksum (corrupt .data file): {message}'
  return f'{type(error).__name__}: {message}'


def checkpoint_files(prefix: str) -> List[str]:
  """The files of the checkpoint `prefix` (.index and .data shards)."""
  files = (tf.io.gfile.glob(prefix + '.index') +
           tf.io.gfile.glob(prefix + '.data-?????-of-?????'))
  if not os.path.dirname(prefix):
    # A bare name (`ckpt-1`, in the working directory): glob answers
    # `./ckpt-1.index`; named as the prefix is, for comparisons with it.
    files = [f[2:] if f.startswith('./') else f for f in files]
  return sorted(files)


def missing_files(prefix: str) -> List[str]:
  """The files of the checkpoint `prefix` that are not there.

  Its .index, and its data shards `.data-0000i-of-0000n` (n read from the
  shards present; all of them when none is).
  """
  files = checkpoint_files(prefix)
  missing = [] if prefix + '.index' in files else [prefix + '.index']
  shards = [f for f in files if not f.endswith('.index')]
  if not shards:
    return missing + [prefix + '.data-00000-of-00001']
  count = int(shards[0][-5:])
  return missing + [f'{prefix}.data-{i:05d}-of-{count:05d}'
                    for i in range(count)
                    if f'{prefix}.data-{i:05d}-of-{count:05d}' not in shards]


def verify_checkpoint(prefix: str) -> None:
  """Reads every value of the checkpoint `prefix`, checking checksums.

  Raises:
    DamagedCheckpointError: naming `prefix` and what is wrong (without the
      fix, which depends on the caller; see damaged_error).
  """
  missing = missing_files(prefix)
  if missing:
    present = [f for f in checkpoint_files(prefix) if f not in missing]
    raise DamagedCheckpointError(
        f'Checkpoint {prefix} is damaged: {", ".join(missing)} '
        f'{"is" if len(missing) == 1 else "are"} missing'
        + (f' ({", ".join(present)} {"is" if len(present) == 1 else "are"} '
           'there: a write cut short, or a deletion)' if present else ''))
  try:
    reader = tf.train.load_checkpoint(prefix)
    for key in sorted(reader.get_variable_to_shape_map()):
      reader.get_tensor(key)
  except (tf.errors.OpError, IndexError, ValueError, RuntimeError,
          OSError) as e:
    raise DamagedCheckpointError(
        f'Checkpoint {prefix} is damaged: {_describe(e)}') from e


def _older_checkpoints(prefix: str) -> List[str]:
  """The experiment's checkpoints older than `prefix`, newest first."""
  directory = os.path.dirname(prefix)
  state = tf.train.get_checkpoint_state(directory)
  paths = list(state.all_model_checkpoint_paths) if state else []
  paths = [p if os.path.isabs(p) or '://' in p else os.path.join(directory, p)
           for p in paths]
  if prefix in paths:
    paths = paths[:paths.index(prefix)]
  return list(reversed(paths))


def previous_good_checkpoint(prefix: str) -> Optional[str]:
  """The newest intact checkpoint older than `prefix` (same list), or None."""
  for path in _older_checkpoints(prefix):
    try:
      verify_checkpoint(path)
    except DamagedCheckpointError as e:
      logging.warning('%s', e)
      continue
    return path
  return None


def damaged_error(error: DamagedCheckpointError, prefix: str,
                  fallback: Optional[str],
                  flag: Optional[str] = RESTORE_PREVIOUS_FLAG
                 ) -> DamagedCheckpointError:
  """The error for a damaged `prefix`, with the fix."""
  files = ', '.join(checkpoint_files(prefix)) or f'{prefix}.*'
  if fallback and flag:
    fix = (f'The previous checkpoint {fallback} is intact: rerun with '
           f'{flag} to resume from it (the damaged files are kept as '
           f'*{DAMAGED_SUFFIX}), or restore {files} from a backup.')
  elif fallback:
    fix = (f'The previous checkpoint {fallback} is intact: pass it instead, '
           f'or restore {files} from a backup.')
  else:
    fix = (f'No older intact checkpoint exists: restore {files} from a '
           'backup, or move them away to start again.')
  return DamagedCheckpointError(f'{str(error).rstrip(".")}. {fix}')


def verify_or_explain(prefix: str,
                      flag: Optional[str] = RESTORE_PREVIOUS_FLAG) -> None:
  """verify_checkpoint, with the previous intact checkpoint in the error."""
  try:
    verify_checkpoint(prefix)
  except DamagedCheckpointError as e:
    raise damaged_error(e, prefix, previous_good_checkpoint(prefix),
                        flag) from e.__cause__


def _set_aside(prefix: str) -> None:
  for path in checkpoint_files(prefix):
    tf.io.gfile.rename(path, path + DAMAGED_SUFFIX, overwrite=True)


def checkpoints_on_disk(directory: str) -> List[str]:
  """The prefixes of the `ckpt-N` checkpoints in `directory`, oldest first.

  Every N with a file (an .index or a data shard), complete or not.
  """
  if not tf.io.gfile.isdir(directory):
    return []
  steps = set()
  for name in tf.io.gfile.listdir(directory):
    match = _CHECKPOINT_FILE.match(name)
    if match:
      steps.add(int(match.group(1)))
  return [os.path.join(directory, f'ckpt-{step}') for step in sorted(steps)]


def latest_checkpoint(directory: str) -> Optional[str]:
  """The checkpoint of `directory` to read: the newest of its list.

  Unlike tf.train.latest_checkpoint, a listed checkpoint whose files are
  missing is returned (verify_checkpoint names what is missing) rather
  than None (which would read as "no checkpoint"). Without a list (the
  `checkpoint` file lost), the newest complete checkpoint on disk, with a
  log line; nothing is written.
  """
  state = tf.train.get_checkpoint_state(directory)
  if state and state.model_checkpoint_path:
    return state.model_checkpoint_path
  complete = [p for p in checkpoints_on_disk(directory)
              if not missing_files(p)]
  if complete:
    logging.warning('%s has no checkpoint list (%s); using the newest '
                    'complete checkpoint on disk, %s.', directory,
                    STATE_FILENAME, complete[-1])
    return complete[-1]
  return None


def restore_model(model: Optional[tf.Module], checkpoint_path: str,
                  flag: str = '--checkpoint_path') -> str:
  """Restores every variable of `model` from a checkpoint; returns its prefix.

  For the tools that read a trained model (export, superpixel quality): a
  directory gives its newest checkpoint (latest_checkpoint: from its list,
  else the newest complete one on disk), a prefix itself. The checkpoint is
  verified first (verify_or_explain), so a damaged one is named as such
  rather than as a checkpoint of another model. Keys are those of
  tf.train.Checkpoint(model=model), as the trainer writes them; the
  optimizer state is not read.

  Args:
    model: the built model (its variables created); None only finds the
      checkpoint, to fail before a model is built.
    checkpoint_path: a checkpoint prefix (.../ckpt-1000) or a directory.
    flag: the flag that gave `checkpoint_path`, for the messages.

  Raises:
    FileNotFoundError: no checkpoint there.
    DamagedCheckpointError: its files are damaged (with the previous
      intact checkpoint, if any).
    AssertionError: a variable of `model` is not in the checkpoint (a
      checkpoint of another model).
  """
  if tf.io.gfile.isdir(checkpoint_path):
    prefix = latest_checkpoint(checkpoint_path)
    if prefix is None:
      raise FileNotFoundError(
          f'No checkpoint in directory {checkpoint_path}; pass '
          f'{flag}=<model_dir>/<experiment_name> after training, or a prefix '
          'like .../ckpt-1000.')
  elif _CHECKPOINT_FILE_SUFFIX.search(checkpoint_path):
    raise FileNotFoundError(
        f'{flag} {checkpoint_path} is one file of a checkpoint; pass its '
        f'prefix {_CHECKPOINT_FILE_SUFFIX.sub("", checkpoint_path)} (without '
        '.index or .data-*).')
  elif not checkpoint_files(checkpoint_path):
    raise FileNotFoundError(
        f'Checkpoint {checkpoint_path} not found (no {checkpoint_path}.index);'
        ' pass a prefix like <model_dir>/<experiment_name>/ckpt-1000 or the '
        'directory that holds the checkpoints.')
  else:
    prefix = checkpoint_path
  if model is None:
    return prefix
  logging.info('Restoring model weights from %s', prefix)
  verify_or_explain(prefix, flag=None)
  tf.train.Checkpoint(model=model).read(prefix).expect_partial(
  ).assert_existing_objects_matched()
  return prefix


def rotated_away(prefix: str) -> bool:
  """Whether the trainer's rotation deleted the checkpoint `prefix`.

  tf.train.CheckpointManager drops a checkpoint from the list before it
  deletes its files: one that is no longer listed and has files missing
  was rotated away (not damaged) while it was being read.
  """
  state = tf.train.get_checkpoint_state(os.path.dirname(prefix))
  listed = state is not None and prefix in state.all_model_checkpoint_paths
  return not listed and bool(missing_files(prefix))


def _rebuild_lost_state(directory: str) -> None:
  """Rewrites a lost checkpoint list from the checkpoints on disk.

  tf.train.CheckpointManager knows its checkpoints only from the list:
  without it, training would start again at step 0 and its rotation would
  overwrite and delete the checkpoints of the run. Only call with the
  experiment's writer lock held.
  """
  if tf.train.get_checkpoint_state(directory) is not None:
    return
  found = checkpoints_on_disk(directory)
  if not found:
    return
  tf.compat.v1.train.update_checkpoint_state(
      directory, found[-1], all_model_checkpoint_paths=found)
  logging.warning(
      'The checkpoint list %s was missing; rebuilt it from the checkpoints '
      'on disk (%s): resuming from %s.',
      os.path.join(directory, STATE_FILENAME),
      ', '.join(os.path.basename(p) for p in found), found[-1])


def check_latest_checkpoint(directory: str,
                            restore_previous: bool = False) -> Optional[str]:
  """Verifies the checkpoint training would resume from.

  A lost checkpoint list is rebuilt from the `ckpt-N` files on disk first
  (with a log line), so the newest of them is the one verified.

  Args:
    directory: the experiment directory (its `checkpoint` file lists the
      checkpoints).
    restore_previous: on damage, fall back to the newest intact older
      checkpoint (renaming the damaged files and newer ones aside).

  Returns:
    The checkpoint training resumes from (None: none, start afresh).

  Raises:
    DamagedCheckpointError: damage, and no fallback (not allowed or none).
  """
  _rebuild_lost_state(directory)
  latest = latest_checkpoint(directory)
  if latest is None:
    return None
  try:
    verify_checkpoint(latest)
    return latest
  except DamagedCheckpointError as e:
    fallback = previous_good_checkpoint(latest)
    if not restore_previous or fallback is None:
      raise damaged_error(e, latest, fallback) from e.__cause__
    logging.error('%s', e)
  state = tf.train.get_checkpoint_state(directory)
  paths = [p if os.path.isabs(p) or '://' in p else os.path.join(directory, p)
           for p in state.all_model_checkpoint_paths]
  keep = paths[:paths.index(fallback) + 1] if fallback in paths else [fallback]
  for path in paths[len(keep):]:
    _set_aside(path)
  tf.compat.v1.train.update_checkpoint_state(
      directory, fallback, all_model_checkpoint_paths=keep)
  logging.warning(
      'Checkpoint %s is damaged; resuming from the previous intact '
      'checkpoint %s (%s). The damaged files were renamed to *%s.', latest,
      fallback, RESTORE_PREVIOUS_FLAG, DAMAGED_SUFFIX)
  return fallback


def remove_stale_temp_dirs(directory: str) -> List[str]:
  """Removes `ckpt-N_temp` directories left by killed checkpoint writes.

  Only call with the experiment's writer lock held: no other process is
  then writing a checkpoint into `directory`.
  """
  if not tf.io.gfile.isdir(directory):
    return []
  removed = []
  for name in sorted(tf.io.gfile.listdir(directory)):
    path = os.path.join(directory, name.rstrip('/'))
    if not _TEMP_DIR.match(name) or not tf.io.gfile.isdir(path):
      continue
    logging.info('Removing %s, left by an interrupted checkpoint write.',
                 path)
    if '://' in path:
      tf.io.gfile.rmtree(path)
    elif os.path.islink(path):
      os.remove(path)  # The link only, never what it points to.
    else:
      shutil.rmtree(path)
    removed.append(path)
  return removed
