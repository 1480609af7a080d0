"""Encoders (backbones) of the SP-Transformer and their endpoints.

The paper (arXiv 2309.16889, Sec. III-A and IV-A) uses ResNet-50 and
ConvNeXt-L; the hypercolumn reads the features after stage 1 (stride 2),
stage 3 (stride 8) and stage 5 (stride 32) of ResNet-50. The two paper
backbones are the Keras-applications networks of tf_keras (a well-kept
implementation whose weight files users already have), wrapped so that they
return their endpoints. ConvNeXt has no stride-2 feature (its stem has
stride 4), so its endpoints are the outputs of stages 1, 2 and 4 (strides 4,
8 and 32). `resnet50_model_garden` is the Model Garden's ResNet-50
(official.vision), the network of the field's Model Garden ImageNet
checkpoints; it is not the Keras-applications ResNet-50 (see
ModelGardenResNet50Encoder), so it is a choice of its own rather than a
conversion of one checkpoint into the other. `tiny_convnet` is a small
network for the default experiment and the tests (not in the paper). Other
endpoints can be asked for (`endpoint_strides`), e.g. the stride-4 features
of DeepLabV3+'s decoder; `ENDPOINT_STRIDES` lists each encoder's.

Every encoder takes RGB images in [0, 255] and applies its own input
normalisation: ResNet-50 the Keras-applications 'caffe' preprocessing (BGR,
ImageNet mean subtracted), the Model Garden's ResNet-50 official.vision's
(RGB, ImageNet mean subtracted and divided by the standard deviation),
ConvNeXt its built-in normalisation layer, tiny_convnet a scaling to
[-1, 1].

Pretrained weights load from a local file (`load_pretrained_weights`): the
Keras-applications weight file of the backbone (`.h5`, include_top=False),
a TF checkpoint of our encoder, or for `resnet50_model_garden` a Model
Garden checkpoint holding the ResNet as its `backbone`. Nothing is ever
downloaded.
"""

from typing import Dict, Optional, Sequence

from official.vision.modeling.backbones import resnet as model_garden_resnet
from official.vision.ops import preprocess_ops
import tensorflow as tf
import tf_keras
from tf_keras.src.applications import convnext as keras_convnext

MODEL_GARDEN_RESNET50 = 'resnet50_model_garden'
ENCODER_NAMES = ('resnet50', MODEL_GARDEN_RESNET50, 'convnext_large',
                 'tiny_convnet')
# The field whose weights load_pretrained_weights reads.
PRETRAINED_WEIGHTS_FIELD = 'model_options.encoder.pretrained_weights'

# Every encoder reduces the input 32 times at its deepest endpoint.
OUTPUT_STRIDE = 32

# The strides each encoder can return, and those it returns by default (the
# endpoints of the paper's hypercolumn, Sec. III-A).
ENDPOINT_STRIDES = {
    'resnet50': (2, 4, 8, 16, 32),
    MODEL_GARDEN_RESNET50: (2, 4, 8, 16, 32),
    'convnext_large': (4, 8, 16, 32),
    'tiny_convnet': (2, 4, 8, 16, 32),
}
DEFAULT_ENDPOINT_STRIDES = {
    'resnet50': (2, 8, 32),
    MODEL_GARDEN_RESNET50: (2, 8, 32),
    'convnext_large': (4, 8, 32),
    'tiny_convnet': (2, 8, 32),
}

# ImageNet mean of the 'caffe' preprocessing of Keras-applications ResNet-50,
# in BGR order.
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)

