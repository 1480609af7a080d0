"""Tests of deeplab_sp/analysis/model_stats.py and tools/model_stats.py."""

import json
import pathlib
import subprocess
import sys

from google.protobuf import text_format
import pytest
import tensorflow as tf

import tiny_experiment
from deeplab_sp.analysis import model_stats

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]

# The tiny experiment at 32x32 with a 2x2 grid, one layer per stage.
_OVERRIDES = {
    'model_options.hypercolumn.mlp_hidden_channels': 0,
    'model_options.superpixel_tokenization.grid_height': 2,
    'model_options.superpixel_tokenization.grid_width': 2,
    'model_options.superpixel_tokenization.num_layers': 1,
    'model_options.superpixel_classifier.num_layers': 1,
    'model_options.superpixel_classifier.num_heads': 2,
    'train_dataset_options.crop_size': [32, 32],
    'eval_dataset_options.crop_size': [32, 32],
}

# Paper parameter counts (Tables I and III), in millions.
PAPER_PARAMS = {
    'cityscapes/sp_transformer_r50.textproto': 29,
    'cityscapes/sp_transformer_convnext_l.textproto': 202,
    'cityscapes/ablation/ca1_sp32x64.textproto': 28,
    'cityscapes/ablation/ca2_sp16x32.textproto': 29,
    'cityscapes/ablation/ca2_sp32x64.textproto': 29,
    'cityscapes/ablation/ca2_sp64x128.textproto': 31,
}


def test_tool_prints_json_with_components_and_flops(tmp_path):
  config = tmp_path / 'tiny.textproto'
  config.write_text(text_format.MessageToString(
      tiny_experiment.options(_OVERRIDES, fast=True)))
  result = subprocess.run(
      [sys.executable, str(REPO_ROOT / 'tools/model_stats.py'),
       f'--config_file={config}', '--format=json'],
      capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr
  stats = json.loads(result.stdout)
  assert set(stats['components']) == {'encoder', 'hypercolumn', 'tokenization',
                                      'classifier', 'association'}
  assert stats['total_params'] == sum(stats['components'].values())
  assert stats['components']['tokenization'] > 0
  # The 3x3 stem conv alone (32x32 -> 16x16, 3 -> 4 channels) is
  # 16*16*4 * 3*3*3 multiply-adds.
  assert stats['flops'] > 2 * 16 * 16 * 4 * 27
  assert stats['multiply_adds'] == stats['flops'] // 2


@pytest.mark.slow
@pytest.mark.parametrize('config,paper_millions', sorted(PAPER_PARAMS.items()))
def test_parameter_counts_within_ten_percent_of_the_paper(config,
                                                          paper_millions):
  stats = model_stats.model_stats(str(REPO_ROOT / 'configs' / config),
                                  with_flops=False)
  millions = stats['total_params'] / 1e6
  assert abs(millions - paper_millions) <= 0.1 * paper_millions, millions


@pytest.mark.parametrize('meta,components', [
    ('HYPERCOLUMN_PIXEL_CLASSIFIER',
     ('encoder', 'hypercolumn', 'pixel_classifier')),
    ('DEEPLABV3PLUS', ('encoder', 'aspp', 'decoder')),
])
def test_a_baselines_components_and_flops(tmp_path, meta, components):
  config = tmp_path / 'tiny.textproto'
  config.write_text(text_format.MessageToString(tiny_experiment.options(
      {'train_dataset_options.crop_size': [32, 32],
       'eval_dataset_options.crop_size': [32, 32]}, fast=True,
      meta_architecture=meta)))
  stats = model_stats.model_stats(str(config))
  assert tuple(stats['components']) == components
  assert stats['total_params'] == sum(stats['components'].values())
  assert stats['multiply_adds'] > 16 * 16 * 4 * 27  # More than the stem.
  text = model_stats.format_text(stats)
  assert all(name in text for name in components)


def test_einsum_flops_are_counted():
  graph = tf.Graph()
  with graph.as_default():
    a = tf.compat.v1.placeholder(tf.float32, (3, 4))
    b = tf.compat.v1.placeholder(tf.float32, (2, 4, 5))
    tf.einsum('ij,bjk->bik', a, b)
  # One multiply-add per (b, i, j, k): 2 * 2 * 3 * 4 * 5 FLOPs.
  assert model_stats.count_graph_flops(graph) == 2 * 2 * 3 * 4 * 5
