"""Superpixel classification (arXiv 2309.16889, Sec. III-C).

k post-norm transformer layers over all Hs*Ws superpixels (multi-head
self-attention, residual, LayerNorm, FFN with GELU, residual, LayerNorm),
then a linear classifier to per-superpixel class logits C_i.
"""

import tensorflow as tf
import tf_keras


class SuperpixelClassifier(tf_keras.layers.Layer):
  """Global self-attention over superpixels and a linear classifier.

  Args:
    num_classes: K. num_layers: k (paper: 4). num_heads (paper: 4).
    channels: attention channels (paper: 256); the input is projected to it
      when it differs. ffn_channels: FFN hidden width (0 = none).
    dropout_rate: dropout inside the layers.

  Call: superpixels [b, Hs, Ws, c] -> (logits [b, Hs, Ws, K],
    features [b, Hs, Ws, channels]).
  """

  def __init__(self, num_classes, num_layers=4, num_heads=4, channels=256,
               ffn_channels=1024, dropout_rate=0.0, **kwargs):
    super().__init__(**kwargs)
    if channels % num_heads:
      raise ValueError(f'superpixel_classifier.num_heads ({num_heads}) must '
                       f'divide channels ({channels}).')
    self._config = dict(num_classes=num_classes, num_layers=num_layers,
                        num_heads=num_heads, channels=channels,
                        ffn_channels=ffn_channels, dropout_rate=dropout_rate)
    self.input_projection = None
    self.attention_layers, self.norms, self.ffns, self.ffn_norms = [], [], [], []
    for index in range(num_layers):
      self.attention_layers.append(tf_keras.layers.MultiHeadAttention(
          num_heads, channels // num_heads, dropout=dropout_rate,
          name=f'self_attention_{index}'))
      self.norms.append(tf_keras.layers.LayerNormalization(
          name=f'attention_norm_{index}'))
      self.ffns.append([
          tf_keras.layers.Dense(ffn_channels, activation='gelu',
                                name=f'ffn_hidden_{index}'),
          tf_keras.layers.Dense(channels, name=f'ffn_out_{index}')]
                       if ffn_channels else [])
      self.ffn_norms.append(tf_keras.layers.LayerNormalization(
          name=f'ffn_norm_{index}'))
    self.classifier = tf_keras.layers.Dense(num_classes, name='classifier')

  def build(self, input_shape):
    if input_shape[-1] != self._config['channels']:
      self.input_projection = tf_keras.layers.Dense(
          self._config['channels'], name='input_projection')
    super().build(input_shape)

  def call(self, superpixels, training=None):
    batch = tf.shape(superpixels)[0]
    grid_height, grid_width = superpixels.shape[1], superpixels.shape[2]
    if self.input_projection is not None:
      superpixels = self.input_projection(superpixels)
    x = tf.reshape(superpixels, [batch, grid_height * grid_width,
                                 self._config['channels']])  # [b, Hs*Ws, c]
    for attention, norm, ffn, ffn_norm in zip(
        self.attention_layers, self.norms, self.ffns, self.ffn_norms):
      x = norm(x + attention(x, x, training=training))
      if ffn:
        update = x
        for layer in ffn:
          update = layer(update)
        x = ffn_norm(x + update)
    features = tf.reshape(x, [batch, grid_height, grid_width,
                              self._config['channels']])
    return self.classifier(features), features  # [b, Hs, Ws, K]

  def get_config(self):
    config = super().get_config()
    config.update(self._config)
    return config
