"""Tests of the strategy choice (flags, TF_CONFIG, --master)."""

import json

import pytest
import tensorflow as tf

from deeplab_sp.trainer import distribution


def test_default_strategy_without_gpus_tpu_or_cluster(monkeypatch):
  monkeypatch.delenv('TF_CONFIG', raising=False)
  strategy = distribution.get_strategy(num_gpus=0)
  assert strategy is tf.distribute.get_strategy()
  assert strategy.num_replicas_in_sync == 1


def test_more_gpus_than_visible_is_a_clear_error(monkeypatch):
  monkeypatch.delenv('TF_CONFIG', raising=False)
  visible = len(tf.config.list_physical_devices('GPU'))
  with pytest.raises(ValueError, match=f'--num_gpus={visible + 1}.*'
                     'CUDA_VISIBLE_DEVICES'):
    distribution.get_strategy(num_gpus=visible + 1)
  with pytest.raises(ValueError, match='--num_gpus must be >= 0'):
    distribution.get_strategy(num_gpus=-1)


def test_tf_config_errors_and_single_worker(monkeypatch):
  monkeypatch.setenv('TF_CONFIG', '{not json')
  with pytest.raises(ValueError, match='TF_CONFIG is not valid JSON'):
    distribution.get_strategy()
  # One worker is not a multi-worker job.
  monkeypatch.setenv('TF_CONFIG', json.dumps(
      {'cluster': {'worker': ['127.0.0.1:1']},
       'task': {'type': 'worker', 'index': 0}}))
  assert distribution.get_strategy() is tf.distribute.get_strategy()


@pytest.mark.parametrize('master,connects', [('local', False),
                                             ('my-tpu', True)])
def test_master_selects_tpu_strategy(monkeypatch, master, connects):
  calls = []

  class FakeResolver:

    def __init__(self, tpu):
      calls.append(('resolver', tpu))

  monkeypatch.setattr(tf.distribute.cluster_resolver, 'TPUClusterResolver',
                      FakeResolver)
  monkeypatch.setattr(tf.config, 'experimental_connect_to_cluster',
                      lambda r: calls.append('connect'))
  monkeypatch.setattr(tf.tpu.experimental, 'initialize_tpu_system',
                      lambda r: calls.append('initialize'))
  monkeypatch.setattr(tf.distribute, 'TPUStrategy',
                      lambda r: ('tpu_strategy', r))
  strategy = distribution.get_strategy(num_gpus=0, master=master)
  assert strategy[0] == 'tpu_strategy'
  expected = [('resolver', master)] + (['connect'] if connects else [])
  assert calls == expected + ['initialize']
