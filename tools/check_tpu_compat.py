r"""Checks that one training step of a config compiles with XLA, as on a TPU.

Usage:
  python tools/check_tpu_compat.py \
      --config_file=configs/cityscapes/sp_transformer_r50.textproto \
      [--batch=1] [--precision=bfloat16] [--format=text|json]

Compiles the trainer's whole step (forward pass, top-k loss, gradients, both
optimizers' updates, the loss metric) with jit_compile=True on this machine
at the config's training crop size, and prints the trace and compile times
and the compiled program's memory (XLA's buffer assignment). Exits with
status 1, XLA's reason and the failing op when the step does not compile.
See deeplab_sp/trainer/tpu_compat.py for what this does and does not check.
"""

# First, before anything loads TensorFlow: hides its start-up log lines
# unless TF_CPP_MIN_LOG_LEVEL is set (deeplab_sp/utils/tf_startup.py).
from deeplab_sp.utils import tf_startup  # pylint: disable=g-bad-import-order,unused-import

import json

from absl import app
from absl import flags

from deeplab_sp import experiment as experiment_lib
from deeplab_sp.trainer import tpu_compat
from deeplab_sp.utils import cli

_CONFIG_FILE = flags.DEFINE_string('config_file', None,
                                   'Experiment config (.textproto).',
                                   required=True)
_CONFIG_OVERRIDE = cli.define_config_override()
_BATCH = flags.DEFINE_integer('batch', 1,
                              'Images per step (one TPU core\'s batch; the '
                              'paper trains with one image per core).')
_PRECISION = flags.DEFINE_enum(
    'precision', None, sorted(tpu_compat.PRECISIONS),
    'Compute precision; default: the config\'s '
    'trainer_options.mixed_precision. TPUs train in bfloat16.')
_FORMAT = flags.DEFINE_enum('format', 'text', ['text', 'json'],
                            'Output format; json has the fields of '
                            'tpu_compat.CompileReport.')


def main(argv):
  del argv  # Unused.
  experiment = experiment_lib.load_experiment(
      _CONFIG_FILE.value, 'train', overrides=_CONFIG_OVERRIDE.value)
  with tpu_compat.MemoryReportDirectory() as dump_dir:
    tpu_compat.enable_memory_report(dump_dir)
    print(f'Compiling one training step of {_CONFIG_FILE.value} with XLA '
          '(minutes at the paper\'s crop sizes)...', flush=True)
    report = tpu_compat.compile_training_step(
        experiment, batch_size=_BATCH.value, precision=_PRECISION.value,
        dump_dir=dump_dir)
  if _FORMAT.value == 'json':
    print(json.dumps(report.as_dict(), indent=2))
  else:
    print(report.text())


if __name__ == '__main__':
  app.run(cli.main_with_clear_errors('check_tpu_compat', main,
                                     (tpu_compat.CompileError,)))
