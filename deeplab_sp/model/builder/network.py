"""What a network of model_options.meta_architecture provides.

Each network is one file in this package with one `Network` subclass: how
its options are checked, described and turned into a Keras model, and which
input sizes it takes. The package's __init__ registers one instance of each;
nothing else in the project names a network's options.
"""

import abc
from typing import Optional, Sequence, Tuple

import tf_keras

from deeplab_sp.model import encoders
from deeplab_sp.model import geometry as geometry_lib
from deeplab_sp.model import hypercolumn
from deeplab_sp.model.kernels import profile
from deeplab_sp.protos import model_pb2
from deeplab_sp.utils import config_rules


class Network(abc.ABC):
  """One network: its name, its options and how it is built.

  Attributes:
    name: its MetaArchitecture value's name (protos/model.proto).
    options_read: the ModelOptions messages it reads; a config that sets any
      other is refused (config_rules.ConfigError), so that an option never
      silently does nothing.
    has_superpixels: whether its outputs include 'superpixel_ids'.
  """
  name: str
  options_read: Tuple[str, ...]
  has_superpixels: bool = False

  @abc.abstractmethod
  def validate(self, path: str, options: model_pb2.ModelOptions) -> None:
    """Raises config_rules.ConfigError for the first bad option it reads,
    naming `path` (the config file) and the field. The encoder's options
    are checked for every network before this is called."""

  @abc.abstractmethod
  def describe(self, options: model_pb2.ModelOptions) -> str:
    """One line: the network and its main sizes."""

  @abc.abstractmethod
  def geometry(self, options: model_pb2.ModelOptions,
               input_size: Sequence[int]
              ) -> Optional[geometry_lib.Geometry]:
    """Checks `input_size` (height, width); the superpixel Geometry there,
    or None for a network without superpixels.

    Raises:
      geometry.GeometryError: naming the nearest size that fits.
    """

  @abc.abstractmethod
  def feature_sizes(self, options: model_pb2.ModelOptions,
                    input_size: Tuple[int, int]) -> str:
    """Its feature maps' sizes at `input_size`, for the experiment summary."""

  @abc.abstractmethod
  def create(self, options: model_pb2.ModelOptions, num_classes: int,
             input_size: Tuple[int, int],
             kernels: profile.KernelProfile) -> tf_keras.Model:
    """The Keras model, not yet built (its first call creates the
    variables). `input_size` has been checked by `geometry`; `kernels` is
    the kernel profile its layers are built with (kernels/profile.py)."""


def enum_name(enum, value, allowed) -> str:
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


def build_encoder(options: model_pb2.EncoderOptions,
                  endpoint_strides: Optional[Sequence[int]] = None
                 ) -> encoders.Encoder:
  return encoders.build_encoder(
      options.name,
      drop_path_keep_prob=options.drop_path_keep_prob,
      tiny_convnet_base_channels=options.tiny_convnet_base_channels,
      endpoint_strides=endpoint_strides)


# The hypercolumn's rules (networks that read model_options.hypercolumn).
HYPERCOLUMN_RULES = (
    *config_rules.width('channels'),
    config_rules.positive('output_stride'),
    *config_rules.width('mlp_hidden_channels', '0 = a linear projection'),
)


def build_hypercolumn(options: model_pb2.HypercolumnOptions,
                      endpoint_strides: Sequence[int],
                      kernels: profile.KernelProfile
                     ) -> hypercolumn.Hypercolumn:
  return hypercolumn.Hypercolumn(
      endpoint_strides,
      channels=options.channels,
      output_stride=options.output_stride,
      mlp_hidden_channels=options.mlp_hidden_channels,
      kernels=kernels,
      name='hypercolumn')


def build_encoder_and_hypercolumn(options: model_pb2.ModelOptions,
                                  kernels: profile.KernelProfile
                                  ) -> Tuple[encoders.Encoder,
                                             hypercolumn.Hypercolumn]:
  """The encoder and the hypercolumn over its endpoints (the networks
  that read model_options.hypercolumn)."""
  encoder = build_encoder(options.encoder)
  return encoder, build_hypercolumn(options.hypercolumn,
                                    encoder.endpoint_strides, kernels)


def describe_encoder_and_hypercolumn(options: model_pb2.ModelOptions) -> str:
  return (f'encoder {options.encoder.name}, hypercolumn '
          f'{options.hypercolumn.channels} ch at stride '
          f'{options.hypercolumn.output_stride}')
