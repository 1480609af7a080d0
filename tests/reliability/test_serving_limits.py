"""The pixel limit of the serving signatures and predict, and empty batches."""

import io
import os
import subprocess
import sys

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
  path.write_bytes(helpers.png_bomb(20000, 20000))
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


# The address space a refused request may add (a decoded 5000x5000 frame and
# its float copy alone would be 400 MB): past it the process fails instead
# of taking the machine's memory.
_EXTRA_ADDRESS_SPACE = 512 * 2**20

_LIMITED_SCRIPT = r'''
import resource, sys
import tensorflow as tf
from deeplab_sp.export import predict_lib
saved_model, extra, batches = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
serve = tf.saved_model.load(saved_model).signatures['serving_default']
small = tf.io.encode_png(tf.zeros([40, 50, 3], tf.uint8))
serve(encoded_images=tf.stack([small]))  # Warm up.
with open('/proc/self/status') as f:
  size = next(int(line.split()[1]) * 1024 for line in f
              if line.startswith('VmSize:'))
resource.setrlimit(resource.RLIMIT_AS,
                   (size + extra, resource.getrlimit(resource.RLIMIT_AS)[1]))
for batch in batches:
  name, *paths = batch.split(',')
  data = [open(path, 'rb').read() for path in paths]
  try:
    outputs = serve(encoded_images=tf.constant(data))
    print(name, 'SERVED', outputs['semantic'].shape)
  except tf.errors.InvalidArgumentError as e:
    print(name, 'REFUSED', ' | '.join(e.message.splitlines()))
  if len(paths) == 1:
    try:
      predict_lib._read_image(paths[0])  # pylint: disable=protected-access
      print(name, 'PREDICT_READ')
    except ValueError as e:
      print(name, 'PREDICT_REFUSED', e)
'''


def _run_limited(saved_model, batches):
  """{(name, outcome): detail} of each batch, served under a memory limit."""
  result = subprocess.run(
      [sys.executable, '-c', _LIMITED_SCRIPT, saved_model,
       str(_EXTRA_ADDRESS_SPACE)] +
      [','.join([name, *map(str, paths)]) for name, paths in batches],
      env=dict(os.environ, PYTHONPATH=str(helpers.REPO_ROOT),
               TF_CPP_MIN_LOG_LEVEL='3'),
      capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  outcomes = {}
  for line in result.stdout.splitlines():
    name, outcome, detail = (line.split(' ', 2) + [''])[:3]
    outcomes[name, outcome] = detail
  return outcomes


def test_gif_frames_are_bounded_not_the_screen(saved_model, tmp_path):
  # A 1x1 logical screen holding a 5000x5000 frame (20 KB), two frames
  # within the limit that exceed it together, more blocks than are walked,
  # and an animation within the limit.
  files = {
      'frame': helpers.gif((1, 1), [(5000, 5000)]),
      'frames': helpers.gif((3000, 3000), [(3000, 3000), (3000, 3000)]),
      'blocks': helpers.gif((1, 1), [(1, 1)] * 1100),
      'animation': helpers.gif((1, 1), [(20, 30), (30, 20)]),
  }
  assert len(files['frame']) < 30_000
  for name, data in files.items():
    (tmp_path / f'{name}.gif').write_bytes(data)
  before = helpers.snapshot(tmp_path)
  outcomes = _run_limited(saved_model, [
      (name, [tmp_path / f'{name}.gif']) for name in files])
  limit = f'limit of {4096 * 4096} pixels'
  assert '5000x5000' in outcomes['frame', 'REFUSED'], outcomes
  assert limit in outcomes['frame', 'REFUSED']
  refused = outcomes['frame', 'PREDICT_REFUSED']
  assert str(tmp_path / 'frame.gif') in refused and '5000x5000' in refused
  assert 'raise --max_input_pixels' in refused
  for key in (('frames', 'REFUSED'), ('frames', 'PREDICT_REFUSED')):
    assert 'GIF of 2 frames of 18000000 pixels in all' in outcomes[key], key
    assert limit in outcomes[key]
  for key in (('blocks', 'REFUSED'), ('blocks', 'PREDICT_REFUSED')):
    assert 'more than 1024 blocks' in outcomes[key], outcomes
  # Decoded at its largest frame height x largest frame width.
  assert outcomes['animation', 'SERVED'] == '(1, 30, 30)', outcomes
  assert ('animation', 'PREDICT_READ') in outcomes
  assert helpers.snapshot(tmp_path) == before


def test_padded_batch_is_bounded(saved_model, tmp_path):
  # Each image is at the limit (16384 * 1024 = 4096 * 4096), but the outputs
  # of the two are padded to 2 x 16384 x 16384.
  tall, wide = tmp_path / 'tall.png', tmp_path / 'wide.png'
  tall.write_bytes(helpers.png_bomb(16384, 1024))
  wide.write_bytes(helpers.png_bomb(1024, 16384))
  before = helpers.snapshot(tmp_path)
  outcomes = _run_limited(saved_model, [('pair', [tall, wide])])
  refused = outcomes['pair', 'REFUSED']
  assert 'Batch of 2 images padded to 16384x16384' in refused, outcomes
  assert f'{2 * 16384 * 16384} pixels' in refused
  assert f'limit of {4 * 4096 * 4096} pixels (max_batch_pixels)' in refused
  assert helpers.snapshot(tmp_path) == before


def test_batch_limit_is_set_at_export_for_both_signatures(tmp_path):
  options = helpers.options(tmp_path / 'data')
  experiment = helpers.experiment(options)
  with pytest.raises(ValueError, match='max_batch_pixels .*less than'):
    export_lib.build_serving_module(experiment, None, max_input_pixels=1000,
                                    max_batch_pixels=999)
  module = export_lib.build_serving_module(
      experiment, None, max_input_pixels=1000, max_batch_pixels=2000)
  tall = tf.io.encode_png(tf.zeros([100, 10, 3], tf.uint8))
  wide = tf.io.encode_png(tf.zeros([10, 100, 3], tf.uint8))
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match='Batch of 2 images padded to 100x100 .* 20000 '
                     'pixels, more than the limit of 2000'):
    module.serve_encoded(tf.stack([tall, wide]))
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match='Batch of 3 images padded to 30x30 .* 2700 '
                     'pixels'):
    module.serve_float(tf.zeros([3, 30, 30, 3]))
  assert module.serve_float(tf.zeros([2, 30, 30, 3]))['semantic'].shape == [
      2, 30, 30]
  assert module.serve_encoded(tf.stack([tall, tall]))['semantic'].shape == [
      2, 100, 10]