# The Model Garden's ResNet-50: its BatchNormalization epsilon is that of the
# Model Garden's ImageNet classification config (resnet_imagenet), which its
# checkpoints were trained with, so a checkpoint gives the features it gave
# there; the momentum is the Keras default (ResNet-50's here): it only
# matters when fine-tuning.
_MODEL_GARDEN_RESNET50_NORM_EPSILON = 1e-5
_MODEL_GARDEN_RESNET50_NORM_MOMENTUM = 0.99
# Its endpoints: block group l{level} ends at stride 2**level; the stride-2
# features are those of its stem, before the max pooling.
_MODEL_GARDEN_RESNET50_BLOCK_GROUPS = {
    4: 'block_group_l2', 8: 'block_group_l3', 16: 'block_group_l4',
    32: 'block_group_l5'}

# ConvNeXt-L (Liu et al. 2022, Table 9 'L'): blocks per stage and widths.
_CONVNEXT_LARGE_DEPTHS = (3, 3, 27, 3)
_CONVNEXT_LARGE_WIDTHS = (192, 384, 768, 1536)
_CONVNEXT_LAYER_SCALE_INIT = 1e-6

# Layers of Keras-applications ResNet-50 whose outputs are the endpoints.
_RESNET50_ENDPOINTS = {
    2: 'conv1_relu',         # Stage 1 (stem), 64 channels.
    4: 'conv2_block3_out',   # Stage 2, 256 channels.
    8: 'conv3_block4_out',   # Stage 3, 512 channels.
    16: 'conv4_block6_out',  # Stage 4, 1024 channels.
    32: 'conv5_block3_out',  # Stage 5, 2048 channels.
}


class Encoder(tf_keras.Model):
  """A backbone returning a dict {stride: features [B, H/s, W/s, C_s]}.

  Attributes:
    endpoint_strides: the strides of the returned endpoints, ascending.
    backbone: the wrapped Keras network (the Keras-applications model for the
      paper's backbones; its weights are what a weight file holds).
  """

  def __init__(self, name: str, backbone: tf_keras.Model,
               endpoint_strides: Sequence[int], **kwargs):
    super().__init__(name=name, **kwargs)
    self.backbone = backbone
    self.endpoint_strides = tuple(endpoint_strides)

  def preprocess(self, images: tf.Tensor) -> tf.Tensor:
    """Maps RGB [0, 255] images to what the backbone expects."""
    return images

  def call(self, images: tf.Tensor, training=None) -> Dict[int, tf.Tensor]:
    endpoints = self._features(self.preprocess(images), training=training)
    return dict(zip(self.endpoint_strides, endpoints))

  def _features(self, inputs, training):
    return self._endpoint_model(inputs, training=training)

  def load_pretrained_weights(self, path: str) -> None:
    """Loads a Keras-applications .h5 file or a TF checkpoint of the encoder.

    Raises:
      FileNotFoundError: if `path` does not exist.
      ValueError: if the file does not fit this encoder.
    """
    if path.endswith('.h5') or path.endswith('.keras'):
      if not tf.io.gfile.exists(path):
        raise FileNotFoundError(
            f'Encoder weight file {path} does not exist: set '
            'model_options.encoder.pretrained_weights to a local copy of the '
            'Keras-applications weights (include_top=False). Nothing is '
            'downloaded.')
      try:
        self.backbone.load_weights(path)
      except (ValueError, KeyError, OSError) as e:
        raise ValueError(
            f'Encoder weight file {path} does not fit encoder {self.name}: '
            f'{e}. Use the Keras-applications weights of this backbone '
            'without its top (include_top=False).') from None
      return
    path = _checkpoint_prefix(
        path, 'a TF checkpoint prefix (the path without .index) or a '
        'Keras-applications .h5 file')
    self._read_encoder_checkpoint(path)

  def _read_encoder_checkpoint(self, path: str) -> None:
    """Restores `path`, a prefix of tf.train.Checkpoint(encoder=...)."""
    checkpoint = tf.train.Checkpoint(encoder=self)
    try:
      checkpoint.read(path).assert_existing_objects_matched().expect_partial()
    except AssertionError as e:
      raise ValueError(
          f'Checkpoint {path} does not fit encoder {self.name}: {e}. It must '
          'be written with tf.train.Checkpoint(encoder=encoder).') from None

  def get_config(self):
    return {'name': self.name, 'endpoint_strides': self.endpoint_strides}


