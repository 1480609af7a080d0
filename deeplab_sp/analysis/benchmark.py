"""Latency and memory benchmark of the SP-Transformer.

Produces the breakdown of Table IV of the SP-Transformer paper (arXiv
2309.16889): the time spent in the encoder, the hypercolumn, the superpixel
tokenization, the superpixel self-attention (the classifier) and the
association, and the whole model, for the NAIVE and EFFICIENT local
attention (deeplab_sp/model/local_attention/) side by side, plus the peak
memory of the tokenization.

Timing (timing.py). Each component is called on its real inputs: one eager
forward pass of the model records the arguments every component receives;
each component is then wrapped alone in a `tf.function` (optionally with
XLA, `jit_compile=True`) and warmed up (tracing, compilation); then
`num_runs` rounds each call every component once (round-robin, so that all
of them are timed over the same stretch of time on a machine whose speed
drifts). A
figure is the median wall time over the rounds, in milliseconds, with a
device synchronisation after each call. 'total' is the whole model's call,
timed the same way (not the sum of the parts); 'total_over_encoder' is the
median over rounds of that round's total / encoder.

Peak memory. One tokenization call's peak, measured in a fresh subprocess
as the growth of its resident set on CPU, by the allocator on GPU
(peak_memory.py says how and why).

A network without superpixels (a per-pixel baseline of
model_options.meta_architecture) has no local attention to compare: it is
timed once, component by component (its class's COMPONENTS, e.g. encoder,
aspp, decoder), with 'total' and 'total_over_encoder' as above, and its
results are keyed by its meta-architecture's name.

The `ops_only` mode times only the two stages built on the local attention,
without the encoder, hypercolumn and classifier: the model's real
SuperpixelTokenization and SuperpixelAssociation layers (built from the
config by model/builder/) run on random hypercolumn features at the
config's geometry, the association on class logits from a fixed random
projection of the superpixels.
"""

import dataclasses
import gc
import json
import statistics
from typing import Dict, Optional, Sequence

from absl import logging
from google.protobuf import text_format
import numpy as np
import tensorflow as tf
import tf_keras

from deeplab_sp import experiment as experiment_lib
from deeplab_sp.analysis import devices
from deeplab_sp.analysis import peak_memory
from deeplab_sp.analysis import timing
from deeplab_sp.model import builder
from deeplab_sp.model import geometry as geometry_lib
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

# The peak-memory subprocess: a fresh interpreter running `peak_memory_child`.
_CHILD_PROGRAM = ('import json, sys\n'
                  'from deeplab_sp.analysis import benchmark\n'
                  'benchmark.peak_memory_child(json.loads(sys.argv[1]))')
# A fixed seed: the benchmark's random inputs are the same in every process.
_SEED = 0


@dataclasses.dataclass
class BenchmarkSettings:
  """What to measure.

  Attributes:
    height, width: input image size; None: the config's model input size.
    batch: images per call.
    components: the components to time; empty: all of them (COMPONENTS;
      OPS_ONLY_COMPONENTS with ops_only; a per-pixel network's COMPONENTS
      and 'total').
    implementations: subset of IMPLEMENTATIONS to compare.
    execution_modes: subset of EXECUTION_MODES (plain tf.function, XLA).
    num_warmup: untimed calls before timing (the first traces/compiles).
    num_runs: timed calls; the median is reported.
    measure_memory: whether to measure the tokenization's peak memory.
    ops_only: time only the tokenization and association layers, on random
      features, without building the rest of the model (see the module
      docstring).
  """
  height: Optional[int] = None
  width: Optional[int] = None
  batch: int = 1
  components: Sequence[str] = ()
  implementations: Sequence[str] = IMPLEMENTATIONS
  execution_modes: Sequence[str] = EXECUTION_MODES
  num_warmup: int = 2
  num_runs: int = 5
  measure_memory: bool = True
  ops_only: bool = False


