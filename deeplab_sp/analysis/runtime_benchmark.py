"""The deployment runtimes side by side: TensorFlow, onnxruntime, LiteRT.

`run_runtime_benchmark` exports one model to each deployment format and
times the runtimes on the same images in one process:

  tf           the SavedModel of tools/export_model.py (export_lib, TF
               Serving's layout), its serving_float signature, run by
               TensorFlow;
  onnxruntime  the .onnx file (onnx_export, through tf2onnx), run by
               onnxruntime's CPU execution provider;
  tflite       the .tflite file (tflite_export, built-in operators only),
               run by the LiteRT interpreter;
  tflite_float16, tflite_int8
               the same in reduced precision (tflite_export's PRECISIONS;
               int8 calibrated on the config's training records).

Every runtime runs the model at the benchmark's input size: the config's
(its eval crop size), or --height/--width, which then become the crop size
of the experiment every format is exported from (so the SavedModel, which
resizes each image to its model's size, runs at that size too, and the
size-dependent tables are the model's own weights, not resized ones). The
weights are a checkpoint's (--checkpoint_path, which must then be of the
model at that size) or freshly initialised ones, written once as a
checkpoint so that every format holds the same values.

Each export runs in a subprocess, so that its memory is measured alone: the
peak resident set of the subprocess (`VmHWM`, TensorFlow's import included)
and its growth from just before the model is built. The exports are then
timed round-robin (each round calls every runtime once, on the same
images), so a machine whose speed drifts slows them alike; the medians,
minima and maxima of --num_runs rounds are reported, with the size of each
export (files on disk) against the size of the weights (the model's
variables), the resident-set growth of loading each runtime and making its
first call (in this process, so only indicative), and how many pixels get
the same label as TensorFlow's. On request, onnxruntime's own profile
(SessionOptions.enable_profiling) is summed per operator type, and each
runtime is scored on the first --score_examples examples of the config's
evaluation split (mIoU and pixel accuracy at the input size, the labels
padded with the ignore label as the evaluator reads them): how much of the
model's accuracy each exported file keeps, through its own runtime.

Every runtime gets the same number of threads (--num_threads, default all
cores): TensorFlow's intra-op pool, onnxruntime's intra-op threads, LiteRT's
interpreter threads. The runtimes run on the CPU: onnxruntime's CPU
execution provider, LiteRT, and TensorFlow once tools/benchmark.py has
hidden the GPUs (devices.select); the exports' subprocesses see no GPU.
"""

import dataclasses
import json
import os
import shutil
import statistics
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from deeplab_sp.analysis import peak_memory
from deeplab_sp.analysis import timing

TF = 'tf'
ONNXRUNTIME = 'onnxruntime'
TFLITE = 'tflite'
TFLITE_FLOAT16 = 'tflite_float16'
TFLITE_INT8 = 'tflite_int8'
RUNTIMES = (TF, ONNXRUNTIME, TFLITE, TFLITE_FLOAT16, TFLITE_INT8)
# What runs when --runtimes is not given: the float models.
DEFAULT_RUNTIMES = (TF, ONNXRUNTIME, TFLITE)
# The export format of each runtime.
FORMATS = {TF: 'saved_model', ONNXRUNTIME: 'onnx', TFLITE: 'tflite',
           TFLITE_FLOAT16: 'tflite', TFLITE_INT8: 'tflite'}
# The precision of each TFLite runtime (tflite_export.PRECISIONS).
TFLITE_PRECISIONS = {TFLITE: 'float32', TFLITE_FLOAT16: 'float16',
                     TFLITE_INT8: 'int8'}
# How the ops of onnxruntime's profile are listed (the largest first).
NUM_PROFILE_OPS = 12

_SUBPROCESS_PROGRAM = ('import sys\n'
                       'from deeplab_sp.analysis import runtime_benchmark\n'
                       'runtime_benchmark.export_in_subprocess(sys.argv[1])\n')
_MB = 1e6


