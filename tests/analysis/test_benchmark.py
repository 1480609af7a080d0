"""Tests of deeplab_sp.analysis.benchmark and tools/benchmark.py."""

import json
import subprocess
import sys

from google.protobuf import text_format
import numpy as np
import pytest
import tf_keras

import tiny_experiment
from deeplab_sp import experiment as experiment_lib
from deeplab_sp.analysis import benchmark
from deeplab_sp.analysis import timing
from deeplab_sp.model import local_attention

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
}


@pytest.fixture(scope='module')
def tiny_config(tmp_path_factory):
  path = tmp_path_factory.mktemp('config') / 'tiny.textproto'
  path.write_text(text_format.MessageToString(
      tiny_experiment.options(_OVERRIDES, fast=True)))
  return str(path)


def _read(path) -> experiment_lib.Experiment:
  return experiment_lib.load_experiment(path, mode=None)


def test_ops_only_results_and_ratios(tiny_config):
  options = _read(tiny_config)
  settings = benchmark.BenchmarkSettings(
      components=('tokenization', 'association'), num_warmup=1, num_runs=2,
      ops_only=True)
  lines = []
  results = benchmark.run_benchmark(options, settings, lines.append)
  json.dumps(results)  # JSON-serialisable.
  assert results['settings']['geometry']['superpixel_height'] == 8
  assert results['settings']['height'] == 64  # From the eval crop_size.
  for implementation in ('NAIVE', 'EFFICIENT'):
    entry = results[implementation]
    for mode in ('tf_function', 'xla'):
      assert set(entry['ms'][mode]) == {'tokenization', 'association'}
      assert all(ms > 0 for ms in entry['ms'][mode].values())
    assert entry['tokenization_peak_bytes'] > 0
  for mode in ('tf_function', 'xla'):
    for name in ('tokenization', 'association'):
      assert results['speedup'][mode][name] == pytest.approx(
          results['NAIVE']['ms'][mode][name] /
          results['EFFICIENT']['ms'][mode][name])
  assert results['memory_ratio'] == pytest.approx(
      results['NAIVE']['tokenization_peak_bytes'] /
      results['EFFICIENT']['tokenization_peak_bytes'])
  # The 9x copies of the 32x48x32 pixel keys and values dominate NAIVE's
  # peak: the measurement must see them.
  assert results['memory_ratio'] > 2.0
  assert any('measuring the tokenization peak' in line for line in lines)
  table = benchmark.format_table(results)
  assert 'tokenization' in table and 'speedup' in table and 'MiB' in table


def test_record_component_inputs_restores_the_layers(tiny_config):
  options = _read(tiny_config)
  model = benchmark.build_model(options, 'EFFICIENT', (64, 96), ops_only=True)
  num_classes = options.num_classes
  images = benchmark.random_images(2, (64, 96))
  calls = benchmark.record_component_inputs(
      model, images, ['tokenization', 'association', 'total'])
  layer, args, kwargs = calls['tokenization']
  assert layer is model.tokenization
  assert args[0].shape == (2, 32, 48, 32)
  assert kwargs == {'training': False}
  association_args = calls['association'][1]
  assert [a.shape for a in association_args[:3]] == [
      (2, 32, 48, 32), (2, 4, 6, 32), (2, 4, 6, num_classes)]
  assert tuple(association_args[3]) == (64, 96)
  # The real layers of the model package, not copies.
  assert type(model.tokenization).__module__ == 'deeplab_sp.model.tokenization'
  assert type(model.association).__module__ == 'deeplab_sp.model.association'

  assert calls['total'][0] is model
  assert 'call' not in vars(model.tokenization)  # The recorder is removed.
  # Replaying a recorded call gives the model's own intermediate result.
  replayed = timing.compiled_call(layer, args, kwargs, jit_compile=True)()
  np.testing.assert_allclose(
      replayed[1].numpy(), model.tokenization(*args, **kwargs)[1].numpy(),
      rtol=1e-5, atol=1e-5)


def test_with_implementation_sets_both_ops(tiny_config):
  options = _read(tiny_config).copy_options()
  changed = benchmark.with_implementation(options.model_options, 'EFFICIENT')
  assert changed.superpixel_tokenization.implementation == 1
  assert changed.superpixel_association.implementation == 1
  options.model_options.superpixel_tokenization.implementation = 0
  changed = benchmark.with_implementation(options.model_options, 'EFFICIENT')
  assert changed.superpixel_tokenization.implementation == 1
  assert options.model_options.superpixel_tokenization.implementation == 0


@pytest.mark.parametrize('change,message', [
    (dict(components=('decoder',)), "Unknown component 'decoder'"),
    (dict(components=('encoder',), ops_only=True), 'ops_only times only'),
    (dict(execution_modes=('jit',)), "Unknown execution mode 'jit'"),
    (dict(implementations=('FAST',)), 'NAIVE = 0, EFFICIENT = 1'),
    (dict(num_runs=0), 'num_runs must be >= 1'),
    (dict(height=64), 'Give both height and width'),
])
def test_bad_settings_raise(change, message):
  with pytest.raises(ValueError, match=message):
    benchmark.validate_settings(benchmark.BenchmarkSettings(**change))


