r"""The main job: data, training, evaluation, export and predictions, end to end.

Runs the default experiment (configs/synthetic/sp_transformer_tiny.textproto)
on the generated dataset:

  1. builds the generated dataset (tools/build_synthetic_data.py),
  2. trains and evaluates (deeplab_sp/trainer/train.py --mode=train_and_eval),
  3. exports a SavedModel for TF Serving (tools/export_model.py),
  4. writes label-map (and, for the SP-Transformer, superpixel-overlay) PNGs
     for a few validation images
     (tools/predict.py),
  5. measures the colour-only floor on the same data
     (deeplab_sp.analysis.color_baseline),
and prints where each result is, ending with a plot of the training loss
and the validation mIoU by step (`<experiment>/training_curves.png`, from
the TensorBoard loss scalars and eval_history.jsonl). Every step reuses what
an earlier run left (records, checkpoints, the export), so a second run only
reports. Reuse is keyed on what made the outputs: the records on
--data_flags, the experiment directory on a hash of the job's config (kept
in it as main_job_config.sha256); outputs of another config or other flags
are refused with the directory to delete, never silently reused.

TensorFlow's start-up log lines are hidden in every step
(deeplab_sp/utils/tf_startup.py); --verbose shows them. A
TF_CPP_MIN_LOG_LEVEL set by the user always wins.

Usage (from the repository root, after `bash tools/setup.sh`):
  python tools/main_job.py [--config_file=F] [--work_dir=work_dirs]
The Quick start's `bash tools/main_job.sh` does the setup and runs this.
"""

# First, before anything loads TensorFlow: hides its start-up log lines
# unless TF_CPP_MIN_LOG_LEVEL is set (deeplab_sp/utils/tf_startup.py).
from deeplab_sp.utils import tf_startup  # pylint: disable=g-bad-import-order,unused-import

import hashlib
import json
import pathlib
import subprocess
import sys
import time

from absl import app
from absl import flags
from google.protobuf import text_format

from deeplab_sp import experiment as experiment_lib
from deeplab_sp.analysis import color_baseline
from deeplab_sp.analysis import training_curves
from deeplab_sp.data import tfrecord_format
from deeplab_sp.utils import cli
from deeplab_sp.utils import io

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent

_CONFIG_FILE = flags.DEFINE_string(
    'config_file',
    str(REPO_ROOT / 'configs/synthetic/sp_transformer_tiny.textproto'),
    'Experiment config. Its dataset file patterns must point into '
    '--work_dir/data/synthetic (the default config does).')
_WORK_DIR = flags.DEFINE_string(
    'work_dir', 'work_dirs',
    'Where the data, the experiment, the export and the predictions go.')
_NUM_PREDICTIONS = flags.DEFINE_integer(
    'num_predictions', 4, 'Validation images to write predictions for.')
_TRAINING_STEPS = flags.DEFINE_integer(
    'training_steps', 0,
    'Override trainer_options.training_number_of_steps (0: the config\'s). '
    'For quick checks. A warm-up that would not fit is shortened in '
    'proportion.')
_VERBOSE = flags.DEFINE_bool(
    'verbose', False,
    "Show TensorFlow's start-up log lines in the steps (hidden by default).")
_DATA_FLAGS = flags.DEFINE_list(
    'data_flags', [],
    'Extra flags for tools/build_synthetic_data.py, e.g. '
    '--data_flags=--num_train=16,--num_val=8 (for quick checks).')


def _step(title):
  print(f'\n== {title}', flush=True)


# Beside the outputs they key: the config hash in the experiment directory,
# the builder's flags in the data directory.
CONFIG_KEY_FILENAME = 'main_job_config.sha256'
DATA_KEY_FILENAME = 'main_job_data_flags.json'


class ReuseError(RuntimeError):
  """Outputs in the work dir were made by another config or other flags."""


