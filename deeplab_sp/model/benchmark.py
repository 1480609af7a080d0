"""Latency and memory benchmark of the SP-Transformer (issue 7).

Produces the breakdown of Table IV of the SP-Transformer paper (arXiv
2309.16889): the time spent in the encoder, the hypercolumn, the superpixel
tokenization, the superpixel self-attention (the classifier) and the
association, and the whole model, for the NAIVE and EFFICIENT local
attention (deeplab_sp/model/local_attention.py) side by side, plus the peak
memory of the tokenization.

Timing. Each component is called on its real inputs: one eager forward pass
of the model records the arguments every component receives; each component
is then wrapped alone in a `tf.function` (optionally with XLA,
`jit_compile=True`) and warmed up (tracing, compilation); then `num_runs`
rounds each call every component once (round-robin, so that all of them are
timed over the same stretch of time on a machine whose speed drifts). A
figure is the median wall time over the rounds, in milliseconds, with a
device synchronisation after each call. 'total' is the whole model's call,
timed the same way (not the sum of the parts); 'total_over_encoder' is the
median over rounds of that round's total / encoder.

Peak memory. `tf.config.experimental.get_memory_info` reports nothing on CPU
(TF 2.20 returns zeros), so the tokenization's peak is measured as the
growth of the resident set of a fresh subprocess: it builds the model and
the tokenization's inputs, runs the tokenization once to trace and compile
it, resets the kernel's peak-RSS counter (`/proc/self/clear_refs`), runs it
again and reads the new peak (`VmHWM`) minus the resident size just before.
The subprocess runs with glibc's `MALLOC_MMAP_THRESHOLD_` fixed at 64 KiB and
oneDNN off (`TF_ENABLE_ONEDNN_OPTS=0`: oneDNN's CPU allocator pools memory),
so that every large tensor is mapped on allocation and unmapped when freed
(no allocator caching hides it); the kernels may differ from the timed run,
the tensors do not. The figure therefore includes the tensors that
are live at the same time during the call (intermediates and outputs), not
the inputs or weights, which exist before. TF's inter-op parallelism decides
which intermediates coexist, so repeated measurements vary (about 20% for
NAIVE at the Cityscapes geometry). It needs Linux; elsewhere the
peak is reported as None. On a GPU, `get_memory_info` is used instead.

The `ops_only` mode benchmarks only the local attention ops at the model's
geometry without building the real model: random features go through a
stand-in tokenization (the config's number of dual-path layers, channels and
heads; linear q/k/v projections and residuals, eq. (3) and (4)) and the
association (eq. (5), logits upsampled to the input, eq. (6)).
"""

import dataclasses
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, Optional, Sequence

from absl import logging
import numpy as np
import tensorflow as tf
import tf_keras

from deeplab_sp import experiment as config_lib
from deeplab_sp.model import local_attention
from deeplab_sp.protos import config_pb2
from deeplab_sp.protos import model_pb2

# Table IV's components, in order, and the model attribute timed for each.
COMPONENTS = ('encoder', 'hypercolumn', 'tokenization', 'self_attention',
              'association', 'total')
_COMPONENT_ATTRIBUTES = {
    'encoder': 'encoder',
    'hypercolumn': 'hypercolumn',
    'tokenization': 'tokenization',
    'self_attention': 'classifier',
    'association': 'association',
}
# Components the ops-only mode can time.
OPS_ONLY_COMPONENTS = ('tokenization', 'association')
TF_FUNCTION, XLA = 'tf_function', 'xla'
EXECUTION_MODES = (TF_FUNCTION, XLA)
IMPLEMENTATIONS = local_attention.IMPLEMENTATIONS

# The peak-memory subprocess maps every allocation of at least this many
# bytes (glibc mallopt M_MMAP_THRESHOLD), see the module docstring.
_MMAP_THRESHOLD_BYTES = 64 * 1024
_CHILD_FLAG = '--peak_memory_child'
_RESULT_PREFIX = 'PEAK_MEMORY_RESULT '
# A fixed seed: the benchmark's random inputs are the same in every process.
_SEED = 0


