"""DEEPLABV3PLUS: DeepLabV3+ (Chen et al., ECCV 2018), the per-pixel baseline.

The Model Garden's ASPP and DeepLabV3+ decoder head on our encoders. Reads
model_options.encoder and deeplabv3plus.
"""

from typing import Sequence, Tuple

from official.vision.modeling.decoders import aspp as aspp_lib
from official.vision.modeling.heads import segmentation_heads

from deeplab_sp.model import deeplabv3plus
from deeplab_sp.model import encoders
from deeplab_sp.model import geometry as geometry_lib
from deeplab_sp.model.builder import network
from deeplab_sp.protos import model_pb2
from deeplab_sp.utils import config_rules

# DeepLabV3+'s ASPP runs on the encoder's deepest endpoint.
ASPP_STRIDE = encoders.OUTPUT_STRIDE
# Atrous rates at stride 32 when the config gives none: Chen et al.'s 6, 12,
# 18 at stride 16, halved.
DEFAULT_ATROUS_RATES = (3, 6, 9)

_RULES = (
    *config_rules.width('aspp_channels'),
    *config_rules.width('low_level_channels'),
    *config_rules.width('decoder_channels'),
    config_rules.non_negative('decoder_num_convs'),
    config_rules.at_most('decoder_num_convs', 'MAX_LAYERS'),
    config_rules.positive('atrous_rates'),
    config_rules.at_most('atrous_rates', 'MAX_CROP_SIDE'),
    config_rules.in_unit_interval('aspp_dropout_rate', False, True),
)


def atrous_rates(options: model_pb2.DeepLabV3PlusOptions) -> Tuple[int, ...]:
  """The ASPP's atrous rates: the config's, or DEFAULT_ATROUS_RATES."""
  return tuple(options.atrous_rates) or DEFAULT_ATROUS_RATES


def build_aspp(options: model_pb2.DeepLabV3PlusOptions,
               sync_batchnorm: bool) -> aspp_lib.ASPP:
  return aspp_lib.ASPP(
      level=deeplabv3plus.level(ASPP_STRIDE),
      dilation_rates=list(atrous_rates(options)),
      num_filters=options.aspp_channels,
      dropout_rate=options.aspp_dropout_rate,
      use_sync_bn=sync_batchnorm,
      name='aspp')


def build_decoder(options: model_pb2.DeepLabV3PlusOptions, num_classes: int,
                  sync_batchnorm: bool) -> segmentation_heads.SegmentationHead:
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


class DeepLabV3PlusNetwork(network.Network):
  """ASPP on the deepest endpoint, decoder on a low-level one."""
  name = 'DEEPLABV3PLUS'
  options_read = ('encoder', 'deeplabv3plus')

  def validate(self, path, options):
    prefix = 'model_options.deeplabv3plus'
    config_rules.check(path, prefix, options.deeplabv3plus, _RULES)
    stride = options.deeplabv3plus.low_level_stride
    encoder = options.encoder.name
    strides = [s for s in encoders.ENDPOINT_STRIDES[encoder]
               if s < ASPP_STRIDE]
    if stride not in strides:
      raise config_rules.ConfigError(
          f'{path}: {prefix}.low_level_stride is {stride}; encoder {encoder} '
          f'has endpoints below the ASPP stride {ASPP_STRIDE} at strides '
          f'{", ".join(map(str, strides))} (Chen et al. use 4).')

  def describe(self, options):
    deeplab = options.deeplabv3plus
    rates = ', '.join(str(r) for r in atrous_rates(deeplab))
    return (f'{self.name}: encoder {options.encoder.name}, ASPP at stride '
            f'{ASPP_STRIDE} ({deeplab.aspp_channels} ch, rates {rates}), '
            f'decoder at stride {deeplab.low_level_stride} '
            f'({deeplab.low_level_channels} + {deeplab.decoder_channels} ch, '
            f'{deeplab.decoder_num_convs} conv(s)), no superpixels')

  def geometry(self, options, input_size: Sequence[int]):
    geometry_lib.check_input_multiple(
        input_size, encoders.OUTPUT_STRIDE,
        "the encoder's output stride, where ASPP runs")
    return None

  def feature_sizes(self, options, input_size: Tuple[int, int]) -> str:
    height, width = input_size
    stride = options.deeplabv3plus.low_level_stride
    return (f'ASPP {height // ASPP_STRIDE}x{width // ASPP_STRIDE}, logits '
            f'{height // stride}x{width // stride}')

  def create(self, options, num_classes, input_size, kernels):
    del kernels  # The Model Garden's layers have one form.
    deeplab = options.deeplabv3plus
    sync_batchnorm = options.encoder.sync_batchnorm
    return deeplabv3plus.DeepLabV3Plus(
        encoder=network.build_encoder(
            options.encoder,
            endpoint_strides=(deeplab.low_level_stride, ASPP_STRIDE)),
        # Their BatchNorm layers are created when they are first called, so
        # they are synchronized here rather than with the rest of the model.
        aspp=build_aspp(deeplab, sync_batchnorm),
        decoder=build_decoder(deeplab, num_classes, sync_batchnorm),
        num_classes=num_classes,
        input_size=input_size,
        name='deeplabv3plus')
