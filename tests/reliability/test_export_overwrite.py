"""--overwrite never deletes or follows anything outside its own export."""

import os
import shutil

from google.protobuf import text_format
import pytest
import reliability_helpers as helpers
import tensorflow as tf

from deeplab_sp.export import export_lib
from deeplab_sp.export import version_dir


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
  """(config file, checkpoint prefix, a base dir holding version 1)."""
  root = tmp_path_factory.mktemp('exported')
  options = helpers.options(root / 'data')
  config = root / 'config.textproto'
  config.write_text(text_format.MessageToString(options))
  module = export_lib.build_serving_module(helpers.experiment(options), None)
  prefix = tf.train.Checkpoint(model=module.model).write(str(root / 'ckpt-1'))
  export_lib.export_saved_model(module, str(root / 'base'), version=1)
  return config, prefix, module, root / 'base'


def _victim(tmp_path):
  victim = tmp_path / 'victim'
  (victim / 'sub').mkdir(parents=True)
  (victim / 'precious.txt').write_text('user data')
  (victim / 'sub' / 'more.txt').write_text('more user data')
  return victim


def _export_cli(config, prefix, base, version=1):
  return helpers.run_tool([
      'tools/export_model.py', f'--config_file={config}',
      f'--checkpoint_path={prefix}', f'--output_path={base}',
      f'--version={version}', '--overwrite'])


def test_symlinked_version_dir_is_refused(exported, tmp_path):
  config, prefix, _, _ = exported
  victim = _victim(tmp_path)
  base = tmp_path / 'base'
  base.mkdir()
  os.symlink(victim, base / '1')
  before = helpers.snapshot(tmp_path)
  result = _export_cli(config, prefix, base)
  helpers.assert_one_line_error(result, 'export_model', str(base / '1'),
                                'symbolic link', str(victim))
  assert helpers.snapshot(tmp_path) == before


def test_version_dir_holding_a_symlink_is_refused(exported, tmp_path):
  _, _, module, source = exported
  victim = _victim(tmp_path)
  base = tmp_path / 'base'
  tf.io.gfile.makedirs(str(base))
  shutil.copytree(source / '1', base / '1')
  os.symlink(victim, base / '1' / 'variables' / 'link_to_victim')
  before = helpers.snapshot(tmp_path)
  with pytest.raises(version_dir.UnsafeOverwriteError,
                     match='symbolic links.*link_to_victim'):
    export_lib.export_saved_model(module, str(base), version=1,
                                  overwrite=True)
  assert helpers.snapshot(tmp_path) == before


def test_version_dir_that_is_not_an_export_is_refused(exported, tmp_path):
  _, _, module, _ = exported
  base = tmp_path / 'base'
  (base / '1').mkdir(parents=True)
  (base / '1' / 'notes.txt').write_text('mine')
  before = helpers.snapshot(tmp_path)
  with pytest.raises(version_dir.UnsafeOverwriteError,
                     match="not an export of this tool"):
    export_lib.export_saved_model(module, str(base), version=1,
                                  overwrite=True)
  assert helpers.snapshot(tmp_path) == before


def test_overwrite_replaces_our_own_export_only(exported, tmp_path):
  _, _, module, source = exported
  victim = _victim(tmp_path)
  base = tmp_path / 'base'
  tf.io.gfile.makedirs(str(base))
  shutil.copytree(source / '1', base / '1')
  os.symlink(victim, base / 'latest')  # Beside the versions: untouched.
  victim_before = helpers.snapshot(victim)
  export_lib.export_saved_model(module, str(base), version=1, overwrite=True)
  assert (base / '1' / 'saved_model.pb').exists()
  assert sorted(os.listdir(base)) == ['1', 'latest']  # No temporaries.
  assert helpers.snapshot(victim) == victim_before


def test_temporaries_of_killed_exports_are_removed(exported, tmp_path):
  _, _, module, _ = exported
  base = tmp_path / 'base'
  dead = helpers.dead_pid()
  # Half-written versions of a killed export, one a link to user data.
  stale = base / f'1.incomplete-{dead}-0123abcd'
  (stale / 'variables').mkdir(parents=True)
  (stale / 'saved_model.pb').write_bytes(b'half written')
  victim = _victim(tmp_path)
  stale_link = base / f'2.incomplete-{dead}-89abcdef'
  os.symlink(victim, stale_link)
  # An export still running (this test's parent process is alive), and a
  # directory whose name is not one of ours.
  running = base / f'1.incomplete-{os.getppid()}-0123abcd'
  running.mkdir()
  (running / 'saved_model.pb').write_bytes(b'being written')
  not_ours = base / f'notes.incomplete-{dead}-mine'
  not_ours.mkdir()
  kept = {name: helpers.snapshot(path) for name, path in
          (('victim', victim), ('running', running), ('not_ours', not_ours))}
  export_lib.export_saved_model(module, str(base), version=3)
  assert sorted(os.listdir(base)) == sorted(['3', running.name,
                                             not_ours.name])
  assert kept == {name: helpers.snapshot(path) for name, path in
                  (('victim', victim), ('running', running),
                   ('not_ours', not_ours))}