def _checkpoint_prefix(path: str, what: str) -> str:
  """The TF checkpoint prefix `path` names (a directory: its newest).

  Args:
    path: a checkpoint prefix or a directory of checkpoints.
    what: what the field should hold, for the error messages.

  Raises:
    FileNotFoundError: no checkpoint there.
  """
  if tf.io.gfile.isdir(path):
    latest = tf.train.latest_checkpoint(path)
    if latest is None:
      raise FileNotFoundError(
          f'No checkpoint in directory {path} ({PRETRAINED_WEIGHTS_FIELD}): '
          f'give {what}.')
    return latest
  if not tf.io.gfile.exists(path + '.index'):
    raise FileNotFoundError(
        f'Encoder checkpoint {path} ({PRETRAINED_WEIGHTS_FIELD}) does not '
        f'exist: give {what}.')
  return path


class _EndpointEncoder(Encoder):
  """An Encoder over a functional backbone and named endpoint layers."""

  def __init__(self, name, backbone, endpoint_layers: Dict[int, tf.Tensor],
               **kwargs):
    strides = sorted(endpoint_layers)
    super().__init__(name, backbone, strides, **kwargs)
    self._endpoint_model = tf_keras.Model(
        backbone.input, [endpoint_layers[s] for s in strides],
        name=f'{name}_endpoints')


def _check_endpoint_strides(name: str, strides: Sequence[int]) -> None:
  unknown = sorted(set(strides) - set(ENDPOINT_STRIDES[name]))
  if unknown or not strides:
    raise ValueError(
        f'Encoder {name} has no endpoint at stride(s) {unknown or "(none)"}; '
        f'its endpoints are at strides {ENDPOINT_STRIDES[name]}.')


class ResNet50Encoder(_EndpointEncoder):
  """Keras-applications ResNet-50; endpoints at strides 2, 8 and 32 by default.

  ResNet-50 has no stochastic depth: drop path is not applied (the paper
  uses it for ConvNeXt-L only).

  Args:
    endpoint_strides: the endpoints to return, among ENDPOINT_STRIDES.
  """

  def __init__(self, endpoint_strides: Sequence[int] = (
      DEFAULT_ENDPOINT_STRIDES['resnet50']), **kwargs):
    _check_endpoint_strides('resnet50', endpoint_strides)
    backbone = tf_keras.applications.ResNet50(
        include_top=False, weights=None, input_shape=(None, None, 3))
    endpoints = {stride: backbone.get_layer(_RESNET50_ENDPOINTS[stride]).output
                 for stride in endpoint_strides}
    super().__init__('resnet50', backbone, endpoints, **kwargs)

  def preprocess(self, images):
    bgr = tf.reverse(images, axis=[-1])
    return bgr - tf.constant(_CAFFE_BGR_MEAN, dtype=images.dtype)


