"""Tests of deeplab_sp.analysis.train_* and tools/benchmark.py --mode=train."""

import json
import subprocess
import sys

from google.protobuf import text_format
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import tiny_experiment
from deeplab_sp import experiment as experiment_lib
from deeplab_sp.analysis import devices
from deeplab_sp.analysis import peak_memory
from deeplab_sp.analysis import train_benchmark
from deeplab_sp.analysis import train_child
from deeplab_sp.analysis import train_measurements as measurements
from deeplab_sp.analysis import train_report
from deeplab_sp.analysis import train_settings
from deeplab_sp.analysis import train_setup
from deeplab_sp.model import geometry as geometry_lib

# The tiny experiment at 64x96, hypercolumn stride 2 (32x48), 4x6
# superpixels of 8x8 hypercolumn pixels, one 32-channel dual-path layer.
_OVERRIDES = {
    'model_options.hypercolumn.channels': 32,
    'model_options.hypercolumn.output_stride': 2,
    'model_options.superpixel_tokenization.grid_height': 4,
    'model_options.superpixel_tokenization.grid_width': 6,
    'model_options.superpixel_tokenization.num_layers': 1,
    'model_options.superpixel_tokenization.channels': 32,
    'train_dataset_options.crop_size': [64, 96],
    'eval_dataset_options.crop_size': [64, 96],
    # The first step trains at the full learning rate (no warm-up from 0).
    'trainer_options.warmup_steps': 0,
}
_SIZE = (64, 96)


@pytest.fixture(scope='module')
def tiny_config(tmp_path_factory):
  path = tmp_path_factory.mktemp('config') / 'tiny.textproto'
  path.write_text(text_format.MessageToString(
      tiny_experiment.options(_OVERRIDES, fast=True)))
  return str(path)


@pytest.fixture(scope='module')
def experiment(tiny_config):
  return experiment_lib.load_experiment(tiny_config, mode=None)


@pytest.fixture(scope='module')
def setup(experiment):
  # The same weights whatever ran before in the process.
  tf_keras.utils.set_random_seed(0)
  return train_setup.TrainingSetup(experiment, 'EFFICIENT', _SIZE, 2)


def _values(variables):
  # By identity: layers of different blocks share variable names.
  return {id(v): v.numpy() for v in variables}


def _changed(before, variables):
  return [not np.array_equal(before[id(v)], v.numpy()) for v in variables]


def test_step_is_the_trainers_step(setup):
  # One call: both optimizers step once and the weights of every component
  # move.
  model = setup.model
  before = _values(model.trainable_variables)
  iterations = int(setup.trainer.optimizer.iterations.numpy())
  setup.step()()
  assert int(setup.trainer.optimizer.iterations.numpy()) == iterations + 1
  assert int(setup.trainer.optimizer.backbone.iterations.numpy()) == (
      iterations + 1)
  for component in ('encoder', 'tokenization', 'classifier'):
    variables = getattr(model, component).trainable_variables
    assert any(_changed(before, variables)), component


def test_forward_backward_gives_the_gradients(setup):
  layer, args, kwargs = setup.calls['tokenization']
  assert kwargs == {'training': True}
  gradients = setup.forward_backward('tokenization')()
  variables = layer.trainable_variables
  assert len(gradients) == len(variables) + 1  # The pixels' gradient too.
  pixels = args[0]
  outputs = layer(*args, **kwargs)
  # The same fixed output gradients: the function's gradient is linear in
  # them, so recover them by differentiating sum(output * g) directly.
  rng = np.random.default_rng(train_setup.SEED + 2)
  cotangents = [rng.normal(size=o.shape) for o in outputs]
  with tf.GradientTape() as tape:
    tape.watch(pixels)
    outputs = layer(*args, **kwargs)
    objective = tf.add_n([tf.reduce_sum(o * tf.constant(g, o.dtype))
                          for o, g in zip(outputs, cotangents)])
  expected = tape.gradient(objective, variables + [pixels])
  for got, want in zip(gradients, expected):
    want = tf.convert_to_tensor(want).numpy()
    # The timed graph fuses some ops (XLA islands) that the eager reference
    # runs one by one: equal to float32 round-off of the gradient's scale.
    np.testing.assert_allclose(tf.convert_to_tensor(got).numpy(), want,
                               rtol=1e-4,
                               atol=1e-5 * max(1.0, np.abs(want).max()))