@dataclasses.dataclass
class BenchmarkSettings:
  """What to measure.

  Attributes:
    height, width: input image size; None: the config's model input size.
    batch: images per call.
    components: subset of COMPONENTS to time.
    implementations: subset of IMPLEMENTATIONS to compare.
    execution_modes: subset of EXECUTION_MODES (plain tf.function, XLA).
    num_warmup: untimed calls before timing (the first traces/compiles).
    num_runs: timed calls; the median is reported.
    measure_memory: whether to measure the tokenization's peak memory.
    ops_only: time the local attention ops on a stand-in instead of the
      real model (see the module docstring).
  """
  height: Optional[int] = None
  width: Optional[int] = None
  batch: int = 1
  components: Sequence[str] = COMPONENTS
  implementations: Sequence[str] = IMPLEMENTATIONS
  execution_modes: Sequence[str] = EXECUTION_MODES
  num_warmup: int = 2
  num_runs: int = 5
  measure_memory: bool = True
  ops_only: bool = False


def validate_settings(settings: BenchmarkSettings) -> None:
  """Raises ValueError naming the bad setting and the fix."""
  allowed = OPS_ONLY_COMPONENTS if settings.ops_only else COMPONENTS
  for name in settings.components:
    if name not in allowed:
      raise ValueError(
          f'Unknown component {name!r}: choose among {", ".join(allowed)}' +
          (' (ops_only times only the local attention ops).'
           if settings.ops_only else '.'))
  if not settings.components:
    raise ValueError('No component to time: pass at least one of '
                     f'{", ".join(allowed)}.')
  for name in settings.execution_modes:
    if name not in EXECUTION_MODES:
      raise ValueError(f'Unknown execution mode {name!r}: choose among '
                       f'{", ".join(EXECUTION_MODES)}.')
  if not settings.execution_modes:
    raise ValueError(f'Pass at least one of {", ".join(EXECUTION_MODES)}.')
  if not settings.implementations:
    raise ValueError(f'Pass at least one of {", ".join(IMPLEMENTATIONS)}.')
  for name in settings.implementations:
    local_attention.normalize_implementation(name)
  if settings.batch < 1 or settings.num_runs < 1 or settings.num_warmup < 0:
    raise ValueError('batch and num_runs must be >= 1 and num_warmup >= 0 '
                     f'(got {settings.batch}, {settings.num_runs}, '
                     f'{settings.num_warmup}).')
  if (settings.height is None) != (settings.width is None):
    raise ValueError('Give both height and width, or neither (then the '
                     "config's eval crop_size is used).")


def read_config(path: str):
  """Reads the experiment at `path`: (its text, ExperimentOptions).

  The datasets' files are not needed (nothing is read from them), so only
  the parse and the model geometry are checked here.

  Raises:
    config.ConfigError: naming the file and the fix.
  """
  if not tf.io.gfile.exists(path):
    raise config_lib.ConfigError(
        f'Config file {path} does not exist; pass an existing .textproto, '
        'e.g. --config_file=configs/synthetic/sp_transformer_tiny.textproto')
  with tf.io.gfile.GFile(path, 'r') as f:
    text = f.read()
  return text, config_lib.parse_experiment_options(text, path)


def write_text_atomically(path: str, text: str) -> None:
  """Writes `text` to a temporary name beside `path`, then renames it."""
  temporary = f'{path}.tmp{os.getpid()}'
  with tf.io.gfile.GFile(temporary, 'w') as f:
    f.write(text)
  tf.io.gfile.rename(temporary, path, overwrite=True)


