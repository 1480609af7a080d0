"""Tests of deeplab_sp.export.predict_lib and tools/predict.py, export_model.py."""

import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from deeplab_sp.data import cityscapes
from deeplab_sp.export import export_lib
from deeplab_sp.export import predict_lib
from deeplab_sp import visualization

from google.protobuf import text_format
import export_testing

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
  """(config file, checkpoint prefix, module)."""
  tf.keras.utils.set_random_seed(2)
  root = tmp_path_factory.mktemp('predict')
  experiment = export_testing.tiny()
  config_file = str(root / 'config.textproto')
  with open(config_file, 'w') as f:
    f.write(text_format.MessageToString(experiment.options))
  module = export_lib.build_serving_module(experiment)
  prefix = tf.train.Checkpoint(model=module.model).write(str(root / 'ckpt-1'))
  return config_file, prefix, module


def write_images(directory, sizes):
  paths = []
  for index, (height, width) in enumerate(sizes):
    path = os.path.join(directory, f'image{index}.png')
    Image.fromarray(export_testing.random_image(height, width, index)).save(
        path)
    paths.append(path)
  return paths


def test_predict_files_writes_label_and_overlay_pngs(setup, tmp_path):
  config_file, prefix, module = setup
  model = predict_lib.load_checkpoint(config_file, prefix)
  files = write_images(str(tmp_path), [(64, 64), (30, 50)])
  output_dir = str(tmp_path / 'out')
  overlay_dir = str(tmp_path / 'overlays')
  written = predict_lib.predict_files(model, files, output_dir,
                                      overlay_dir=overlay_dir)
  assert sorted(os.listdir(output_dir)) == ['image0_color.png',
                                            'image1_color.png']
  assert sorted(os.listdir(overlay_dir)) == ['image0_superpixels.png',
                                             'image1_superpixels.png']
  assert len(written) == 4
  image = np.array(Image.open(files[0]))
  outputs = module.model(image[np.newaxis].astype(np.float32))
  semantic = np.argmax(outputs['semantic_logits'][0].numpy(), -1)
  expected_labels = visualization.colorize_label_map(semantic, model.colormap)
  np.testing.assert_array_equal(
      np.array(Image.open(os.path.join(output_dir, 'image0_color.png'))),
      expected_labels)
  expected_overlay = visualization.overlay_boundaries(
      image, outputs['superpixel_ids'][0].numpy())
  np.testing.assert_array_equal(
      np.array(Image.open(os.path.join(overlay_dir,
                                       'image0_superpixels.png'))),
      expected_overlay)
  assert np.array(Image.open(
      os.path.join(output_dir, 'image1_color.png'))).shape == (30, 50, 3)

  # One single-channel PNG per image, without overlays: train ids, and
  # Cityscapes labelIds (the model is on Cityscapes' classes).
  for output_format, suffix, expected in [
      ('train_ids', '_trainIds.png', semantic),
      ('label_ids', '_labelIds.png',
       np.asarray(cityscapes.TRAIN_ID_TO_LABEL_ID)[semantic])]:
    directory = tmp_path / output_format
    predict_lib.predict_files(model, files, str(directory), output_format)
    assert sorted(os.listdir(directory)) == [f'image0{suffix}',
                                             f'image1{suffix}']
    with Image.open(directory / f'image0{suffix}') as png:
      assert png.mode == 'L'
      np.testing.assert_array_equal(np.array(png), expected)


def test_output_format_errors(setup, tmp_path):
  config_file, prefix, _ = setup
  model = predict_lib.load_checkpoint(config_file, prefix)
  files = write_images(str(tmp_path), [(32, 32)])
  output_dir = tmp_path / 'out'
  # Overlays inside the label directory would be scored as predictions.
  with pytest.raises(ValueError, match='inside the output directory'):
    predict_lib.predict_files(model, files, str(output_dir),
                              overlay_dir=str(output_dir / 'overlays'))
  six_classes = predict_lib.LoadedModel(
      model.predict, model.colormap[:6], ('ground', 'sky', 'building',
                                          'pole', 'wire', 'vehicle'))
  with pytest.raises(ValueError,
                     match=r"model's 6 classes \(ground, sky, building, "
                     r'pole, ...\) are not the 19 Cityscapes classes'):
    predict_lib.predict_files(six_classes, files, str(output_dir),
                              'label_ids')
  with pytest.raises(ValueError, match='Unknown output format'):
    predict_lib.predict_files(model, files, str(output_dir), 'labels')
  assert not output_dir.exists()