@dataclasses.dataclass
class RuntimeBenchmarkSettings:
  """What `run_runtime_benchmark` measures.

  Attributes:
    runtimes: some of RUNTIMES.
    height, width: input size; None: the config's crop size.
    batch: images per call.
    num_warmup: untimed calls of each runtime first (at least 1).
    num_runs: timed round-robin rounds.
    num_threads: threads of every runtime; None: os.cpu_count().
    checkpoint_path: weights to export; None: freshly initialised ones.
    memory_limit_bytes: the most memory one export subprocess may use
      (None: the memory available when it starts); one that needs more is
      reported as out of memory and its runtime is not timed.
    profile_onnxruntime: also sum onnxruntime's profile per operator type.
    score_examples: score each runtime on this many examples of the
      evaluation split (0: no scoring).
    seed: of the fresh weights and of the images.
  """
  runtimes: Sequence[str] = DEFAULT_RUNTIMES
  height: Optional[int] = None
  width: Optional[int] = None
  batch: int = 1
  num_warmup: int = 2
  num_runs: int = 5
  num_threads: Optional[int] = None
  checkpoint_path: Optional[str] = None
  memory_limit_bytes: Optional[int] = None
  profile_onnxruntime: bool = False
  score_examples: int = 0
  seed: int = 0


def check_settings(settings: RuntimeBenchmarkSettings) -> None:
  """Raises ValueError (naming the flag) for settings that cannot run."""
  unknown = [r for r in settings.runtimes if r not in RUNTIMES]
  if unknown or not settings.runtimes:
    raise ValueError(f'--runtimes: unknown {unknown or "(empty)"}; use some '
                     f'of {",".join(RUNTIMES)}.')
  if len(set(settings.runtimes)) != len(settings.runtimes):
    raise ValueError(f'--runtimes names a runtime twice: '
                     f'{",".join(settings.runtimes)}.')
  if (settings.height is None) != (settings.width is None):
    raise ValueError('Give both --height and --width, or neither (the '
                     "config's crop size).")
  for name in ('batch', 'num_runs'):
    if getattr(settings, name) < 1:
      raise ValueError(f'--{name} must be at least 1, got '
                       f'{getattr(settings, name)}.')
  if settings.score_examples < 0:
    raise ValueError(f'--score_examples must be >= 0, got '
                     f'{settings.score_examples}.')
  if settings.num_threads is not None and settings.num_threads < 1:
    raise ValueError(f'--num_threads must be at least 1, got '
                     f'{settings.num_threads}.')


def size_overrides(height: Optional[int], width: Optional[int]) -> List[str]:
  """Config overrides that make (height, width) the experiment's input size.

  Both crop sizes, so that the eval crop size (what Experiment.input_size
  reads first) and the train one agree.
  """
  if height is None:
    return []
  return [f'{field} {{ crop_size: {int(height)} crop_size: {int(width)} }}'
          for field in ('train_dataset_options', 'eval_dataset_options')]


def directory_bytes(path: str) -> int:
  """Bytes of a file, or of every file under a directory."""
  if os.path.isfile(path):
    return os.path.getsize(path)
  return sum(os.path.getsize(os.path.join(root, name))
             for root, _, names in os.walk(path) for name in names)


def _read_status_bytes(field: str) -> Optional[int]:
  """A /proc/self/status figure (VmRSS, VmHWM) in bytes; None off Linux."""
  try:
    with open('/proc/self/status') as status:
      for line in status:
        if line.startswith(field + ':'):
          return 1024 * int(line.split()[1])
  except OSError:
    pass
  return None


