r"""Latency breakdown (paper Table IV) and tokenization memory, NAIVE vs EFFICIENT.

Builds the model of an experiment config twice, once with each local
attention implementation (model_options.superpixel_tokenization and
superpixel_association `implementation`), calls it on random images, and
times each component on its real inputs: encoder, hypercolumn, tokenization,
self_attention (the superpixel classifier), association, and the whole model
(total). Each figure is the median of --num_runs calls after --num_warmup
calls, inside tf.function, without and with XLA; the components are timed
round-robin (each round calls every component once), and total/encoder is
the median of the rounds' ratios. It also measures the peak
memory of one tokenization call (resident-set growth of a subprocess on CPU,
allocator peak on GPU) and prints the NAIVE/EFFICIENT ratios.

Usage (the Cityscapes geometry of the paper, ResNet-50; minutes on a CPU):
  .venv/bin/python tools/benchmark.py \
      --config_file=configs/cityscapes/sp_transformer_r50.textproto

Quick look at the default experiment, as JSON:
  .venv/bin/python tools/benchmark.py \
      --config_file=configs/synthetic/sp_transformer_tiny.textproto \
      --format=json

A per-pixel baseline (model_options.meta_architecture) has no local
attention: its own components (e.g. DeepLabV3+'s encoder, aspp, decoder) and
total are timed once; --implementations and --measure_memory do not apply:
  .venv/bin/python tools/benchmark.py \
      --config_file=configs/cityscapes/deeplabv3plus_r50.textproto

Only the stages built on the local attention (the real tokenization and
association layers on random features at the config's geometry; no
encoder, hypercolumn or classifier):
  .venv/bin/python tools/benchmark.py --config_file=... --ops_only \
      --components=tokenization,association

The training step (--mode=train): the trainer's whole step (forward, top-k
loss, gradients, both optimizers' updates), the encoder's own step, and the
forward + backward pass of each component, per implementation, timed
round-robin; and the peak memory of the forward + backward pass of the
tokenization, the encoder and the whole step, in float32 and bfloat16
(deeplab_sp/analysis/train_benchmark.py). A measurement that needs more
memory than is available is reported as out of memory; --implementations=
EFFICIENT leaves out the paper's form (tens of minutes on a CPU):
  .venv/bin/python tools/benchmark.py --mode=train --format=json \
      --config_file=configs/cityscapes/sp_transformer_r50.textproto

The deployment runtimes (--mode=runtimes, or any --runtimes): exports the
model to a SavedModel, an ONNX file and a TFLite file (each in a subprocess,
whose peak memory is reported), loads each in its runtime (TensorFlow,
onnxruntime, LiteRT) and times them round-robin on the same images, at the
config's crop size or --height/--width (the crop size every format is then
exported at); prints each file's size against the weights', the latencies
and how many pixels get TensorFlow's label
(deeplab_sp/analysis/runtime_benchmark.py). Fresh weights unless
--checkpoint_path; --profile_onnxruntime adds onnxruntime's time per
operator type; tflite_float16 and tflite_int8 add the reduced-precision
TFLite files; --score_examples=N scores every runtime on the first N
examples of the evaluation split (mIoU through its own runtime):
  .venv/bin/python tools/benchmark.py --runtimes=tf,onnxruntime,tflite \
      --config_file=configs/synthetic/sp_transformer_tiny.textproto \
      --height=256 --width=512 --num_runs=10

On a machine with a GPU the inference and train modes measure on it
(allocator peak memory); --device=cpu measures the CPU instead, --device=gpu
fails without a GPU. The runtimes mode measures the CPU.

Progress goes to stderr; the table (or JSON) to stdout and, with
--output_file, to that file.
"""

# First, before anything loads TensorFlow: hides its start-up log lines
# unless TF_CPP_MIN_LOG_LEVEL is set (deeplab_sp/utils/tf_startup.py).
from deeplab_sp.utils import tf_startup  # pylint: disable=g-bad-import-order,unused-import

import dataclasses
import json
import sys

from absl import app
from absl import flags
from absl import logging

from deeplab_sp import experiment as experiment_lib
from deeplab_sp.analysis import benchmark
from deeplab_sp.analysis import devices
from deeplab_sp.analysis import runtime_benchmark
from deeplab_sp.analysis import train_benchmark
from deeplab_sp.utils import cli
from deeplab_sp.utils import io

_MODE = flags.DEFINE_enum(
    'mode', 'inference', ['inference', 'train', 'runtimes'],
    'inference: the forward pass (paper Table IV); train: the training step; '
    'runtimes: the exported model in TensorFlow, onnxruntime and LiteRT (the '
    'default when --runtimes is given; see above).')
