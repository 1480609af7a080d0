"""HYPERCOLUMN_PIXEL_CLASSIFIER: the SP-Transformer's per-pixel ablation.

The same encoder and hypercolumn, then a per-pixel MLP classifier instead of
superpixels. Reads model_options.encoder, hypercolumn and pixel_classifier.
"""

from typing import Sequence, Tuple

from deeplab_sp.model import encoders
from deeplab_sp.model import geometry as geometry_lib
from deeplab_sp.model import hypercolumn as hypercolumn_lib
from deeplab_sp.model import hypercolumn_classifier
from deeplab_sp.model.builder import network
from deeplab_sp.protos import model_pb2
from deeplab_sp.utils import config_rules

_PIXEL_CLASSIFIER_RULES = config_rules.width('hidden_channels',
                                             '0 = a linear classifier')


def build_pixel_classifier(options: model_pb2.PixelClassifierOptions,
                           num_classes: int, kernels=None
                          ) -> hypercolumn_lib.EndpointProjection:
  # The hypercolumn's per-pixel MLP form, ending in the classes.
  return hypercolumn_lib.EndpointProjection(
      num_classes, options.hidden_channels, kernels=kernels,
      name='pixel_classifier')


class HypercolumnPixelClassifierNetwork(network.Network):
  """Hypercolumn features classified pixel by pixel (no superpixels)."""
  name = 'HYPERCOLUMN_PIXEL_CLASSIFIER'
  options_read = ('encoder', 'hypercolumn', 'pixel_classifier')

  def validate(self, path, options):
    config_rules.check(path, 'model_options.hypercolumn', options.hypercolumn,
                       network.HYPERCOLUMN_RULES)
    config_rules.check(path, 'model_options.pixel_classifier',
                       options.pixel_classifier, _PIXEL_CLASSIFIER_RULES)

  def describe(self, options):
    return (f'{self.name}: {network.describe_encoder_and_hypercolumn(options)}'
            ', per-pixel MLP classifier '
            f'({options.pixel_classifier.hidden_channels} hidden ch), no '
            'superpixels')

  def geometry(self, options, input_size: Sequence[int]):
    stride = options.hypercolumn.output_stride
    if stride <= 0:
      raise geometry_lib.GeometryError(
          f'hypercolumn.output_stride must be positive, got {stride}.')
    geometry_lib.check_input_multiple(
        input_size, hypercolumn_classifier.input_multiple(stride),
        f"the encoder's output stride {encoders.OUTPUT_STRIDE} and "
        f'hypercolumn.output_stride {stride}')
    return None

  def feature_sizes(self, options, input_size: Tuple[int, int]) -> str:
    stride = options.hypercolumn.output_stride
    return (f'hypercolumn and logits {input_size[0] // stride}x'
            f'{input_size[1] // stride}')

  def create(self, options, num_classes, input_size, kernels):
    encoder, hypercolumn = network.build_encoder_and_hypercolumn(options,
                                                                 kernels)
    return hypercolumn_classifier.HypercolumnPixelClassifier(
        encoder=encoder,
        hypercolumn=hypercolumn,
        pixel_classifier=build_pixel_classifier(options.pixel_classifier,
                                                num_classes, kernels),
        input_size=input_size,
        name='hypercolumn_pixel_classifier')