def _random_image(path, kind, seed=0):
  rng = np.random.RandomState(seed)
  Image.fromarray(rng.randint(0, 255, [24, 32, 3]).astype(np.uint8)).save(
      path, format=kind)


def test_predict_never_writes_over_an_input(saved_model, tmp_path):
  images = tmp_path / 'd'
  images.mkdir()
  for name, kind in (('a.png', 'PNG'), ('a.jpg', 'JPEG'),
                     ('a_color.png', 'PNG')):
    _random_image(images / name, kind)
  before = helpers.snapshot(tmp_path)
  result = helpers.run_tool([
      'tools/predict.py', f'--saved_model={saved_model}',
      f'--images={images}/*', f'--output_dir={images}'])
  helpers.assert_one_line_error(
      result, 'predict', f'{images}/a_color.png (the label map of '
      f'{images}/a.jpg) would overwrite the input image {images}/a_color.png',
      'Nothing was written', 'holds no input image')
  assert helpers.snapshot(tmp_path) == before


def test_predict_sees_an_input_through_links_and_case(saved_model, tmp_path):
  images = tmp_path / 'd'
  images.mkdir()
  _random_image(images / 'b_color.png', 'PNG')
  _random_image(images / 'b.png', 'PNG', seed=1)
  os.symlink(images, tmp_path / 'link')
  model = predict_lib.load_saved_model(saved_model)
  files = predict_lib.expand_images([f'{images}/*'])
  before = helpers.snapshot(tmp_path)
  # The output directory is the inputs' one behind a symbolic link.
  with pytest.raises(ValueError, match='would overwrite the input image '
                     f'{images}/b_color.png'):
    predict_lib.predict_files(model, files, str(tmp_path / 'link'))
  # Two names one file on a case-insensitive disk get distinct outputs.
  assert predict_lib.output_names(['x/A.png', 'y/a.png']) == ['A', 'a_2']
  with pytest.raises(ValueError, match='out/a_color.png .* is also the '
                     'label map of A.png'):
    predict_lib.check_outputs([], [('out/A_color.png', 'label map of A.png'),
                                   ('out/a_color.png', 'label map of a.png')])
  assert helpers.snapshot(tmp_path) == before
