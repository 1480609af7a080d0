"""Sharded TFRecord writing that leaves nothing half-written.

Splits are written to temporary files in the output directory (hidden
names that no shard glob matches, made by utils/io.temporary_name so a
killed run's leftovers are recognised as such); only when every example of
every split has been written are they renamed to
`{split}-{index:05d}-of-{count:05d}.tfrecord` (tfrecord_format.shard_filename).
A failure (a bad source file, an interrupted run) removes the temporary
files, so no partial shard is ever visible. Older shards of the same split with another shard count are removed
after a successful write, so `{split}-*` globs see one consistent set; only
names of the exact shard form `{split}-NNNNN-of-NNNNN.tfrecord` are removed
(never e.g. a user's `train-backup-of-2023.tfrecord`). Temporary files left
by a killed builder (whose process is gone) are removed when the next
build starts.

All or nothing also when something is in the way: every target (each final
shard path of every split, and each stale shard to remove) is checked
before anything is written, and again before anything is published; a
directory or anything else that is not a file to replace (a link to a
directory, a pipe, ...) at a target is a FileExistsError naming it. A full
disk while writing removes the temporaries and is a DiskFullError naming
the output directory and the shard.
"""

import os
import re
import time
from typing import Callable, Dict, List, NamedTuple, Sequence, Tuple

from absl import logging
import tensorflow as tf

from deeplab_sp.data import tfrecord_format
from deeplab_sp.utils import io

# Log a progress line every this many examples.
PROGRESS_EVERY = 100


def _temporary_name(path: str) -> str:
  """io.temporary_name of the hidden '.<name>': `{split}-*` never matches."""
  directory, base = os.path.split(path)
  return io.temporary_name(os.path.join(directory, f'.{base}'))


def _is_shard_of(name: str, split: str) -> bool:
  """True for `{split}-NNNNN-of-NNNNN.tfrecord` exactly."""
  return re.fullmatch(
      re.escape(split) + r'-\d{5}-of-\d{5}' +
      re.escape(tfrecord_format.SHARD_SUFFIX), name) is not None


def _check_replaceable(path: str) -> None:
  """FileExistsError unless `path` is absent or a file we may replace."""
  if '://' in path:
    in_the_way = tf.io.gfile.isdir(path)
  else:
    # A link to a file is replaced (the link, never its target); a dangling
    # link, a pipe or a socket is not a shard of ours.
    in_the_way = os.path.lexists(path) and not os.path.isfile(path)
  if in_the_way:
    what = 'a directory' if tf.io.gfile.isdir(path) else 'not a regular file'
    raise FileExistsError(
        f'{path} is {what}, where the builder writes or removes a shard; '
        'nothing was written. Move it out of the output directory or pass '
        'another --output_dir.')


def _plan(jobs: Sequence['SplitJob'], output_dir: str,
          num_shards: int) -> Dict[str, Tuple[List[str], List[str]]]:
  """split -> (its shard paths, its stale shards), each checked."""
  plan = {}
  for job in jobs:
    count = min(num_shards, job.num_examples)
    paths = [os.path.join(output_dir, tfrecord_format.shard_filename(
        job.split, shard, count)) for shard in range(count)]
    stale = set()
    if tf.io.gfile.isdir(output_dir):
      stale = set(tf.io.gfile.glob(os.path.join(
          output_dir, tfrecord_format.shard_glob(job.split)))) - set(paths)
    stale = sorted(path.rstrip('/') for path in stale
                   if _is_shard_of(os.path.basename(path.rstrip('/')),
                                   job.split))
    for path in paths + stale:
      _check_replaceable(path)
    plan[job.split] = (paths, stale)
  return plan


def remove_stale_temporaries(output_dir: str) -> None:
  """Removes temporary shards of killed builders (their pid is gone)."""
  for path in io.remove_stale_temporaries(output_dir):
    logging.info('Removed %s, left by an interrupted build.', path)


