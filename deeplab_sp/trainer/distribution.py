"""Chooses the tf.distribute strategy from flags and the environment.

- `--master` (a TPU name or grpc:// address, or 'local') -> TPUStrategy;
- TF_CONFIG with more than one worker -> MultiWorkerMirroredStrategy;
- `--num_gpus` > 1 -> MirroredStrategy over those GPUs;
- `--num_gpus` == 1 -> OneDeviceStrategy('/gpu:0');
- otherwise the default strategy (CPU, or TF's own single-GPU placement).
"""

import json
import os
from typing import Optional

from absl import logging
import tensorflow as tf

# --master value of a TPU attached to this VM (TPUClusterResolver's 'local').
TPU_VM_MASTER = 'local'


def _num_workers_in_tf_config() -> int:
  raw = os.environ.get('TF_CONFIG', '')
  if not raw:
    return 0
  try:
    cluster = json.loads(raw).get('cluster', {})
  except json.JSONDecodeError as e:
    raise ValueError(f'TF_CONFIG is not valid JSON ({e}); set it to the '
                     'cluster spec, e.g. {"cluster": {"worker": [...]}, '
                     '"task": {"type": "worker", "index": 0}}.') from e
  return len(cluster.get('worker', [])) + len(cluster.get('chief', []))


def get_strategy(num_gpus: int = 0,
                 master: Optional[str] = None) -> tf.distribute.Strategy:
  """Returns the strategy for this process (see the module docstring).

  Args:
    num_gpus: GPUs to use on this machine (0: CPU / TF default).
    master: TPU name or address for TPUStrategy; empty for none.

  Raises:
    ValueError: when more GPUs are requested than are visible.
  """
  if master:
    logging.info('Using TPUStrategy with master %s.', master)
    # 'local': the TPU is attached to this VM (a TPU VM); no remote cluster
    # to connect to.
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=master)
    if master != TPU_VM_MASTER:
      tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
  if _num_workers_in_tf_config() > 1:
    logging.info('Using MultiWorkerMirroredStrategy from TF_CONFIG.')
    return tf.distribute.MultiWorkerMirroredStrategy()
  if num_gpus < 0:
    raise ValueError(f'--num_gpus must be >= 0, got {num_gpus}.')
  if num_gpus > 0:
    visible = len(tf.config.list_physical_devices('GPU'))
    if num_gpus > visible:
      raise ValueError(f'--num_gpus={num_gpus} but only {visible} GPU(s) are '
                       'visible; lower --num_gpus or check CUDA_VISIBLE_DEVICES.')
  if num_gpus > 1:
    devices = [f'/gpu:{i}' for i in range(num_gpus)]
    logging.info('Using MirroredStrategy over %s.', devices)
    return tf.distribute.MirroredStrategy(devices)
  if num_gpus == 1:
    return tf.distribute.OneDeviceStrategy('/gpu:0')
  return tf.distribute.get_strategy()
