"""A full disk is one line naming the path, and leaves no temporaries.

No test machine can fill a disk on demand, so each tool runs with one
writer replaced by one that fails as TensorFlow fails on a full disk: a
ResourceExhaustedError whose message is `<path>; No space left on device`
(the builder's case is in test_record_builder.py).
"""

import os

from google.protobuf import text_format
import numpy as np
from PIL import Image
import pytest
import reliability_helpers as helpers
import tensorflow as tf

from deeplab_sp.export import export_lib
from deeplab_sp.utils import io


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
  """(config file, checkpoint prefix, SavedModel version directory)."""
  root = tmp_path_factory.mktemp('full_disk')
  options = helpers.options(root / 'data')
  config = root / 'config.textproto'
  config.write_text(text_format.MessageToString(options))
  module = export_lib.build_serving_module(helpers.experiment(options), None)
  prefix = tf.train.Checkpoint(model=module.model).write(str(root / 'ckpt-1'))
  saved_model = export_lib.export_saved_model(module, str(root / 'model'), 1)
  return config, prefix, saved_model


def _temporaries(directory):
  return [name for root, dirs, files in os.walk(directory)
          for name in dirs + files if io.TEMPORARY_MARKER in name]


def test_export_names_the_version_directory(exported, tmp_path):
  config, prefix, _ = exported
  base = tmp_path / 'base'
  # Writes part of the SavedModel, then fails like TensorFlow's SaveV2.
  setup = '''
import os
import tensorflow as tf
def _full_disk_save(obj, export_dir, *args, **kwargs):
  os.makedirs(os.path.join(export_dir, 'variables'))
  with open(os.path.join(export_dir, 'saved_model.pb'), 'wb') as f:
    f.write(b'half written')
  raise tf.errors.ResourceExhaustedError(None, None, (
      '{{function_node __wrapped__SaveV2_dtypes_2_device_/job:localhost/'
      'replica:0/task:0/device:CPU:0}} ' + export_dir + '/variables/'
      'variables_temp/part-00000-of-00001.data-00000-of-00001.tempstate1; '
      'No space left on device [Op:SaveV2]'))
tf.saved_model.save = _full_disk_save
'''
  result = helpers.run_tool_with_setup(setup, [
      'tools/export_model.py', f'--config_file={config}',
      f'--checkpoint_path={prefix}', f'--output_path={base}'])
  helpers.assert_one_line_error(
      result, 'export_model', f'No space left on the disk of {base}/1 while '
      'writing the SavedModel; nothing was written', 'free space there')
  assert os.listdir(base) == []


def test_predict_names_the_label_map(exported, tmp_path):
  _, _, saved_model = exported
  images = tmp_path / 'images'
  images.mkdir()
  for name in ('a', 'b'):
    Image.fromarray(np.zeros([24, 32, 3], np.uint8)).save(images /
                                                          f'{name}.png')
  before = helpers.snapshot(images)
  output_dir = tmp_path / 'out'
  # The second label map's PNG does not fit.
  setup = '''
import tensorflow as tf
_write = tf.io.gfile.GFile.write
def _full_disk_write(self, data):
  if 'b_color.png' in self.name:
    raise tf.errors.ResourceExhaustedError(
        None, None, self.name + '; No space left on device')
  return _write(self, data)
tf.io.gfile.GFile.write = _full_disk_write
'''
  result = helpers.run_tool_with_setup(setup, [
      'tools/predict.py', f'--saved_model={saved_model}',
      f'--images={images}/*.png', f'--output_dir={output_dir}'])
  helpers.assert_one_line_error(
      result, 'predict', f'No space left on the disk of {output_dir}/'
      'b_color.png', 'free space there')
  assert sorted(os.listdir(output_dir)) == ['a_color.png']
  assert helpers.snapshot(images) == before


@pytest.mark.slow
def test_trainer_names_the_checkpoint(tmp_path):
  data_dir = tmp_path / 'data'
  helpers.write_records(data_dir)
  config = tmp_path / 'config.textproto'
  config.write_text(text_format.MessageToString(
      helpers.options(data_dir, steps=2)))
  before = helpers.snapshot(data_dir)
  model_dir = tmp_path / 'runs'
  # What SaveV2 raises when the checkpoint's data file does not fit.
  setup = '''
import tensorflow as tf
def _full_disk_save(self, *args, **kwargs):
  raise tf.errors.ResourceExhaustedError(None, None, (
      '{{function_node __wrapped__SaveV2_dtypes_2_device_/job:localhost/'
      'replica:0/task:0/device:CPU:0}} ' + self.directory + '/ckpt-2_temp/'
      'part-00000-of-00001.data-00000-of-00001.tempstate1; No space left on '
      'device [Op:SaveV2]'))
tf.train.CheckpointManager.save = _full_disk_save
'''
  result = helpers.run_tool_with_setup(setup, [
      'deeplab_sp/trainer/train.py', f'--config_file={config}',
      '--mode=train', f'--model_dir={model_dir}'])
  line = helpers.assert_one_line_error(
      result, 'train', f'train: {model_dir}/reliability/ckpt-2_temp/',
      'No space left on device: free space on that disk')
  assert '{{' not in line and '[Op:' not in line, line
  assert helpers.snapshot(data_dir) == before
