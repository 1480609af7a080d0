"""The official Cityscapes evaluation scores tools/predict.py's labelIds.

On a mock val split (a few small images in Cityscapes' layout, with
*_gtFine_labelIds.png holding evaluated, ignored and non-evaluated ids), a
tiny Cityscapes model predicts through predict_lib twice: as labelIds,
which cityscapesscripts' csEvalPixelLevelSemanticLabeling scores (with the
environment the README gives it; run here as its module), and as train
ids, which our evaluator's metric (deeplab_sp/trainer/metrics.py) scores
against the labels converted as the record builder converts them. Both
give the same per-class IoU over the 19 classes and the same mIoU.
"""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from deeplab_sp.data import cityscapes
from deeplab_sp.data import dataset_info
from deeplab_sp.export import export_lib
from deeplab_sp.export import predict_lib
from deeplab_sp.trainer import metrics

from google.protobuf import text_format
import export_testing

# (city, sequence, frame) of the mock val images.
_IMAGES = (('frankfurt', '000000', '000294'),
           ('frankfurt', '000001', '005898'),
           ('lindau', '000000', '000019'))
_HEIGHT, _WIDTH = 48, 64
_ABSENT_LABEL_IDS = (28, 31)  # bus, train.
_LABEL_IDS = [i for i in range(cityscapes.MAX_LABEL_ID + 1)
              if i not in _ABSENT_LABEL_IDS]
# The module of the official evaluation's console script,
# csEvalPixelLevelSemanticLabeling (run here with the test's interpreter).
_EVALUATOR = 'cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling'


def _official_evaluation_problem():
  """Why the official evaluation cannot run here (None: it can)."""
  if importlib.util.find_spec('cityscapesscripts') is None:
    return ('cityscapesscripts is not installed; pip install -e '
            '".[cityscapes]" (tools/setup.sh does).')
  if not hasattr(np, 'in1d'):
    return (f'cityscapesscripts calls numpy.in1d, which numpy '
            f'{np.__version__} no longer has; pip install -e ".[cityscapes]" '
            '(it holds numpy below 2.4).')
  return None


_PROBLEM = _official_evaluation_problem()
pytestmark = pytest.mark.skipif(_PROBLEM is not None, reason=str(_PROBLEM))


def _mock_val_split(root):
  """Writes leftImg8bit/val and gtFine/val; returns {name: labelIds}."""
  rng = np.random.RandomState(0)
  label_ids = {}
  for city, sequence, frame in _IMAGES:
    name = f'{city}_{sequence}_{frame}'
    for directory in ('leftImg8bit', 'gtFine'):
      os.makedirs(os.path.join(root, directory, 'val', city), exist_ok=True)
    image = rng.randint(0, 256, [_HEIGHT, _WIDTH, 3]).astype(np.uint8)
    Image.fromarray(image).save(os.path.join(
        root, 'leftImg8bit', 'val', city, f'{name}_leftImg8bit.png'))
    # Blocks of 8x8 pixels, each one labelId 0..33 (ignored ones included)
    # but 'bus' and 'train', whose IoU is then undefined or 0 (predicted).
    blocks = rng.choice(_LABEL_IDS, [_HEIGHT // 8, _WIDTH // 8])
    label = np.kron(blocks, np.ones([8, 8], np.int64)).astype(np.uint8)
    label_ids[name] = label
    gt_prefix = os.path.join(root, 'gtFine', 'val', city, f'{name}_gtFine')
    Image.fromarray(label).save(f'{gt_prefix}_labelIds.png')
    # The official script also reads the instance ids; no instances here.
    Image.fromarray(label.astype(np.uint16)).save(
        f'{gt_prefix}_instanceIds.png')
  return label_ids


@pytest.fixture(scope='module')
def model(tmp_path_factory):
  tf.keras.utils.set_random_seed(5)
  root = tmp_path_factory.mktemp('model')
  experiment = export_testing.tiny()  # On Cityscapes' 19 classes.
  config_file = root / 'config.textproto'
  config_file.write_text(text_format.MessageToString(experiment.options))
  module = export_lib.build_serving_module(experiment)
  prefix = tf.train.Checkpoint(model=module.model).write(str(root / 'ckpt'))
  return predict_lib.load_checkpoint(str(config_file), prefix)


def test_official_evaluation_matches_ours(model, tmp_path):
  dataset_root = str(tmp_path / 'cityscapes')
  label_ids = _mock_val_split(dataset_root)
  images = predict_lib.expand_images(
      [os.path.join(dataset_root, 'leftImg8bit', 'val', '*', '*.png')])
  results_dir = tmp_path / 'results'
  predict_lib.predict_files(model, images, str(results_dir),
                            predict_lib.LABEL_IDS,
                            overlay_dir=str(tmp_path / 'overlays'))
  train_id_dir = tmp_path / 'train_ids'
  predict_lib.predict_files(model, images, str(train_id_dir),
                            predict_lib.TRAIN_IDS)

  # Ours: one confusion matrix over the split, as the evaluator keeps it.
  matrix = metrics.ConfusionMatrix(dataset_info.CITYSCAPES.num_classes)
  for name, label in label_ids.items():
    labels = cityscapes.label_ids_to_train_ids(label, name)
    with Image.open(train_id_dir / f'{name}_leftImg8bit_trainIds.png') as png:
      predictions = np.asarray(png)
    matrix.update(labels[np.newaxis], predictions[np.newaxis])
  ours = metrics.metrics_from_confusion_matrix(matrix.result())
  # The random model must give the comparison something to compare.
  scored = [iou for iou in ours.per_class_iou if iou]
  assert len(scored) >= 2, ours.per_class_iou

  export_dir = tmp_path / 'export'
  export_dir.mkdir()
  environment = dict(os.environ, CITYSCAPES_DATASET=dataset_root,
                     CITYSCAPES_RESULTS=str(results_dir),
                     CITYSCAPES_EXPORT_DIR=str(export_dir))
  result = subprocess.run([sys.executable, '-m', _EVALUATOR],
                          env=environment, capture_output=True, text=True,
                          timeout=300, check=False)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  assert f'Evaluating {len(_IMAGES)} pairs of images' in result.stdout
  official = json.loads(
      (export_dir / 'resultPixelLevelSemanticLabeling.json').read_text())

  for name, iou in zip(dataset_info.CITYSCAPES.class_names,
                       ours.per_class_iou):
    theirs = official['classScores'][name]
    if iou is None:  # Neither in the labels nor predicted.
      assert np.isnan(theirs), name
    else:
      assert theirs == pytest.approx(iou, abs=1e-12), name
  assert official['averageScoreClasses'] == pytest.approx(ours.miou,
                                                          abs=1e-12)
  # The overlays went elsewhere: one prediction per image was found.
  assert sorted(os.listdir(tmp_path / 'overlays')) == sorted(
      f'{name}_leftImg8bit_superpixels.png' for name in label_ids)
