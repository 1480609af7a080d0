"""Tests of deeplab_sp.export.export_lib: signatures, sizes, plain-TF load,
the stored config and facts."""

import io
import logging
import os
import subprocess
import sys
import textwrap

from absl import logging as absl_logging
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from deeplab_sp.data import dataset_info
from deeplab_sp.data import input_pipeline
from deeplab_sp.data import preprocessing
from deeplab_sp.data import tfrecord_format
from deeplab_sp.export import export_lib
from deeplab_sp.export import saved_model_info
from deeplab_sp.model.kernels import profile
from deeplab_sp.model.kernels import xla_islands
from deeplab_sp.protos import config_pb2
from deeplab_sp.protos import dataset_pb2
import export_testing
from export_testing import png_bytes
from export_testing import random_image
from export_testing import SIZE

from google.protobuf import text_format
from tensorflow.core.protobuf import saved_model_pb2  # pylint: disable=g-direct-tensorflow-import

NUM_CLASSES = 19  # cityscapes


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
  """(module, export_dir, config_file, checkpoint prefix)."""
  tf.keras.utils.set_random_seed(1)
  root = tmp_path_factory.mktemp('export')
  experiment = export_testing.tiny()
  config_file = str(root / 'config.textproto')
  with open(config_file, 'w') as f:
    f.write(text_format.MessageToString(experiment.options))
  module = export_lib.build_serving_module(experiment,
                                           include_probabilities=True)
  prefix = tf.train.Checkpoint(model=module.model).write(str(root / 'ckpt-1'))
  export_dir = export_lib.export_from_config(
      config_file, prefix, str(root / "saved"), include_probabilities=True)
  return module, export_dir, config_file, prefix


def test_versioned_layout_and_no_temp_left(exported):
  _, export_dir, _, _ = exported
  base = os.path.dirname(export_dir)
  assert os.path.basename(export_dir) == '1'
  assert sorted(os.listdir(base)) == ['1']
  assert os.path.exists(os.path.join(export_dir, 'saved_model.pb'))


def test_saved_model_has_no_xla_clusters(exported):
  # TF Serving does not JIT-compile XLA on CPU by default, so the export
  # builds the model with the SERVING kernel profile, without the decoder's
  # XLA-fused tails that the CPU profile (the trainer's on this machine)
  # has in its graphs.
  module, export_dir, _, _ = exported
  assert module.model.kernels is profile.SERVING
  saved_model = saved_model_pb2.SavedModel()
  with open(os.path.join(export_dir, 'saved_model.pb'), 'rb') as f:
    saved_model.ParseFromString(f.read())
  graph_def = saved_model.meta_graphs[0].graph_def
  assert len(graph_def.library.function) > 10
  assert not xla_islands.compiled_functions(graph_def)
  cpu_model = export_lib.restored_model(export_testing.tiny(),
                                        kernels=profile.CPU)
  traced = tf.function(lambda images: cpu_model(images, training=False))
  assert xla_islands.compiled_functions(traced.get_concrete_function(
      tf.TensorSpec([1, SIZE, SIZE, 3])).graph.as_graph_def())


def test_existing_version_is_an_error_unless_overwrite(exported, tmp_path):
  module, _, _, _ = exported
  base = str(tmp_path / 'saved')
  export_lib.export_saved_model(module, base, version=3)
  with pytest.raises(FileExistsError, match='--overwrite'):
    export_lib.export_saved_model(module, base, version=3)
  export_lib.export_saved_model(module, base, version=3, overwrite=True)
  assert export_lib.next_version(base) == 4
  with pytest.raises(ValueError, match='positive'):
    export_lib.export_saved_model(module, base, version=0)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match='No checkpoint in directory'):
    export_lib.resolve_checkpoint(str(tmp_path))
  with pytest.raises(FileNotFoundError, match='ckpt-1000'):
    export_lib.resolve_checkpoint(str(tmp_path / 'ckpt-7'))


