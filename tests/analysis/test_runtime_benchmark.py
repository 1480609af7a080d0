"""Tests of deeplab_sp.analysis.runtime_benchmark and its tools/benchmark.py
mode (--runtimes): the deployment formats exported and timed side by side.

Needs the optional `interop` extra (tf2onnx, onnxruntime, ai-edge-litert).
"""

import json
import os
import subprocess
import sys

from google.protobuf import text_format
import numpy as np
import pytest

import tiny_experiment
from deeplab_sp.analysis import runtime_benchmark
from deeplab_sp.model.kernels import portable_ops

for _module, _package in (('onnx', 'onnx'), ('onnxruntime', 'onnxruntime'),
                          ('tf2onnx', 'tf2onnx'),
                          ('ai_edge_litert.interpreter', 'ai-edge-litert')):
  pytest.importorskip(
      _module, reason=f'{_package} (the optional [interop] extra) is not '
      'installed: pip install -e ".[interop]"')

import onnx  # pylint: disable=g-import-not-at-top,g-bad-import-order

_TOOL = os.path.join(os.path.dirname(__file__), '..', '..', 'tools',
                     'benchmark.py')
# The tiny experiment at FAST widths, 64x64 input: a 4x4 superpixel grid of
# 4x4 hypercolumn pixels, one layer per stack.
_OVERRIDES = {
    'model_options.superpixel_tokenization.grid_height': 4,
    'model_options.superpixel_tokenization.grid_width': 4,
    'model_options.superpixel_tokenization.num_layers': 1,
    'model_options.superpixel_classifier.num_layers': 1,
    'model_options.superpixel_classifier.num_heads': 2,
    'train_dataset_options.crop_size': [64, 64],
    'eval_dataset_options.crop_size': [64, 64],
}


@pytest.fixture(scope='module')
def tiny_config(tmp_path_factory):
  from deeplab_sp.data import synthetic  # pylint: disable=g-import-not-at-top
  directory = tmp_path_factory.mktemp('config')
  shards = synthetic.write_dataset(str(directory), num_train=2, num_val=3,
                                   height=64, width=64, num_shards=1)
  options = tiny_experiment.options(_OVERRIDES, fast=True)
  options.train_dataset_options.file_pattern[:] = shards['train']
  options.eval_dataset_options.file_pattern[:] = shards['val']
  path = directory / 'tiny.textproto'
  path.write_text(text_format.MessageToString(options))
  return str(path)


@pytest.mark.slow
def test_tool_times_every_runtime_on_the_same_model(tiny_config):
  completed = subprocess.run(
      [sys.executable, _TOOL, f'--config_file={tiny_config}',
       '--runtimes=tf,onnxruntime,tflite,tflite_float16,tflite_int8',
       '--num_runs=2', '--num_warmup=1', '--score_examples=3',
       '--format=json'],
      capture_output=True, text=True, check=False, timeout=900)
  assert completed.returncode == 0, completed.stderr[-3000:]
  results = json.loads(completed.stdout)
  assert results['settings']['height'] == 64  # The config's crop size.
  assert results['weights_bytes'] > 0
  assert sorted(results['runtimes']) == ['onnxruntime', 'tf', 'tflite',
                                         'tflite_float16', 'tflite_int8']
  for runtime, entry in results['runtimes'].items():
    assert entry['format'] == runtime_benchmark.FORMATS[runtime]
    assert entry['file_bytes'] > 0
    assert len(entry['ms']['runs']) == 2
    assert 0 < entry['ms']['min'] <= entry['ms']['median'] <= (
        entry['ms']['max'])
    assert entry['export_seconds'] > 0
    assert entry['export_peak_rss_bytes'] > 0
    assert entry['scored_examples'] == 3
    assert 0 <= entry['miou'] <= 1 and 0 <= entry['pixel_accuracy'] <= 1
    if runtime in ('onnxruntime', 'tflite'):
      # Same weights, same images: the labels are TensorFlow's (up to
      # float ties), and so are the scores.
      assert entry['label_agreement_with_tf'] > 0.99
      assert entry['miou'] == pytest.approx(
          results['runtimes']['tf']['miou'], abs=0.01)
  # Reduced precision: its own file, smaller than float32's.
  sizes = {r: e['file_bytes'] for r, e in results['runtimes'].items()}
  assert sizes['tflite_int8'] < sizes['tflite_float16'] < sizes['tflite']
  # The text table: a row per runtime, with the scores.
  table = runtime_benchmark.format_table(results)
  rows = [line.split()[0] for line in table.splitlines()[3:-1]]
  assert rows == ['runtime', 'tf', 'onnxruntime', 'tflite', 'tflite_float16',
                  'tflite_int8']
  assert 'mIoU %' in table and 'first 3 examples' in table


def test_size_overrides_set_the_input_size(tiny_config):
  from deeplab_sp import experiment as experiment_lib  # pylint: disable=g-import-not-at-top
  experiment = experiment_lib.load_experiment(
      tiny_config, mode=None,
      overrides=runtime_benchmark.size_overrides(96, 128))
  assert tuple(experiment.input_size) == (96, 128)
  assert runtime_benchmark.size_overrides(None, None) == []


@pytest.mark.parametrize('settings, flag', [
    (dict(runtimes=['tf', 'onnx']), '--runtimes'),
    (dict(runtimes=['tf', 'tf']), '--runtimes'),
    (dict(height=64), '--height'),
    (dict(num_runs=0), '--num_runs'),
    (dict(num_threads=0), '--num_threads'),
    (dict(score_examples=-1), '--score_examples'),
])
def test_bad_settings_name_the_flag(settings, flag):
  with pytest.raises(ValueError, match=flag):
    runtime_benchmark.check_settings(
        runtime_benchmark.RuntimeBenchmarkSettings(**settings))