def with_implementation(model_options: model_pb2.ModelOptions,
                        implementation: str) -> model_pb2.ModelOptions:
  """A copy of `model_options` using `implementation` for both local ops."""
  options = model_pb2.ModelOptions()
  options.CopyFrom(model_options)
  value = model_pb2.LocalAttentionImplementation.Value(
      local_attention.normalize_implementation(implementation))
  options.superpixel_tokenization.implementation = value
  options.superpixel_association.implementation = value
  return options


def input_size(options: config_pb2.ExperimentOptions,
               settings: BenchmarkSettings):
  """(height, width) to benchmark; ConfigError if the model cannot take it."""
  if settings.height is not None:
    size = (settings.height, settings.width)
  else:
    size = config_lib.model_input_size(options)
  config_lib.model_geometry(options.model_options, size)  # Validates.
  return size


def build_model(options: config_pb2.ExperimentOptions, implementation: str,
                size, ops_only: bool = False):
  """The model (or the ops-only stand-in) for one implementation."""
  model_options = with_implementation(options.model_options, implementation)
  if ops_only:
    return LocalAttentionStandIn(model_options, config_lib.num_classes(options),
                                 size)
  from deeplab_sp.model import builder  # pylint: disable=g-import-not-at-top
  return builder.build_model(model_options, config_lib.num_classes(options),
                             input_size=size)


def random_images(batch: int, size) -> tf.Tensor:
  """float32 RGB images in [0, 255], [batch, height, width, 3]."""
  rng = np.random.default_rng(_SEED)
  return tf.constant(rng.uniform(0.0, 255.0, size=(batch, *size, 3)),
                     tf.float32)


def record_component_inputs(model, images: tf.Tensor,
                            components: Sequence[str]) -> Dict[str, tuple]:
  """Runs `model` once and returns each component's (layer, args, kwargs).

  'total' maps to the model itself called on `images` with training=False.
  A component the model does not call is left out; one it calls several
  times is recorded (and later timed) at its first call.
  """
  recorded = {}
  originals = {}
  for name in components:
    if name == 'total':
      continue
    layer = getattr(model, _COMPONENT_ATTRIBUTES[name], None)
    if layer is None:
      continue
    originals[name] = layer
    def recording_call(*args, _name=name, _call=layer.call, **kwargs):
      recorded.setdefault(_name, (args, kwargs))
      return _call(*args, **kwargs)
    layer.call = recording_call
  try:
    model(images, training=False)
  finally:
    for layer in originals.values():
      del layer.call  # Back to the class's method.
  calls = {name: (originals[name], *recorded[name])
           for name in components if name in recorded}
  if 'total' in components:
    calls['total'] = (model, (images,), {'training': False})
  return calls


def _synchronize():
  tf.test.experimental.sync_devices()


def time_once(function: Callable[[], object]) -> float:
  """Wall time of one `function()` call in milliseconds, synchronised."""
  start = time.perf_counter()
  function()
  _synchronize()
  return 1000.0 * (time.perf_counter() - start)


def compiled_call(layer, args, kwargs, jit_compile: bool):
  """A no-argument tf.function calling layer(*args, **kwargs)."""
  @tf.function(jit_compile=jit_compile, autograph=False)
  def call():
    return layer(*args, **kwargs)
  return call


def time_components(model, images, settings: BenchmarkSettings,
                    progress=logging.info) -> Dict[str, Dict[str, list]]:
  """{execution mode: {component: [ms of each timed round]}} for one model.

  Every component is compiled and warmed up first; then each of the
  `num_runs` timed rounds calls every component once. All components are
  thus timed over the same stretch of time, so a machine whose speed drifts
  (shared CPUs) slows them alike, and per-round ratios such as total /
  encoder stay meaningful.
  """
  calls = record_component_inputs(model, images, settings.components)
  missing = [c for c in settings.components if c not in calls]
  if missing:
    raise ValueError(f'The model did not call component(s) {missing}; '
                     'drop them from --components.')
  results = {}
  for mode in settings.execution_modes:
    functions = {}
    for name in settings.components:
      layer, args, kwargs = calls[name]
      functions[name] = compiled_call(layer, args, kwargs,
                                      jit_compile=(mode == XLA))
      for _ in range(max(settings.num_warmup, 1)):
        time_once(functions[name])
    results[mode] = {name: [] for name in settings.components}
    for _ in range(settings.num_runs):
      for name, function in functions.items():
        results[mode][name].append(time_once(function))
    for name, times in results[mode].items():
      progress(f'  {mode:<11s} {name:<15s} {statistics.median(times):10.1f} '
               'ms')
  return results