class ModelGardenResNet50Encoder(_EndpointEncoder):
  """The Model Garden's ResNet-50; endpoints at strides 2, 8, 32 by default.

  official.vision.modeling.backbones.ResNet(model_id=50): the network of the
  Model Garden's ImageNet classification checkpoints, which its
  segmentation and detection tasks start from. It is not the
  Keras-applications ResNet-50 of `resnet50`: there a downsampling bottleneck
  has its stride in the first 1x1 convolution, here in the 3x3 one (ResNet
  v1.5), and there the convolutions have biases, here not; so neither
  network's weights compute the other's features, and converting one
  checkpoint into the other would only approximate it.

  Its own endpoints are its four block groups (strides 4, 8, 16 and 32); the
  stride-2 endpoint (the hypercolumn's, like `resnet50`'s conv1_relu) is its
  stem's output before the max pooling. No stochastic depth (as `resnet50`).

  Attributes:
    backbone: the Model Garden ResNet itself, so its variables are those of
      tf.train.Checkpoint(backbone=resnet), the Model Garden's checkpoint
      items.

  Args:
    endpoint_strides: the endpoints to return, among ENDPOINT_STRIDES.
  """

  def __init__(self, endpoint_strides: Sequence[int] = (
      DEFAULT_ENDPOINT_STRIDES[MODEL_GARDEN_RESNET50]), **kwargs):
    _check_endpoint_strides(MODEL_GARDEN_RESNET50, endpoint_strides)
    backbone = model_garden_resnet.ResNet(
        model_id=50, norm_momentum=_MODEL_GARDEN_RESNET50_NORM_MOMENTUM,
        norm_epsilon=_MODEL_GARDEN_RESNET50_NORM_EPSILON)
    stem_pools = [layer for layer in backbone.layers
                  if isinstance(layer, tf_keras.layers.MaxPool2D)]
    assert len(stem_pools) == 1, [layer.name for layer in stem_pools]
    features = {2: stem_pools[0].input}
    for stride, name in _MODEL_GARDEN_RESNET50_BLOCK_GROUPS.items():
      features[stride] = backbone.get_layer(name).output
    endpoints = {stride: features[stride] for stride in endpoint_strides}
    super().__init__(MODEL_GARDEN_RESNET50, backbone, endpoints, **kwargs)

  def preprocess(self, images):
    # official.vision's normalize_image on [0, 255] RGB images.
    mean = tf.constant(preprocess_ops.MEAN_RGB, dtype=images.dtype)
    stddev = tf.constant(preprocess_ops.STDDEV_RGB, dtype=images.dtype)
    return (images - mean) / stddev

  def load_pretrained_weights(self, path: str) -> None:
    """Loads a Model Garden backbone checkpoint (or one of this encoder).

    The Model Garden's checkpoints hold the ResNet as `backbone` at their
    root (tf.train.Checkpoint(backbone=resnet), or a training checkpoint of
    a model whose checkpoint_items include it, e.g. an image-classification
    run); its task initialisation with init_checkpoint_modules='backbone'
    reads them the same way. Every variable of the ResNet must be restored.
    A checkpoint of this encoder (tf.train.Checkpoint(encoder=encoder)) also
    loads.

    Raises:
      FileNotFoundError: if `path` holds no checkpoint.
      ValueError: if the checkpoint has no ResNet-50 backbone that fits.
    """
    what = ('a Model Garden checkpoint whose backbone is a ResNet-50 (written '
            'by tf.train.Checkpoint(backbone=resnet), as the Model Garden\'s '
            'image-classification runs write it)')
    if path.endswith('.h5') or path.endswith('.keras'):
      raise ValueError(
          f'{PRETRAINED_WEIGHTS_FIELD} {path} is a Keras weight file; encoder '
          f'{self.name} takes {what}. Keras-applications ResNet-50 weights '
          'are for encoder resnet50.')
    path = _checkpoint_prefix(path, what)
    roots = sorted({key.split('/', 1)[0] for key in
                    tf.train.load_checkpoint(path).get_variable_to_shape_map()
                    if '/' in key})
    if 'backbone' not in roots and 'encoder' in roots:
      self._read_encoder_checkpoint(path)
      return
    if 'backbone' not in roots:
      raise ValueError(
          f'{PRETRAINED_WEIGHTS_FIELD} {path} has no backbone (its root holds '
          f'{", ".join(roots) or "nothing"}): encoder {self.name} takes '
          f'{what}. A checkpoint of a whole model of this project goes to '
          'trainer_options.initial_checkpoint.')
    checkpoint = tf.train.Checkpoint(backbone=self.backbone)
    try:
      checkpoint.read(path).expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError) as e:
      # TF's messages span lines (they list the objects); the first says
      # what went wrong.
      reason = str(e).strip().splitlines()[0].rstrip('.:')
      raise ValueError(
          f'{PRETRAINED_WEIGHTS_FIELD} {path}: its backbone does not fit '
          f'encoder {self.name} ({reason}); give {what}.') from None