class SplitJob(NamedTuple):
  """One split to write: make_example(index) for index < num_examples."""
  split: str
  make_example: Callable[[int], 'tf.train.Example']
  num_examples: int


def _write_temporary(job: SplitJob, output_dir: str, num_shards: int,
                     temporary: Dict[str, str]):
  """Writes the job's shards to temporary names, adding final path ->
  temporary path to `temporary` as they are created."""
  split, num_examples = job.split, job.num_examples
  start = time.time()
  for shard in range(num_shards):
    final = os.path.join(output_dir, tfrecord_format.shard_filename(
        split, shard, num_shards))
    temp_path = _temporary_name(final)
    temporary[final] = temp_path
    # Contiguous ranges of examples per shard, sizes differing by <= 1.
    first = shard * num_examples // num_shards
    last = (shard + 1) * num_examples // num_shards
    with tf.io.TFRecordWriter(temp_path) as writer:
      for index in range(first, last):
        writer.write(job.make_example(index).SerializeToString())
        done = index + 1
        if done % PROGRESS_EVERY == 0 or done == num_examples:
          logging.info('%s: %d/%d examples (%.1f s)', split, done,
                       num_examples, time.time() - start)


def write_splits(jobs: Sequence[SplitJob], output_dir: str,
                 num_shards: int) -> Dict[str, List[str]]:
  """Writes several splits; all or nothing. Returns split -> shard paths.

  Args:
    jobs: the splits. make_example may raise (e.g. a ValueError naming a
      bad source file); then no shard of any split is kept.
    output_dir: directory of the shards (created if missing; gs:// works).
    num_shards: requested shards per split; at most one per example.

  Raises:
    ValueError: a split without examples, or num_shards not positive.
  """
  for job in jobs:
    if job.num_examples <= 0:
      raise ValueError(f'Split {job.split!r} has no examples: check the '
                       'source directory layout and the --splits flag.')
  if num_shards <= 0:
    raise ValueError(f'--num_shards must be positive, got {num_shards}.')
  # Before anything is written: something in the way of any split stops all.
  _plan(jobs, output_dir, num_shards)
  tf.io.gfile.makedirs(output_dir)
  remove_stale_temporaries(output_dir)
  temporary = {}
  try:
    for job in jobs:
      _write_temporary(job, output_dir, min(num_shards, job.num_examples),
                       temporary)
    # Again, now that publishing starts: the build may have taken hours.
    plan = _plan(jobs, output_dir, num_shards)
  except BaseException as e:
    for temp_path in temporary.values():
      if tf.io.gfile.exists(temp_path):
        tf.io.gfile.remove(temp_path)
    if io.is_disk_full(e) and not isinstance(e, io.DiskFullError):
      # The last temporary made is the shard that did not fit.
      shard = (f' while writing {os.path.basename(list(temporary)[-1])}'
               if temporary else '')
      raise io.DiskFullError(
          output_dir, f'{shard}; nothing was written (the temporary shards '
          'are removed)') from e
    raise
  written = {}
  for job in jobs:
    paths, stale = plan[job.split]
    for path in paths:
      tf.io.gfile.rename(temporary[path], path, overwrite=True)
    for path in stale:
      logging.info('Removing stale shard %s', path)
      tf.io.gfile.remove(path)
    written[job.split] = paths
  return written


def write_split(make_example: Callable[[int], 'tf.train.Example'],
                num_examples: int, output_dir: str, split: str,
                num_shards: int) -> List[str]:
  """Writes one split (see write_splits); returns its shard paths."""
  return write_splits([SplitJob(split, make_example, num_examples)],
                      output_dir, num_shards)[split]


def format_summary(written: Dict[str, Sequence[str]],
                   counts: Dict[str, int], output_dir: str) -> str:
  """A summary line per split: images and shards written."""
  lines = [f'Wrote to {output_dir}:']
  for split, paths in written.items():
    lines.append(f'  {split}: {counts[split]} images in {len(paths)} '
                 f'shard(s) ({os.path.basename(paths[0])} ...)')
  return '\n'.join(lines)