def test_size_the_grid_does_not_divide_raises(tiny_config):
  options = _read(tiny_config)
  settings = benchmark.BenchmarkSettings(height=60, width=96, ops_only=True,
                                         components=('tokenization',))
  with pytest.raises(ValueError, match='not divisible'):
    benchmark.run_benchmark(options, settings)


def test_tool_prints_json(tiny_config, tmp_path):
  output = tmp_path / 'benchmark.json'
  completed = subprocess.run(
      [sys.executable, 'tools/benchmark.py', f'--config_file={tiny_config}',
       '--ops_only', '--components=tokenization', '--execution_modes=xla',
       '--implementations=EFFICIENT,NAIVE', '--num_runs=1', '--num_warmup=1',
       '--measure_memory=false', '--format=json',
       f'--output_file={output}'],
      capture_output=True, text=True, check=False)
  assert completed.returncode == 0, completed.stderr[-2000:]
  results = json.loads(completed.stdout)
  assert results == json.loads(output.read_text())
  assert set(results['speedup']['xla']) == {'tokenization'}
  assert results['memory_ratio'] is None  # Not measured.
  assert 'tokenization_peak_bytes' not in results['EFFICIENT']


def test_tool_reports_a_missing_config():
  completed = subprocess.run(
      [sys.executable, 'tools/benchmark.py', '--config_file=/no/such.txt'],
      capture_output=True, text=True, check=False)
  assert completed.returncode == 1
  assert 'does not exist' in completed.stderr


@pytest.fixture(scope='module')
def deeplab_config(tmp_path_factory):
  path = tmp_path_factory.mktemp('config') / 'deeplab.textproto'
  path.write_text(text_format.MessageToString(tiny_experiment.options(
      {'eval_dataset_options.crop_size': [64, 96]}, fast=True,
      meta_architecture='DEEPLABV3PLUS')))
  return str(path)


def test_a_per_pixel_network_is_timed_by_its_own_components(deeplab_config):
  settings = benchmark.BenchmarkSettings(
      execution_modes=('tf_function',), num_warmup=1, num_runs=2)
  results = benchmark.run_benchmark(_read(deeplab_config), settings,
                                    lambda _: None)
  json.dumps(results)  # JSON-serialisable.
  assert results['settings']['meta_architecture'] == 'DEEPLABV3PLUS'
  assert results['settings']['geometry'] is None
  assert (results['settings']['height'], results['settings']['width']) == (
      64, 96)
  entry = results['DEEPLABV3PLUS']
  assert list(entry['ms']['tf_function']) == ['encoder', 'aspp', 'decoder',
                                              'total']
  assert all(ms > 0 for ms in entry['ms']['tf_function'].values())
  assert entry['total_over_encoder']['tf_function'] > 0
  assert not {'NAIVE', 'EFFICIENT', 'speedup'} & set(results)
  table = benchmark.format_table(results)
  assert 'DEEPLABV3PLUS (no superpixels)' in table
  assert 'aspp' in table and 'total/encoder' in table


def test_a_per_pixel_network_refuses_ops_only_and_foreign_components(
    deeplab_config):
  experiment = _read(deeplab_config)
  with pytest.raises(ValueError, match='has no local attention'):
    benchmark.run_benchmark(experiment, benchmark.BenchmarkSettings(
        ops_only=True))
  with pytest.raises(ValueError, match="Unknown component 'tokenization'.*"
                     'encoder, aspp, decoder, total'):
    benchmark.run_benchmark(experiment, benchmark.BenchmarkSettings(
        components=('tokenization',)))


def test_local_attention_names_are_the_benchmark_implementations():
  assert benchmark.IMPLEMENTATIONS == (local_attention.NAIVE,
                                       local_attention.EFFICIENT)


def test_record_component_inputs_with_a_functional_encoder():
  # Keras-applications backbones are functional models; recording and
  # replaying must work for them too.
  inputs = tf_keras.Input([8, 8, 3])
  features = tf_keras.layers.Conv2D(4, 3, strides=2, padding='same')(inputs)
  encoder = tf_keras.Model(inputs, {'res2': features, 'res3': 2.0 * features})

  class TwoStageModel(tf_keras.Model):

    def __init__(self):
      super().__init__()
      self.encoder = encoder
      self.hypercolumn = tf_keras.layers.Dense(5)

    def call(self, images, training=False):
      endpoints = self.encoder(images, training=training)
      return self.hypercolumn(endpoints['res2'] + endpoints['res3'])

  model = TwoStageModel()
  images = benchmark.random_images(3, (8, 8))
  calls = benchmark.record_component_inputs(
      model, images, ['encoder', 'hypercolumn', 'total'])
  assert calls['encoder'][0] is encoder
  assert calls['hypercolumn'][1][0].shape == (3, 4, 4, 4)
  assert 'call' not in vars(encoder)
  replayed = timing.compiled_call(*calls['hypercolumn'], jit_compile=False)
  np.testing.assert_allclose(replayed().numpy(), model(images).numpy(),
                             rtol=1e-6)
  settings = benchmark.BenchmarkSettings(
      components=('encoder', 'hypercolumn', 'total'),
      execution_modes=('tf_function',), num_warmup=1, num_runs=1)
  times = benchmark.time_components(model, images, settings, lambda _: None)
  assert set(times['tf_function']) == {'encoder', 'hypercolumn', 'total'}
  assert all(len(t) == 1 and t[0] > 0 for t in times['tf_function'].values())
