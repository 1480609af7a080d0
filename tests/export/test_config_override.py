"""--config_override through the export, predict and analysis libraries."""

import numpy as np
import pytest
import tensorflow as tf

from deeplab_sp import experiment as experiment_lib
from deeplab_sp.analysis import model_stats
from deeplab_sp.analysis import superpixel_quality
from deeplab_sp.export import export_lib
from deeplab_sp.export import predict_lib
import export_testing

NUM_CLASSES = 19  # The tiny export experiment's, cityscapes.
BAD_OVERRIDE = 'model_options { superpixel_tokenization { grid_heigth: 4 } }'


def _description(tmp_path):
  """A 19-class dataset description whose names and colours are not
  Cityscapes': what the SavedModel stores shows the override was used."""
  lines = ['name: "renamed"']
  for index in range(NUM_CLASSES):
    lines.append(f'classes {{ name: "class_{index}" color: [{index}, '
                 f'{2 * index}, {3 * index}] }}')
  lines.append('ignore_values: 255')
  path = tmp_path / 'renamed.dataset.textproto'
  path.write_text('\n'.join(lines) + '\n')
  return path


@pytest.mark.slow
def test_export_from_config_applies_overrides(tmp_path):
  config_file, prefix = export_testing.write_config_and_checkpoint(
      str(tmp_path))
  description = _description(tmp_path)
  override = ''.join(
      f'{field} {{ dataset_info_file: "{description}" }} '
      for field in ('train_dataset_options', 'eval_dataset_options'))
  export_dir = export_lib.export_from_config(
      config_file, prefix, str(tmp_path / 'saved'), overrides=[override])
  loaded = tf.saved_model.load(export_dir)
  assert [name.decode() for name in loaded.class_names.numpy()] == [
      f'class_{index}' for index in range(NUM_CLASSES)]
  np.testing.assert_array_equal(
      loaded.colormap.numpy()[5], [5, 10, 15])


def test_libraries_apply_overrides_before_building_anything(tmp_path):
  """A bad override is the named ConfigError of experiment.apply_overrides,
  raised where each library loads the config."""
  config_file = str(tmp_path / 'config.textproto')
  with open(config_file, 'w') as f:
    f.write(str(export_testing.tiny_options()))
  match = r"--config_override 'model_options .*grid_heigth"
  calls = [
      lambda: export_lib.export_from_config(
          config_file, 'unused', str(tmp_path / 'saved'),
          overrides=[BAD_OVERRIDE]),
      lambda: predict_lib.load_checkpoint(config_file, 'unused',
                                          overrides=[BAD_OVERRIDE]),
      lambda: model_stats.model_stats(config_file, with_flops=False,
                                      overrides=[BAD_OVERRIDE]),
      lambda: superpixel_quality.run(config_file, 'unused',
                                     overrides=[BAD_OVERRIDE]),
  ]
  for call in calls:
    with pytest.raises(experiment_lib.ConfigError, match=match):
      call()


@pytest.mark.slow
def test_model_stats_counts_the_overridden_model(tmp_path):
  config_file = str(tmp_path / 'config.textproto')
  with open(config_file, 'w') as f:
    f.write(str(export_testing.tiny_options()))
  plain = model_stats.model_stats(config_file, with_flops=False)
  wider = model_stats.model_stats(
      config_file, with_flops=False,
      overrides=['model_options { superpixel_classifier { num_layers: 2 } }'])
  assert plain['components'].keys() == wider['components'].keys()
  assert wider['total_params'] > plain['total_params']
  assert wider['components']['encoder'] == plain['components']['encoder']
