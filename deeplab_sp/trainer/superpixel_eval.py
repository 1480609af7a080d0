"""Superpixel quality during evaluation: the evaluator's `superpixels` section.

The metrics (deeplab_sp/trainer/superpixel_metrics.py) are numpy, so they
are computed on the host, outside the evaluation step's tf.function: the
step returns each replica's 'superpixel_ids' and labels (orbit passes step
outputs to `Evaluator.eval_reduce`, which runs eagerly), and `reduce` adds
every image of the worker's local replicas to a numpy accumulator. At the
end, the per-worker sums are added over workers (a no-op on one worker) and
the means over images are reported. The all-ignore examples that pad the
last evaluation batch are skipped, as for the evaluator's image count.

This works under any strategy (the step itself stays a pure TF graph); its
cost is copying the ids and labels to the host and the numpy work, which
runs between steps. A model without superpixels (no 'superpixel_ids'
output: the per-pixel baselines) has no step outputs, and `reduce` drops
the accumulator: the evaluation then has no `superpixels` section.
"""

from typing import Any, Dict, Optional

import numpy as np
import tensorflow as tf

from deeplab_sp.trainer import superpixel_metrics
from deeplab_sp.data import dataset_info

# Prefix of the TensorBoard scalars ('superpixels/asa', ...) and the key of
# the section in eval_results.json.
SECTION = 'superpixels'


def step_outputs(batch: Dict[str, tf.Tensor],
                 outputs: Dict[str, tf.Tensor]) -> Optional[Dict[str, Any]]:
  """What one replica's step returns for `reduce` (None without ids)."""
  if 'superpixel_ids' not in outputs:
    return None
  return {'superpixel_ids': tf.cast(outputs['superpixel_ids'], tf.int32),
          'label': tf.cast(batch['label'], tf.int32)}


def num_workers(strategy: tf.distribute.Strategy) -> int:
  """Number of worker machines of `strategy` (1 without a cluster)."""
  resolver = getattr(strategy, 'cluster_resolver', None)
  if resolver is None:
    return 1
  spec = resolver.cluster_spec().as_dict()
  return max(1, len(spec.get('worker', [])) + len(spec.get('chief', [])))


def sum_over_workers(strategy: tf.distribute.Strategy,
                     vector: np.ndarray) -> np.ndarray:
  """Sums one host vector per worker over the workers (cross-replica).

  The vector is given to the first local replica of each worker (zeros to
  the others), then summed over all replicas.
  """
  local_replicas = max(1, strategy.num_replicas_in_sync //
                       num_workers(strategy))
  value = tf.constant(vector, tf.float64)

  def value_fn(context):
    if context.replica_id_in_sync_group % local_replicas == 0:
      return value
    return tf.zeros_like(value)

  per_replica = strategy.experimental_distribute_values_from_function(
      value_fn)
  return np.asarray(strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica,
                                    axis=None))


class SuperpixelEvaluation:
  """Accumulates superpixel metrics over an evaluation (host side)."""

  def __init__(self, strategy: tf.distribute.Strategy,
               ignore_label: int = dataset_info.IGNORE_LABEL,
               tolerance: int = superpixel_metrics.DEFAULT_TOLERANCE):
    self.strategy = strategy
    self.ignore_label = ignore_label
    self.tolerance = tolerance

  def begin(self) -> superpixel_metrics.SuperpixelMetricsAccumulator:
    """A fresh accumulator: the orbit evaluation state."""
    return superpixel_metrics.SuperpixelMetricsAccumulator(
        self.ignore_label, self.tolerance)

  def reduce(self,
             state: Optional[superpixel_metrics.SuperpixelMetricsAccumulator],
             outputs: Optional[Dict[str, Any]]
            ) -> Optional[superpixel_metrics.SuperpixelMetricsAccumulator]:
    """Adds the images of one step (every local replica) to `state`.

    Returns None (nothing to report) when the model has no superpixels: its
    steps return no outputs (step_outputs).
    """
    if outputs is None or state is None:
      return None
    local = self.strategy.experimental_local_results
    for ids, labels in zip(local(outputs['superpixel_ids']),
                           local(outputs['label'])):
      state.add_batch(np.asarray(ids), np.asarray(labels))
    return state

  def result(self, state: superpixel_metrics.SuperpixelMetricsAccumulator
            ) -> Dict[str, Optional[float]]:
    """Means over the evaluated images of every worker (JSON-ready)."""
    if num_workers(self.strategy) > 1:
      state.from_vector(sum_over_workers(self.strategy, state.to_vector()))
    return state.result()


def scalars(results: Dict[str, Optional[float]]) -> Dict[str, float]:
  """TensorBoard scalars 'superpixels/<metric>' of the defined metrics."""
  return {f'{SECTION}/{name}': results[name]
          for name in superpixel_metrics.METRIC_NAMES
          if results.get(name) is not None}
