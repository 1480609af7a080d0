"""Builds the network of `ModelOptions`: the SP-Transformer or a baseline.

The options are those of protos/model.proto. `model_options.
meta_architecture` chooses the network: the SP-Transformer (arXiv
2309.16889; the default) or one of the per-pixel baselines it is compared
with, the hypercolumn pixel classifier and DeepLabV3+.

This is the one place that reads the model protos: enum values become plain
Python values here (`meta_architecture`, `local_attention_implementation`,
`association_logit_scale`, `association_upsampling_name`), so the layers and local_attention know nothing
of protos; which option messages each network reads, and the input sizes it
accepts (`model_geometry`), are decided here too.
"""

from typing import Optional, Sequence, Tuple

from official.vision.modeling.decoders import aspp as aspp_lib
from official.vision.modeling.heads import segmentation_heads
import tensorflow as tf
import tf_keras

from deeplab_sp.model import association
from deeplab_sp.model import association_upsampling
from deeplab_sp.model import classifier
from deeplab_sp.model import deeplabv3plus
from deeplab_sp.model import encoders
from deeplab_sp.model import geometry as geometry_lib
from deeplab_sp.model import hypercolumn
from deeplab_sp.model import hypercolumn_classifier
from deeplab_sp.model import local_attention
from deeplab_sp.model import sp_transformer
from deeplab_sp.model import tokenization
from deeplab_sp.protos import model_pb2

# The networks (model_options.meta_architecture).
SP_TRANSFORMER = 'SP_TRANSFORMER'
HYPERCOLUMN_PIXEL_CLASSIFIER = 'HYPERCOLUMN_PIXEL_CLASSIFIER'
DEEPLABV3PLUS = 'DEEPLABV3PLUS'
META_ARCHITECTURES = (SP_TRANSFORMER, HYPERCOLUMN_PIXEL_CLASSIFIER,
                      DEEPLABV3PLUS)

# The ModelOptions messages each network reads (besides meta_architecture).
OPTIONS_READ = {
    SP_TRANSFORMER: ('encoder', 'hypercolumn', 'superpixel_tokenization',
                     'superpixel_classifier', 'superpixel_association'),
    HYPERCOLUMN_PIXEL_CLASSIFIER: ('encoder', 'hypercolumn',
                                   'pixel_classifier'),
    DEEPLABV3PLUS: ('encoder', 'deeplabv3plus'),
}

# DeepLabV3+'s ASPP runs on the encoder's deepest endpoint.
ASPP_STRIDE = encoders.OUTPUT_STRIDE
# Atrous rates at stride 32 when the config gives none: Chen et al.'s 6, 12,
# 18 at stride 16, halved.
DEFAULT_ATROUS_RATES = (3, 6, 9)


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


def association_upsampling_name(value) -> str:
  """association_upsampling.RELATIVE_SLOTS or PER_SUPERPIXEL for an
  AssociationUpsampling."""
  return _enum_name(model_pb2.AssociationUpsampling, value,
                    association_upsampling.UPSAMPLINGS)


def meta_architecture(value) -> str:
  """One of META_ARCHITECTURES for a MetaArchitecture value."""
  return _enum_name(model_pb2.MetaArchitecture, value, META_ARCHITECTURES)


def has_superpixels(model_options: model_pb2.ModelOptions) -> bool:
  """Whether the network of `model_options` has superpixels (outputs
  'superpixel_ids'): only the SP-Transformer does."""
  return meta_architecture(model_options.meta_architecture) == SP_TRANSFORMER


def unread_options(model_options: model_pb2.ModelOptions) -> Tuple[str, ...]:
  """The option messages set in `model_options` that its network ignores."""
  read = OPTIONS_READ[meta_architecture(model_options.meta_architecture)]
  return tuple(field.name for field, _ in model_options.ListFields()
               if field.message_type is not None and field.name not in read)


def atrous_rates(options: model_pb2.DeepLabV3PlusOptions) -> Tuple[int, ...]:
  """The ASPP's atrous rates: the config's, or DEFAULT_ATROUS_RATES."""
  return tuple(options.atrous_rates) or DEFAULT_ATROUS_RATES


def model_geometry(model_options: model_pb2.ModelOptions,
                   input_size: Sequence[int]
                  ) -> Optional[geometry_lib.Geometry]:
  """Checks `input_size` (H, W) for the network; its Geometry if it has one.

  Returns:
    The SP-Transformer's Geometry (hypercolumn, superpixel grid and cell
    sizes); None for the per-pixel networks, which have no superpixel grid
    and only need the input to be a multiple of their feature maps'
    strides.

  Raises:
    geometry.GeometryError (a ValueError): if the network cannot take
      input_size; the message gives the nearest size that fits.
  """
  name = meta_architecture(model_options.meta_architecture)
  if name == SP_TRANSFORMER:
    return geometry_lib.compute_geometry(
        input_size, model_options.hypercolumn.output_stride,
        model_options.superpixel_tokenization.grid_height,
        model_options.superpixel_tokenization.grid_width)
  if name == HYPERCOLUMN_PIXEL_CLASSIFIER:
    stride = model_options.hypercolumn.output_stride
    if stride <= 0:
      raise geometry_lib.GeometryError(
          f'hypercolumn.output_stride must be positive, got {stride}.')
    geometry_lib.check_input_multiple(
        input_size, hypercolumn_classifier.input_multiple(stride),
        f"the encoder's output stride {encoders.OUTPUT_STRIDE} and "
        f'hypercolumn.output_stride {stride}')
  else:
    geometry_lib.check_input_multiple(
        input_size, encoders.OUTPUT_STRIDE,
        "the encoder's output stride, where ASPP runs")
  return None


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
      upsampling=association_upsampling_name(options.upsampling),
      name='superpixel_association')


