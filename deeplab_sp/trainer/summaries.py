"""TF image summaries: input, prediction, ground truth, superpixel boundaries.

Drawn with the TensorFlow forms of deeplab_sp/visualization.py, so the
trainer builds summary images without leaving TensorFlow. A model without
superpixels (no 'superpixel_ids' output: the per-pixel baselines) gets the
first three.
"""

import tensorflow as tf

from deeplab_sp import visualization


def write_image_summaries(prefix: str, images: tf.Tensor, labels: tf.Tensor,
                          outputs, colormap, step: int,
                          max_outputs: int) -> None:
  """Writes the image summaries to the default summary writer."""
  predictions = tf.argmax(outputs['semantic_logits'], axis=-1,
                          output_type=tf.int32)
  summaries = {
      'input': tf.cast(tf.clip_by_value(images, 0.0, 255.0), tf.uint8),
      'prediction': visualization.colorize_label_map_tf(predictions, colormap),
      'ground_truth': visualization.colorize_label_map_tf(labels, colormap),
  }
  if 'superpixel_ids' in outputs:
    summaries['superpixels'] = visualization.overlay_boundaries_tf(
        images, outputs['superpixel_ids'])
  for name, image in summaries.items():
    tf.summary.image(f'{prefix}/{name}', image, step=step,
                     max_outputs=max_outputs)
