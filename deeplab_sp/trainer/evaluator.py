"""The orbit StandardEvaluator: streaming confusion matrix -> mIoU.

Accumulates one confusion matrix over the whole evaluation split (padding
and ignore pixels excluded), then reports mIoU, per-class IoU (absent classes
as None, excluded from the mean), pixel accuracy, per-class accuracy and
mean class accuracy (metrics.py; classes absent from the ground truth as
None, excluded from the mean): as TensorBoard scalars (`miou`,
`pixel_accuracy`, `mean_class_accuracy`, `iou/<class>`,
`accuracy/<class>`), as a log table, and as `eval_results.json` in the
experiment directory, with the test-time augmentation it was measured with
(`test_time_augmentation`: eval_scales, add_flipped_images;
eval_augmentation.py); each evaluation is also appended as one JSON line to
`eval_history.jsonl` beside it (step, miou, per_class_iou, pixel_accuracy,
mean_class_accuracy, per_class_accuracy, wall_time in seconds since the
epoch, and the `superpixels` and `boundary_band` sections when measured),
the history the curves of tools/main_job.py are drawn from. Progress is
logged every `log_every_batches` batches.
With `boundary_band_pixels` > 0, mIoU and pixel accuracy are also reported
apart near class boundaries and inside regions (boundary_band.py) as the
`boundary_band` section and `boundary_band/*` scalars.
With `superpixel_metrics`, the quality of the model's superpixels against the
labels is added as the `superpixels` section and `superpixels/*` scalars
(deeplab_sp/trainer/superpixel_eval.py); a model without superpixels (the
per-pixel baselines) has neither.
"""

import json
import math
import os
import time
from typing import Dict, Optional, Sequence

from absl import logging
import orbit
import tensorflow as tf
import tf_keras

from deeplab_sp.trainer import boundary_band
from deeplab_sp.trainer import eval_augmentation
from deeplab_sp.trainer import metrics as metrics_lib
from deeplab_sp.trainer import original_resolution
from deeplab_sp.trainer import summaries
from deeplab_sp.trainer import superpixel_eval
from deeplab_sp.utils import io

EVAL_RESULTS_FILENAME = 'eval_results.json'
EVAL_HISTORY_FILENAME = 'eval_history.jsonl'
# The keys of eval_results.json that go into each line of the history.
_HISTORY_KEYS = ('step', 'miou', 'per_class_iou', 'pixel_accuracy',
                 'mean_class_accuracy', 'per_class_accuracy', 'num_images',
                 superpixel_eval.SECTION, boundary_band.SECTION)
# Batches between the evaluation's progress lines.
DEFAULT_LOG_EVERY_BATCHES = 50


def read_history(experiment_dir: str) -> list:
  """The evaluations of eval_history.jsonl, oldest first ([] if none)."""
  path = os.path.join(experiment_dir, EVAL_HISTORY_FILENAME)
  if not tf.io.gfile.exists(path):
    return []
  with tf.io.gfile.GFile(path, 'r') as f:
    return [json.loads(line) for line in f.read().splitlines() if line]


def _json_number(value: Optional[float]) -> Optional[float]:
  return None if value is None or not math.isfinite(value) else value


def _json_numbers(tree):
  """`tree` with every non-finite float as None (JSON has no NaN)."""
  if isinstance(tree, dict):
    return {key: _json_numbers(value) for key, value in tree.items()}
  if isinstance(tree, float):
    return _json_number(tree)
  return tree


