"""Damaged checkpoints: named at restore, with a fallback to an older one."""

import logging
import os
import shutil

from google.protobuf import text_format
import pytest
import reliability_helpers as helpers
import tensorflow as tf

from deeplab_sp.export import export_lib
from deeplab_sp.trainer import checkpoints
from deeplab_sp.trainer import train_lib


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A finished 4-step tiny run with checkpoints ckpt-2 and ckpt-4."""
  root = tmp_path_factory.mktemp('trained')
  helpers.write_records(root / 'data', num_shards=1)
  options = helpers.options(root / 'data', steps=4)
  train_lib.run_experiment(
      helpers.experiment(options, 'train'), str(root / 'runs'))
  exp_dir = train_lib.experiment_dir(
      str(root / 'runs'), helpers.experiment(options))
  assert tf.train.latest_checkpoint(exp_dir).endswith('ckpt-4')
  return root, options, exp_dir


@pytest.fixture
def experiment(trained, tmp_path):
  """A private copy of the trained run: (options, model_dir, exp_dir)."""
  root, options, exp_dir = trained
  model_dir = tmp_path / 'runs'
  copy = train_lib.experiment_dir(str(model_dir), helpers.experiment(options))
  shutil.copytree(exp_dir, copy)
  # The checkpoint list holds absolute paths: point them at the copy.
  state = tf.train.get_checkpoint_state(copy)
  tf.compat.v1.train.update_checkpoint_state(
      copy, os.path.join(copy, os.path.basename(state.model_checkpoint_path)),
      all_model_checkpoint_paths=[
          os.path.join(copy, os.path.basename(p))
          for p in state.all_model_checkpoint_paths])
  return options, str(model_dir), copy


def _truncate(path):
  data = open(path, 'rb').read()
  open(path, 'wb').write(data[:len(data) // 2])


def _flip(path, offset):
  data = bytearray(open(path, 'rb').read())
  data[offset] ^= 0x10
  open(path, 'wb').write(bytes(data))


def _optimizer_slot_offset(prefix):
  """Offset in the .data file of the bytes of one optimizer slot value."""
  reader = tf.train.load_checkpoint(prefix)
  data = open(prefix + '.data-00000-of-00001', 'rb').read()
  for key in sorted(reader.get_variable_to_shape_map()):
    if 'OPTIMIZER_SLOT' not in key:
      continue
    value = reader.get_tensor(key).tobytes()
    if len(value) >= 64 and data.count(value) == 1:
      return data.index(value) + len(value) // 2
  raise AssertionError('no optimizer slot found')


DAMAGES = {
    'truncated_data': lambda p: _truncate(p + '.data-00000-of-00001'),
    # An Adam slot, which TensorFlow would only read at the first resumed
    # step.
    'bit_flip_optimizer_state': lambda p: _flip(
        p + '.data-00000-of-00001', _optimizer_slot_offset(p)),
    'bit_flip_data': lambda p: _flip(
        p + '.data-00000-of-00001',
        os.path.getsize(p + '.data-00000-of-00001') // 2),
    'truncated_index': lambda p: _truncate(p + '.index'),
    'bit_flip_index': lambda p: _flip(p + '.index', 40),
}


@pytest.mark.parametrize('damage', sorted(DAMAGES))
def test_damaged_latest_checkpoint_is_named_with_the_previous_one(
    experiment, damage):
  options, model_dir, exp_dir = experiment
  latest = os.path.join(exp_dir, 'ckpt-4')
  DAMAGES[damage](latest)
  before = helpers.snapshot(os.path.dirname(model_dir))
  with pytest.raises(checkpoints.DamagedCheckpointError) as error:
    train_lib.run_experiment(helpers.experiment(options, 'train'), model_dir)
  message = str(error.value)
  assert f'Checkpoint {latest} is damaged' in message
  assert 'written for another model' not in message
  assert os.path.join(exp_dir, 'ckpt-2') in message
  assert checkpoints.RESTORE_PREVIOUS_FLAG in message
  assert helpers.snapshot(os.path.dirname(model_dir)) == before


def test_export_of_a_damaged_checkpoint_is_named(experiment):
  options, _, exp_dir = experiment
  latest = os.path.join(exp_dir, 'ckpt-4')
  DAMAGES['bit_flip_optimizer_state'](latest)
  before = helpers.snapshot(exp_dir)
  with pytest.raises(checkpoints.DamagedCheckpointError,
                     match=f'Checkpoint {latest} is damaged.*ckpt-2'):
    export_lib.build_serving_module(helpers.experiment(options), exp_dir)
  assert helpers.snapshot(exp_dir) == before


def test_restore_previous_checkpoint_on_error_resumes_from_it(experiment,
                                                             caplog):
  options, model_dir, exp_dir = experiment
  latest = os.path.join(exp_dir, 'ckpt-4')
  DAMAGES['truncated_data'](latest)
  caplog.set_level(logging.INFO, logger='absl')
  train_lib.run_experiment(helpers.experiment(options, 'train'), model_dir,
                           restore_previous_checkpoint_on_error=True)
  assert f'resuming from the previous intact checkpoint {exp_dir}/ckpt-2' in (
      caplog.text)
  assert 'Resumed from' in caplog.text and 'ckpt-2 (step 2)' in caplog.text
  # Trained again to the end; the damaged files are kept aside.
  assert tf.train.latest_checkpoint(exp_dir) == latest
  checkpoints.verify_checkpoint(latest)
  assert os.path.exists(latest + '.data-00000-of-00001.damaged')
  assert os.path.exists(latest + '.index.damaged')


def test_no_intact_checkpoint_says_so(experiment):
  options, model_dir, exp_dir = experiment
  for step in (2, 4):
    DAMAGES['truncated_index'](os.path.join(exp_dir, f'ckpt-{step}'))
  with pytest.raises(checkpoints.DamagedCheckpointError,
                     match='No older intact checkpoint'):
    train_lib.run_experiment(helpers.experiment(options, 'train'), model_dir,
                             restore_previous_checkpoint_on_error=True)


def test_eval_of_a_damaged_checkpoint_is_named(experiment):
  options, model_dir, exp_dir = experiment
  latest = os.path.join(exp_dir, 'ckpt-4')
  DAMAGES['bit_flip_data'](latest)
  with pytest.raises(checkpoints.DamagedCheckpointError,
                     match=f'Checkpoint {latest} is damaged'):
    train_lib.run_experiment(helpers.experiment(options, 'eval'), model_dir)


def test_leftovers_of_a_killed_run_are_cleaned_after_the_lock(experiment):
  options, model_dir, exp_dir = experiment
  dead = helpers.dead_pid()
  leftovers = [os.path.join(exp_dir, 'ckpt-6_temp'),
               os.path.join(exp_dir, f'eval_results.json.incomplete-{dead}-'
                            '0123abcd')]
  os.makedirs(os.path.join(leftovers[0], 'part-00000-of-00001'))
  open(leftovers[1], 'w').close()
  # Not ours: kept.
  keep = [os.path.join(exp_dir, 'ckpt-6_temp_notes.txt'),
          os.path.join(exp_dir, 'my_temp')]
  open(keep[0], 'w').close()
  os.makedirs(keep[1])
  train_lib.run_experiment(
      helpers.experiment(options, 'train'), model_dir)  # Finished: no steps.
  for path in leftovers:
    assert not os.path.exists(path), path
  for path in keep:
    assert os.path.exists(path), path


def test_export_cli_prints_one_line_for_a_damaged_checkpoint(experiment,
                                                             tmp_path):
  options, _, exp_dir = experiment
  latest = os.path.join(exp_dir, 'ckpt-4')
  DAMAGES['truncated_index'](latest)
  config = tmp_path / 'config.textproto'
  config.write_text(text_format.MessageToString(options))
  before = helpers.snapshot(exp_dir)
  result = helpers.run_tool([
      'tools/export_model.py', f'--config_file={config}',
      f'--checkpoint_path={exp_dir}', f'--output_path={tmp_path / "out"}'])
  helpers.assert_one_line_error(result, 'export_model',
                                f'Checkpoint {latest} is damaged',
                                os.path.join(exp_dir, 'ckpt-2'))
  assert helpers.snapshot(exp_dir) == before
  assert not (tmp_path / 'out').exists()


def _step_of(prefix):
  reader = tf.train.load_checkpoint(prefix)
  keys = [k for k in reader.get_variable_to_shape_map()
          if k.startswith('optimizer/iter')]
  return int(reader.get_tensor(keys[0]))


def test_lost_checkpoint_list_resumes_from_the_newest_checkpoint(
    experiment, caplog):
  options, model_dir, exp_dir = experiment
  os.remove(os.path.join(exp_dir, checkpoints.STATE_FILENAME))
  before = helpers.snapshot(exp_dir)
  options.trainer_options.training_number_of_steps = 6
  caplog.set_level(logging.INFO, logger='absl')
  train_lib.run_experiment(helpers.experiment(options, 'train'), model_dir)
  assert (f'The checkpoint list {exp_dir}/checkpoint was missing; rebuilt it '
          'from the checkpoints on disk (ckpt-2, ckpt-4): resuming from '
          f'{exp_dir}/ckpt-4.') in caplog.text
  assert 'ckpt-4 (step 4)' in caplog.text
  # The run's checkpoints are kept as they were (not overwritten by a run
  # restarted at step 0); two more steps ran.
  after = helpers.snapshot(exp_dir)
  for name, digest in before.items():
    if name.startswith('ckpt-'):
      assert after[name] == digest, name
  assert _step_of(os.path.join(exp_dir, 'ckpt-6')) == 6
  assert tf.train.latest_checkpoint(exp_dir) == os.path.join(exp_dir,
                                                             'ckpt-6')


def test_eval_without_a_checkpoint_list_reads_the_newest_on_disk(experiment):
  options, model_dir, exp_dir = experiment
  os.remove(os.path.join(exp_dir, checkpoints.STATE_FILENAME))
  before = helpers.snapshot(exp_dir)
  results = train_lib.run_experiment(helpers.experiment(options, 'eval'),
                                     model_dir)
  assert results['step'] == 4
  assert not os.path.exists(os.path.join(exp_dir,
                                         checkpoints.STATE_FILENAME))
  assert all(helpers.snapshot(exp_dir)[name] == digest
             for name, digest in before.items() if name.startswith('ckpt-'))


def test_missing_index_is_named_with_the_previous_checkpoint(experiment):
  options, model_dir, exp_dir = experiment
  latest = os.path.join(exp_dir, 'ckpt-4')
  os.remove(latest + '.index')
  before = helpers.snapshot(os.path.dirname(model_dir))
  for mode in ('train', 'eval'):
    with pytest.raises(checkpoints.DamagedCheckpointError) as error:
      train_lib.run_experiment(helpers.experiment(options, mode), model_dir)
    message = str(error.value)
    assert (f'Checkpoint {latest} is damaged: {latest}.index is missing '
            f'({latest}.data-00000-of-00001 is there') in message
    assert f'previous checkpoint {exp_dir}/ckpt-2 is intact' in message
    assert 'written for another model' not in message
  assert helpers.snapshot(os.path.dirname(model_dir)) == before


def test_missing_index_with_the_flag_resumes_from_the_previous(experiment,
                                                              caplog):
  options, model_dir, exp_dir = experiment
  latest = os.path.join(exp_dir, 'ckpt-4')
  os.remove(latest + '.index')
  caplog.set_level(logging.INFO, logger='absl')
  train_lib.run_experiment(helpers.experiment(options, 'train'), model_dir,
                           restore_previous_checkpoint_on_error=True)
  assert 'ckpt-2 (step 2)' in caplog.text
  assert _step_of(latest) == 4
  assert os.path.exists(latest + '.data-00000-of-00001.damaged')


def test_lost_list_and_incomplete_newest_checkpoint_is_named(experiment):
  options, model_dir, exp_dir = experiment
  os.remove(os.path.join(exp_dir, checkpoints.STATE_FILENAME))
  os.remove(os.path.join(exp_dir, 'ckpt-4.index'))
  with pytest.raises(checkpoints.DamagedCheckpointError,
                     match=f'{exp_dir}/ckpt-4.index is missing.*previous '
                     f'checkpoint {exp_dir}/ckpt-2 is intact'):
    train_lib.run_experiment(helpers.experiment(options, 'train'), model_dir)
  assert os.path.exists(os.path.join(exp_dir, 'ckpt-2.index'))


@pytest.mark.slow
@pytest.mark.parametrize('when', ['before_verify', 'before_restore'])
def test_continuous_eval_skips_a_checkpoint_rotated_away(experiment,
                                                        monkeypatch, caplog,
                                                        tmp_path, when):
  """The trainer (num_checkpoints_to_keep: 1) deletes the checkpoint the
  evaluator picked and writes the next one."""
  options, model_dir, exp_dir = experiment
  old, new = (os.path.join(exp_dir, f'ckpt-{step}') for step in (2, 4))
  # The evaluator starts while ckpt-2 is the only checkpoint.
  aside = tmp_path / 'aside'
  aside.mkdir()
  for path in checkpoints.checkpoint_files(new):
    shutil.move(path, aside / os.path.basename(path))
  tf.compat.v1.train.update_checkpoint_state(
      exp_dir, old, all_model_checkpoint_paths=[old])

  def trainer_rotates():
    for path in aside.iterdir():
      shutil.move(str(path), os.path.join(exp_dir, path.name))
    tf.compat.v1.train.update_checkpoint_state(
        exp_dir, new, all_model_checkpoint_paths=[new])
    for path in checkpoints.checkpoint_files(old):
      os.remove(path)

  verify = checkpoints.verify_or_explain
  calls = []

  def verify_while_rotating(path, flag=None):
    calls.append(path)
    if path == old and when == 'before_verify':
      trainer_rotates()
    verify(path, flag)
    if path == old and when == 'before_restore':
      trainer_rotates()

  monkeypatch.setattr(checkpoints, 'verify_or_explain', verify_while_rotating)
  options.evaluator_options.continuous_eval_timeout_seconds = 60
  caplog.set_level(logging.INFO, logger='absl')
  results = train_lib.run_experiment(
      helpers.experiment(options, 'continuous_eval'), model_dir)
  assert calls == [old, new]
  assert results['step'] == 4
  assert (f'Skipping {old}: the trainer deleted it (rotation, '
          'trainer_options.num_checkpoints_to_keep)') in caplog.text


def test_continuous_eval_still_refuses_a_damaged_listed_checkpoint(
    experiment):
  options, model_dir, exp_dir = experiment
  latest = os.path.join(exp_dir, 'ckpt-4')
  os.remove(latest + '.data-00000-of-00001')
  options.evaluator_options.continuous_eval_timeout_seconds = 10
  with pytest.raises(checkpoints.DamagedCheckpointError,
                     match=f'{latest}.data-00000-of-00001 is missing'):
    train_lib.run_experiment(
        helpers.experiment(options, 'continuous_eval'), model_dir)