def test_association_is_differentiated_through_the_dense_logits(setup):
  layer, args, _ = setup.calls['association']
  gradients = setup.forward_backward('association')()
  # No variables; the pixels, superpixels and class logits get gradients.
  assert not layer.trainable_variables
  assert [g.shape for g in gradients] == [a.shape for a in args[:3]]
  assert all(np.any(g.numpy() != 0) for g in gradients)


def test_encoder_step_updates_only_the_encoder(setup):
  model = setup.model
  before = _values(model.trainable_variables)
  setup.encoder_step()()
  encoder = {id(v) for v in model.encoder.trainable_variables}
  others = [v for v in model.trainable_variables if id(v) not in encoder]
  assert not any(_changed(before, others))
  assert any(_changed(before, model.encoder.trainable_variables))


def test_training_state_counts_weights_and_moments(setup):
  count = sum(int(np.prod(v.shape)) for v in setup.model.trainable_variables)
  assert train_setup.training_state_bytes(setup.model) == 12 * count


@pytest.mark.skipif(devices.gpu_in_use(), reason='the CPU (subprocess) path')
def test_a_measurement_over_the_limit_is_reported(experiment):
  # 50 MiB: the subprocess passes it while it loads TensorFlow.
  with pytest.raises(peak_memory.MemoryLimitExceeded, match='more than'):
    train_benchmark.measure_peak_memory(experiment, 'EFFICIENT', 'step',
                                        'float32', _SIZE, 1,
                                        limit_bytes=50 * 2**20)


@pytest.mark.skipif(devices.gpu_in_use(), reason='the CPU (subprocess) path')
def test_a_step_over_the_limit_is_a_note_and_the_rest_is_timed(experiment):
  # The step's subprocess passes 50 MiB while it loads TensorFlow.
  settings = train_settings.TrainBenchmarkSettings(
      implementations=('EFFICIENT',), num_warmup=1, num_runs=1,
      measure_memory=False, memory_limit_bytes=50 * 2**20)
  results = train_benchmark.run_train_benchmark(experiment, settings,
                                                lambda _: None)
  assert results.median_ms('EFFICIENT', 'step') is None
  assert results.median_ms('EFFICIENT', 'encoder_step') is None
  assert measurements.ratio_value(results.total_over_encoder,
                                  implementation='EFFICIENT') is None
  assert all(results.median_ms('EFFICIENT', c) > 0
             for c in train_settings.COMPONENTS)
  assert any(n.startswith('EFFICIENT step: not timed, out of memory. The '
                          'EFFICIENT step needs more than')
             for n in results.notes), results.notes


@pytest.mark.parametrize('change,message', [
    (dict(implementations=('FAST',)), 'NAIVE = 0, EFFICIENT = 1'),
    (dict(implementations=()), 'at least one'),
    (dict(num_runs=0), 'num_runs must be >= 1'),
    (dict(width=64), 'Give both height and width'),
    (dict(precisions=('float16',)), "Unknown precision 'float16'"),
    (dict(memory_limit_bytes=0), 'must be positive'),
])
def test_bad_settings_raise(change, message):
  with pytest.raises(ValueError, match=message):
    train_settings.validate_settings(
        train_settings.TrainBenchmarkSettings(**change))


def test_tool_refuses_inference_flags_in_train_mode(tiny_config):
  completed = subprocess.run(
      [sys.executable, 'tools/benchmark.py', '--mode=train',
       f'--config_file={tiny_config}', '--ops_only'],
      capture_output=True, text=True, check=False)
  assert completed.returncode == 1
  assert '--ops_only is a flag of --mode=inference' in completed.stderr


