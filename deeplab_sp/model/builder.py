"""Builds the SP-Transformer (arXiv 2309.16889) from `ModelOptions`.

The options are those of protos/model.proto.

This is the one place that reads the model protos: enum values become plain
Python values here (`local_attention_implementation`,
`association_logit_scale`), so the layers and
local_attention know nothing of protos.
"""

from typing import Sequence

import tensorflow as tf

from deeplab_sp.model import association
from deeplab_sp.model import classifier
from deeplab_sp.model import encoders
from deeplab_sp.model import geometry as geometry_lib
from deeplab_sp.model import hypercolumn
from deeplab_sp.model import local_attention
from deeplab_sp.model import sp_transformer
from deeplab_sp.model import tokenization
from deeplab_sp.protos import model_pb2


def _enum_name(enum, value, allowed) -> str:
  """The name of `value` in the proto `enum`, if it is one of `allowed`.

  Raises:
    ValueError: if `value` is not a value of the enum (a bool is not).
  """
  name = None
  if isinstance(value, int) and not isinstance(value, bool):
    try:
      name = enum.Name(value)
    except ValueError:
      pass
  if name not in allowed:
    numbered = ', '.join(f'{n} = {enum.Value(n)}' for n in allowed)
    raise ValueError(f'Unknown {enum.DESCRIPTOR.name} {value!r}: use one of '
                     f'{tuple(allowed)} ({numbered}).')
  return name


def local_attention_implementation(value) -> str:
  """local_attention.NAIVE or EFFICIENT for a LocalAttentionImplementation."""
  return _enum_name(model_pb2.LocalAttentionImplementation, value,
                    local_attention.IMPLEMENTATIONS)


def association_logit_scale(value) -> str:
  """association.SQRT_CHANNELS or NONE for an AssociationLogitScale."""
  return _enum_name(model_pb2.AssociationLogitScale, value,
                    association.LOGIT_SCALES)


def build_hypercolumn(options: model_pb2.HypercolumnOptions,
                      endpoint_strides: Sequence[int]
                     ) -> hypercolumn.Hypercolumn:
  return hypercolumn.Hypercolumn(
      endpoint_strides,
      channels=options.channels,
      output_stride=options.output_stride,
      mlp_hidden_channels=options.mlp_hidden_channels,
      name='hypercolumn')


def build_tokenization(options: model_pb2.SuperpixelTokenizationOptions
                      ) -> tokenization.SuperpixelTokenization:
  return tokenization.SuperpixelTokenization(
      grid_height=options.grid_height,
      grid_width=options.grid_width,
      num_layers=options.num_layers,
      channels=options.channels,
      num_heads=options.num_heads,
      ffn_channels=options.ffn_channels,
      pixel_ffn_channels=options.pixel_ffn_channels,
      implementation=local_attention_implementation(options.implementation),
      dropout_rate=options.dropout_rate,
      name='superpixel_tokenization')


def build_classifier(options: model_pb2.SuperpixelClassifierOptions,
                     num_classes: int) -> classifier.SuperpixelClassifier:
  return classifier.SuperpixelClassifier(
      num_classes=num_classes,
      num_layers=options.num_layers,
      num_heads=options.num_heads,
      channels=options.channels,
      ffn_channels=options.ffn_channels,
      dropout_rate=options.dropout_rate,
      name='superpixel_classifier')


def build_association(options: model_pb2.SuperpixelAssociationOptions
                     ) -> association.SuperpixelAssociation:
  return association.SuperpixelAssociation(
      upsample_logits_before_softmax=options.upsample_logits_before_softmax,
      implementation=local_attention_implementation(options.implementation),
      logit_scale=association_logit_scale(options.logit_scale),
      name='superpixel_association')


def create_model(model_options: model_pb2.ModelOptions, num_classes: int,
                 input_size: Sequence[int]) -> sp_transformer.SPTransformer:
  """The SPTransformer of `model_options` for `input_size`, not yet built.

  Its variables are created by its first call (or trace) at input_size.

  Raises:
    geometry.GeometryError (a ValueError): if input_size does not fit the
      hypercolumn stride and the superpixel grid.
    ValueError: for unknown names.
  """
  geometry = geometry_lib.compute_geometry(
      input_size, model_options.hypercolumn.output_stride,
      model_options.superpixel_tokenization.grid_height,
      model_options.superpixel_tokenization.grid_width)
  encoder_options = model_options.encoder
  encoder = encoders.build_encoder(
      encoder_options.name,
      drop_path_keep_prob=encoder_options.drop_path_keep_prob,
      tiny_convnet_base_channels=encoder_options.tiny_convnet_base_channels)
  model = sp_transformer.SPTransformer(
      encoder=encoder,
      hypercolumn=build_hypercolumn(model_options.hypercolumn,
                                    encoder.endpoint_strides),
      tokenization=build_tokenization(model_options.superpixel_tokenization),
      classifier=build_classifier(model_options.superpixel_classifier,
                                  num_classes),
      association=build_association(model_options.superpixel_association),
      input_size=geometry.input_size,
      name='sp_transformer')
  if encoder_options.sync_batchnorm:
    # The whole model: any BatchNorm outside the encoder is included.
    encoders.synchronize_batch_norm(model)
  return model


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
    geometry.GeometryError (a ValueError): if input_size does not fit the
      hypercolumn stride and the superpixel grid.
    ValueError / FileNotFoundError: for unknown names or bad weight files.
  """
  model = create_model(model_options, num_classes, input_size)
  model(tf.zeros((1, *model.input_size, 3)), training=False)
  weights = model_options.encoder.pretrained_weights
  if weights and load_pretrained_weights:
    model.encoder.load_pretrained_weights(weights)
  return model
