"""Shared helpers of the reliability tests: snapshots, dead pids, a tiny run."""

import hashlib
import io
import os
import pathlib
import struct
import subprocess
import sys
from typing import Dict, Sequence, Tuple
import zlib

from PIL import Image

import tiny_experiment

from deeplab_sp import experiment as experiment_lib
from deeplab_sp.data import synthetic

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
# Image size of the tiny experiments (model input and records).
SIZE = 64


def snapshot(directory) -> Dict[str, str]:
  """Relative path -> what it is (file digest, link target, 'dir')."""
  result = {}
  for root, dirs, files in os.walk(directory, followlinks=False):
    for name in dirs + files:
      path = os.path.join(root, name)
      key = os.path.relpath(path, directory)
      if os.path.islink(path):
        result[key] = 'link:' + os.readlink(path)
      elif os.path.isdir(path):
        result[key] = 'dir'
      else:
        result[key] = hashlib.sha256(
            pathlib.Path(path).read_bytes()).hexdigest()
  return result


def dead_pid() -> int:
  """The pid of a process that has ended (and was reaped)."""
  process = subprocess.Popen([sys.executable, '-c', 'pass'])
  process.wait()
  return process.pid


def options(data_dir, steps: int = 4, overrides=None):
  """The tiny experiment (fast widths) on records in `data_dir`."""
  return tiny_experiment.options({
      'experiment_name': 'reliability',
      'train_dataset_options.file_pattern': [f'{data_dir}/train-*.tfrecord'],
      'eval_dataset_options.file_pattern': [f'{data_dir}/val-*.tfrecord'],
      'train_dataset_options.crop_size': [SIZE, SIZE],
      'eval_dataset_options.crop_size': [SIZE, SIZE],
      'train_dataset_options.batch_size': 2,
      'eval_dataset_options.batch_size': 2,
      'train_dataset_options.shuffle_buffer_size': 1,
      'trainer_options.training_number_of_steps': steps,
      'trainer_options.save_checkpoints_steps': 2,
      'trainer_options.steps_per_loop': 2,
      'trainer_options.save_summaries_steps': 2,
      'trainer_options.save_image_summaries_steps': 0,
      'trainer_options.warmup_steps': 1,
      'trainer_options.num_checkpoints_to_keep': 5,
      'evaluator_options.num_vis_images': 0,
      **(overrides or {}),
  }, fast=True)


def experiment(options, mode=None) -> experiment_lib.Experiment:
  """The Experiment of `options`, loaded for `mode` (None: reads no data)."""
  return experiment_lib.experiment_from_options(options, mode=mode)


def write_records(data_dir, num_shards: int = 2):
  """Small synthetic train/val records: split -> shard paths."""
  return synthetic.write_dataset(str(data_dir), num_train=4, num_val=4,
                                 height=SIZE, width=SIZE,
                                 num_shards=num_shards)


def run_tool(args: Sequence[str], timeout: int = 300):
  """Runs `python <args>` from the repository root; CompletedProcess."""
  env = dict(os.environ, PYTHONPATH=str(REPO_ROOT),
             TF_CPP_MIN_LOG_LEVEL='3')
  return subprocess.run([sys.executable, *args], cwd=REPO_ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


def run_tool_with_setup(setup: str, args: Sequence[str], timeout: int = 300):
  """Runs the tool `args[0]` with `args[1:]` after the Python code `setup`.

  For faults no test machine can make for real (a full disk): `setup`
  replaces a writer by one that fails the way TensorFlow does.
  """
  code = (f'{setup}\nimport runpy, sys\nsys.argv = {list(args)!r}\n'
          f'runpy.run_path({args[0]!r}, run_name="__main__")')
  return run_tool(['-c', code], timeout)


def png_bomb(height: int, width: int) -> bytes:
  """An all-zero 8-bit grayscale PNG: a few hundred KB at 20000x20000."""
  def chunk(kind, data):
    return (struct.pack('>I', len(data)) + kind + data +
            struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff))
  compressor = zlib.compressobj(9)
  row = b'\0' * (width + 1)  # Filter byte + pixels.
  compressed = b''.join(compressor.compress(row) for _ in range(height))
  compressed += compressor.flush()
  header = struct.pack('>IIBBBBB', width, height, 8, 0, 0, 0, 0)
  return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) +
          chunk(b'IDAT', compressed) + chunk(b'IEND', b''))


def _gif_frame(height: int, width: int) -> Tuple[bytes, bytes, int]:
  """(image descriptor + LZW data, colour table, screen flags) of a frame.

  An all-zero frame as PIL encodes it, cut out of its GIF file.
  """
  buffer = io.BytesIO()
  Image.new('L', (width, height)).save(buffer, format='GIF')
  data = buffer.getvalue()
  flags = data[10]
  position = 13 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)
  table = data[13:position]
  while data[position] == 0x21:  # Extensions: label, sub-blocks.
    position += 2
    while data[position]:
      position += 1 + data[position]
    position += 1
  assert data[position] == 0x2C, data[position]
  start = position
  local = data[position + 9]
  position += 11 + (3 * 2 ** ((local & 7) + 1) if local & 0x80 else 0)
  while data[position]:  # The LZW data sub-blocks.
    position += 1 + data[position]
  return data[start:position + 1], table, flags


def gif(screen: Tuple[int, int], frames: Sequence[Tuple[int, int]]) -> bytes:
  """A GIF of all-zero frames ((height, width) each) on a logical screen.

  The screen (height, width) need not hold the frames: decoders take each
  frame at its own size.
  """
  blocks = []
  for height, width in frames:
    block, table, flags = _gif_frame(height, width)
    blocks.append(block)
  return (b'GIF89a' + struct.pack('<HHBBB', screen[1], screen[0], flags, 0, 0)
          + table + b''.join(blocks) + b';')


def assert_one_line_error(result, tool, *fragments):
  """Exit 1, no traceback, the error as the last line, `tool: ...`.

  (stderr also holds absl's log lines before it, e.g. the config summary.)
  """
  assert result.returncode == 1, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  line = result.stderr.strip().splitlines()[-1]
  assert line.startswith(f'{tool}: '), result.stderr[-3000:]
  for fragment in fragments:
    assert fragment in line, line
  return line