@pytest.mark.skipif(devices.gpu_in_use(), reason='this machine has a GPU')
def test_tool_asks_for_a_gpu_it_does_not_have(tiny_config):
  completed = subprocess.run(
      [sys.executable, 'tools/benchmark.py', f'--config_file={tiny_config}',
       '--device=gpu'],
      capture_output=True, text=True, check=False)
  assert completed.returncode == 1
  assert 'TensorFlow sees no GPU' in completed.stderr


def _timing(implementation, part, rounds_ms):
  return measurements.StepTiming.from_rounds(
      rounds_ms, implementation=implementation, part=part, policy='float32',
      height=_SIZE[0], width=_SIZE[1], batch=1, in_subprocess=False)


def _peak(implementation, part, precision, peak_bytes):
  return measurements.PeakMemory(
      implementation, part, precision, _SIZE[0], _SIZE[1], 1,
      measurements.RSS_GROWTH, peak_bytes, out_of_memory=peak_bytes is None)


def _run_settings():
  return train_settings.RunSettings(
      height=_SIZE[0], width=_SIZE[1], batch=1,
      implementations=['NAIVE', 'EFFICIENT'], num_warmup=1, num_runs=3,
      measure_memory=True, precisions=['float32'], memory_limit_bytes=None,
      geometry=geometry_lib.compute_geometry(_SIZE, 2, 4, 6), num_layers=1,
      channels=32, encoder='resnet50', timing_policy='float32',
      use_xla=False, device='CPU (2 cores)', steps_in_subprocess=True)


def test_ratios_are_derived_from_the_records():
  # Figures made up for the arithmetic: NAIVE twice as slow per round.
  timings = []
  for implementation, scale in (('NAIVE', 2.0), ('EFFICIENT', 1.0)):
    timings += [_timing(implementation, row, [scale * 10, scale * 11, 30])
                for row in train_settings.ROWS if row != 'step']
    timings.append(_timing(implementation, 'step', [40, 22, 90]))
  peaks = [_peak('EFFICIENT', 'encoder', 'float32', 3 * 2**20),
           _peak('NAIVE', 'tokenization', 'float32', 8 * 2**20),
           _peak('NAIVE', 'step', 'float32', None),
           _peak('EFFICIENT', 'tokenization', 'float32', 2 * 2**20),
           _peak('EFFICIENT', 'step', 'float32', 6 * 2**20)]
  results = measurements.TrainBenchmarkResults.from_measurements(
      _run_settings(), timings, peaks, 12 * 2**20, ['a note'])
  ratio = measurements.ratio_value
  timing = results.timing('NAIVE', 'encoder_step')
  assert (timing.min_ms, timing.median_ms, timing.max_ms) == (20, 22, 30)
  # The median of the rounds' ratios (40/20, 22/22, 90/30), not of the ms.
  assert ratio(results.total_over_encoder, implementation='NAIVE') == 2.0
  assert ratio(results.total_over_encoder,
               implementation='EFFICIENT') == 3.0
  assert ratio(results.speedup, part='tokenization') == 2.0
  assert ratio(results.speedup, part='step') == 1.0
  assert results.memory_ratio == 4.0
  assert ratio(results.step_memory_over_encoder, implementation='EFFICIENT',
               precision='float32') == 2.0
  assert ratio(results.step_memory_over_encoder, implementation='NAIVE',
               precision='float32') is None
  # The JSON is dataclasses.asdict: plain data that rebuilds the records.
  data = json.loads(json.dumps(train_benchmark.to_json(results)))
  assert data['mode'] == 'train' and data['memory_ratio'] == 4.0
  assert [measurements.StepTiming(**t) for t in data['step_timings']] == (
      timings)
  assert [measurements.PeakMemory(**p) for p in data['peak_memory']] == peaks
  table = train_report.format_table(results)
  assert '4.00x' in table and '2.00x' in table and 'Note: a note' in table
  assert '3.0' in table  # The encoder's 3 MiB.