def tokenization_peak_bytes(config_text: str, implementation: str, size,
                            batch: int, jit_compile: bool,
                            ops_only: bool) -> Optional[int]:
  """Peak memory of one tokenization call, measured in a subprocess.

  See the module docstring for the method. Returns None where it is not
  available (not Linux).
  """
  if tf.config.list_physical_devices('GPU'):
    return _gpu_peak_bytes(config_text, implementation, size, batch,
                           jit_compile, ops_only)
  if not os.path.exists('/proc/self/clear_refs'):
    logging.warning('Peak memory needs Linux /proc; reporting None.')
    return None
  request = dict(config_text=config_text, implementation=implementation,
                 size=list(size), batch=batch, jit_compile=jit_compile,
                 ops_only=ops_only)
  # oneDNN's CPU allocator pools memory (RSS would not grow again after the
  # warm-up call); the plain TF allocator mallocs and frees each tensor.
  env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(_MMAP_THRESHOLD_BYTES),
             TF_ENABLE_ONEDNN_OPTS='0', TF_CPP_MIN_LOG_LEVEL='2')
  completed = subprocess.run(
      [sys.executable, '-m', 'deeplab_sp.model.benchmark', _CHILD_FLAG,
       json.dumps(request)],
      env=env, capture_output=True, text=True, check=False)
  for line in completed.stdout.splitlines():
    if line.startswith(_RESULT_PREFIX):
      return int(json.loads(line[len(_RESULT_PREFIX):])['peak_bytes'])
  raise RuntimeError('The peak-memory subprocess failed (exit code '
                     f'{completed.returncode}):\n{completed.stderr[-3000:]}')


def _tokenization_call(config_text, implementation, size, batch, jit_compile,
                       ops_only):
  """Builds the model and returns a no-argument compiled tokenization call."""
  options = config_lib.parse_experiment_options(config_text)
  model = build_model(options, implementation, size, ops_only)
  calls = record_component_inputs(model, random_images(batch, size),
                                  ['tokenization'])
  layer, args, kwargs = calls['tokenization']
  return compiled_call(layer, args, kwargs, jit_compile)


def _read_status_kib(field):
  with open('/proc/self/status') as status:
    for line in status:
      if line.startswith(field + ':'):
        return int(line.split()[1])
  raise RuntimeError(f'{field} not in /proc/self/status')


def _peak_memory_child(request):
  """Runs in the subprocess: measures and prints the peak RSS growth."""
  call = _tokenization_call(request['config_text'], request['implementation'],
                            tuple(request['size']), request['batch'],
                            request['jit_compile'], request['ops_only'])
  call()  # Trace and compile.
  _synchronize()
  gc.collect()
  resident_kib = _read_status_kib('VmRSS')
  with open('/proc/self/clear_refs', 'w') as clear_refs:
    clear_refs.write('5')  # Reset the peak RSS (VmHWM) to the current RSS.
  outputs = call()
  _synchronize()
  peak_kib = _read_status_kib('VmHWM')
  del outputs
  print(_RESULT_PREFIX + json.dumps(
      {'peak_bytes': 1024 * max(peak_kib - resident_kib, 0)}), flush=True)