def test_onnxruntime_profile_is_summed_per_operator_type(tmp_path):
  events = [
      {'cat': 'Session', 'name': 'model_run', 'dur': 9000},
      {'cat': 'Node', 'name': 'conv_a_kernel_time', 'dur': 3000,
       'args': {'op_name': 'Conv'}},
      {'cat': 'Node', 'name': 'conv_b_kernel_time', 'dur': 1000,
       'args': {'op_name': 'Conv'}},
      {'cat': 'Node', 'name': 'conv_a_fence_before', 'dur': 500,
       'args': {'op_name': 'Conv'}},
      {'cat': 'Node', 'name': 'mm_kernel_time', 'dur': 4000,
       'args': {'op_name': 'MatMul'}},
  ]
  path = tmp_path / 'profile.json'
  path.write_text(json.dumps(events))
  summary = runtime_benchmark.summarize_onnxruntime_profile(str(path), 2)
  assert summary['total_ms'] == pytest.approx(4.0)  # 8 ms over 2 calls.
  assert [op['op_type'] for op in summary['ops']] == ['Conv', 'MatMul']
  conv = summary['ops'][0]
  assert conv['ms'] == pytest.approx(2.0) and conv['nodes'] == 2
  assert conv['share'] == pytest.approx(0.5)


def test_computed_in_graph_is_exact_and_only_in_portable_forms():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  value = tf.constant([-0.0, 1.5, -2.0, np.inf, np.nan])
  like = tf.constant([[np.nan, 1.0]])
  assert portable_ops.computed_in_graph(value, like, portable=False) is value
  for like in (tf.constant([[np.nan, 1.0]]), tf.constant([-3]),
               tf.constant([True])):
    result = portable_ops.computed_in_graph(value, like, portable=True)
    np.testing.assert_array_equal(result.numpy(), value.numpy())
    ids = portable_ops.computed_in_graph(tf.constant([7, -1]), like, True)
    np.testing.assert_array_equal(ids.numpy(), [7, -1])
    mask = portable_ops.computed_in_graph(tf.constant([True, False]), like,
                                          True)
    np.testing.assert_array_equal(mask.numpy(), [True, False])


def _onnx_bytes(experiment):
  """The ONNX model of `experiment` (weights of its fresh model)."""
  from deeplab_sp.export import fixed_size  # pylint: disable=g-import-not-at-top
  from deeplab_sp.export import onnx_export  # pylint: disable=g-import-not-at-top
  module = fixed_size.build_fixed_size_module(experiment)
  weights = sum(int(np.prod(v.shape)) * v.dtype.size
                for v in module.model.variables)
  return onnx_export.to_onnx(module), weights


@pytest.mark.slow
def test_onnx_constants_do_not_grow_with_the_image(tiny_config):
  # At 256x256 the per-pixel tables the converters used to fold into the
  # file (index maps, border masks, the first layer's position logits, the
  # zeros of the masked softmax) took several times the weights.
  from deeplab_sp import experiment as experiment_lib  # pylint: disable=g-import-not-at-top
  experiment = experiment_lib.load_experiment(
      tiny_config, mode=None,
      overrides=runtime_benchmark.size_overrides(256, 256) + [
          'model_options { superpixel_tokenization { grid_height: 8 '
          'grid_width: 8 } }'])
  model, weights = _onnx_bytes(experiment)
  graph = onnx.load_from_string(model).graph
  sizes = [onnx.numpy_helper.to_array(t).nbytes for t in graph.initializer]
  # No constant has one value per hypercolumn pixel (64x64) and slot, and
  # together they are about the weights (the position tables are resized
  # in the graph, not stored at the feature map's size).
  assert max(sizes) < 4 * 64 * 64 * 9
  assert sum(sizes) <= 1.2 * weights + 100_000, (sum(sizes), weights)


def test_scores_count_each_runtime_on_the_evaluation_examples(tmp_path):
  from deeplab_sp import experiment as experiment_lib  # pylint: disable=g-import-not-at-top
  from deeplab_sp.data import input_pipeline  # pylint: disable=g-import-not-at-top
  from deeplab_sp.data import synthetic  # pylint: disable=g-import-not-at-top
  shards = synthetic.write_dataset(str(tmp_path), num_train=2, num_val=3,
                                   height=64, width=64, num_shards=1)
  options = tiny_experiment.options(_OVERRIDES, fast=True)
  options.eval_dataset_options.file_pattern[:] = shards['val']
  experiment = experiment_lib.experiment_from_options(options, mode=None)
  examples = list(input_pipeline.first_examples(
      options.eval_dataset_options, 3))
  labels = np.stack([label for _, label in examples])

  def perfect(images):
    # Each image's own label (the last batch is completed with a copy of
    # its first image, whose prediction must not count).
    return np.stack([
        next(label for known, label in examples
             if np.array_equal(known, image)) for image in images])

  def constant(images):
    return np.zeros(images.shape[:3], np.int32)

  scores = runtime_benchmark.score_runtimes(
      experiment, {'perfect': perfect, 'constant': constant}, count=3,
      batch=2, progress=lambda line: None)
  assert scores['perfect'] == {'miou': 1.0, 'pixel_accuracy': 1.0,
                               'scored_examples': 3}
  valid = labels != 255
  assert scores['constant']['pixel_accuracy'] == pytest.approx(
      np.mean(labels[valid] == 0))
  assert scores['constant']['miou'] < 1.0

  options.eval_dataset_options.ClearField('file_pattern')
  with pytest.raises(ValueError, match='eval_dataset_options.file_pattern'):
    runtime_benchmark.score_runtimes(
        experiment_lib.experiment_from_options(options, mode=None),
        {'constant': constant}, 1, 1, lambda line: None)