def build_pixel_classifier(options: model_pb2.PixelClassifierOptions,
                           num_classes: int
                          ) -> hypercolumn.EndpointProjection:
  # The hypercolumn's per-pixel MLP form, ending in the classes.
  return hypercolumn.EndpointProjection(
      num_classes, options.hidden_channels, name='pixel_classifier')


def build_aspp(options: model_pb2.DeepLabV3PlusOptions,
               sync_batchnorm: bool) -> aspp_lib.ASPP:
  return aspp_lib.ASPP(
      level=deeplabv3plus.level(ASPP_STRIDE),
      dilation_rates=list(atrous_rates(options)),
      num_filters=options.aspp_channels,
      dropout_rate=options.aspp_dropout_rate,
      use_sync_bn=sync_batchnorm,
      name='aspp')


def build_deeplabv3plus_decoder(options: model_pb2.DeepLabV3PlusOptions,
                                num_classes: int, sync_batchnorm: bool
                               ) -> segmentation_heads.SegmentationHead:
  return segmentation_heads.SegmentationHead(
      num_classes=num_classes,
      level=deeplabv3plus.level(ASPP_STRIDE),
      num_convs=options.decoder_num_convs,
      num_filters=options.decoder_channels,
      feature_fusion='deeplabv3plus',
      low_level=deeplabv3plus.level(options.low_level_stride),
      low_level_num_filters=options.low_level_channels,
      use_sync_bn=sync_batchnorm,
      name='decoder')


def _build_encoder(options: model_pb2.EncoderOptions,
                   endpoint_strides: Optional[Sequence[int]] = None
                  ) -> encoders.Encoder:
  return encoders.build_encoder(
      options.name,
      drop_path_keep_prob=options.drop_path_keep_prob,
      tiny_convnet_base_channels=options.tiny_convnet_base_channels,
      endpoint_strides=endpoint_strides)


def create_model(model_options: model_pb2.ModelOptions, num_classes: int,
                 input_size: Sequence[int]) -> tf_keras.Model:
  """The network of `model_options` for `input_size`, not yet built.

  An SPTransformer, HypercolumnPixelClassifier or DeepLabV3Plus, as
  model_options.meta_architecture says. Its variables are created by its
  first call (or trace) at input_size.

  Raises:
    geometry.GeometryError (a ValueError): if the network cannot take
      input_size (model_geometry).
    ValueError: for unknown names.
  """
  model_geometry(model_options, input_size)
  input_size = (int(input_size[0]), int(input_size[1]))
  name = meta_architecture(model_options.meta_architecture)
  sync_batchnorm = model_options.encoder.sync_batchnorm
  if name == SP_TRANSFORMER:
    encoder = _build_encoder(model_options.encoder)
    model = sp_transformer.SPTransformer(
        encoder=encoder,
        hypercolumn=build_hypercolumn(model_options.hypercolumn,
                                      encoder.endpoint_strides),
        tokenization=build_tokenization(
            model_options.superpixel_tokenization),
        classifier=build_classifier(model_options.superpixel_classifier,
                                    num_classes),
        association=build_association(model_options.superpixel_association),
        input_size=input_size,
        recompute_in_backward=model_options.recompute_in_backward,
        name='sp_transformer')
  elif name == HYPERCOLUMN_PIXEL_CLASSIFIER:
    encoder = _build_encoder(model_options.encoder)
    model = hypercolumn_classifier.HypercolumnPixelClassifier(
        encoder=encoder,
        hypercolumn=build_hypercolumn(model_options.hypercolumn,
                                      encoder.endpoint_strides),
        pixel_classifier=build_pixel_classifier(
            model_options.pixel_classifier, num_classes),
        input_size=input_size,
        name='hypercolumn_pixel_classifier')
  else:
    options = model_options.deeplabv3plus
    model = deeplabv3plus.DeepLabV3Plus(
        encoder=_build_encoder(
            model_options.encoder,
            endpoint_strides=(options.low_level_stride, ASPP_STRIDE)),
        # Their BatchNorm layers are created when they are first called, so
        # they are synchronized here rather than below.
        aspp=build_aspp(options, sync_batchnorm),
        decoder=build_deeplabv3plus_decoder(options, num_classes,
                                            sync_batchnorm),
        num_classes=num_classes,
        input_size=input_size,
        name='deeplabv3plus')
  if sync_batchnorm:
    # The whole model: any BatchNorm outside the encoder is included.
    encoders.synchronize_batch_norm(model)
  return model


def build_model(model_options: model_pb2.ModelOptions, num_classes: int,
                input_size: Sequence[int],
                load_pretrained_weights: bool = True
               ) -> tf_keras.Model:
  """Returns the built network for images of `input_size` (H, W).

  The model's variables are created by one call on a zero image of
  `input_size` (batch 1). If `model_options.encoder.pretrained_weights` is
  set and `load_pretrained_weights` is true, the encoder's weights are then
  loaded from that local file.

  Raises:
    geometry.GeometryError (a ValueError): if the network cannot take
      input_size (model_geometry).
    ValueError / FileNotFoundError: for unknown names or bad weight files.
  """
  model = create_model(model_options, num_classes, input_size)
  model(tf.zeros((1, *model.input_size, 3)), training=False)
  weights = model_options.encoder.pretrained_weights
  if weights and load_pretrained_weights:
    model.encoder.load_pretrained_weights(weights)
  return model