def _gpu_peak_bytes(config_text, implementation, size, batch, jit_compile,
                    ops_only):
  """Peak GPU memory of one tokenization call (in this process)."""
  call = _tokenization_call(config_text, implementation, size, batch,
                            jit_compile, ops_only)
  call()
  _synchronize()
  device = 'GPU:0'
  tf.config.experimental.reset_memory_stats(device)
  before = tf.config.experimental.get_memory_info(device)['current']
  call()
  _synchronize()
  return tf.config.experimental.get_memory_info(device)['peak'] - before


def run_benchmark(options: config_pb2.ExperimentOptions, config_text: str,
                  settings: BenchmarkSettings,
                  progress=logging.info) -> dict:
  """Times the components for every implementation; see the module doc.

  Args:
    options: the validated experiment.
    config_text: its text form (handed to the peak-memory subprocess).
    settings: what to measure.
    progress: called with one line of progress at a time.

  Returns:
    A JSON-serialisable dict: 'settings'; per implementation name,
    {'ms': {mode: {component: ms}}, 'tokenization_peak_bytes': int or None}
    (peak in the first execution mode) and, with 'encoder' and 'total',
    'total_over_encoder' {mode: ratio}; with both implementations,
    'speedup' {mode: {component: NAIVE ms / EFFICIENT ms}} and
    'memory_ratio' (NAIVE peak / EFFICIENT peak).
  """
  validate_settings(settings)
  size = input_size(options, settings)
  geometry = config_lib.model_geometry(options.model_options, size)
  images = random_images(settings.batch, size)
  results = {'settings': dict(
      dataclasses.asdict(settings), height=size[0], width=size[1],
      geometry=dataclasses.asdict(geometry),
      num_layers=options.model_options.superpixel_tokenization.num_layers,
      channels=options.model_options.superpixel_tokenization.channels,
      encoder=options.model_options.encoder.name,
      device=_device_name())}
  for implementation in settings.implementations:
    implementation = local_attention.normalize_implementation(implementation)
    progress(f'{implementation}: building the model at {size[0]}x{size[1]}, '
             f'batch {settings.batch}')
    model = build_model(options, implementation, size, settings.ops_only)
    rounds = time_components(model, images, settings, progress)
    del model
    gc.collect()
    entry = {'ms': {mode: {name: statistics.median(times)
                           for name, times in times_by_name.items()}
                    for mode, times_by_name in rounds.items()}}
    if 'encoder' in settings.components and 'total' in settings.components:
      # The median over rounds of total / encoder within a round.
      entry['total_over_encoder'] = {
          mode: statistics.median(
              total / encoder for total, encoder in zip(
                  times_by_name['total'], times_by_name['encoder']))
          for mode, times_by_name in rounds.items()}
    if settings.measure_memory and 'tokenization' in settings.components:
      progress(f'{implementation}: measuring the tokenization peak memory')
      entry['tokenization_peak_bytes'] = tokenization_peak_bytes(
          config_text, implementation, size, settings.batch,
          settings.execution_modes[0] == XLA, settings.ops_only)
      progress(f'  tokenization peak: {entry["tokenization_peak_bytes"]} B')
    results[implementation] = entry
  naive, efficient = local_attention.NAIVE, local_attention.EFFICIENT
  if naive in results and efficient in results:
    results['speedup'] = {
        mode: {name: results[naive]['ms'][mode][name] /
                     results[efficient]['ms'][mode][name]
               for name in settings.components}
        for mode in settings.execution_modes}
    naive_peak = results[naive].get('tokenization_peak_bytes')
    efficient_peak = results[efficient].get('tokenization_peak_bytes')
    results['memory_ratio'] = (naive_peak / efficient_peak
                               if naive_peak and efficient_peak else None)
  return results


def _device_name():
  gpus = tf.config.list_physical_devices('GPU')
  if gpus:
    return f'GPU ({len(gpus)})'
  return f'CPU ({os.cpu_count()} cores)'


