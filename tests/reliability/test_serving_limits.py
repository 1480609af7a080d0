"""The pixel limit of the serving signatures and predict, and empty batches."""

import io
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
from PIL import Image
import pytest
import reliability_helpers as helpers
import tensorflow as tf

from deeplab_sp.export import export_lib
from deeplab_sp.export import predict_lib

# Memory a refused request may add to the process (a decoded 20000x20000
# image alone would be 1.2 GB).
MAX_EXTRA_RSS_BYTES = 300 * 2**20


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


@pytest.fixture(scope='module')
def saved_model(tmp_path_factory):
  root = tmp_path_factory.mktemp('serving')
  module = export_lib.build_serving_module(
      helpers.experiment(helpers.options(root / 'data')),
                                           None)
  return export_lib.export_saved_model(module, str(root / 'model'), 1)


@pytest.fixture(scope='module')
def bomb_file(tmp_path_factory):
  path = tmp_path_factory.mktemp('bomb') / 'bomb.png'
  path.write_bytes(png_bomb(20000, 20000))
  assert path.stat().st_size < 1_000_000
  return path


_BOMB_SCRIPT = r'''
import resource, sys
import tensorflow as tf
from deeplab_sp.export import predict_lib
saved_model, bomb = sys.argv[1], sys.argv[2]
loaded = tf.saved_model.load(saved_model)
serve = loaded.signatures['serving_default']
small = tf.io.encode_png(tf.zeros([40, 50, 3], tf.uint8))
serve(encoded_images=tf.stack([small]))  # Warm up.
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
data = open(bomb, 'rb').read()
try:
  serve(encoded_images=tf.constant([data]))
  print('SERVED')
except tf.errors.InvalidArgumentError as e:
  print('REFUSED', ' | '.join(e.message.splitlines()))
try:
  predict_lib._read_image(bomb)  # pylint: disable=protected-access
  print('READ')
except ValueError as e:
  print('PREDICT_REFUSED', e)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print('EXTRA_RSS', after - before)
'''


def test_pixel_bomb_is_refused_before_decoding(saved_model, bomb_file):
  before = helpers.snapshot(os.path.dirname(saved_model))
  result = subprocess.run(
      [sys.executable, '-c', _BOMB_SCRIPT, saved_model, str(bomb_file)],
      env=dict(os.environ, PYTHONPATH=str(helpers.REPO_ROOT),
               TF_CPP_MIN_LOG_LEVEL='3'),
      capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  lines = dict(line.split(' ', 1) for line in result.stdout.splitlines())
  limit = str(4096 * 4096)
  assert 'REFUSED' in lines, result.stdout
  assert '20000x20000' in lines['REFUSED'] and limit in lines['REFUSED']
  assert 'PREDICT_REFUSED' in lines, result.stdout
  assert str(bomb_file) in lines['PREDICT_REFUSED']
  assert '20000x20000' in lines['PREDICT_REFUSED']
  assert limit in lines['PREDICT_REFUSED']
  assert int(lines['EXTRA_RSS']) < MAX_EXTRA_RSS_BYTES, lines
  assert helpers.snapshot(os.path.dirname(saved_model)) == before


def test_limit_is_set_at_export_and_applies_to_both_signatures(tmp_path):
  options = helpers.options(tmp_path / 'data')
  module = export_lib.build_serving_module(helpers.experiment(options), None,
                                           max_input_pixels=1000)
  image = np.zeros([40, 30, 3], np.uint8)  # 1200 pixels.
  encoded = {}
  for kind in ('PNG', 'JPEG', 'GIF', 'BMP'):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=kind)
    encoded[kind] = buffer.getvalue()
  for kind, data in encoded.items():
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match='40x30 .*limit of 1000 pixels'):
      module.serve_encoded(tf.constant([data]))
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match='40x30 .*limit of 1000 pixels'):
    module.serve_float(tf.zeros([1, 40, 30, 3]))
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match='Unsupported image format'):
    module.serve_encoded(tf.constant([b'RIFF\0\0\0\0WEBPVP8 ' + b'\0' * 20]))
  small = tf.io.encode_png(tf.zeros([20, 30, 3], tf.uint8))
  assert module.serve_encoded(tf.stack([small]))['semantic'].shape == [
      1, 20, 30]


def test_empty_batch_returns_empty_outputs(saved_model):
  loaded = tf.saved_model.load(saved_model)
  outputs = loaded.signatures['serving_default'](
      encoded_images=tf.constant([], tf.string))
  assert outputs['semantic'].shape[0] == 0
  assert outputs['image_size'].shape == [0, 2]
  assert outputs['superpixel_ids'].shape[0] == 0
  outputs = loaded.signatures['serving_float'](images=tf.zeros([0, 8, 8, 3]))
  assert outputs['semantic'].shape[0] == 0


def test_predict_gives_inputs_sharing_a_name_distinct_outputs(saved_model,
                                                               tmp_path):
  inputs = tmp_path / 'inputs'
  for sub in ('dir1', 'dir2'):
    (inputs / sub).mkdir(parents=True)
  rng = np.random.RandomState(0)
  for path, kind in ((inputs / 'dir1' / 'a.png', 'PNG'),
                     (inputs / 'dir2' / 'a.png', 'PNG'),
                     (inputs / 'dir1' / 'a.jpg', 'JPEG')):
    Image.fromarray(rng.randint(0, 255, [24, 32, 3]).astype(np.uint8)).save(
        path, format=kind)
  before = helpers.snapshot(inputs)
  output_dir = tmp_path / 'out'
  overlay_dir = tmp_path / 'overlays'
  result = helpers.run_tool([
      'tools/predict.py', f'--saved_model={saved_model}',
      f'--images={inputs}/*/a.*', f'--output_dir={output_dir}',
      f'--overlay_dir={overlay_dir}'])
  assert result.returncode == 0, result.stderr[-3000:]
  assert sorted(os.listdir(output_dir)) == [
      'a_2_color.png', 'a_3_color.png', 'a_color.png']
  assert len(os.listdir(overlay_dir)) == 3
  assert (f'Wrote 3 label maps (color) to {output_dir} and 3 overlays to '
          f'{overlay_dir}') in result.stdout
  assert helpers.snapshot(inputs) == before
  assert predict_lib.output_names(['x/a.png', 'y/a.png', 'a_2.jpg']) == [
      'a', 'a_2', 'a_2_2']