def test_model_size_image_equals_keras_argmax(exported):
  module, export_dir, _, _ = exported
  image = random_image(SIZE, SIZE)
  logits = module.model(image[np.newaxis].astype(np.float32))
  expected = np.argmax(logits['semantic_logits'].numpy(), -1)
  loaded = tf.saved_model.load(export_dir)
  outputs = loaded.signatures['serving_default'](
      encoded_images=tf.constant([png_bytes(image)]))
  assert outputs['semantic'].dtype == tf.int32
  np.testing.assert_array_equal(outputs['semantic'].numpy(), expected)
  np.testing.assert_array_equal(outputs['superpixel_ids'].numpy(),
                                logits['superpixel_ids'].numpy())
  np.testing.assert_array_equal(outputs['image_size'].numpy(), [[SIZE, SIZE]])
  np.testing.assert_allclose(outputs['probabilities'].numpy().sum(-1), 1.0,
                             rtol=1e-5)
  floats = loaded.signatures['serving_float'](
      images=tf.constant(image[np.newaxis], tf.float32))
  np.testing.assert_array_equal(floats['semantic'].numpy(), expected)


def _jpeg_bytes(image: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format='JPEG', quality=90)
  return buffer.getvalue()


def test_jpeg_is_served_with_the_decoding_of_training(exported, tmp_path):
  # A smooth image with edges: what JPEG is for, and where the DCT methods
  # disagree.
  rows, cols = np.mgrid[0:SIZE, 0:SIZE]
  image = np.stack([rows * 4, cols * 4, (rows + cols) * 2], -1)
  image = (image + random_image(SIZE, SIZE, seed=5) // 8).astype(np.uint8)
  jpeg = _jpeg_bytes(image)
  # The input pipeline's decoding of the bytes, from a record.
  with tf.io.TFRecordWriter(str(tmp_path / 'val-00000-of-00001.tfrecord')) as w:
    w.write(tfrecord_format.make_example(
        jpeg, 'jpeg', 'a', SIZE, SIZE, tfrecord_format.encode_label_png(
            np.zeros([SIZE, SIZE], np.uint8))).SerializeToString())
  options = dataset_pb2.DatasetOptions(
      dataset='cityscapes', batch_size=1, crop_size=[SIZE, SIZE],
      repeat=False, file_pattern=[str(tmp_path / 'val-*')])
  pipeline_image = next(input_pipeline.build_dataset(options, False)
                        .as_numpy_iterator())['image']
  default_decoding = tf.io.decode_image(jpeg, channels=3).numpy()
  assert (default_decoding != pipeline_image[0]).any(), (
      'the test image must tell the two decodings apart')
  module, export_dir, _, _ = exported
  expected = np.argmax(module.model(pipeline_image)['semantic_logits'], -1)
  loaded = tf.saved_model.load(export_dir)
  served = loaded.signatures['serving_default'](
      encoded_images=tf.constant([jpeg]))['semantic'].numpy()
  np.testing.assert_array_equal(served, expected)


def test_other_sizes_are_resized_padded_and_restored(exported):
  module, _, _, _ = exported
  # 32x16 fits 64x64 by scaling 2x to 64x32, padded right (with 127.5).
  small = random_image(32, 16, seed=1)
  wide = random_image(20, 40, seed=2)
  outputs = module.serve_encoded(tf.constant([png_bytes(small),
                                              png_bytes(wide)]))
  assert outputs['semantic'].shape == (2, 32, 40)
  np.testing.assert_array_equal(outputs['image_size'].numpy(),
                                [[32, 16], [20, 40]])
  semantic = outputs['semantic'].numpy()
  # Padding of the smaller image is the ignore label / no superpixel.
  assert (semantic[0, :, 16:] == 255).all()
  assert (semantic[1, 20:, :] == 255).all()
  assert (outputs['superpixel_ids'].numpy()[0, :, 16:] == -1).all()
  assert semantic[0, :, :16].max() < NUM_CLASSES
  # The same computation by hand for the first image.
  resized = tf.image.resize(small.astype(np.float32), [64, 32])
  # Padded bottom/right with the input pipeline's padding value.
  padded = tf.pad(resized, [[0, 0], [0, SIZE - 32], [0, 0]],
                  constant_values=preprocessing.PAD_PIXEL_VALUE)
  logits = module.model(padded[tf.newaxis])['semantic_logits'][0, :, :32]
  logits = tf.image.resize(logits, [32, 16])
  export_testing.assert_labels_are_argmax(semantic[0, :, :16],
                                          logits.numpy())


def test_non_image_bytes_are_invalid_argument(exported):
  module, export_dir, _, _ = exported
  with pytest.raises(tf.errors.InvalidArgumentError):
    module.serve_encoded(tf.constant([b'this is not an image']))
  loaded = tf.saved_model.load(export_dir)
  with pytest.raises(tf.errors.InvalidArgumentError):
    loaded.signatures['serving_default'](
        encoded_images=tf.constant([b'\x89PNG broken']))


_PLAIN_TF_SCRIPT = textwrap.dedent('''
    import sys
    import numpy as np
    import tensorflow as tf
    export_dir, image_path, output_path = sys.argv[1:]
    loaded = tf.saved_model.load(export_dir)
    with open(image_path, 'rb') as f:
      data = f.read()
    serve = loaded.signatures['serving_default']
    semantic = serve(encoded_images=tf.constant([data]))['semantic'].numpy()
    try:
      serve(encoded_images=tf.constant([b'not an image']))
      error = 'none'
    except tf.errors.InvalidArgumentError:
      error = 'InvalidArgument'
    assert not any(m.startswith('deeplab_sp') for m in sys.modules), sorted(
        m for m in sys.modules if m.startswith('deeplab_sp'))
    np.save(output_path, semantic)
    print('ERROR=' + error)
''')


@pytest.mark.slow
def test_plain_tensorflow_process_gives_keras_predictions(exported, tmp_path):
  module, export_dir, _, _ = exported
  image = random_image(48, 64, seed=3)
  image_path = tmp_path / 'image.png'
  image_path.write_bytes(png_bytes(image))
  script = tmp_path / 'serve.py'
  script.write_text(_PLAIN_TF_SCRIPT)
  output = tmp_path / 'semantic.npy'
  result = subprocess.run(
      [sys.executable, str(script), export_dir, str(image_path), str(output)],
      capture_output=True, text=True, cwd=str(tmp_path), timeout=300,
      check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'ERROR=InvalidArgument' in result.stdout
  padded = np.full([SIZE, SIZE, 3], preprocessing.PAD_PIXEL_VALUE,
                   np.float32)
  padded[:48] = image
  logits = module.model(padded[np.newaxis])['semantic_logits'][0, :48]
  # A fresh process without the project's code: the same labels up to
  # round-off ties.
  export_testing.assert_labels_are_argmax(np.load(output)[0], logits.numpy())


def test_saved_model_cli_lists_the_signatures(exported):
  _, export_dir, _, _ = exported
  cli = os.path.join(os.path.dirname(sys.executable), 'saved_model_cli')
  result = subprocess.run([cli, 'show', '--dir', export_dir, '--all'],
                          capture_output=True, text=True, timeout=300,
                          check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "signature_def['serving_default']" in result.stdout
  assert "signature_def['serving_float']" in result.stdout
  assert "signature_def['serving_image_tensor']" in result.stdout
  assert 'encoded_images' in result.stdout


def _records(loggers, level, block):
  """The messages `loggers` log at `level` or above while `block()` runs."""
  messages = []

  class Recorder(logging.Handler):

    def emit(self, record):
      messages.append(record.getMessage())

  recorder = Recorder(level=level)
  old_levels = [logger.level for logger in loggers]
  for logger in loggers:
    logger.setLevel(min(level, logger.level or level))
    logger.addHandler(recorder)
  try:
    block()
  finally:
    for logger, old_level in zip(loggers, old_levels):
      logger.removeHandler(recorder)
      logger.setLevel(old_level)
  return messages


def test_export_logs_no_renaming_of_the_loop_captured_variables(exported,
                                                                tmp_path):
  # The signatures capture the model's variables under the names their
  # function inputs get, so saving has nothing to rename (and no log line
  # is filtered: TensorFlow's loggers are left as they are).
  module, _, _, _ = exported
  messages = _records(
      [absl_logging.get_absl_logger(), tf.get_logger()], logging.DEBUG,
      lambda: export_lib.export_saved_model(module, str(tmp_path / 'saved'),
                                            version=1))
  assert messages, 'the export logs'
  assert not [m for m in messages if 'renamed' in m], [
      m[:200] for m in messages if 'renamed' in m]
  assert not absl_logging.get_absl_logger().filters
  assert not tf.get_logger().filters


def test_loading_the_export_logs_no_warning(exported):
  # No "unsaved custom gradients" (or any other) warning: the gradients of
  # the kernels' custom gradients are saved with the export.
  _, export_dir, _, _ = exported
  loaded = []
  messages = _records(
      [absl_logging.get_absl_logger(), tf.get_logger()], logging.WARNING,
      lambda: loaded.append(tf.saved_model.load(export_dir)))
  assert loaded[0].signatures
  assert not messages, [m[:200] for m in messages]


def test_image_tensor_signature_gives_the_labels_of_serving_float(exported):
  _, export_dir, _, _ = exported
  loaded = tf.saved_model.load(export_dir)
  # Another size than the model's (resized, padded and restored), two images.
  images = np.stack([random_image(30, 50, seed=4), random_image(30, 50,
                                                                 seed=5)])
  uint8 = loaded.signatures[export_lib.SERVING_IMAGE_TENSOR](
      images=tf.constant(images))
  floats = loaded.signatures['serving_float'](
      images=tf.constant(images, tf.float32))
  assert set(uint8) == set(floats)
  assert uint8['semantic'].shape == (2, 30, 50)
  for name in floats:
    np.testing.assert_array_equal(uint8[name].numpy(), floats[name].numpy())
  _, spec = loaded.signatures[
      export_lib.SERVING_IMAGE_TENSOR].structured_input_signature
  assert spec['images'].dtype == tf.uint8
  # The same limits: too large an image is refused before anything runs.
  module, _, _, _ = exported
  small_limit = export_lib.ServingModule(
      module.model, (SIZE, SIZE), NUM_CLASSES, max_input_pixels=40 * 40)
  with pytest.raises(tf.errors.InvalidArgumentError, match='1600'):
    small_limit.serve_image_tensor(tf.zeros([1, 41, 40, 3], tf.uint8))


def test_deeplab2_names_are_aliases_of_the_outputs(exported):
  module, export_dir, _, _ = exported
  loaded = tf.saved_model.load(export_dir)
  image = random_image(SIZE, SIZE, seed=6)
  for key in loaded.signatures:
    outputs = loaded.signatures[key].structured_outputs
    assert {'semantic_pred', 'semantic_probs'} <= set(outputs), key
  outputs = loaded.signatures['serving_default'](
      encoded_images=tf.constant([png_bytes(image)]))
  np.testing.assert_array_equal(outputs['semantic_pred'].numpy(),
                                outputs['semantic'].numpy())
  np.testing.assert_array_equal(outputs['semantic_probs'].numpy(),
                                outputs['probabilities'].numpy())
  # Left out on request; 'semantic_probs' only with the probabilities.
  without = export_lib.ServingModule(module.model, (SIZE, SIZE), NUM_CLASSES,
                                     include_deeplab2_names=False)
  assert set(without.output_names()) == {'semantic', 'image_size',
                                         'superpixel_ids'}
  no_probabilities = export_lib.ServingModule(module.model, (SIZE, SIZE),
                                              NUM_CLASSES)
  outputs = no_probabilities.serve_float(
      tf.constant(image[np.newaxis], tf.float32))
  assert set(outputs) == {'semantic', 'image_size', 'superpixel_ids',
                          'semantic_pred'}


def test_the_export_stores_its_config_and_facts(exported):
  module, export_dir, config_file, _ = exported
  asset = os.path.join(export_dir, 'assets', export_lib.CONFIG_ASSET)
  with open(asset) as f:
    stored = text_format.Parse(f.read(), config_pb2.ExperimentOptions())
  with open(config_file) as f:
    expected = text_format.Parse(f.read(), config_pb2.ExperimentOptions())
  assert stored == expected
  loaded = tf.saved_model.load(export_dir)
  assert loaded.experiment_config.asset_path.numpy().decode() == asset
  np.testing.assert_array_equal(loaded.model_input_size.numpy(), [SIZE, SIZE])
  np.testing.assert_array_equal(
      loaded.pixel_limits.numpy(),
      [module.max_input_pixels, module.max_batch_pixels])
  # The module is left without the asset (its file was temporary).
  assert not hasattr(module, export_lib.CONFIG_ASSET_ATTRIBUTE)


def test_inspect_describes_the_export(exported):
  _, export_dir, _, _ = exported
  info = saved_model_info.describe(export_dir)
  assert sorted(info['signatures']) == [
      'serving_default', 'serving_float', 'serving_image_tensor']
  assert info['signatures']['serving_default']['inputs'] == {
      'encoded_images': {'dtype': 'string', 'shape': [None]}}
  assert info['signatures']['serving_image_tensor']['inputs'] == {
      'images': {'dtype': 'uint8', 'shape': [None, None, None, 3]}}
  outputs = info['signatures']['serving_float']['outputs']
  assert outputs['semantic'] == {'dtype': 'int32',
                                 'shape': [None, None, None]}
  assert outputs['probabilities']['shape'] == [None, None, None, NUM_CLASSES]
  assert set(outputs) == {'semantic', 'image_size', 'superpixel_ids',
                          'probabilities', 'semantic_pred', 'semantic_probs'}
  assert info['model_input_size'] == [SIZE, SIZE]
  assert info['class_names'] == list(
      dataset_info.get_dataset_info('cityscapes').class_names)
  assert info['config_path'] == os.path.join(export_dir, 'assets',
                                             export_lib.CONFIG_ASSET)
  assert 'experiment: export_test' in info['config_summary']
  text = saved_model_info.as_text(info)
  assert f'Model input size: {SIZE}x{SIZE}' in text
  assert "semantic_pred: int32 [None, None, None] (= semantic" in text
  assert 'images: uint8 [None, None, None, 3]' in text


@pytest.mark.parametrize('meta', ['HYPERCOLUMN_PIXEL_CLASSIFIER',
                                  'DEEPLABV3PLUS'])
def test_a_baseline_exports_and_serves_without_superpixel_ids(meta,
                                                              tmp_path):
  tf.keras.utils.set_random_seed(5)
  experiment = export_testing.tiny_baseline(meta)
  config_file = str(tmp_path / 'config.textproto')
  with open(config_file, 'w') as f:
    f.write(text_format.MessageToString(experiment.options))
  module = export_lib.build_serving_module(experiment)
  assert not module.include_superpixel_ids  # Asked for, but it has none.
  prefix = tf.train.Checkpoint(model=module.model).write(
      str(tmp_path / 'ckpt-1'))
  export_dir = export_lib.export_from_config(
      config_file, prefix, str(tmp_path / 'saved'),
      include_probabilities=True)
  loaded = tf.saved_model.load(export_dir)
  image = random_image(SIZE, SIZE)
  expected = np.argmax(module.model(image[np.newaxis].astype(np.float32))[
      'semantic_logits'].numpy(), -1)
  outputs = loaded.signatures['serving_default'](
      encoded_images=tf.constant([png_bytes(image), png_bytes(image)]))
  assert set(outputs) == {'semantic', 'image_size', 'probabilities',
                          'semantic_pred', 'semantic_probs'}
  np.testing.assert_array_equal(outputs['semantic'].numpy()[:1], expected)
  np.testing.assert_allclose(outputs['probabilities'].numpy().sum(-1), 1.0,
                             rtol=1e-5)
  # Another size is resized, padded and restored as for the SP-Transformer.
  other = random_image(30, 50, seed=1)
  floats = loaded.signatures['serving_float'](
      images=tf.constant(other[np.newaxis], tf.float32))
  assert set(floats) == {'semantic', 'image_size', 'probabilities',
                         'semantic_pred', 'semantic_probs'}
  assert floats['semantic'].shape == (1, 30, 50)
  np.testing.assert_array_equal(floats['image_size'].numpy(), [[30, 50]])
