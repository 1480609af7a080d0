"""The main job (tools/main_job.py), shortened: few steps, tiny images.

The same path as the Quick start's first command: generated data, training
and evaluation, SavedModel export, prediction PNGs, the colour-only floor;
then a second run that reuses everything.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
EXPERIMENT = 'synthetic_sp_transformer_tiny'


DATA_FLAGS = '--data_flags=--num_train=16,--num_val=5,--height=64,--width=96'


def _start_main_job(work_dir, *flags):
  """Runs the job as a user would (no TF_CPP_MIN_LOG_LEVEL)."""
  environment = {key: value for key, value in os.environ.items()
                 if key != 'TF_CPP_MIN_LOG_LEVEL'}
  return subprocess.run(
      [sys.executable, str(REPO_ROOT / 'tools/main_job.py'),
       f'--work_dir={work_dir}', '--num_predictions=2', *flags],
      capture_output=True, text=True, cwd=REPO_ROOT, env=environment,
      timeout=900, check=False)


def _run_main_job(work_dir, steps=3):
  """Runs the job to its end; its stdout."""
  result = _start_main_job(work_dir, f'--training_steps={steps}', DATA_FLAGS)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  # No step shows the cuInit error of a machine without a GPU, and each
  # log line is printed once (TensorFlow's logger has no handler of its own).
  assert 'failed call to cuInit' not in result.stderr, result.stderr[-3000:]
  assert 'INFO:tensorflow:' not in result.stderr, result.stderr[-3000:]
  return result.stdout


@pytest.mark.slow
def test_main_job_end_to_end_and_rerun(tmp_path):
  work_dir = tmp_path / 'work'
  output = _run_main_job(work_dir)

  experiment_dir = work_dir / 'experiments' / EXPERIMENT
  results = json.loads((experiment_dir / 'eval_results.json').read_text())
  assert results['step'] == 3
  assert results['num_images'] == 5
  assert 0.0 <= results['miou'] <= 1.0
  # The printed mIoU is the one in eval_results.json.
  assert f'at step 3: {results["miou"]:.4f}' in output
  baseline = json.loads((work_dir / 'color_baseline.json').read_text())
  assert f'mIoU {baseline["miou"]:.4f}' in output

  version_dir = work_dir / 'export' / EXPERIMENT / '1'
  assert (version_dir / 'saved_model.pb').exists()

  prediction_dir = work_dir / 'predictions' / EXPERIMENT
  labels = sorted((prediction_dir / 'labels').glob('*_color.png'))
  overlays = sorted((prediction_dir / 'superpixels').glob('*_superpixels.png'))
  assert len(labels) == 2 and len(overlays) == 2
  for path in labels + overlays:
    image = np.asarray(Image.open(path))
    # At the validation image's own size.
    assert image.shape[:2] == (64, 96), path
  # The curves of the loss and the mIoU, from the history of evaluations.
  curves = experiment_dir / 'training_curves.png'
  assert f'curves:       {curves}' in output
  with Image.open(curves) as image:
    assert image.format == 'PNG'
  history = (experiment_dir / 'eval_history.jsonl').read_text().splitlines()
  assert [json.loads(line)['step'] for line in history] == [3]
  # orbit's lines are in the log (stderr) only, not printed again.
  assert 'training until step 3' not in output
  # The config the job ran reads the records of its own work_dir.
  config_text = (work_dir / 'main_job_config.textproto').read_text()
  assert str(work_dir / 'data' / 'synthetic' / 'train-*.tfrecord') in (
      config_text)

  # A second run reuses the data, the training, the export and the floor.
  saved_model_time = (version_dir / 'saved_model.pb').stat().st_mtime
  rerun = _run_main_job(work_dir)
  assert 'reusing the records' in rerun
  assert 'reusing the evaluation of step 3' in rerun
  assert 'reusing the export' in rerun
  assert 'reusing' in rerun.split('5/5')[1]
  assert (version_dir / 'saved_model.pb').stat().st_mtime == saved_model_time

  # Another config under the same experiment name is refused, not reused.
  changed = _start_main_job(work_dir, '--training_steps=4', DATA_FLAGS)
  assert changed.returncode == 1
  assert (f'{experiment_dir} were made with another config' in
          changed.stderr), changed.stderr[-3000:]
  assert 'Traceback' not in changed.stderr
  assert json.loads((experiment_dir / 'eval_results.json').read_text()) == (
      results)


def test_records_of_other_data_flags_are_refused(tmp_path):
  work_dir = tmp_path / 'work'
  data_dir = work_dir / 'data' / 'synthetic'
  data_dir.mkdir(parents=True)
  (data_dir / 'train-00000-of-00001.tfrecord').write_bytes(b'')
  (data_dir / 'main_job_data_flags.json').write_text('["--num_train=8"]')
  result = _start_main_job(work_dir, DATA_FLAGS)
  assert result.returncode == 1
  assert f'{data_dir} were made with another --data_flags' in result.stderr
  assert 'Traceback' not in result.stderr
  assert not (work_dir / 'experiments').exists()


@pytest.mark.parametrize('config_file,expected', [
    ('configs/cityscapes/sp_transformer_r50.textproto',
     "dataset 'synthetic' only"),
    ('configs/missing.textproto', 'does not exist'),
])
def test_bad_config_is_a_clear_error_before_any_work(tmp_path, config_file,
                                                     expected):
  work_dir = tmp_path / 'work'
  result = subprocess.run(
      [sys.executable, str(REPO_ROOT / 'tools/main_job.py'),
       f'--work_dir={work_dir}', f'--config_file={config_file}'],
      capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
      check=False)
  assert result.returncode == 1
  assert expected in result.stderr
  assert 'Traceback' not in result.stderr
  assert not (work_dir / 'data').exists()
