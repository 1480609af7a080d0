"""Datasets: TFRecord format, registry and the tf.data input pipeline."""
