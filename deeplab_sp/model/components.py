"""The base of the networks: a Keras model made of named components."""

from typing import Dict, Tuple

import tf_keras


class ComponentModel(tf_keras.Model):
  """A model whose parts are the attributes named in COMPONENTS."""

  COMPONENTS: Tuple[str, ...] = ()

  @property
  def checkpoint_items(self) -> Dict[str, tf_keras.layers.Layer]:
    """The components by name (COMPONENTS), the Model Garden's convention.

    tf.train.Checkpoint(**model.checkpoint_items) writes each component at
    the root under its name; one of them alone (tf.train.Checkpoint(
    encoder=model.encoder)) is a checkpoint of that part, which restores
    into the same part of another model.
    """
    return {name: getattr(self, name) for name in self.COMPONENTS}