def format_table(results: dict) -> str:
  """A Table IV-style text table of `run_benchmark`'s results."""
  settings = results['settings']
  implementations = [i for i in IMPLEMENTATIONS if i in results]
  geometry = settings['geometry']
  lines = [
      f"Input {settings['height']}x{settings['width']}, batch "
      f"{settings['batch']}, encoder {settings['encoder']}, hypercolumn "
      f"{geometry['hypercolumn_height']}x{geometry['hypercolumn_width']}, "
      f"superpixels {geometry['grid_height']}x{geometry['grid_width']}, "
      f"{settings['num_layers']} tokenization layers x "
      f"{settings['channels']} channels, {settings['device']}"
      + (' (ops only)' if settings['ops_only'] else '') + '.',
      f"Median of {settings['num_runs']} runs after "
      f"{max(settings['num_warmup'], 1)} warm-up, milliseconds.", '']
  for mode in settings['execution_modes']:
    header = f'{mode:<16s}' + ''.join(f'{i:>12s}' for i in implementations)
    if 'speedup' in results:
      header += f'{"speedup":>10s}'
    lines.append(header)
    for name in settings['components']:
      row = f'{name:<16s}' + ''.join(
          f"{results[i]['ms'][mode][name]:12.1f}" for i in implementations)
      if 'speedup' in results:
        row += f"{results['speedup'][mode][name]:9.2f}x"
      lines.append(row)
    if all('total_over_encoder' in results[i] for i in implementations):
      lines.append(f'{"total/encoder":<16s}' + ''.join(
          f"{results[i]['total_over_encoder'][mode]:11.2f}x"
          for i in implementations))
    lines.append('')
  if any('tokenization_peak_bytes' in results[i] for i in implementations):
    row = f'{"tokenization peak":<16s}'
    for i in implementations:
      peak = results[i].get('tokenization_peak_bytes')
      row += f'{peak / 2**20:9.1f} MiB' if peak is not None else f'{"n/a":>12s}'
    if results.get('memory_ratio'):
      row += f"{results['memory_ratio']:9.2f}x"
    lines.append(row + f"  ({settings['execution_modes'][0]}, RSS growth)")
  return '\n'.join(lines)


class LocalAttentionStandIn(tf_keras.Model):
  """The ops-only stand-in: local attention at the model's geometry.

  Components (the attributes the benchmark times):
    tokenization: `num_layers` dual-path layers on random hypercolumn
      features [batch, Hh, Wh, C] and learned queries [Hs, Ws, C]: linear
      q/k/v per path, eq. (3) and (4) with relative position embeddings,
      residual adds.
    association: eq. (5) logits at the hypercolumn stride, bilinearly
      upsampled to the input before the softmax, eq. (6) at the input size.
  """

  def __init__(self, model_options, num_classes, size, **kwargs):
    super().__init__(**kwargs)
    tokenization = model_options.superpixel_tokenization
    self._geometry = config_lib.model_geometry(model_options, size)
    self._num_classes = num_classes
    self.tokenization = _StandInTokenization(
        num_layers=tokenization.num_layers, channels=tokenization.channels,
        num_heads=tokenization.num_heads,
        grid_size=(self._geometry.grid_height, self._geometry.grid_width),
        cell_size=(self._geometry.superpixel_height,
                   self._geometry.superpixel_width),
        implementation=model_pb2.LocalAttentionImplementation.Name(
            tokenization.implementation))
    self.association = _StandInAssociation(
        input_size=size,
        implementation=model_pb2.LocalAttentionImplementation.Name(
            model_options.superpixel_association.implementation))
    rng = np.random.default_rng(_SEED)
    g = self._geometry
    self._pixels = tf.constant(rng.normal(size=(
        g.hypercolumn_height, g.hypercolumn_width, tokenization.channels)),
                               tf.float32)
    self._class_projection = tf.constant(rng.normal(size=(
        tokenization.channels, num_classes)) / np.sqrt(tokenization.channels),
                                         tf.float32)

  def call(self, images, training=False):
    batch = tf.shape(images)[0]
    pixels = tf.tile(self._pixels[tf.newaxis], [batch, 1, 1, 1])
    pixels, superpixels = self.tokenization(pixels, training=training)
    class_logits = tf.einsum('byxc,ck->byxk', superpixels,
                             self._class_projection)
    return self.association(pixels, superpixels, class_logits)