class ConvNeXtLargeEncoder(_EndpointEncoder):
  """Keras-applications ConvNeXt-L; endpoints at strides 4, 8, 32 by default.

  Args:
    drop_path_keep_prob: keep probability of the residual blocks' stochastic
      depth (the paper: 0.8); Keras' drop_path_rate is 1 - keep_prob, linearly
      increased over the blocks as in the ConvNeXt paper.
    endpoint_strides: the endpoints to return, among ENDPOINT_STRIDES.
  """

  def __init__(self, drop_path_keep_prob: float = 1.0,
               endpoint_strides: Sequence[int] = (
                   DEFAULT_ENDPOINT_STRIDES['convnext_large']), **kwargs):
    _check_endpoint_strides('convnext_large', endpoint_strides)
    backbone = keras_convnext.ConvNeXt(
        depths=list(_CONVNEXT_LARGE_DEPTHS),
        projection_dims=list(_CONVNEXT_LARGE_WIDTHS),
        drop_path_rate=1.0 - drop_path_keep_prob,
        layer_scale_init_value=_CONVNEXT_LAYER_SCALE_INIT,
        model_name='convnext_large',
        include_preprocessing=True,
        include_top=False,
        weights=None,
        input_shape=(None, None, 3))
    stage_outputs = {
        4: _stage_output(backbone, 'convnext_large_downsampling_block_0'),
        8: _stage_output(backbone, 'convnext_large_downsampling_block_1'),
        16: _stage_output(backbone, 'convnext_large_downsampling_block_2'),
        32: backbone.output,
    }
    endpoints = {stride: stage_outputs[stride] for stride in endpoint_strides}
    super().__init__('convnext_large', backbone, endpoints, **kwargs)
    self.drop_path_keep_prob = drop_path_keep_prob


def _stage_output(backbone: tf_keras.Model, downsampling_layer: str):
  """The tensor a ConvNeXt downsampling block reads: its stage's output.

  The block is a nested Sequential whose `.input` is its own placeholder, so
  the stage output is taken from the layer right before it in the
  (topologically ordered) functional graph: the stage's last residual add.
  """
  names = [layer.name for layer in backbone.layers]
  stage_end = backbone.layers[names.index(downsampling_layer) - 1]
  assert 'add' in stage_end.name, stage_end.name
  return stage_end.output


