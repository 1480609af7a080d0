"""Sharded TFRecord writing that leaves nothing half-written.

Each split is written to temporary files in the output directory (hidden
names that no shard glob matches); only when every example of the split has
been written are they renamed to `{split}-{index:05d}-of-{count:05d}.tfrecord`
(tfrecord_format.shard_filename). A failure (a bad source file, an
interrupted run) removes the temporary files, so no partial shard is ever
visible. Older shards of the same split with another shard count are removed
after a successful write, so `{split}-*` globs see one consistent set.
"""

import os
import time
from typing import Callable, Dict, List, Sequence

from absl import logging
import tensorflow as tf

from deeplab_sp.data import tfrecord_format

# Log a progress line every this many examples.
PROGRESS_EVERY = 100


def _temporary_name(path: str) -> str:
  directory, base = os.path.split(path)
  return os.path.join(directory, f'.incomplete-{os.getpid()}-{base}')


def write_split(make_example: Callable[[int], 'tf.train.Example'],
                num_examples: int, output_dir: str, split: str,
                num_shards: int) -> List[str]:
  """Writes `num_examples` records of `split` into shards; returns their paths.

  Args:
    make_example: example index -> tf.train.Example. It may raise (e.g. a
      ValueError naming a bad source file); then nothing of the split is
      kept.
    num_examples: number of examples, > 0.
    output_dir: directory of the shards (created if missing; gs:// works).
    split: split name, e.g. 'train'.
    num_shards: requested shard count; at most one shard per example.

  Returns:
    The shard paths, in order.

  Raises:
    ValueError: if num_examples or num_shards is not positive.
  """
  if num_examples <= 0:
    raise ValueError(f'Split {split!r} has no examples: check the source '
                     'directory layout and the --splits flag.')
  if num_shards <= 0:
    raise ValueError(f'--num_shards must be positive, got {num_shards}.')
  num_shards = min(num_shards, num_examples)
  tf.io.gfile.makedirs(output_dir)
  paths = [os.path.join(output_dir,
                        tfrecord_format.shard_filename(split, i, num_shards))
           for i in range(num_shards)]
  temporary = [_temporary_name(path) for path in paths]
  start = time.time()
  try:
    for shard, temp_path in enumerate(temporary):
      # Contiguous ranges of examples per shard, sizes differing by <= 1.
      first = shard * num_examples // num_shards
      last = (shard + 1) * num_examples // num_shards
      with tf.io.TFRecordWriter(temp_path) as writer:
        for index in range(first, last):
          writer.write(make_example(index).SerializeToString())
          done = index + 1
          if done % PROGRESS_EVERY == 0 or done == num_examples:
            logging.info('%s: %d/%d examples (%.1f s)', split, done,
                         num_examples, time.time() - start)
  except BaseException:
    for temp_path in temporary:
      if tf.io.gfile.exists(temp_path):
        tf.io.gfile.remove(temp_path)
    raise
  for temp_path, path in zip(temporary, paths):
    tf.io.gfile.rename(temp_path, path, overwrite=True)
  stale = set(tf.io.gfile.glob(os.path.join(
      output_dir, tfrecord_format.shard_glob(split)))) - set(paths)
  for path in sorted(stale):
    logging.info('Removing stale shard %s', path)
    tf.io.gfile.remove(path)
  return paths


def format_summary(written: Dict[str, Sequence[str]],
                   counts: Dict[str, int], output_dir: str) -> str:
  """A summary line per split: images and shards written."""
  lines = [f'Wrote to {output_dir}:']
  for split, paths in written.items():
    lines.append(f'  {split}: {counts[split]} images in {len(paths)} '
                 f'shard(s) ({os.path.basename(paths[0])} ...)')
  return '\n'.join(lines)
