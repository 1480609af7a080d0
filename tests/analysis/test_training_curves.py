"""deeplab_sp.analysis.training_curves: the loss and mIoU curves as a PNG."""

import json

import numpy as np
from PIL import Image
import tensorflow as tf

from deeplab_sp.analysis import training_curves


def test_curves_from_summaries_and_history(tmp_path):
  writer = tf.summary.create_file_writer(str(tmp_path / 'train'))
  with writer.as_default():
    for step in (5, 10, 15):
      tf.summary.scalar('loss', 2.0 / step, step=step)
      tf.summary.scalar('learning_rate', 0.1, step=step)
  writer.close()
  history = [{'step': 10, 'miou': 0.2, 'wall_time': 1.0},
             {'step': 15, 'miou': None, 'wall_time': 2.0}]
  (tmp_path / 'eval_history.jsonl').write_text(
      ''.join(json.dumps(entry) + '\n' for entry in history))
  losses = training_curves.read_scalars(str(tmp_path / 'train'), 'loss')
  assert [step for step, _ in losses] == [5, 10, 15]
  np.testing.assert_allclose([value for _, value in losses],
                             [0.4, 0.2, 2 / 15], rtol=1e-6)
  path = training_curves.write_curves(str(tmp_path), 'test')
  assert path == str(tmp_path / training_curves.CURVES_FILENAME)
  with Image.open(path) as image:
    assert image.format == 'PNG' and image.size[0] > 300


def test_curves_without_data_still_draw(tmp_path):
  path = training_curves.write_curves(str(tmp_path))
  with open(path, 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
