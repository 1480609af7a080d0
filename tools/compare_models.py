r"""Compares the SP-Transformer with the per-pixel baselines in one table.

For each model (a config on a trainable dataset and, for the cost, one at
the Cityscapes geometry with ResNet-50, paired by position; see
deeplab_sp/analysis/compare_models.py):

  accuracy  trains the config once per --seeds, and once per seed for each
            --variants NAME:FRAGMENT (an ablation: a text-format
            ExperimentOptions fragment on top of every config whose network
            reads the model_options it sets; the config itself is the
            variant 'base'), with deeplab_sp/trainer/train.py
            (--mode=train_and_eval). Each run,
            <experiment_name>_<variant>_seed<N>, is reused when it evaluated
            its last step with an identical config (an interrupted one
            resumes; a directory of another config is refused). Reads each
            run's val mIoU, mean class accuracy, the IoU of --thin_classes,
            the superpixel metrics (SP-Transformer) and its training wall
            time;
  cost      counts parameters and multiply-adds of the Cityscapes configs
            and times every model's encoder and whole model round-robin
            together (several GB of memory; minutes on a CPU). Only this
            stage pairs --cost_configs with --accuracy_configs.

Writes <work_dir>/accuracy.json and <work_dir>/cost.json (each stage
rewrites its own) and prints the table from both, a row per (model,
variant) with the mean ± sample std over the seeds and each seed's value,
with <work_dir>/comparison.md beside them.

Usage (from the repository root; the generated dataset first):
  .venv/bin/python tools/build_synthetic_data.py \
      --output_dir=work_dirs/data/synthetic
  .venv/bin/python tools/compare_models.py  # [--seeds=1,2] [--stages=cost]

The defaults compare the three shipped networks:
  --accuracy_configs=configs/synthetic/{sp_transformer,
      hypercolumn_pixel_classifier,deeplabv3plus}_tiny.textproto
  --cost_configs=configs/cityscapes/{sp_transformer,
      hypercolumn_pixel_classifier,deeplabv3plus}_r50.textproto

An ablation on CamVid (records built as in docs/datasets.md, "Your own data"):
  .venv/bin/python tools/compare_models.py --stages=accuracy --seeds=1,2 \
      --accuracy_configs=configs/camvid/sp_transformer_tiny.textproto,\
configs/camvid/hypercolumn_pixel_classifier_tiny.textproto \
      --variants='per_superpixel:model_options { superpixel_association {
          upsampling: PER_SUPERPIXEL } }' \
      --thin_classes=pole,fence,sign_symbol --work_dir=work_dirs/camvid_study
"""

# First, before anything loads TensorFlow: hides its start-up log lines
# unless TF_CPP_MIN_LOG_LEVEL is set (deeplab_sp/utils/tf_startup.py).
from deeplab_sp.utils import tf_startup  # pylint: disable=g-bad-import-order,unused-import

import json
import os
import subprocess
import sys

from absl import app
from absl import flags

from deeplab_sp.analysis import compare_models
from deeplab_sp.utils import cli
from deeplab_sp.utils import io

_ACCURACY_CONFIGS = flags.DEFINE_list(
    'accuracy_configs', list(compare_models.DEFAULT_ACCURACY_CONFIGS),
    'Configs to train, one per model, on any dataset (default: the '
    'generated one; e.g. configs/camvid/*_tiny.textproto).')
_COST_CONFIGS = flags.DEFINE_list(
    'cost_configs', list(compare_models.DEFAULT_COST_CONFIGS),
    'Configs at the Cityscapes geometry, one per model, in the order of '
    '--accuracy_configs. Read by the cost stage only.')
_VARIANTS = flags.DEFINE_multi_string(
    'variants', [],
    'Repeatable NAME:FRAGMENT: an ablation trained beside the configs as '
    'they are (the variant "base"), the text-format ExperimentOptions '
    'FRAGMENT applied on top of each config (repeated fields replaced '
    'whole), e.g. "per_superpixel:model_options { superpixel_association { '
    'upsampling: PER_SUPERPIXEL } }". Configs whose network does not read a '
    'model_options message it sets are skipped for it.')
_THIN_CLASSES = flags.DEFINE_list(
    'thin_classes', [],
    'Class names (of the evaluated dataset) whose val IoU gets a column, '
    'e.g. pole,fence,sign_symbol on CamVid.')