def _claim(directory, key_name, key, what):
  """Reuses `directory` only for `key`; marks an empty one with it.

  Raises:
    ReuseError: the directory holds outputs without this key (another config
      or other flags, or a run made outside the main job).
  """
  key_path = directory / key_name
  if key_path.exists():
    if key_path.read_text() == key:
      return
    state = f'were made with another {what}'
  elif directory.exists() and any(directory.iterdir()):
    state = f'have no record of their {what} ({key_name})'
  else:
    directory.mkdir(parents=True, exist_ok=True)
    io.write_atomically(str(key_path), key)
    return
  raise ReuseError(
      f'the outputs in {directory} {state}, so they cannot be reused: '
      'delete that directory or choose another --work_dir.')


class StepFailedError(RuntimeError):
  """A step's command failed; it printed its own message."""


def _run(args, **kwargs):
  """Runs a command of this repository with the current interpreter."""
  command = [sys.executable] + [str(a) for a in args]
  print('$ ' + ' '.join(command[1:]), flush=True)
  status = subprocess.run(
      command, check=False, cwd=REPO_ROOT,
      env=tf_startup.child_environment(_VERBOSE.value), **kwargs).returncode
  if status:
    raise StepFailedError(
        f'`{" ".join(command[1:])}` failed with exit code {status}; its '
        'message is above. Fix it and rerun: the finished steps are reused.')


def _experiment_config(work_dir, data_dir):
  """Returns (config path, Experiment) of the experiment this job runs.

  The config's dataset file patterns are pointed at `data_dir` (so any
  --work_dir works) and --training_steps applied; the result is written to
  `work_dir/main_job_config.textproto`, the config every step uses.
  """
  options = experiment_lib.load_experiment(_CONFIG_FILE.value).copy_options()
  for field in ('train_dataset_options', 'eval_dataset_options'):
    name = getattr(options, field).dataset
    if name != 'synthetic':
      raise experiment_lib.ConfigError(
          f'{_CONFIG_FILE.value}: {field}.dataset is {name!r}; the main job '
          'builds and uses the generated dataset, so it runs configs on '
          "dataset 'synthetic' only. Train other datasets with "
          'deeplab_sp/trainer/train.py.')
  for dataset, split in ((options.train_dataset_options, 'train'),
                         (options.eval_dataset_options, 'val')):
    del dataset.file_pattern[:]
    dataset.file_pattern.append(str(data_dir / f'{split}-*.tfrecord'))
  if _TRAINING_STEPS.value:
    experiment_lib.set_training_steps(options.trainer_options,
                                      _TRAINING_STEPS.value)
  path = work_dir / 'main_job_config.textproto'
  # Validated again with the job's data and steps, as every step will read it.
  experiment = experiment_lib.experiment_from_options(options,
                                                      _CONFIG_FILE.value)
  text = (f'# Written by tools/main_job.py from {_CONFIG_FILE.value}.\n' +
          text_format.MessageToString(options))
  if not path.exists() or path.read_text() != text:
    io.write_atomically(str(path), text)
  return str(path), experiment, hashlib.sha256(
      text_format.MessageToString(options).encode()).hexdigest()


def _build_data(data_dir):
  _step('1/5 Generated dataset')
  _claim(data_dir, DATA_KEY_FILENAME, json.dumps(_DATA_FLAGS.value),
         '--data_flags')
  if list(data_dir.glob('train-*.tfrecord')) and list(
      data_dir.glob('val-*.tfrecord')):
    print(f'reusing the records in {data_dir}')
    return
  _run(['tools/build_synthetic_data.py', f'--output_dir={data_dir}'] +
       _DATA_FLAGS.value)


def _train_and_evaluate(config_path, config_key, model_dir, results_path,
                        steps):
  _step('2/5 Training and evaluation')
  _claim(results_path.parent, CONFIG_KEY_FILENAME, config_key, 'config')
  if results_path.exists():
    results = json.loads(results_path.read_text())
    if results.get('step', 0) >= steps:
      print(f'reusing the evaluation of step {results["step"]} in '
            f'{results_path}')
      return
  _run(['deeplab_sp/trainer/train.py', f'--config_file={config_path}',
        '--mode=train_and_eval', f'--model_dir={model_dir}'])