def validate_settings(settings: BenchmarkSettings,
                      allowed: Optional[Sequence[str]] = None) -> None:
  """Raises ValueError naming the bad setting and the fix.

  Args:
    settings: the settings to check.
    allowed: the components the model has (default: the SP-Transformer's,
      or those of ops_only).
  """
  if allowed is None:
    allowed = OPS_ONLY_COMPONENTS if settings.ops_only else COMPONENTS
  for name in settings.components:
    if name not in allowed:
      raise ValueError(
          f'Unknown component {name!r}: choose among {", ".join(allowed)}' +
          (' (ops_only times only the local attention ops).'
           if settings.ops_only else '.'))
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


def input_size(experiment: experiment_lib.Experiment,
               settings: BenchmarkSettings):
  """(height, width) to benchmark; GeometryError if the model cannot take it."""
  if settings.height is None:
    return experiment.input_size  # Checked when the experiment was loaded.
  size = (settings.height, settings.width)
  model_geometry(experiment.options.model_options, size)  # Validates.
  return size


def model_geometry(model_options: model_pb2.ModelOptions,
                   size) -> Optional[geometry_lib.Geometry]:
  """The model's feature-map sizes at `size` (None for a per-pixel network);
  GeometryError if it misfits."""
  return builder.model_geometry(model_options, size)