_SEEDS = flags.DEFINE_list(
    'seeds', [str(s) for s in compare_models.DEFAULT_SEEDS],
    'Training seeds (trainer_options.random_seed), positive integers; the '
    'mIoU spread is over them.')
_STAGES = flags.DEFINE_list(
    'stages', ['accuracy', 'cost'],
    'What to run: accuracy (train and read the mIoU), cost (parameters, '
    'multiply-adds, latency). The table shows what the work dir holds. '
    '--stages=accuracy needs no --cost_configs.')
_WORK_DIR = flags.DEFINE_string(
    'work_dir', 'work_dirs/compare_models',
    'Where the seeds\' configs, the experiments and the results go.')
_TRAINING_STEPS = flags.DEFINE_integer(
    'training_steps', 0,
    "Override the configs' training_number_of_steps (0: the configs'). For "
    'quick checks; the table says how many steps were run.')
_NUM_RUNS = flags.DEFINE_integer('num_runs', 5,
                                 'Timed round-robin rounds (the median is '
                                 'reported).')
_NUM_WARMUP = flags.DEFINE_integer('num_warmup', 1,
                                   'Untimed rounds first (at least 1).')
_XLA = flags.DEFINE_bool(
    'xla', False, 'Time the models compiled by XLA (jit_compile=True) '
    'instead of plain tf.function.')
_VERBOSE = flags.DEFINE_bool(
    'verbose', False, "Show TensorFlow's start-up log lines of the training "
    'runs.')

_STAGE_NAMES = ('accuracy', 'cost')


def _read_json(path):
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _train(config_path, model_dir):
  """Trains and evaluates one run's experiment with the trainer tool."""
  command = [sys.executable, 'deeplab_sp/trainer/train.py',
             f'--config_file={config_path}', '--mode=train_and_eval',
             f'--model_dir={model_dir}']
  print('$ ' + ' '.join(command[1:]), flush=True)
  status = subprocess.run(
      command, check=False,
      env=tf_startup.child_environment(_VERBOSE.value)).returncode
  if status:
    raise RuntimeError(
        f'Training {config_path} failed (exit code {status}); its message '
        'is above. Fix it and rerun: finished runs are reused and this one '
        'resumes.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  unknown = [s for s in _STAGES.value if s not in _STAGE_NAMES]
  if unknown:
    raise ValueError(f'Unknown --stages {unknown}; use {",".join(_STAGE_NAMES)}'
                     ' (or one of them).')
  try:
    seeds = [int(s) for s in _SEEDS.value]
  except ValueError:
    raise ValueError(f'--seeds must be integers, got {_SEEDS.value}.') from None
  if not seeds or len(set(seeds)) != len(seeds):
    raise ValueError(f'--seeds must list distinct seeds, got {_SEEDS.value}.')
  variants = compare_models.parse_variants(_VARIANTS.value)
  # Only the cost stage pairs the configs: a study of the accuracy alone
  # may train on any dataset, a network more than once.
  pairs = compare_models.model_pairs(
      _ACCURACY_CONFIGS.value,
      _COST_CONFIGS.value if 'cost' in _STAGES.value else None)
  work_dir = _WORK_DIR.value
  os.makedirs(work_dir, exist_ok=True)
  accuracy_path = os.path.join(work_dir, 'accuracy.json')
  cost_path = os.path.join(work_dir, 'cost.json')
  if 'accuracy' in _STAGES.value:
    accuracy = compare_models.run_accuracy(
        pairs, seeds, work_dir, _train, _TRAINING_STEPS.value,
        log=lambda line: print(line, flush=True), variants=variants,
        thin_classes=_THIN_CLASSES.value)
    io.write_atomically(accuracy_path, json.dumps(accuracy, indent=2))
  if 'cost' in _STAGES.value:
    print('\n== Cost at the Cityscapes geometry', flush=True)
    costs = compare_models.measure_costs(
        pairs, _NUM_WARMUP.value, _NUM_RUNS.value, _XLA.value,
        progress=lambda line: print(line, flush=True))
    io.write_atomically(cost_path, json.dumps(costs, indent=2))
  table = compare_models.format_table(pairs, _read_json(accuracy_path),
                                      _read_json(cost_path))
  io.write_atomically(os.path.join(work_dir, 'comparison.md'), table + '\n')
  print('\n' + table)
  return 0


if __name__ == '__main__':
  app.run(cli.main_with_clear_errors('compare_models', main,
                                     extra_errors=(RuntimeError,)))
