"""Builds the SP-Transformer from `ModelOptions` (protos/model.proto)."""

from typing import Sequence

import tensorflow as tf

from deeplab_sp import experiment as config_lib
from deeplab_sp.model import encoders
from deeplab_sp.model import sp_transformer
from deeplab_sp.model.layers import hypercolumn
from deeplab_sp.model.layers import superpixel_association
from deeplab_sp.model.layers import superpixel_classifier
from deeplab_sp.model.layers import superpixel_tokenization
from deeplab_sp.protos import model_pb2


def build_model(model_options: model_pb2.ModelOptions, num_classes: int,
                input_size: Sequence[int],
                load_pretrained_weights: bool = True
               ) -> sp_transformer.SPTransformer:
  """Returns a built SPTransformer for images of `input_size` (H, W).

  The model's variables are created by one call on a zero image of
  `input_size` (batch 1). If `model_options.encoder.pretrained_weights` is
  set and `load_pretrained_weights` is true, the encoder's weights are then
  loaded from that local file.

  Raises:
    config.ConfigError: if input_size does not fit the geometry.
    ValueError / FileNotFoundError: for unknown names or bad weight files.
  """
  geometry = config_lib.model_geometry(model_options, input_size)
  encoder_options = model_options.encoder
  encoder = encoders.build_encoder(
      encoder_options.name,
      drop_path_keep_prob=encoder_options.drop_path_keep_prob,
      tiny_convnet_base_channels=encoder_options.tiny_convnet_base_channels)
  hypercolumn_options = model_options.hypercolumn
  tokenization_options = model_options.superpixel_tokenization
  classifier_options = model_options.superpixel_classifier
  association_options = model_options.superpixel_association
  model = sp_transformer.SPTransformer(
      encoder=encoder,
      hypercolumn=hypercolumn.Hypercolumn(
          encoder.endpoint_strides,
          channels=hypercolumn_options.channels,
          output_stride=hypercolumn_options.output_stride,
          mlp_hidden_channels=hypercolumn_options.mlp_hidden_channels,
          name='hypercolumn'),
      tokenization=superpixel_tokenization.SuperpixelTokenization(
          grid_height=tokenization_options.grid_height,
          grid_width=tokenization_options.grid_width,
          num_layers=tokenization_options.num_layers,
          channels=tokenization_options.channels,
          num_heads=tokenization_options.num_heads,
          ffn_channels=tokenization_options.ffn_channels,
          pixel_ffn_channels=tokenization_options.pixel_ffn_channels,
          implementation=tokenization_options.implementation,
          dropout_rate=tokenization_options.dropout_rate,
          name='superpixel_tokenization'),
      classifier=superpixel_classifier.SuperpixelClassifier(
          num_classes=num_classes,
          num_layers=classifier_options.num_layers,
          num_heads=classifier_options.num_heads,
          channels=classifier_options.channels,
          ffn_channels=classifier_options.ffn_channels,
          dropout_rate=classifier_options.dropout_rate,
          name='superpixel_classifier'),
      association=superpixel_association.SuperpixelAssociation(
          upsample_logits_before_softmax=(
              association_options.upsample_logits_before_softmax),
          implementation=association_options.implementation,
          name='superpixel_association'),
      input_size=(geometry.input_height, geometry.input_width),
      name='sp_transformer')
  model(tf.zeros((1, geometry.input_height, geometry.input_width, 3)),
        training=False)
  if encoder_options.pretrained_weights and load_pretrained_weights:
    encoder.load_pretrained_weights(encoder_options.pretrained_weights)
  return model