_DEVICE = flags.DEFINE_enum(
    'device', devices.AUTO, list(devices.DEVICES),
    'auto: a GPU when one is present, else the CPU; cpu; gpu.')
_CONFIG_FILE = flags.DEFINE_string(
    'config_file', None, 'Path of a text ExperimentOptions (.textproto) whose '
    'model_options are benchmarked.', required=True)
_CONFIG_OVERRIDE = cli.define_config_override()
_HEIGHT = flags.DEFINE_integer(
    'height', None, 'Input height in pixels (default: the config eval '
    'crop_size). Give --width too.')
_WIDTH = flags.DEFINE_integer('width', None, 'Input width in pixels.')
_BATCH = flags.DEFINE_integer('batch', 1, 'Images per call.')
_COMPONENTS = flags.DEFINE_list(
    'components', [],
    'Comma-separated components to time; default: all of the model\'s '
    f'(SP-Transformer: {",".join(benchmark.COMPONENTS)}; with --ops_only: '
    f'{",".join(benchmark.OPS_ONLY_COMPONENTS)}; a per-pixel baseline: its '
    'own, e.g. encoder,aspp,decoder,total).')
_IMPLEMENTATIONS = flags.DEFINE_list(
    'implementations', ','.join(benchmark.IMPLEMENTATIONS),
    'Local attention implementations to compare.')
_EXECUTION_MODES = flags.DEFINE_list(
    'execution_modes', ','.join(benchmark.EXECUTION_MODES),
    'tf_function (graph, no XLA) and/or xla (jit_compile=True).')
_NUM_WARMUP = flags.DEFINE_integer(
    'num_warmup', 2, 'Untimed calls before timing (at least 1 is made: the '
    'first call traces and compiles).')
_NUM_RUNS = flags.DEFINE_integer('num_runs', 5,
                                 'Timed calls; the median is reported.')
_MEASURE_MEMORY = flags.DEFINE_bool(
    'measure_memory', True, 'Measure the peak memory of one tokenization '
    'call (in the first execution mode; --mode=train: of the forward + '
    'backward passes).')
_OPS_ONLY = flags.DEFINE_bool(
    'ops_only', False, 'Time only the tokenization and association layers, '
    'on random features at the config geometry, without building the rest '
    'of the model.')
_MEMORY_LIMIT_GIB = flags.DEFINE_float(
    'memory_limit_gib', None, '--mode=train: the most memory one peak-memory '
    'measurement may use; --mode=runtimes: one export (default: the memory '
    'available when it starts); one that needs more is reported as out of '
    'memory.')
_RUNTIMES = flags.DEFINE_list(
    'runtimes', ','.join(runtime_benchmark.DEFAULT_RUNTIMES),
    '--mode=runtimes: the runtimes to compare (giving this flag selects that '
    'mode): tf (the SavedModel), onnxruntime (the ONNX file), tflite (the '
    'TFLite file, LiteRT), tflite_float16 and tflite_int8 (the same in '
    "reduced precision, int8 calibrated on the config's training records).")
_CHECKPOINT_PATH = flags.DEFINE_string(
    'checkpoint_path', None, '--mode=runtimes: the checkpoint (prefix or '
    'directory) whose weights are exported; default: freshly initialised '
    'weights. It must be of the model at the benchmark size.')
_NUM_THREADS = flags.DEFINE_integer(
    'num_threads', None, '--mode=runtimes: threads of every runtime '
    '(default: all cores).')
_PROFILE_ONNXRUNTIME = flags.DEFINE_bool(
    'profile_onnxruntime', False, "--mode=runtimes: add onnxruntime's own "
    'profile, summed per operator type.')
_SCORE_EXAMPLES = flags.DEFINE_integer(
    'score_examples', 0, '--mode=runtimes: also score each runtime (mIoU, '
    'pixel accuracy) on the first N examples of the evaluation split; use '
    'it with --checkpoint_path (fresh weights score nothing useful).')
_FORMAT = flags.DEFINE_enum('format', 'text', ['text', 'json'],
                            'Output format.')
_OUTPUT_FILE = flags.DEFINE_string(
    'output_file', None, 'Also write the output to this file (local or '
    'gs://).')


# Flags of the inference mode only.
_INFERENCE_FLAGS = (_COMPONENTS, _EXECUTION_MODES, _OPS_ONLY)
# Flags of the runtimes mode only, and those it does not use.
_RUNTIMES_FLAGS = (_RUNTIMES, _CHECKPOINT_PATH, _NUM_THREADS,
                   _PROFILE_ONNXRUNTIME, _SCORE_EXAMPLES)