@pytest.mark.slow
def test_the_steps_are_timed_in_a_child_started_as_a_module(experiment,
                                                            monkeypatch):
  commands = []
  real_run = subprocess.run

  def recording_run(command, *args, **kwargs):
    commands.append(command)
    return real_run(command, *args, **kwargs)
  monkeypatch.setattr(subprocess, 'run', recording_run)
  timings = train_child.time_steps(experiment, 'EFFICIENT', 'float32',
                                   _SIZE, 1, num_warmup=1, num_runs=2,
                                   limit_bytes=None)
  [command] = commands
  # The module itself, given the request as JSON: no Python source string.
  assert command[:3] == [sys.executable, '-m',
                         'deeplab_sp.analysis.train_child']
  assert '-c' not in command and len(command) == 4
  request = train_child.ChildRequest(**json.loads(command[3]))
  assert (request.task, request.implementation, request.num_runs) == (
      train_child.STEP_TIMING, 'EFFICIENT', 2)
  assert [type(t) for t in timings] == [measurements.StepTiming] * 2
  assert [t.part for t in timings] == ['encoder_step', 'step']
  for timing in timings:
    assert timing.in_subprocess and timing.implementation == 'EFFICIENT'
    assert (timing.height, timing.width, timing.batch) == (*_SIZE, 1)
    assert len(timing.rounds_ms) == 2
    assert 0 < timing.min_ms <= timing.median_ms <= timing.max_ms


@pytest.mark.slow
def test_results_rows_and_ratios(experiment):
  settings = train_settings.TrainBenchmarkSettings(
      num_warmup=1, num_runs=2, measure_memory=False)
  lines = []
  results = train_benchmark.run_train_benchmark(experiment, settings,
                                                lines.append)
  json.dumps(train_benchmark.to_json(results))  # JSON-serialisable.
  assert results.mode == 'train'
  assert results.settings.height == 64
  assert results.settings.timing_policy == 'float32'
  # On CPU each implementation's steps run in a subprocess of their own.
  assert results.settings.steps_in_subprocess == (not devices.gpu_in_use())
  if results.settings.steps_in_subprocess:
    assert any('timing the whole step and the encoder step in a subprocess'
               in line for line in lines)
  for implementation in ('NAIVE', 'EFFICIENT'):
    timings = [t for t in results.step_timings
               if t.implementation == implementation]
    assert {t.part for t in timings} == set(train_settings.ROWS)
    assert len(timings) == len(train_settings.ROWS)
    assert all(t.median_ms > 0 for t in timings)
    assert all(t.in_subprocess == (results.settings.steps_in_subprocess and
                                   t.part in ('encoder_step', 'step'))
               for t in timings)
    assert measurements.ratio_value(
        results.total_over_encoder,
        implementation=implementation) > 1.0  # The step trains more.
  assert not results.peak_memory and not results.step_memory_over_encoder
  for row in train_settings.ROWS:
    assert measurements.ratio_value(results.speedup, part=row) == (
        pytest.approx(results.median_ms('NAIVE', row) /
                      results.median_ms('EFFICIENT', row)))
  assert results.memory_ratio is None and not results.memory_ratios
  assert results.notes == []
  assert any('round 2/2' in line for line in lines)
  table = train_benchmark.format_table(results)
  for row in train_settings.ROWS + ('step/encoder', 'speedup'):
    assert row in table
  assert 'MiB' not in table


@pytest.mark.slow
@pytest.mark.skipif(devices.gpu_in_use(), reason='the CPU (subprocess) path')
def test_peak_memory_of_the_tokenization_naive_and_efficient(experiment):
  # The 9x copies of NAIVE's pixel keys and values dominate its peak.
  peaks = {i: train_benchmark.measure_peak_memory(
      experiment, i, 'tokenization', 'float32', _SIZE, 1)
           for i in ('NAIVE', 'EFFICIENT')}
  assert all(p.method == measurements.RSS_GROWTH and not p.out_of_memory
             for p in peaks.values())
  assert peaks['EFFICIENT'].peak_bytes > 0
  assert peaks['NAIVE'].peak_bytes > 2 * peaks['EFFICIENT'].peak_bytes
  bfloat16 = train_benchmark.measure_peak_memory(
      experiment, 'EFFICIENT', 'step', 'bfloat16', _SIZE, 1)
  assert (bfloat16.part, bfloat16.precision) == ('step', 'bfloat16')
  assert bfloat16.peak_bytes > 0