def export_in_subprocess(argument: str) -> None:
  """In the subprocess: exports one format, prints time and peak memory.

  Args:
    argument: JSON with format, config_file, overrides, checkpoint_path,
      output_path, batch and (tflite) precision.
  """
  request = json.loads(argument)
  # Imported here: the parent process needs neither the exporters nor, for
  # its other work, tf2onnx.
  from deeplab_sp import experiment as experiment_lib  # pylint: disable=g-import-not-at-top
  from deeplab_sp.export import export_lib  # pylint: disable=g-import-not-at-top
  from deeplab_sp.export import fixed_size  # pylint: disable=g-import-not-at-top
  from deeplab_sp.export import onnx_export  # pylint: disable=g-import-not-at-top
  from deeplab_sp.export import tflite_export  # pylint: disable=g-import-not-at-top

  export_format = request['format']
  resident_before = _read_status_bytes('VmRSS')
  start = time.perf_counter()
  if export_format == 'saved_model':
    output = export_lib.export_from_config(
        request['config_file'], request['checkpoint_path'],
        request['output_path'], version=1, overrides=request['overrides'])
  else:
    experiment = experiment_lib.load_experiment(
        request['config_file'], mode=None, overrides=request['overrides'])
    module = fixed_size.build_fixed_size_module(
        experiment, request['checkpoint_path'],
        batch_size=request['batch'])
    if export_format == 'onnx':
      output = onnx_export.export_onnx(module, request['output_path'],
                                       verify=False)
    else:
      precision = request['precision']
      calibration = (tflite_export.representative_images(experiment, module)
                     if precision == tflite_export.INT8 else None)
      output = tflite_export.export_tflite(
          module, request['output_path'], verify=False, precision=precision,
          calibration=calibration)
  seconds = time.perf_counter() - start
  peak = _read_status_bytes('VmHWM')
  peak_memory.print_result({
      'output': output,
      'seconds': seconds,
      'peak_rss_bytes': peak,
      'rss_growth_bytes': (None if peak is None or resident_before is None
                           else max(peak - resident_before, 0)),
  })


def _export(runtime: str, config_file: str, overrides: Sequence[str],
            checkpoint_path: str, output_path: str, batch: int,
            limit_bytes: Optional[int]) -> dict:
  """Runs export_in_subprocess for `runtime`'s file; its result dict."""
  export_format = FORMATS[runtime]
  argument = json.dumps({
      'format': export_format, 'config_file': config_file,
      'overrides': list(overrides), 'checkpoint_path': checkpoint_path,
      'output_path': output_path, 'batch': batch,
      'precision': TFLITE_PRECISIONS.get(runtime)})
  return peak_memory.guarded_subprocess(
      _SUBPROCESS_PROGRAM, argument, limit_bytes,
      # The exports measure the CPU, as the runtimes run on it.
      env={'CUDA_VISIBLE_DEVICES': '-1'},
      what=f'The {export_format} export')


