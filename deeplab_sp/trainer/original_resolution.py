"""Scoring at the annotation's original resolution (paper Sec. IV-A, ADE20K).

ADE20K images are resized for the model (longer side 640) but the standard
protocol, which the paper follows, scores every image against its label at
the label's own size: the predictions are resized back, the labels never
are (a resized label would change which pixels are scored and their classes).
Cityscapes is evaluated at full resolution and needs none of this.

How the predictions are resized, as in DeepLab2 (the paper's codebase,
undo_preprocessing_for_predictions): the class map (argmax of the logits at
the model's resolution) has the padding cropped away and is resized to the
label's size by nearest neighbour with aligned corners. Resizing the logits
bilinearly before the argmax would instead hold K float maps at the
original size (150 classes x several megapixels per image) and gives
slightly different numbers; DeepLab2's way keeps them comparable with the
paper's.

The original labels differ in size, so these batches have no static label
shape: fine for MirroredStrategy and one device; TPUStrategy's compiled
evaluation step needs static shapes.
"""

from typing import Mapping

import tensorflow as tf

from deeplab_sp.data import input_pipeline
from deeplab_sp.trainer import metrics as metrics_lib


def resize_prediction(prediction: tf.Tensor, resized_size: tf.Tensor,
                      original_size: tf.Tensor) -> tf.Tensor:
  """One image's class map at its original size.

  Args:
    prediction: int32 [H, W], the class map of the padded model input.
    resized_size: int32 [2], the size of the resized image in that input
      (the rest is padding).
    original_size: int32 [2], the size of the label.

  Returns:
    int32 [original height, original width].
  """
  cropped = prediction[:resized_size[0], :resized_size[1]]
  resized = tf.compat.v1.image.resize(
      cropped[None, :, :, None], original_size,
      method=tf.compat.v1.image.ResizeMethod.NEAREST_NEIGHBOR,
      align_corners=True)
  return resized[0, :, :, 0]


def update_confusion(confusion: metrics_lib.ConfusionMatrix,
                     batch: Mapping[str, tf.Tensor],
                     logits: tf.Tensor, also=()) -> None:
  """Adds a batch's predictions to `confusion` (and to those of `also`).

  Args:
    confusion: the evaluator's ConfusionMatrix.
    batch: an evaluation batch (input_pipeline); with the original-label keys
      the predictions are scored at the labels' original resolution, else
      against 'label'.
    logits: float [batch, H, W, K], the model's semantic logits, or any
      class scores whose argmax is the prediction (the averaged
      probabilities of eval_augmentation.py).
    also: more accumulators with an `update(labels, predictions)`, given the
      same labels and predictions (e.g. boundary_band.py's).
  """
  predictions = tf.argmax(logits, axis=-1, output_type=tf.int32)
  if input_pipeline.ORIGINAL_LABEL not in batch:
    for accumulator in (confusion, *also):
      accumulator.update(batch['label'], predictions)
    return
  labels = tf.cast(batch[input_pipeline.ORIGINAL_LABEL], tf.int32)
  padded_size = tf.shape(labels)[1:3]

  def one_image(args):
    prediction, resized_size, original_size = args
    resized = resize_prediction(prediction, resized_size, original_size)
    # Padded like the label (the padding is ignored).
    return tf.pad(resized, [[0, padded_size[0] - original_size[0]],
                            [0, padded_size[1] - original_size[1]]])

  resized = tf.map_fn(
      one_image,
      (predictions, batch[input_pipeline.RESIZED_SIZE],
       batch[input_pipeline.ORIGINAL_SIZE]),
      fn_output_signature=tf.TensorSpec([None, None], tf.int32))
  for accumulator in (confusion, *also):
    accumulator.update(labels, resized)