def test_without_superpixel_ids_only_label_maps_are_written(tmp_path):
  tf.keras.utils.set_random_seed(2)
  module = export_lib.build_serving_module(
      export_testing.tiny_baseline('DEEPLABV3PLUS'))
  export_dir = export_lib.export_saved_model(module, str(tmp_path / 'saved'))
  model = predict_lib.load_saved_model(export_dir)
  files = write_images(str(tmp_path), [(64, 64), (30, 50)])
  output_dir = str(tmp_path / 'out')
  overlay_dir = str(tmp_path / 'overlays')
  written = predict_lib.predict_files(model, files, output_dir,
                                      overlay_dir=overlay_dir)
  assert sorted(os.listdir(output_dir)) == ['image0_color.png',
                                            'image1_color.png']
  assert not os.listdir(overlay_dir)
  assert written == [os.path.join(output_dir, name)
                     for name in ('image0_color.png', 'image1_color.png')]
  image = np.array(Image.open(files[0]))
  logits = module.model(image[np.newaxis].astype(np.float32))
  np.testing.assert_array_equal(
      np.array(Image.open(written[0])),
      visualization.colorize_label_map(
          np.argmax(logits['semantic_logits'][0].numpy(), -1),
          model.colormap))


def test_unreadable_image_stops_before_writing(setup, tmp_path):
  config_file, prefix, _ = setup
  model = predict_lib.load_checkpoint(config_file, prefix)
  files = write_images(str(tmp_path), [(64, 64)])
  bad = tmp_path / 'broken.png'
  bad.write_bytes(b'not a png')
  output_dir = tmp_path / 'out'
  with pytest.raises(ValueError, match='broken.png'):
    predict_lib.predict_files(model, files + [str(bad)], str(output_dir))
  assert not output_dir.exists()
  with pytest.raises(FileNotFoundError, match='matches no file'):
    predict_lib.expand_images([str(tmp_path / 'none*.jpg')])
  with pytest.raises(ValueError, match='directory.*glob'):
    predict_lib.expand_images([str(tmp_path)])


def run_tool(*args):
  return subprocess.run([sys.executable, *args], capture_output=True,
                        text=True, cwd=REPO, timeout=300, check=False)


@pytest.mark.slow
def test_export_then_predict_tools(setup, tmp_path):
  config_file, prefix, _ = setup
  export = run_tool('tools/export_model.py', f'--config_file={config_file}',
                    f'--checkpoint_path={prefix}',
                    f'--output_path={tmp_path / "exported"}')
  assert export.returncode == 0, export.stderr[-3000:]
  saved_model = tmp_path / 'exported' / '1'
  write_images(str(tmp_path), [(40, 64)])
  output_dir = tmp_path / 'out'
  predict = run_tool('tools/predict.py', f'--saved_model={saved_model}',
                     f'--images={tmp_path / "*.png"}',
                     f'--output_dir={output_dir}', '--output_format=label_ids',
                     f'--overlay_dir={tmp_path / "overlays"}')
  assert predict.returncode == 0, predict.stderr[-3000:]
  assert '[1/1]' in predict.stdout
  assert sorted(os.listdir(output_dir)) == ['image0_labelIds.png']
  assert os.listdir(tmp_path / 'overlays') == ['image0_superpixels.png']
  # The model of a SavedModel carries its classes: Cityscapes' here.
  with Image.open(output_dir / 'image0_labelIds.png') as png:
    assert png.mode == 'L' and png.size == (64, 40)
    assert set(np.unique(png)) <= set(cityscapes.TRAIN_ID_TO_LABEL_ID)
  (tmp_path / 'bad.jpg').write_bytes(b'garbage')
  failed = run_tool('tools/predict.py', f'--saved_model={saved_model}',
                    f'--images={tmp_path / "bad.jpg"}',
                    f'--output_dir={tmp_path / "out2"}')
  assert failed.returncode == 1
  # One line, once, without a traceback.
  assert failed.stderr.count('Cannot read image') == 1, failed.stderr
  assert 'predict: Cannot read image' in failed.stderr
  assert 'Traceback' not in failed.stderr
  assert not (tmp_path / 'out2').exists()
