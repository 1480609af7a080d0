"""Training and evaluation (orbit + tf.distribute)."""