class _StandInTokenization(tf_keras.layers.Layer):
  """Dual-path local cross-attention layers on the local attention ops."""

  def __init__(self, num_layers, channels, num_heads, grid_size, cell_size,
               implementation, **kwargs):
    super().__init__(**kwargs)
    self._num_layers = num_layers
    self._channels = channels
    self._num_heads = num_heads
    self._grid_size = tuple(grid_size)
    self._cell_size = tuple(cell_size)
    self._implementation = implementation

  def build(self, input_shape):
    init = tf_keras.initializers.RandomNormal(stddev=self._channels**-0.5,
                                              seed=_SEED)
    head_dim = self._channels // self._num_heads
    neighborhood = local_attention.NUM_NEIGHBORS * int(np.prod(self._cell_size))
    self.queries = self.add_weight(
        'queries', [*self._grid_size, self._channels], initializer=init)
    # Per layer: q, k, v of each path, stacked.
    self.projections = self.add_weight(
        'projections', [self._num_layers, 6, self._channels, self._channels],
        initializer=init)
    self.superpixel_positions = self.add_weight(
        'superpixel_positions',
        [self._num_layers, 2, neighborhood, self._num_heads, head_dim],
        initializer=init)
    self.pixel_positions = self.add_weight(
        'pixel_positions', [self._num_layers, 2, local_attention.NUM_NEIGHBORS,
                            self._num_heads, head_dim], initializer=init)

  def call(self, pixels, training=False):
    batch = tf.shape(pixels)[0]
    superpixels = tf.tile(self.queries[tf.newaxis], [batch, 1, 1, 1])
    heads = lambda x: tf.reshape(
        x, [-1, *x.shape[1:3], self._num_heads,
            self._channels // self._num_heads])
    merge = lambda x: tf.reshape(x, [-1, *x.shape[1:3], self._channels])
    for layer in range(self._num_layers):
      project = lambda x, i, layer=layer: heads(
          tf.einsum('byxc,cd->byxd', x, self.projections[layer, i]))
      superpixel_update = local_attention.superpixel_update(
          project(superpixels, 0), project(pixels, 1), project(pixels, 2),
          self.superpixel_positions[layer, 0],
          self.superpixel_positions[layer, 1], self._implementation)
      pixel_update = local_attention.pixel_update(
          project(pixels, 3), project(superpixels, 4),
          project(superpixels, 5), self.pixel_positions[layer, 0],
          self.pixel_positions[layer, 1], self._implementation)
      superpixels = superpixels + merge(superpixel_update)
      pixels = pixels + merge(pixel_update)
    return pixels, superpixels


class _StandInAssociation(tf_keras.layers.Layer):
  """Eq. (5) and (6) with the paper's upsampling of the logits."""

  def __init__(self, input_size, implementation, **kwargs):
    super().__init__(**kwargs)
    self._input_size = tuple(input_size)
    self._implementation = implementation

  def call(self, pixels, superpixels, class_logits):
    logits = local_attention.association_logits(pixels, superpixels,
                                                self._implementation)
    logits = tf.image.resize(logits, self._input_size, method='bilinear')
    weights = tf.nn.softmax(logits, axis=-1)
    return local_attention.combine_neighbors(weights, class_logits,
                                             self._implementation)


if __name__ == '__main__':
  if len(sys.argv) == 3 and sys.argv[1] == _CHILD_FLAG:
    _peak_memory_child(json.loads(sys.argv[2]))
  else:
    sys.exit('This module is the logic of tools/benchmark.py; run that.')
