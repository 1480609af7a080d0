"""SP_TRANSFORMER: the Superpixel Transformer (arXiv 2309.16889).

Reads model_options.encoder, hypercolumn, superpixel_tokenization,
superpixel_classifier and superpixel_association. Enum values of those
messages become the plain Python values the layers take here, so the layers
know nothing of protos.
"""

from typing import Sequence, Tuple

from deeplab_sp.model import association
from deeplab_sp.model import association_upsampling
from deeplab_sp.model import classifier
from deeplab_sp.model import geometry as geometry_lib
from deeplab_sp.model import local_attention
from deeplab_sp.model import sp_transformer
from deeplab_sp.model import tokenization
from deeplab_sp.model.builder import network
from deeplab_sp.protos import model_pb2
from deeplab_sp.utils import config_rules

_TOKENIZATION_RULES = (
    config_rules.positive('grid_height'),
    config_rules.positive('grid_width'),
    config_rules.positive('num_layers'),
    config_rules.at_most('num_layers', 'MAX_LAYERS'),
    *config_rules.width('channels'),
    config_rules.positive('num_heads'),
    *config_rules.width('ffn_channels', '0 = no feed-forward block'),
    *config_rules.width('pixel_ffn_channels', '0 = no feed-forward block'),
    config_rules.in_unit_interval('dropout_rate', False, True),
)
_CLASSIFIER_RULES = (
    config_rules.non_negative('num_layers', '0 = a linear classifier'),
    config_rules.at_most('num_layers', 'MAX_LAYERS'),
    config_rules.positive('num_heads'),
    *config_rules.width('channels'),
    *config_rules.width('ffn_channels', '0 = no feed-forward block'),
    config_rules.in_unit_interval('dropout_rate', False, True),
)


def local_attention_implementation(value) -> str:
  """local_attention.NAIVE or EFFICIENT for a LocalAttentionImplementation."""
  return network.enum_name(model_pb2.LocalAttentionImplementation, value,
                           local_attention.IMPLEMENTATIONS)


def association_logit_scale(value) -> str:
  """association.SQRT_CHANNELS or NONE for an AssociationLogitScale."""
  return network.enum_name(model_pb2.AssociationLogitScale, value,
                           association.LOGIT_SCALES)


def association_upsampling_name(value) -> str:
  """association_upsampling.RELATIVE_SLOTS or PER_SUPERPIXEL for an
  AssociationUpsampling."""
  return network.enum_name(model_pb2.AssociationUpsampling, value,
                           association_upsampling.UPSAMPLINGS)


def build_tokenization(options: model_pb2.SuperpixelTokenizationOptions,
                       kernels=None) -> tokenization.SuperpixelTokenization:
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
      kernels=kernels,
      name='superpixel_tokenization')


def build_classifier(options: model_pb2.SuperpixelClassifierOptions,
                     num_classes: int, kernels=None
                    ) -> classifier.SuperpixelClassifier:
  return classifier.SuperpixelClassifier(
      num_classes=num_classes,
      num_layers=options.num_layers,
      num_heads=options.num_heads,
      channels=options.channels,
      ffn_channels=options.ffn_channels,
      dropout_rate=options.dropout_rate,
      kernels=kernels,
      name='superpixel_classifier')


def build_association(options: model_pb2.SuperpixelAssociationOptions,
                      kernels=None) -> association.SuperpixelAssociation:
  return association.SuperpixelAssociation(
      upsample_logits_before_softmax=options.upsample_logits_before_softmax,
      implementation=local_attention_implementation(options.implementation),
      logit_scale=association_logit_scale(options.logit_scale),
      upsampling=association_upsampling_name(options.upsampling),
      kernels=kernels,
      name='superpixel_association')


class SPTransformerNetwork(network.Network):
  """The SP-Transformer: superpixel tokens, classified, then associated
  back to the pixels."""
  name = 'SP_TRANSFORMER'
  options_read = ('encoder', 'hypercolumn', 'superpixel_tokenization',
                  'superpixel_classifier', 'superpixel_association')
  has_superpixels = True

  def validate(self, path, options):
    config_rules.check(path, 'model_options.hypercolumn', options.hypercolumn,
                       network.HYPERCOLUMN_RULES)
    for field, rules in (('superpixel_tokenization', _TOKENIZATION_RULES),
                         ('superpixel_classifier', _CLASSIFIER_RULES)):
      prefix = f'model_options.{field}'
      config_rules.check(path, prefix, getattr(options, field), rules)
      config_rules.check_divides(path, prefix, getattr(options, field),
                                 'num_heads', 'channels')

  def describe(self, options):
    tokens = options.superpixel_tokenization
    implementation = model_pb2.LocalAttentionImplementation.Name(
        tokens.implementation)
    return (f'{network.describe_encoder_and_hypercolumn(options)}, '
            f'{tokens.num_layers} cross-attention layer(s) ({tokens.channels} '
            f'ch, {tokens.num_heads} heads, {implementation}), '
            f'{options.superpixel_classifier.num_layers} self-attention '
            'layer(s)')

  def geometry(self, options, input_size: Sequence[int]):
    return geometry_lib.compute_geometry(
        input_size, options.hypercolumn.output_stride,
        options.superpixel_tokenization.grid_height,
        options.superpixel_tokenization.grid_width)

  def feature_sizes(self, options, input_size: Tuple[int, int]) -> str:
    geometry = self.geometry(options, input_size)
    return (f'hypercolumn {geometry.hypercolumn_height}x'
            f'{geometry.hypercolumn_width}, superpixel grid '
            f'{geometry.grid_height}x{geometry.grid_width}, '
            f'{geometry.superpixel_height}x{geometry.superpixel_width} = '
            f'{geometry.superpixel_height * geometry.superpixel_width} '
            'hypercolumn pixels per superpixel')

  def create(self, options, num_classes, input_size, kernels):
    encoder, hypercolumn = network.build_encoder_and_hypercolumn(options,
                                                                 kernels)
    return sp_transformer.SPTransformer(
        encoder=encoder,
        hypercolumn=hypercolumn,
        tokenization=build_tokenization(options.superpixel_tokenization,
                                        kernels),
        classifier=build_classifier(options.superpixel_classifier,
                                    num_classes, kernels),
        association=build_association(options.superpixel_association,
                                      kernels),
        input_size=input_size,
        recompute_in_backward=options.recompute_in_backward,
        name='sp_transformer')
