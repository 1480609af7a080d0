"""checkpoints.restore_model: a model's weights from a checkpoint path.

The trainer's own checkpoint handling (damage, fallback, lost lists) is
tested end to end in tests/reliability/test_checkpoints.py.
"""

import os

import numpy as np
import pytest
import tensorflow as tf

from deeplab_sp.trainer import checkpoints


class _Model(tf.Module):

  def __init__(self, value=0.0, name='kernel'):
    super().__init__()
    setattr(self, name, tf.Variable(tf.fill([4, 3], value)))


@pytest.fixture(name='run')
def fixture_run(tmp_path):
  """A directory with ckpt-1 (values 1) and ckpt-2 (values 2), as the
  trainer writes them."""
  model = _Model()
  manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model),
                                       str(tmp_path), max_to_keep=5)
  for step in (1, 2):
    model.kernel.assign(tf.fill([4, 3], float(step)))
    manager.save(checkpoint_number=step)
  return str(tmp_path)


def test_a_directory_gives_its_newest_checkpoint(run):
  model = _Model()
  assert checkpoints.restore_model(model, run) == os.path.join(run, 'ckpt-2')
  np.testing.assert_array_equal(model.kernel.numpy(), 2.0)


def test_a_prefix_gives_that_checkpoint(run):
  model = _Model()
  prefix = os.path.join(run, 'ckpt-1')
  assert checkpoints.restore_model(model, prefix) == prefix
  np.testing.assert_array_equal(model.kernel.numpy(), 1.0)


def test_a_bare_prefix_in_the_working_directory(run, monkeypatch):
  monkeypatch.chdir(run)
  assert checkpoints.missing_files('ckpt-1') == []
  model = _Model()
  assert checkpoints.restore_model(model, 'ckpt-1') == 'ckpt-1'
  np.testing.assert_array_equal(model.kernel.numpy(), 1.0)


def test_a_lost_checkpoint_list_gives_the_newest_on_disk(run):
  os.remove(os.path.join(run, checkpoints.STATE_FILENAME))
  model = _Model()
  assert checkpoints.restore_model(model, run).endswith('ckpt-2')
  np.testing.assert_array_equal(model.kernel.numpy(), 2.0)


def test_no_model_only_finds_the_checkpoint(run):
  prefix = os.path.join(run, 'ckpt-2')
  os.remove(prefix + '.data-00000-of-00001')  # Not read.
  assert checkpoints.restore_model(None, run) == prefix


def test_missing_checkpoints_are_named_with_the_fix(tmp_path, run):
  empty = tmp_path / 'empty'
  empty.mkdir()
  with pytest.raises(FileNotFoundError,
                     match='No checkpoint in directory .*--checkpoint_path='):
    checkpoints.restore_model(_Model(), str(empty))
  with pytest.raises(FileNotFoundError, match='--weights=<model_dir>'):
    checkpoints.restore_model(_Model(), str(empty), flag='--weights')
  with pytest.raises(FileNotFoundError, match='no .*ckpt-7.index.*ckpt-1000'):
    checkpoints.restore_model(_Model(), os.path.join(run, 'ckpt-7'))
  index = os.path.join(run, 'ckpt-2.index')
  with pytest.raises(FileNotFoundError,
                     match=f'one file of a checkpoint; pass its prefix '
                     f'{os.path.join(run, "ckpt-2")} '):
    checkpoints.restore_model(_Model(), index)


def test_a_damaged_checkpoint_is_named_with_the_previous_intact_one(run):
  data = os.path.join(run, 'ckpt-2.data-00000-of-00001')
  with open(data, 'rb') as f:
    content = f.read()
  with open(data, 'wb') as f:
    f.write(content[:len(content) // 2])
  model = _Model()
  with pytest.raises(checkpoints.DamagedCheckpointError,
                     match=r'ckpt-2 is damaged.*ckpt-1 is intact'):
    checkpoints.restore_model(model, run)
  np.testing.assert_array_equal(model.kernel.numpy(), 0.0)


def test_a_checkpoint_of_another_model_is_an_error(run):
  with pytest.raises(AssertionError):
    checkpoints.restore_model(_Model(name='other'), run)