class Evaluator(orbit.StandardEvaluator):
  """Evaluates `model` over the whole `eval_dataset` (read once).

  Args:
    strategy: the distribution strategy.
    model: model returning a dict with 'semantic_logits' [B, H, W, K].
    eval_dataset: a distributed, finite dataset of {'image', 'label'}.
    class_names: the K class names (keys of per_class_iou).
    global_step: variable holding the training step of the weights.
    experiment_dir: where eval_results.json is written (None: not written).
    colormap, vis_batch, image_summary_dir: image summaries of the first
      `num_vis_images` validation images (optional).
    superpixel_metrics: also measure the model's 'superpixel_ids' against
      the labels (ASA, boundary recall/precision, undersegmentation error,
      connectivity; means over images), if it has that output.
    log_every_batches: batches between progress lines (0: none).
    augmentation: the test-time augmentation (scales, flipped images) the
      predictions average; None or a plain one: the model's own logits.
    boundary_band_pixels: > 0: also score the band of this half width
      around class boundaries and the region interiors apart.
  """

  def __init__(self, strategy: tf.distribute.Strategy, model: tf_keras.Model,
               eval_dataset, class_names: Sequence[str],
               global_step: tf.Variable,
               experiment_dir: Optional[str] = None,
               colormap=None, vis_batch=None, image_summary_dir=None,
               num_vis_images: int = 0, superpixel_metrics: bool = True,
               log_every_batches: int = DEFAULT_LOG_EVERY_BATCHES,
               augmentation: Optional[
                   eval_augmentation.EvalAugmentation] = None,
               boundary_band_pixels: int = 0):
    self.strategy = strategy
    self.augmentation = augmentation or eval_augmentation.EvalAugmentation()
    self.log_every_batches = log_every_batches
    self._num_batches = 0
    self._eval_start = 0.0
    self.model = model
    self.class_names = list(class_names)
    self.global_step = global_step
    self.experiment_dir = experiment_dir
    self.colormap = colormap
    self.vis_batch = vis_batch
    self.num_vis_images = num_vis_images
    self._image_writer = (
        tf.summary.create_file_writer(image_summary_dir)
        if image_summary_dir and vis_batch is not None and num_vis_images > 0
        else None)
    with strategy.scope():
      self.confusion = metrics_lib.ConfusionMatrix(len(self.class_names))
      self.band = (boundary_band.BoundaryBandConfusion(
          len(self.class_names), boundary_band_pixels,
          self.confusion.ignore_label) if boundary_band_pixels > 0 else None)
      self.num_images = tf.Variable(
          0, dtype=tf.int64, trainable=False,
          synchronization=tf.VariableSynchronization.ON_READ,
          aggregation=tf.VariableAggregation.SUM)
    self._superpixels = (superpixel_eval.SuperpixelEvaluation(
        strategy, self.confusion.ignore_label) if superpixel_metrics else None)
    self._last_results_json = '{}'
    super().__init__(eval_dataset, orbit.StandardEvaluatorOptions(
        use_tf_function=True, use_tf_while_loop=False))

  @property
  def last_results(self) -> Dict:
    """The results of the last evaluation (the eval_results.json dict)."""
    return json.loads(self._last_results_json)

  def eval_begin(self):
    self._num_batches = 0
    self._eval_start = time.time()
    self.confusion.reset()
    if self.band:
      self.band.reset()
    self.num_images.assign(tf.zeros_like(self.num_images))
    # The superpixel accumulator is the orbit state passed to eval_reduce.
    return self._superpixels.begin() if self._superpixels else None

  def eval_step(self, iterator):

    def step_fn(batch):
      scores, outputs = self.augmentation(self.model, batch['image'])
      # At the labels' original resolution where the images were resized.
      original_resolution.update_confusion(
          self.confusion, batch, scores,
          also=(self.band,) if self.band else ())
      # Counts images with at least one labelled pixel: the all-ignore
      # examples that pad the last evaluation batch are not counted.
      labelled = tf.reduce_any(
          tf.not_equal(batch['label'], self.confusion.ignore_label),
          axis=[1, 2])  # [batch]
      self.num_images.assign_add(
          tf.reduce_sum(tf.cast(labelled, tf.int64)))
      if self._superpixels:
        if outputs is None:
          # The superpixels are measured on the input as it is, which no
          # view of the augmentation saw (1.0 is not among its scales).
          outputs = self.model(batch['image'], training=False)
        return superpixel_eval.step_outputs(batch, outputs)
      return None

    return self.strategy.run(step_fn, args=(next(iterator),))

  def eval_reduce(self, state=None, step_outputs=None):
    # orbit calls this in Python after every batch (the evaluation loop is
    # a Python loop), so it can count them.
    self._num_batches += 1
    if self.log_every_batches > 0 and (
        self._num_batches % self.log_every_batches == 0):
      elapsed = time.time() - self._eval_start
      logging.info('Evaluation: %d batches in %.0f s (%.2f batches/s).',
                   self._num_batches, elapsed,
                   self._num_batches / max(elapsed, 1e-9))
    if self._superpixels is None:
      return state
    return self._superpixels.reduce(state, step_outputs)

  def eval_end(self, state=None) -> Dict[str, float]:
    step = int(self.global_step.numpy())
    result = metrics_lib.metrics_from_confusion_matrix(self.confusion.result())
    num_images = int(tf.convert_to_tensor(self.num_images).numpy())
    logging.info('Evaluation at step %d over %d images:\n%s', step,
                 num_images,
                 metrics_lib.per_class_table(result, self.class_names))
    results = {
        'step': step,
        'miou': _json_number(result.miou),
        'per_class_iou': metrics_lib.per_class_dict(result, self.class_names),
        'pixel_accuracy': _json_number(result.pixel_accuracy),
        'mean_class_accuracy': _json_number(result.mean_class_accuracy),
        'per_class_accuracy': metrics_lib.per_class_accuracy_dict(
            result, self.class_names),
        'num_images': num_images,
        'num_valid_pixels': result.num_valid_pixels,
        'test_time_augmentation': self.augmentation.as_dict(),
    }
    if state is not None:
      results[superpixel_eval.SECTION] = {
          name: _json_number(value) if isinstance(value, float) else value
          for name, value in self._superpixels.result(state).items()}
    if self.band:
      results[boundary_band.SECTION] = _json_numbers(
          self.band.results(self.class_names))
    if self.experiment_dir and self.strategy.extended.should_checkpoint:
      io.write_atomically(
          os.path.join(self.experiment_dir, EVAL_RESULTS_FILENAME),
          json.dumps(results, indent=2, sort_keys=True))
      line = {key: results[key] for key in _HISTORY_KEYS if key in results}
      line['wall_time'] = time.time()
      io.append_line_atomically(
          os.path.join(self.experiment_dir, EVAL_HISTORY_FILENAME),
          json.dumps(line, sort_keys=True))
    self._last_results_json = json.dumps(results)  # A str: not tracked.
    self._write_images(step)
    scalars = {'miou': result.miou, 'pixel_accuracy': result.pixel_accuracy,
               'mean_class_accuracy': result.mean_class_accuracy}
    for name, iou, accuracy in zip(self.class_names, result.per_class_iou,
                                   result.per_class_accuracy):
      if iou is not None:
        scalars[f'iou/{name}'] = iou
      if accuracy is not None:
        scalars[f'accuracy/{name}'] = accuracy
    scalars.update(superpixel_eval.scalars(results.get(
        superpixel_eval.SECTION, {})))
    for part in boundary_band.PARTS:
      part_results = results.get(boundary_band.SECTION, {}).get(part, {})
      for name in ('miou', 'pixel_accuracy'):
        if part_results.get(name) is not None:
          scalars[f'{boundary_band.SECTION}/{part}_{name}'] = (
              part_results[name])
    return scalars

  def _write_images(self, step: int) -> None:
    if not self._image_writer:
      return
    # The prediction shown is the one scored (augmented when configured).
    scores, outputs = self.augmentation(self.model, self.vis_batch['image'])
    if outputs is None:
      outputs = self.model(self.vis_batch['image'], training=False)
    outputs = dict(outputs, semantic_logits=scores)
    with self._image_writer.as_default():
      summaries.write_image_summaries(
          'eval', self.vis_batch['image'], self.vis_batch['label'], outputs,
          self.colormap, step, max_outputs=self.num_vis_images)
    self._image_writer.flush()