@pytest.mark.slow
def test_out_of_memory_is_a_note_and_the_step_is_not_timed(
    experiment, monkeypatch):
  def measure_peak_memory(unused_experiment, implementation, part, precision,
                          size, batch, unused_limit):
    if implementation == 'NAIVE' and part == 'step':
      raise peak_memory.MemoryLimitExceeded('needs more than 1.0 GiB', 2**30)
    return measurements.PeakMemory(
        implementation, part, precision, *size, batch,
        measurements.RSS_GROWTH,
        {'encoder': 3, 'tokenization': 2, 'step': 6}[part] * 2**20)
  monkeypatch.setattr(train_benchmark, 'measure_peak_memory',
                      measure_peak_memory)
  settings = train_settings.TrainBenchmarkSettings(
      num_warmup=1, num_runs=1, precisions=('float32',))
  results = train_benchmark.run_train_benchmark(experiment, settings,
                                                lambda _: None)
  ratio = measurements.ratio_value
  assert results.median_ms('NAIVE', 'step') is None
  assert ratio(results.total_over_encoder, implementation='NAIVE') is None
  assert results.peak_bytes('NAIVE', 'step', 'float32') is None
  assert [p.out_of_memory for p in results.peak_memory
          if p.implementation == 'NAIVE' and p.part == 'step'] == [True]
  assert results.median_ms('EFFICIENT', 'step') > 0
  assert ratio(results.step_memory_over_encoder, implementation='EFFICIENT',
               precision='float32') == 2.0
  assert results.memory_ratio == 1.0
  assert ratio(results.speedup, part='step') is None
  assert any('NAIVE step float32: out of memory' in n for n in results.notes)
  assert any('NAIVE step: not timed' in n for n in results.notes)
  table = train_benchmark.format_table(results)
  assert 'n/a' in table and 'Note: NAIVE step' in table


@pytest.mark.slow
def test_tool_prints_json(tiny_config, tmp_path):
  output = tmp_path / 'train.json'
  completed = subprocess.run(
      [sys.executable, 'tools/benchmark.py', '--mode=train',
       f'--config_file={tiny_config}', '--implementations=EFFICIENT',
       '--num_runs=1', '--num_warmup=1', '--measure_memory=false',
       '--device=cpu', '--format=json', f'--output_file={output}'],
      capture_output=True, text=True, check=False)
  assert completed.returncode == 0, completed.stderr[-2000:]
  results = json.loads(completed.stdout)
  assert results == json.loads(output.read_text())
  assert results['mode'] == 'train'
  assert results['settings']['device'].startswith('CPU')
  steps = [t for t in results['step_timings'] if t['part'] == 'step']
  assert [t['implementation'] for t in steps] == ['EFFICIENT']
  assert steps[0]['median_ms'] > 0
  assert all(t['implementation'] != 'NAIVE' for t in results['step_timings'])
  assert results['speedup'] == [] and results['memory_ratio'] is None


@pytest.mark.slow
@pytest.mark.skipif(not devices.gpu_in_use(), reason='needs a GPU')
def test_on_a_gpu_both_modes_measure_the_allocator_peak(experiment):
  settings = train_settings.TrainBenchmarkSettings(
      implementations=('EFFICIENT',), num_warmup=1, num_runs=1)
  results = train_benchmark.run_train_benchmark(experiment, settings,
                                                lambda _: None)
  assert results.settings.device.startswith('GPU')
  for precision in ('float32', 'bfloat16'):
    tokenization = results.peak_bytes('EFFICIENT', 'tokenization', precision)
    assert tokenization > 0
    assert results.peak_bytes('EFFICIENT', 'step', precision) > tokenization
  assert all(p.method == measurements.GPU_ALLOCATOR_PEAK
             for p in results.peak_memory)
  assert results.median_ms('EFFICIENT', 'step') > 0
