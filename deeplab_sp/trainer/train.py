r"""Trains and/or evaluates an SP-Transformer experiment.

Usage (from the repository root):

  .venv/bin/python deeplab_sp/trainer/train.py \
      --config_file=configs/synthetic/sp_transformer_tiny.textproto \
      --mode=train_and_eval --model_dir=work_dirs/experiments

Outputs (checkpoints ckpt-<step>, TensorBoard summaries, eval_results.json)
go to <model_dir>/<experiment_name>/. Rerunning the same command resumes
from the latest checkpoint. Also runnable as
`python -m deeplab_sp.trainer.train`.

Exit codes: 0 done; 1 an error (one line `train: ...` on stderr); 75
stopped by SIGTERM (preemption) at a step boundary after saving a
checkpoint of that step: rerun to resume; 143 (killed by SIGTERM) a second
SIGTERM, or --sigterm_deadline_seconds passed, before that checkpoint.
"""

# First, before anything loads TensorFlow: hides its start-up log lines
# unless TF_CPP_MIN_LOG_LEVEL is set (deeplab_sp/utils/tf_startup.py).
from deeplab_sp.utils import tf_startup  # pylint: disable=g-bad-import-order,unused-import

import sys

from absl import app
from absl import flags
from absl import logging

from deeplab_sp import experiment as experiment_lib
from deeplab_sp.trainer import distribution
from deeplab_sp.trainer import preemption
from deeplab_sp.trainer import train_lib
from deeplab_sp.trainer import trainer as trainer_lib
from deeplab_sp.utils import cli

_CONFIG_FILE = flags.DEFINE_string(
    'config_file', None, 'Text ExperimentOptions (.textproto), local or '
    'gs://, e.g. configs/synthetic/sp_transformer_tiny.textproto.')
_MODE = flags.DEFINE_enum(
    'mode', 'train_and_eval', list(experiment_lib.MODES),
    'train: train only; eval: evaluate the latest checkpoint once; '
    'train_and_eval: train and evaluate every eval_interval_steps; '
    'continuous_eval: evaluate every new checkpoint until the last one.')
_MODEL_DIR = flags.DEFINE_string(
    'model_dir', None, 'Root output directory (local or gs://); the '
    'experiment writes to <model_dir>/<experiment_name>/.')
_NUM_GPUS = flags.DEFINE_integer(
    'num_gpus', 0, 'GPUs on this machine: 0 = CPU/TF default, 1 = one GPU, '
    '>1 = MirroredStrategy. Multi-worker jobs set TF_CONFIG instead.')
_MASTER = flags.DEFINE_string(
    'master', None, 'TPU name or grpc:// address for TPUStrategy '
    "('local' for a TPU VM). Empty: no TPU.")
_RESTORE_PREVIOUS = flags.DEFINE_bool(
    'restore_previous_checkpoint_on_error', False,
    'When the latest checkpoint of the experiment is damaged (truncated or '
    'corrupt files), resume from the newest intact older checkpoint; the '
    'damaged files are renamed to *.damaged. Without it, training stops '
    'with an error naming the damaged and the previous intact checkpoint.')
_CONFIG_OVERRIDE = cli.define_config_override(
    'The config that training records in TensorBoard (the `config` text) '
    'includes them.')
_SIGTERM_DEADLINE = flags.DEFINE_float(
    'sigterm_deadline_seconds', preemption.DEFAULT_DEADLINE_SECONDS,
    'On SIGTERM, training stops at the end of the running loop of '
    'steps_per_loop steps, saves a checkpoint and exits with code '
    f'{preemption.EXIT_CODE}; if that takes longer than this, the process '
    f'ends anyway (exit code {preemption.FORCED_EXIT_CODE}, no checkpoint '
    'of that step), as it does on a second SIGTERM.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  experiment = experiment_lib.load_experiment(_CONFIG_FILE.value,
                                              mode=_MODE.value,
                                              overrides=_CONFIG_OVERRIDE.value)
  logging.info('%s', experiment.summary())
  strategy = distribution.get_strategy(_NUM_GPUS.value, _MASTER.value)
  try:
    train_lib.run_experiment(
        experiment, _MODEL_DIR.value, strategy,
        restore_previous_checkpoint_on_error=_RESTORE_PREVIOUS.value,
        preemption_deadline_seconds=_SIGTERM_DEADLINE.value)
  except preemption.TrainingPreempted:
    return preemption.EXIT_CODE  # run_experiment logged it.


def run():
  """Entry point of `python deeplab_sp/trainer/train.py`, `python -m
  deeplab_sp.trainer.train` and the `deeplab_sp_train` console script."""
  # absl's --help describes the flags and docstring of the program in
  # sys.argv[0]; the console-script wrapper has neither, so lend it ours.
  main_module = sys.modules['__main__']
  if main_module.__doc__ is None:
    main_module.__doc__ = __doc__
  for flag in (_CONFIG_FILE, _MODE, _MODEL_DIR, _NUM_GPUS, _MASTER,
               _RESTORE_PREVIOUS, _CONFIG_OVERRIDE, _SIGTERM_DEADLINE):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0],
                                             flags.FLAGS[flag.name])
  flags.mark_flags_as_required(['config_file', 'model_dir'])
  app.run(cli.main_with_clear_errors(
      'train', main, extra_errors=(trainer_lib.NonFiniteLossError,)))


if __name__ == '__main__':
  run()