def _set_tensorflow_threads(num_threads: int) -> bool:
  """Sets TensorFlow's intra-op threads; False if it already started."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    tf.config.threading.set_intra_op_parallelism_threads(num_threads)
  except RuntimeError:
    return False
  return True


def _write_initial_checkpoint(config_file: str, overrides: Sequence[str],
                              directory: str, seed: int) -> Tuple[str, int]:
  """Freshly initialised weights of the experiment's model, as a checkpoint.

  Returns:
    (its prefix, the bytes of the model's variables).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from deeplab_sp import experiment as experiment_lib  # pylint: disable=g-import-not-at-top
  from deeplab_sp.export import fixed_size  # pylint: disable=g-import-not-at-top
  experiment = experiment_lib.load_experiment(config_file, mode=None,
                                              overrides=overrides)
  tf.keras.utils.set_random_seed(seed)
  model = fixed_size.build_fixed_size_module(experiment).model
  prefix = tf.train.Checkpoint(model=model).write(
      os.path.join(directory, 'ckpt-0'))
  return prefix, _variable_bytes(model)


def _variable_bytes(model) -> int:
  return int(sum(np.prod(v.shape) * v.dtype.size for v in model.variables))


def _checkpoint_variable_bytes(config_file: str, overrides: Sequence[str],
                               checkpoint_path: str) -> int:
  """Bytes of the variables of the model restored from a checkpoint."""
  from deeplab_sp import experiment as experiment_lib  # pylint: disable=g-import-not-at-top
  from deeplab_sp.export import fixed_size  # pylint: disable=g-import-not-at-top
  experiment = experiment_lib.load_experiment(config_file, mode=None,
                                              overrides=overrides)
  return _variable_bytes(
      fixed_size.build_fixed_size_module(experiment, checkpoint_path).model)


class _Runner:
  """One loaded runtime: `call(images)` -> its label map [B, H, W]."""

  def __init__(self, runtime: str, path: str, num_threads: int,
               profile_prefix: Optional[str] = None):
    self.runtime = runtime
    self.profile_file = None
    if runtime == TF:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      from deeplab_sp.export import export_lib  # pylint: disable=g-import-not-at-top
      self._loaded = tf.saved_model.load(path)
      signature = self._loaded.signatures[export_lib.SERVING_FLOAT]
      self._call = lambda images: signature(
          images=tf.constant(images))['semantic'].numpy()
    elif runtime == ONNXRUNTIME:
      import onnxruntime  # pylint: disable=g-import-not-at-top
      from deeplab_sp.export import fixed_size  # pylint: disable=g-import-not-at-top
      options = onnxruntime.SessionOptions()
      options.intra_op_num_threads = num_threads
      options.inter_op_num_threads = 1
      if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
      self._session = onnxruntime.InferenceSession(
          path, options, providers=['CPUExecutionProvider'])
      self._call = lambda images: self._session.run(
          ['semantic'], {fixed_size.INPUT_NAME: images})[0]
    else:  # The TFLite runtimes, any precision.
      from ai_edge_litert import interpreter  # pylint: disable=g-import-not-at-top
      from deeplab_sp.export import fixed_size  # pylint: disable=g-import-not-at-top
      from deeplab_sp.export import tflite_export  # pylint: disable=g-import-not-at-top
      runner = interpreter.Interpreter(
          model_path=path, num_threads=num_threads).get_signature_runner(
              tflite_export.SIGNATURE)
      self._call = lambda images: np.asarray(
          runner(**{fixed_size.INPUT_NAME: images})['semantic'])

  def __call__(self, images: np.ndarray) -> np.ndarray:
    return self._call(images)

  def end_profiling(self) -> Optional[str]:
    """onnxruntime: writes its profile; its path (else None)."""
    if self.runtime == ONNXRUNTIME and self._session.get_session_options(
    ).enable_profiling:
      self.profile_file = self._session.end_profiling()
    return self.profile_file


def summarize_onnxruntime_profile(path: str, num_calls: int,
                                  num_ops: int = NUM_PROFILE_OPS) -> dict:
  """onnxruntime's profile summed per operator type, per call.

  Args:
    path: the JSON file of InferenceSession.end_profiling().
    num_calls: the session's run() calls the profile covers.
    num_ops: how many operator types to list (the largest first).

  Returns:
    {'total_ms': ms of all node kernels per call, 'ops': [{'op_type',
    'ms' (per call), 'share' (of total_ms), 'nodes' (nodes of that
    type)}...]}.
  """
  with open(path) as f:
    events = json.load(f)
  per_type, nodes = {}, {}
  for event in events:
    if event.get('cat') != 'Node' or not event.get('name', '').endswith(
        '_kernel_time'):
      continue
    op_type = event.get('args', {}).get('op_name', '?')
    per_type[op_type] = per_type.get(op_type, 0.0) + event['dur'] / 1000.0
    nodes.setdefault(op_type, set()).add(event['name'])
  total = sum(per_type.values())
  ops = sorted(per_type.items(), key=lambda item: -item[1])[:num_ops]
  return {
      'total_ms': total / num_calls,
      'ops': [{'op_type': op_type, 'ms': ms / num_calls,
               'share': ms / total if total else 0.0,
               'nodes': len(nodes[op_type])} for op_type, ms in ops],
  }


def _milliseconds(times: Sequence[float]) -> dict:
  return {'median': statistics.median(times), 'min': min(times),
          'max': max(times), 'runs': list(times)}


def run_runtime_benchmark(config_file: str,
                          settings: RuntimeBenchmarkSettings,
                          overrides: Sequence[str] = (),
                          progress: Optional[Callable[[str], None]] = None
                         ) -> dict:
  """Exports, loads and times the runtimes (see the module docstring).

  Args:
    config_file: the experiment (.textproto).
    settings: what to measure.
    overrides: --config_override fragments.
    progress: called with a line at each step.

  Returns:
    A JSON-serialisable dict: 'settings', 'weights_bytes' and, per runtime
    under 'runtimes', 'format', 'file_bytes', 'export_seconds',
    'export_peak_rss_bytes', 'export_rss_growth_bytes',
    'load_rss_growth_bytes', 'ms' (median, min, max, runs),
    'label_agreement_with_tf' (when tf runs too), and for onnxruntime with
    profile_onnxruntime, 'profile'; a runtime whose export ran out of
    memory has 'out_of_memory' (the message) instead of the figures.

  Raises:
    ValueError: bad settings; the errors of the exports.
  """
  check_settings(settings)
  progress = progress or (lambda line: None)
  num_threads = settings.num_threads or os.cpu_count() or 1
  # Before anything runs TensorFlow ops in this process.
  tf_threads_set = _set_tensorflow_threads(num_threads)
  # The first call of each runtime (at load), then round_robin's warm-up
  # (at least one call).
  warmup_calls = 1 + max(settings.num_warmup - 1, 1)
  from deeplab_sp import experiment as experiment_lib  # pylint: disable=g-import-not-at-top
  overrides = list(overrides) + size_overrides(settings.height,
                                               settings.width)
  experiment = experiment_lib.load_experiment(config_file, mode=None,
                                              overrides=overrides)
  height, width = experiment.input_size
  images = np.random.RandomState(settings.seed).uniform(
      0.0, 255.0, (settings.batch, height, width, 3)).astype(np.float32)
  results = {
      'settings': {
          'config_file': config_file, 'height': height, 'width': width,
          'batch': settings.batch, 'num_warmup': warmup_calls,
          'num_runs': settings.num_runs, 'num_threads': num_threads,
          'tensorflow_threads_set': tf_threads_set,
          'checkpoint_path': settings.checkpoint_path,
          'runtimes': list(settings.runtimes), 'versions': _versions(),
      },
      'runtimes': {},
  }
  with tempfile.TemporaryDirectory(prefix='runtime_benchmark_') as work:
    checkpoint_path = settings.checkpoint_path
    if checkpoint_path is None:
      progress('Initialising the weights (no --checkpoint_path)')
      checkpoint_path, weights_bytes = _write_initial_checkpoint(
          config_file, overrides, work, settings.seed)
    else:
      weights_bytes = _checkpoint_variable_bytes(config_file, overrides,
                                                 checkpoint_path)
    results['weights_bytes'] = weights_bytes
    paths = {}
    for runtime in settings.runtimes:
      export_format = FORMATS[runtime]
      output_path = os.path.join(
          work, {'saved_model': 'saved_model', 'onnx': f'{runtime}.onnx',
                 'tflite': f'{runtime}.tflite'}[export_format])
      progress(f'Exporting {export_format} for {runtime} (subprocess)')
      entry = {'format': export_format}
      results['runtimes'][runtime] = entry
      try:
        exported = _export(runtime, config_file, overrides,
                           checkpoint_path, output_path, settings.batch,
                           settings.memory_limit_bytes)
      except peak_memory.MemoryLimitExceeded as e:
        entry['out_of_memory'] = str(e)
        progress(f'  {e}')
        continue
      paths[runtime] = exported['output']
      entry.update(
          file_bytes=directory_bytes(exported['output']),
          export_seconds=exported['seconds'],
          export_peak_rss_bytes=exported['peak_rss_bytes'],
          export_rss_growth_bytes=exported['rss_growth_bytes'])
      progress(f"  {entry['file_bytes'] / _MB:.2f} MB in "
               f"{entry['export_seconds']:.0f} s")
    runners, outputs = {}, {}
    for runtime, path in paths.items():
      progress(f'Loading {runtime}')
      before = _read_status_bytes('VmRSS')
      runner = _Runner(
          runtime, path, num_threads,
          os.path.join(work, 'onnxruntime_profile')
          if settings.profile_onnxruntime else None)
      outputs[runtime] = runner(images)
      after = _read_status_bytes('VmRSS')
      results['runtimes'][runtime]['load_rss_growth_bytes'] = (
          None if before is None else max(after - before, 0))
      runners[runtime] = runner
    progress(f'Timing {", ".join(runners)} round-robin')
    times = timing.round_robin(
        {runtime: (lambda r=runner: r(images))
         for runtime, runner in runners.items()},
        max(settings.num_warmup - 1, 0), settings.num_runs, progress)
    for runtime, runner in runners.items():
      entry = results['runtimes'][runtime]
      entry['ms'] = _milliseconds(times[runtime])
      if TF in outputs and runtime != TF:
        entry['label_agreement_with_tf'] = float(
            np.mean(outputs[runtime] == outputs[TF]))
      profile = runner.end_profiling()
      if profile:
        entry['profile'] = summarize_onnxruntime_profile(
            profile, warmup_calls + settings.num_runs)
    if settings.score_examples:
      scores = score_runtimes(experiment, runners, settings.score_examples,
                              settings.batch, progress)
      for runtime, score in scores.items():
        results['runtimes'][runtime].update(score)
    del runners
    shutil.rmtree(work, ignore_errors=True)
  return results


def score_runtimes(experiment, runners: Dict[str, Callable], count: int,
                   batch: int, progress: Callable[[str], None]
                  ) -> Dict[str, dict]:
  """mIoU and pixel accuracy of each runner on the evaluation split.

  The first `count` examples of eval_dataset_options (evaluation's
  preprocessing, at the input size), in batches of `batch`; the last batch
  is completed with copies of its first image, whose labels are not
  counted.

  Returns:
    {runtime: {'miou', 'pixel_accuracy', 'scored_examples'}}.

  Raises:
    ValueError: the config names no evaluation records.
  """
  from deeplab_sp.data import dataset_info  # pylint: disable=g-import-not-at-top
  from deeplab_sp.data import input_pipeline  # pylint: disable=g-import-not-at-top
  from deeplab_sp.trainer import metrics  # pylint: disable=g-import-not-at-top
  dataset_options = experiment.options.eval_dataset_options
  if not dataset_options.file_pattern:
    raise ValueError(
        f'--score_examples: {experiment.path} names no evaluation records '
        '(eval_dataset_options.file_pattern); add them, or leave '
        '--score_examples at 0.')
  examples = list(input_pipeline.first_examples(dataset_options, count))
  if not examples:
    raise ValueError(f'--score_examples: the records of '
                     f'{list(dataset_options.file_pattern)} hold no example.')
  progress(f'Scoring {", ".join(runners)} on {len(examples)} examples of '
           f'{", ".join(dataset_options.file_pattern)}')
  num_classes = experiment.num_classes
  matrices = {runtime: np.zeros((num_classes, num_classes), np.int64)
              for runtime in runners}
  for start in range(0, len(examples), batch):
    chunk = examples[start:start + batch]
    images = np.stack([image for image, _ in chunk] +
                      [chunk[0][0]] * (batch - len(chunk))).astype(np.float32)
    labels = np.stack([label for _, label in chunk])
    valid = labels != dataset_info.IGNORE_LABEL
    for runtime, runner in runners.items():
      predictions = runner(images)[:len(chunk)]
      matrices[runtime] += np.bincount(
          labels[valid].astype(np.int64) * num_classes +
          predictions[valid].astype(np.int64),
          minlength=num_classes * num_classes).reshape(num_classes,
                                                        num_classes)
  scores = {}
  for runtime, matrix in matrices.items():
    result = metrics.metrics_from_confusion_matrix(matrix)
    scores[runtime] = {'miou': float(result.miou),
                       'pixel_accuracy': float(result.pixel_accuracy),
                       'scored_examples': len(examples)}
  return scores


def _versions() -> Dict[str, Optional[str]]:
  """Versions of the runtimes and converters (None: not installed)."""
  versions = {}
  for name, module in (('tensorflow', 'tensorflow'),
                       ('onnxruntime', 'onnxruntime'),
                       ('tf2onnx', 'tf2onnx'),
                       ('ai_edge_litert', 'ai_edge_litert')):
    try:
      versions[name] = getattr(__import__(module), '__version__', '?')
    except ImportError:
      versions[name] = None
  return versions


def format_table(results: dict) -> str:
  """A text table of `run_runtime_benchmark`'s results."""
  settings = results['settings']
  weights = results['weights_bytes']
  lines = [
      f"Input {settings['height']}x{settings['width']}, batch "
      f"{settings['batch']}, {settings['num_threads']} threads per runtime, "
      f"CPU. Median (min-max) of {settings['num_runs']} round-robin runs "
      f"after {settings['num_warmup']} warm-up; milliseconds.",
      f'Weights (the model\'s variables): {weights / _MB:.2f} MB.', '',
      f'{"runtime":<16s}{"format":<12s}{"file MB":>9s}{"/weights":>9s}'
      f'{"median":>9s}{"min":>8s}{"max":>8s}{"export s":>9s}'
      f'{"export peak MB":>15s}{"load MB":>9s}{"= tf labels":>12s}']
  # In the order asked for (JSON may have sorted the keys).
  runtimes = [r for r in settings['runtimes'] if r in results['runtimes']]
  scored = [results['runtimes'][r].get('scored_examples') for r in runtimes]
  scored = next((count for count in scored if count), None)
  if scored:
    lines[-1] += f'{"mIoU %":>8s}{"acc. %":>8s}'
  for runtime in runtimes:
    entry = results['runtimes'][runtime]
    if 'out_of_memory' in entry:
      lines.append(f'{runtime:<16s}{entry["format"]:<12s}out of memory: '
                   f'{entry["out_of_memory"]}')
      continue
    ms = entry.get('ms', {})
    agreement = entry.get('label_agreement_with_tf')

    def number(value, width, digits=1, scale=1.0):
      return (f'{value / scale:{width}.{digits}f}' if value is not None
              else f'{"-":>{width}s}')

    lines.append(
        f'{runtime:<16s}{entry["format"]:<12s}'
        f'{number(entry["file_bytes"], 9, 2, _MB)}'
        f'{entry["file_bytes"] / weights:8.2f}x'
        f'{number(ms.get("median"), 9)}{number(ms.get("min"), 8)}'
        f'{number(ms.get("max"), 8)}'
        f'{number(entry["export_seconds"], 9, 0)}'
        f'{number(entry["export_peak_rss_bytes"], 15, 0, _MB)}'
        f'{number(entry.get("load_rss_growth_bytes"), 9, 0, _MB)}'
        f'{number(agreement, 12, 4)}' +
        (f'{number(entry.get("miou"), 8, 2, 0.01)}'
         f'{number(entry.get("pixel_accuracy"), 8, 2, 0.01)}'
         if scored else ''))
  if scored:
    lines.append(f'mIoU and pixel accuracy: the first {scored} examples of '
                 'the evaluation split, at the input size, through each '
                 'runtime.')
  for runtime in runtimes:
    entry = results['runtimes'][runtime]
    if 'profile' in entry:
      profile = entry['profile']
      lines += ['', f'{runtime} profile per call ({profile["total_ms"]:.1f} '
                'ms in node kernels), the largest operator types:']
      lines += [f'  {op["op_type"]:<20s}{op["ms"]:8.1f} ms {op["share"]:6.1%}'
                f'  ({op["nodes"]} nodes)' for op in profile['ops']]
  return '\n'.join(lines)