_NOT_RUNTIMES_FLAGS = (_COMPONENTS, _EXECUTION_MODES, _OPS_ONLY,
                       _IMPLEMENTATIONS, _MEASURE_MEMORY)


def _mode():
  """--mode, or 'runtimes' when --runtimes is given without it."""
  if _RUNTIMES.present and not flags.FLAGS['mode'].present:
    return 'runtimes'
  mode = _MODE.value
  if mode != 'runtimes':
    for flag in _RUNTIMES_FLAGS:
      if flags.FLAGS[flag.name].present:
        raise ValueError(f'--{flag.name} is a flag of --mode=runtimes, not '
                         f'--mode={mode} (drop one of them).')
  return mode


def _runtimes_settings():
  for flag in _NOT_RUNTIMES_FLAGS:
    if flags.FLAGS[flag.name].present:
      raise ValueError(f'--{flag.name} is not a flag of --mode=runtimes, '
                       'which times whole exported models (drop the flag).')
  if _DEVICE.value == devices.GPU:
    raise ValueError('--mode=runtimes measures the CPU runtimes; drop '
                     '--device=gpu.')
  limit = _MEMORY_LIMIT_GIB.value
  return runtime_benchmark.RuntimeBenchmarkSettings(
      runtimes=_RUNTIMES.value, height=_HEIGHT.value, width=_WIDTH.value,
      batch=_BATCH.value, num_warmup=_NUM_WARMUP.value,
      num_runs=_NUM_RUNS.value, num_threads=_NUM_THREADS.value,
      checkpoint_path=_CHECKPOINT_PATH.value,
      memory_limit_bytes=None if limit is None else int(limit * 2**30),
      profile_onnxruntime=_PROFILE_ONNXRUNTIME.value,
      score_examples=_SCORE_EXAMPLES.value)


def _train_settings():
  for flag in _INFERENCE_FLAGS:
    if flags.FLAGS[flag.name].present:
      raise ValueError(f'--{flag.name} is a flag of --mode=inference; the '
                       'training benchmark measures every component (drop '
                       'the flag).')
  limit = _MEMORY_LIMIT_GIB.value
  return train_benchmark.TrainBenchmarkSettings(
      height=_HEIGHT.value, width=_WIDTH.value, batch=_BATCH.value,
      implementations=_IMPLEMENTATIONS.value, num_warmup=_NUM_WARMUP.value,
      num_runs=_NUM_RUNS.value, measure_memory=_MEASURE_MEMORY.value,
      memory_limit_bytes=None if limit is None else int(limit * 2**30))


def main(argv):
  del argv  # Unused.
  mode = _mode()
  progress = lambda line: print(line, file=sys.stderr, flush=True)
  if mode == 'runtimes':
    settings = _runtimes_settings()
    devices.select(devices.CPU)
    results = runtime_benchmark.run_runtime_benchmark(
        _CONFIG_FILE.value, settings, overrides=_CONFIG_OVERRIDE.value,
        progress=progress)
    _write(results, runtime_benchmark.format_table)
    return 0
  devices.select(_DEVICE.value)
  experiment = experiment_lib.load_experiment(
      _CONFIG_FILE.value, mode=None, overrides=_CONFIG_OVERRIDE.value)
  if mode == 'train':
    results = train_benchmark.run_train_benchmark(
        experiment, _train_settings(), progress=progress)
    _write(results, train_benchmark.format_table)
    return 0
  settings = benchmark.BenchmarkSettings(
      height=_HEIGHT.value, width=_WIDTH.value, batch=_BATCH.value,
      components=_COMPONENTS.value, implementations=_IMPLEMENTATIONS.value,
      execution_modes=_EXECUTION_MODES.value, num_warmup=_NUM_WARMUP.value,
      num_runs=_NUM_RUNS.value, measure_memory=_MEASURE_MEMORY.value,
      ops_only=_OPS_ONLY.value)
  results = benchmark.run_benchmark(experiment, settings, progress=progress)
  _write(results, benchmark.format_table)
  return 0


def _write(results, format_table):
  """Prints the results (and writes --output_file) as text or JSON."""
  if _FORMAT.value == 'json':
    if dataclasses.is_dataclass(results):  # --mode=train's results.
      results = dataclasses.asdict(results)
    text = json.dumps(results, indent=2, sort_keys=True)
  else:
    text = format_table(results)
  print(text)
  if _OUTPUT_FILE.value:
    io.write_atomically(_OUTPUT_FILE.value, text + '\n')
    logging.info('Wrote %s', _OUTPUT_FILE.value)


if __name__ == '__main__':
  app.run(cli.main_with_clear_errors('benchmark', main))
