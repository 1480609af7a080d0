"""Builds the network of `ModelOptions`: the SP-Transformer or a baseline.

The options are those of protos/model.proto. `model_options.
meta_architecture` chooses the network: the SP-Transformer (arXiv
2309.16889; the default) or one of the per-pixel baselines it is compared
with, the hypercolumn pixel classifier and DeepLabV3+.

Each network is one module of this package (network.py says what each
provides: validate, describe, geometry, create) registered in NETWORKS
below, one line each. Adding a network: a MetaArchitecture value and an
options message in protos/model.proto, a module here, a line in NETWORKS
(docs/adding_a_network.md walks through one). This package is the one
place that reads the model protos; the layers know nothing of them.
"""

from typing import Dict, Optional, Sequence, Tuple

import tensorflow as tf
import tf_keras

from deeplab_sp.model import encoders
from deeplab_sp.model import geometry as geometry_lib
from deeplab_sp.model.kernels import profile
from deeplab_sp.model.builder import deeplabv3plus
from deeplab_sp.model.builder import hypercolumn_pixel_classifier
from deeplab_sp.model.builder import network
from deeplab_sp.model.builder import sp_transformer
from deeplab_sp.protos import model_pb2
from deeplab_sp.utils import config_rules

NETWORKS: Dict[str, network.Network] = {
    net.name: net for net in (
        sp_transformer.SPTransformerNetwork(),
        hypercolumn_pixel_classifier.HypercolumnPixelClassifierNetwork(),
        deeplabv3plus.DeepLabV3PlusNetwork(),
    )
}

# The names of the networks (model_options.meta_architecture).
SP_TRANSFORMER = sp_transformer.SPTransformerNetwork.name
HYPERCOLUMN_PIXEL_CLASSIFIER = (
    hypercolumn_pixel_classifier.HypercolumnPixelClassifierNetwork.name)
DEEPLABV3PLUS = deeplabv3plus.DeepLabV3PlusNetwork.name
META_ARCHITECTURES = tuple(NETWORKS)

_ENCODER_RULES = (
    config_rules.in_unit_interval('drop_path_keep_prob', low_open=True,
                                  high_open=False),
    *config_rules.width('tiny_convnet_base_channels'),
)


def meta_architecture(value) -> str:
  """One of META_ARCHITECTURES for a MetaArchitecture value."""
  return network.enum_name(model_pb2.MetaArchitecture, value,
                           META_ARCHITECTURES)


def get_network(model_options: model_pb2.ModelOptions) -> network.Network:
  """The Network of model_options.meta_architecture (ValueError if none)."""
  return NETWORKS[meta_architecture(model_options.meta_architecture)]


def has_superpixels(model_options: model_pb2.ModelOptions) -> bool:
  """Whether the network of `model_options` has superpixels (outputs
  'superpixel_ids'): only the SP-Transformer does."""
  return get_network(model_options).has_superpixels


def unread_options(model_options: model_pb2.ModelOptions) -> Tuple[str, ...]:
  """The option messages set in `model_options` that its network ignores."""
  read = get_network(model_options).options_read
  return tuple(field.name for field, _ in model_options.ListFields()
               if field.message_type is not None and field.name not in read)


def validate(path: str, model_options: model_pb2.ModelOptions) -> None:
  """Checks ModelOptions: the network's name, that no option message it
  ignores is set, the encoder, then the network's own options.

  Raises:
    config_rules.ConfigError: naming `path`, the field and the fix.
  """
  try:
    net = get_network(model_options)
  except ValueError as e:
    raise config_rules.ConfigError(
        f'{path}: model_options.meta_architecture: {e}') from None
  unread = unread_options(model_options)
  if unread:
    fields = ', '.join(f'model_options.{field}' for field in unread)
    one = len(unread) == 1
    raise config_rules.ConfigError(
        f'{path}: {fields} {"is" if one else "are"} set, but '
        f'model_options.meta_architecture {net.name} does not use '
        f'{"it" if one else "them"} (it reads {", ".join(net.options_read)}'
        f'). Remove {"it" if one else "them"}, or set the meta_architecture '
        'that does (protos/model.proto).')
  encoder = model_options.encoder
  config_rules.check_choice(path, 'model_options.encoder.name',
                            encoder.name, encoders.ENCODER_NAMES)
  config_rules.check(path, 'model_options.encoder', encoder, _ENCODER_RULES)
  weights = encoder.pretrained_weights
  if weights and not (tf.io.gfile.exists(weights) or
                      tf.io.gfile.exists(weights + '.index')):
    raise config_rules.ConfigError(
        f'{path}: model_options.encoder.pretrained_weights {weights!r} does '
        'not exist. Give the local path of the Keras-applications weight file '
        '(.h5, include_top=False) or a TF checkpoint prefix, or leave it '
        'empty to train from scratch. Nothing is downloaded.')
  net.validate(path, model_options)


def describe(model_options: model_pb2.ModelOptions) -> str:
  """One line describing the network of `model_options`."""
  return get_network(model_options).describe(model_options)


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
  return get_network(model_options).geometry(model_options, input_size)


def create_model(model_options: model_pb2.ModelOptions, num_classes: int,
                 input_size: Sequence[int], kernels=None) -> tf_keras.Model:
  """The network of `model_options` for `input_size`, not yet built.

  An SPTransformer, HypercolumnPixelClassifier or DeepLabV3Plus, as
  model_options.meta_architecture says. Its variables are created by its
  first call (or trace) at input_size. `kernels`: the kernel profile of its
  layers (kernels/profile.py: a KernelProfile or its name; None: STOCK
  where a GPU or TPU is visible, else CPU), kept as `model.kernels`; every
  profile has the same variables and results.

  Raises:
    geometry.GeometryError (a ValueError): if the network cannot take
      input_size (model_geometry).
    ValueError: for unknown names.
  """
  net = get_network(model_options)
  net.geometry(model_options, input_size)
  input_size = (int(input_size[0]), int(input_size[1]))
  kernels = profile.get(kernels)
  model = net.create(model_options, num_classes, input_size, kernels)
  model.kernels = kernels
  if model_options.encoder.sync_batchnorm:
    # The whole model: any BatchNorm outside the encoder is included.
    encoders.synchronize_batch_norm(model)
  return model


def build_model(model_options: model_pb2.ModelOptions, num_classes: int,
                input_size: Sequence[int],
                load_pretrained_weights: bool = True, kernels=None
               ) -> tf_keras.Model:
  """Returns the built network for images of `input_size` (H, W).

  The model's variables are created by one call on a zero image of
  `input_size` (batch 1). If `model_options.encoder.pretrained_weights` is
  set and `load_pretrained_weights` is true, the encoder's weights are then
  loaded from that local file. `kernels`: see create_model.

  Raises:
    geometry.GeometryError (a ValueError): if the network cannot take
      input_size (model_geometry).
    ValueError / FileNotFoundError: for unknown names or bad weight files.
  """
  model = create_model(model_options, num_classes, input_size, kernels)
  model(tf.zeros((1, *model.input_size, 3)), training=False)
  weights = model_options.encoder.pretrained_weights
  if weights and load_pretrained_weights:
    model.encoder.load_pretrained_weights(weights)
  return model