class TinyConvNet(Encoder):
  """A small conv-BN-ReLU network; endpoints at strides 2, 8, 32 by default.

  Not in the paper: a CPU-friendly encoder for the default experiment and
  the tests. Stage widths are base, 2*base, 4*base, 8*base, 8*base.

  Args:
    base_channels: channels of the first stage.
    endpoint_strides: the endpoints to return, among ENDPOINT_STRIDES.
  """

  def __init__(self, base_channels: int = 16,
               endpoint_strides: Sequence[int] = (
                   DEFAULT_ENDPOINT_STRIDES['tiny_convnet']), **kwargs):
    _check_endpoint_strides('tiny_convnet', endpoint_strides)
    inputs = tf_keras.Input((None, None, 3))
    x = inputs

    def conv_bn_relu(x, channels, stride, name):
      x = tf_keras.layers.Conv2D(channels, 3, stride, padding='same',
                                 use_bias=False, name=f'{name}_conv')(x)
      x = tf_keras.layers.BatchNormalization(name=f'{name}_bn')(x)
      return tf_keras.layers.ReLU(name=f'{name}_relu')(x)

    widths = [base_channels * m for m in (1, 2, 4, 8, 8)]
    x = conv_bn_relu(x, widths[0], 2, 'stage1a')
    stride2 = conv_bn_relu(x, widths[0], 1, 'stage1b')
    stride4 = conv_bn_relu(stride2, widths[1], 2, 'stage2')
    x = conv_bn_relu(stride4, widths[2], 2, 'stage3a')         # Stride 8.
    stride8 = conv_bn_relu(x, widths[2], 1, 'stage3b')
    stride16 = conv_bn_relu(stride8, widths[3], 2, 'stage4')
    x = conv_bn_relu(stride16, widths[4], 2, 'stage5a')        # Stride 32.
    stride32 = conv_bn_relu(x, widths[4], 1, 'stage5b')
    # The backbone's outputs are the default endpoints whatever is asked
    # for: checkpoints hold it as such.
    backbone = tf_keras.Model(inputs, [stride2, stride8, stride32],
                              name='tiny_convnet_backbone')
    strides = tuple(sorted(endpoint_strides))
    super().__init__('tiny_convnet', backbone, strides, **kwargs)
    if strides == DEFAULT_ENDPOINT_STRIDES['tiny_convnet']:
      self._endpoint_model = backbone
    else:
      features = {2: stride2, 4: stride4, 8: stride8, 16: stride16,
                  32: stride32}
      self._endpoint_model = tf_keras.Model(
          inputs, [features[s] for s in strides],
          name='tiny_convnet_endpoints')
    self.base_channels = base_channels

  def preprocess(self, images):
    return images / 127.5 - 1.0


def synchronize_batch_norm(model: tf_keras.layers.Layer) -> int:
  """Makes every BatchNormalization inside `model` cross-replica.

  The layers are switched in place, built or not, so their variables (and
  names: weight files and checkpoints still load) stay as they are. In
  training they then all-reduce the batch sums over the replicas of the
  tf.distribute strategy (tf_keras' synchronized=True path), which needs the
  non-fused kernel.

  Args:
    model: a layer or model; its nested layers are searched recursively.

  Returns:
    The number of BatchNormalization layers switched.
  """
  count = 0
  for layer in (model, *model.submodules):
    if isinstance(layer, tf_keras.layers.BatchNormalization):
      layer.synchronized = True
      layer.fused = False
      count += 1
  return count


def build_encoder(name: str, drop_path_keep_prob: float = 1.0,
                  tiny_convnet_base_channels: int = 16,
                  endpoint_strides: Optional[Sequence[int]] = None
                 ) -> Encoder:
  """Returns the encoder `name` (one of ENCODER_NAMES), randomly initialised.

  Args:
    name: one of ENCODER_NAMES.
    drop_path_keep_prob: ConvNeXt-L's (see ConvNeXtLargeEncoder).
    tiny_convnet_base_channels: tiny_convnet's width.
    endpoint_strides: the endpoints to return, among ENDPOINT_STRIDES[name];
      None: DEFAULT_ENDPOINT_STRIDES[name] (the hypercolumn's).

  Raises:
    ValueError: for an unknown name or stride.
  """
  if name in DEFAULT_ENDPOINT_STRIDES and endpoint_strides is None:
    endpoint_strides = DEFAULT_ENDPOINT_STRIDES[name]
  if name == 'resnet50':
    return ResNet50Encoder(endpoint_strides=endpoint_strides)
  if name == MODEL_GARDEN_RESNET50:
    return ModelGardenResNet50Encoder(endpoint_strides=endpoint_strides)
  if name == 'convnext_large':
    return ConvNeXtLargeEncoder(drop_path_keep_prob=drop_path_keep_prob,
                                endpoint_strides=endpoint_strides)
  if name == 'tiny_convnet':
    return TinyConvNet(base_channels=tiny_convnet_base_channels,
                       endpoint_strides=endpoint_strides)
  raise ValueError(f'Unknown encoder {name!r}: set model_options.encoder.name '
                   f'to one of {", ".join(ENCODER_NAMES)}.')