def _export(config_path, experiment_dir, export_dir):
  _step('3/5 SavedModel export')
  version_dir = export_dir / '1'
  results_path = experiment_dir / 'eval_results.json'
  if version_dir.exists() and (
      version_dir.stat().st_mtime >= results_path.stat().st_mtime):
    print(f'reusing the export in {version_dir}')
    return version_dir
  _run(['tools/export_model.py', f'--config_file={config_path}',
        f'--checkpoint_path={experiment_dir}', f'--output_path={export_dir}',
        '--version=1', '--overwrite'])
  return version_dir


def _validation_images(data_dir, image_dir, count):
  """Writes the first `count` validation images as PNG files."""
  existing = sorted(image_dir.glob('*.png'))
  if len(existing) >= count:
    return existing[:count]
  return tfrecord_format.write_images_from_records(
      str(data_dir / 'val-*.tfrecord'), str(image_dir), count)


def _predict(saved_model_dir, images, output_dir):
  """Label maps into output_dir/labels, overlays into output_dir/superpixels."""
  _step('4/5 Predictions')
  _run(['tools/predict.py', f'--saved_model={saved_model_dir}',
        '--images=' + ','.join(str(p) for p in images),
        f'--output_dir={output_dir / "labels"}',
        f'--overlay_dir={output_dir / "superpixels"}'])
  return sorted(output_dir.glob('*/*.png'))


def _color_baseline(data_dir, result_path, dataset):
  """The colour-only floor (deeplab_sp.analysis.color_baseline), cached."""
  _step('5/5 Colour-only floor')
  if result_path.exists():
    print(f'reusing {result_path}')
    return json.loads(result_path.read_text())
  print('per-pixel colour -> most frequent training class, on the same data')
  result = color_baseline.evaluate_color_baseline(
      str(data_dir / 'train-*.tfrecord'), str(data_dir / 'val-*.tfrecord'),
      dataset, color_baseline.DEFAULT_BINS_PER_CHANNEL)
  io.write_atomically(str(result_path), json.dumps(result, indent=2))
  return result


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  start = time.time()
  work_dir = pathlib.Path(_WORK_DIR.value).resolve()
  work_dir.mkdir(parents=True, exist_ok=True)
  data_dir = work_dir / 'data' / 'synthetic'
  config_path, experiment, config_key = _experiment_config(work_dir,
                                                           data_dir)
  model_dir = work_dir / 'experiments'
  experiment_dir = model_dir / experiment.name
  export_dir = work_dir / 'export' / experiment.name
  prediction_dir = work_dir / 'predictions' / experiment.name

  _build_data(data_dir)
  results_path = experiment_dir / 'eval_results.json'
  _train_and_evaluate(config_path, config_key, model_dir, results_path,
                      experiment.options.trainer_options
                      .training_number_of_steps)
  saved_model_dir = _export(config_path, experiment_dir, export_dir)
  images = _validation_images(data_dir, data_dir / 'val_images',
                              _NUM_PREDICTIONS.value)
  pngs = _predict(saved_model_dir, images, prediction_dir)
  baseline = _color_baseline(data_dir, work_dir / 'color_baseline.json',
                             experiment.eval_dataset.name)

  results = json.loads(results_path.read_text())
  curves = training_curves.write_curves(str(experiment_dir), experiment.name)
  print('\n== Results')
  print(f'mIoU of {experiment.name} at step {results["step"]}: '
        f'{results["miou"]:.4f} (pixel accuracy '
        f'{results["pixel_accuracy"]:.4f})')
  for name, iou in results['per_class_iou'].items():
    print(f'  {name:>12s}: ' + ('absent' if iou is None else f'{iou:.4f}'))
  print(f'colour-only floor (best per-pixel colour lookup): mIoU '
        f'{baseline["miou"]:.4f}')
  print(f'\ndata:         {data_dir}')
  print(f'checkpoints:  {experiment_dir}  (tensorboard --logdir={model_dir})')
  print(f'eval results: {experiment_dir / "eval_results.json"}')
  print(f'SavedModel:   {saved_model_dir}')
  print(f'predictions:  {prediction_dir}  ({len(pngs)} PNGs)')
  print(f'curves:       {curves}  (loss and mIoU by step)')
  print(f'done in {time.time() - start:.0f} s')
  return 0


if __name__ == '__main__':
  app.run(cli.main_with_clear_errors(
      'main_job', main, extra_errors=(StepFailedError, ReuseError)))