def build_model(experiment: experiment_lib.Experiment, implementation: str,
                size, ops_only: bool = False):
  """The model (or its local attention stages only) for one implementation."""
  model_options = with_implementation(experiment.options.model_options,
                                      implementation)
  if ops_only:
    return LocalAttentionStages(model_options, experiment.num_classes, size)
  return builder.build_model(model_options, experiment.num_classes,
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
  calls = timing.record_calls(
      model, images, {name: _COMPONENT_ATTRIBUTES.get(name, name)
                      for name in components if name != 'total'})
  if 'total' in components:
    calls['total'] = (model, (images,), {'training': False})
  return {name: calls[name] for name in components if name in calls}


def time_components(model, images, settings: BenchmarkSettings,
                    progress=logging.info) -> Dict[str, Dict[str, list]]:
  """{execution mode: {component: [ms of each timed round]}} for one model.

  Every component is compiled and warmed up first; then each of the
  `num_runs` timed rounds calls every component once (timing.round_robin),
  so per-round ratios such as total / encoder stay meaningful.
  """
  calls = record_component_inputs(model, images, settings.components)
  missing = [c for c in settings.components if c not in calls]
  if missing:
    raise ValueError(f'The model did not call component(s) {missing}; '
                     'drop them from --components.')
  results = {}
  for mode in settings.execution_modes:
    functions = {name: timing.compiled_call(*calls[name],
                                            jit_compile=(mode == XLA))
                 for name in settings.components}
    results[mode] = timing.round_robin(functions, settings.num_warmup,
                                       settings.num_runs)
    for name, times in results[mode].items():
      progress(f'  {mode:<11s} {name:<15s} {statistics.median(times):10.1f} '
               'ms')
  return results


def tokenization_peak_bytes(experiment: experiment_lib.Experiment,
                            implementation: str, size, batch: int,
                            jit_compile: bool,
                            ops_only: bool) -> Optional[int]:
  """Peak memory of one tokenization call (see peak_memory.py).

  Returns None where it is not available (CPU, not Linux).
  """
  if devices.gpu_in_use():
    return peak_memory.gpu_peak_bytes(_tokenization_call(
        experiment, implementation, size, batch, jit_compile, ops_only))
  request = dict(options=text_format.MessageToString(experiment.options),
                 implementation=implementation, size=list(size), batch=batch,
                 jit_compile=jit_compile, ops_only=ops_only)
  return peak_memory.rss_growth_in_subprocess(_CHILD_PROGRAM,
                                              json.dumps(request))


def peak_memory_child(request: dict) -> None:
  """Runs in the subprocess: reports the tokenization call's RSS growth.

  Args:
    request: the JSON-decoded arguments of `tokenization_peak_bytes`, the
      ExperimentOptions in text format.
  """
  experiment = experiment_lib.experiment_from_options(
      text_format.Parse(request['options'], config_pb2.ExperimentOptions()),
      mode=None)
  peak_memory.report_rss_growth(_tokenization_call(
      experiment, request['implementation'], tuple(request['size']),
      request['batch'], request['jit_compile'], request['ops_only']))


def _tokenization_call(experiment, implementation, size, batch, jit_compile,
                       ops_only):
  """Builds the model and returns a no-argument compiled tokenization call."""
  model = build_model(experiment, implementation, size, ops_only)
  calls = record_component_inputs(model, random_images(batch, size),
                                  ['tokenization'])
  return timing.compiled_call(*calls['tokenization'], jit_compile)


def run_benchmark(experiment: experiment_lib.Experiment,
                  settings: BenchmarkSettings,
                  progress=logging.info) -> dict:
  """Times the components for every implementation; see the module doc.

  Args:
    experiment: the loaded experiment (its model options, class count and
      input size).
    settings: what to measure.
    progress: called with one line of progress at a time.

  Returns:
    A JSON-serialisable dict: 'settings'; per implementation name,
    {'ms': {mode: {component: ms}}, 'tokenization_peak_bytes': int or None}
    (peak in the first execution mode) and, with 'encoder' and 'total',
    'total_over_encoder' {mode: ratio}; with both implementations,
    'speedup' {mode: {component: NAIVE ms / EFFICIENT ms}} and
    'memory_ratio' (NAIVE peak / EFFICIENT peak). A per-pixel network has
    one entry, keyed by its meta-architecture's name (see the module
    docstring).
  """
  if not experiment.has_superpixels:
    return _run_per_pixel_benchmark(experiment, settings, progress)
  settings = dataclasses.replace(settings, components=tuple(
      settings.components) or (
          OPS_ONLY_COMPONENTS if settings.ops_only else COMPONENTS))
  validate_settings(settings)
  options = experiment.options
  size = input_size(experiment, settings)
  geometry = model_geometry(options.model_options, size)
  images = random_images(settings.batch, size)
  results = {'settings': dict(
      dataclasses.asdict(settings), height=size[0], width=size[1],
      geometry=dataclasses.asdict(geometry),
      num_layers=options.model_options.superpixel_tokenization.num_layers,
      channels=options.model_options.superpixel_tokenization.channels,
      encoder=options.model_options.encoder.name,
      device=device_name())}
  for implementation in settings.implementations:
    implementation = local_attention.normalize_implementation(implementation)
    progress(f'{implementation}: building the model at {size[0]}x{size[1]}, '
             f'batch {settings.batch}')
    model = build_model(experiment, implementation, size, settings.ops_only)
    rounds = time_components(model, images, settings, progress)
    del model
    gc.collect()
    entry = _medians(rounds)
    if settings.measure_memory and 'tokenization' in settings.components:
      progress(f'{implementation}: measuring the tokenization peak memory')
      entry['tokenization_peak_bytes'] = tokenization_peak_bytes(
          experiment, implementation, size, settings.batch,
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


def _medians(rounds: Dict[str, Dict[str, list]]) -> dict:
  """{'ms': {mode: {component: median}}} of time_components' rounds, and
  'total_over_encoder' {mode: median over rounds of total / encoder} when
  both were timed."""
  entry = {'ms': {mode: {name: statistics.median(times)
                         for name, times in times_by_name.items()}
                  for mode, times_by_name in rounds.items()}}
  if all('encoder' in times and 'total' in times
         for times in rounds.values()):
    # The median over rounds of total / encoder within a round.
    entry['total_over_encoder'] = {
        mode: statistics.median(
            total / encoder for total, encoder in zip(
                times_by_name['total'], times_by_name['encoder']))
        for mode, times_by_name in rounds.items()}
  return entry


def _run_per_pixel_benchmark(experiment: experiment_lib.Experiment,
                             settings: BenchmarkSettings,
                             progress=logging.info) -> dict:
  """run_benchmark for a network without superpixels: its own components.

  The local attention implementations and the tokenization memory do not
  apply and are ignored; ops_only is an error.
  """
  name = experiment.meta_architecture
  if settings.ops_only:
    raise ValueError(f'{name} has no local attention: ops_only times the '
                     "SP-Transformer's tokenization and association only.")
  size = input_size(experiment, settings)
  progress(f'{name}: building the model at {size[0]}x{size[1]}, batch '
           f'{settings.batch}')
  model = builder.build_model(experiment.options.model_options,
                              experiment.num_classes, input_size=size)
  allowed = (*type(model).COMPONENTS, 'total')
  settings = dataclasses.replace(
      settings, components=tuple(settings.components) or allowed)
  validate_settings(settings, allowed)
  rounds = time_components(model, random_images(settings.batch, size),
                           settings, progress)
  return {
      'settings': dict(
          dataclasses.asdict(settings), height=size[0], width=size[1],
          geometry=None, meta_architecture=name,
          encoder=experiment.options.model_options.encoder.name,
          device=device_name()),
      name: _medians(rounds)}


def device_name():
  return devices.describe()


def format_table(results: dict) -> str:
  """A Table IV-style text table of `run_benchmark`'s results."""
  settings = results['settings']
  geometry = settings['geometry']
  if geometry is None:  # A per-pixel network: one column.
    implementations = [settings['meta_architecture']]
    model = f"{settings['meta_architecture']} (no superpixels)"
  else:
    implementations = [i for i in IMPLEMENTATIONS if i in results]
    model = (
        f"hypercolumn {geometry['hypercolumn_height']}x"
        f"{geometry['hypercolumn_width']}, superpixels "
        f"{geometry['grid_height']}x{geometry['grid_width']}, "
        f"{settings['num_layers']} tokenization layers x "
        f"{settings['channels']} channels")
  lines = [
      f"Input {settings['height']}x{settings['width']}, batch "
      f"{settings['batch']}, encoder {settings['encoder']}, {model}, "
      f"{settings['device']}"
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


class LocalAttentionStages(tf_keras.Model):
  """The ops-only model: the real tokenization and association layers.

  Attributes (the components the benchmark times):
    tokenization: the config's SuperpixelTokenization, called on fixed
      random hypercolumn features [batch, Hh, Wh, hypercolumn channels].
    association: the config's SuperpixelAssociation, on the tokenization's
      outputs and class logits from a fixed random projection of the
      superpixels.
  """

  def __init__(self, model_options: model_pb2.ModelOptions, num_classes: int,
               size, **kwargs):
    super().__init__(**kwargs)
    geometry = model_geometry(model_options, size)
    self._input_size = geometry.input_size
    self.tokenization = builder.sp_transformer.build_tokenization(
        model_options.superpixel_tokenization)
    self.association = builder.sp_transformer.build_association(
        model_options.superpixel_association)
    rng = np.random.default_rng(_SEED)
    self._pixels = tf.constant(rng.normal(size=(
        geometry.hypercolumn_height, geometry.hypercolumn_width,
        model_options.hypercolumn.channels)), tf.float32)
    channels = model_options.superpixel_tokenization.channels
    self._class_projection = tf.constant(rng.normal(size=(
        channels, num_classes)) / np.sqrt(channels), tf.float32)
    self(tf.zeros((1, *self._input_size, 3)))  # Builds the layers.

  def call(self, images, training=False):
    batch = tf.shape(images)[0]
    pixels = tf.tile(self._pixels[tf.newaxis], [batch, 1, 1, 1])
    superpixels, pixels = self.tokenization(pixels, training=training)
    class_logits = tf.einsum('byxc,ck->byxk', superpixels,
                             self._class_projection)
    return self.association(pixels, superpixels, class_logits,
                            self._input_size)
