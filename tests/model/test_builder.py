"""Tests of deeplab_sp.model.builder: the meta-architecture and its paths."""

import pytest
import tensorflow as tf
import tf_keras

import tiny_experiment
from deeplab_sp import experiment as experiment_lib
from deeplab_sp.model import builder
from deeplab_sp.model import components
from deeplab_sp.model import encoders
from deeplab_sp.model import deeplabv3plus
from deeplab_sp.model import geometry as geometry_lib
from deeplab_sp.model import hypercolumn_classifier
from deeplab_sp.model import sp_transformer
from deeplab_sp.model.builder import network
from deeplab_sp.protos import model_pb2

_CLASSES = {
    'SP_TRANSFORMER': sp_transformer.SPTransformer,
    'HYPERCOLUMN_PIXEL_CLASSIFIER':
        hypercolumn_classifier.HypercolumnPixelClassifier,
    'DEEPLABV3PLUS': deeplabv3plus.DeepLabV3Plus,
}


def test_meta_architecture_names_are_the_proto_enum():
  assert builder.META_ARCHITECTURES == tuple(
      model_pb2.MetaArchitecture.keys())
  assert builder.meta_architecture(0) == builder.SP_TRANSFORMER
  assert builder.meta_architecture(2) == builder.DEEPLABV3PLUS
  with pytest.raises(ValueError, match='Unknown MetaArchitecture 7'):
    builder.meta_architecture(7)
  # The default: every config written before the baselines is unchanged.
  assert builder.meta_architecture(
      model_pb2.ModelOptions().meta_architecture) == builder.SP_TRANSFORMER


@pytest.mark.parametrize('meta', sorted(_CLASSES))
def test_each_meta_architecture_builds_its_class(meta):
  tf_keras.backend.clear_session()
  options = tiny_experiment.model_options(meta_architecture=meta)
  assert builder.unread_options(options) == ()
  model = builder.create_model(options, 4, (64, 64))
  assert type(model) is _CLASSES[meta]  # pylint: disable=unidiomatic-typecheck
  assert not model.built
  assert model.input_size == (64, 64)
  assert builder.has_superpixels(options) == (meta == 'SP_TRANSFORMER')
  geometry = builder.model_geometry(options, (64, 64))
  assert (geometry is not None) == (meta == 'SP_TRANSFORMER')


def test_unread_options_lists_what_the_network_ignores():
  options = tiny_experiment.model_options()
  options.pixel_classifier.hidden_channels = 8
  options.deeplabv3plus.SetInParent()
  assert builder.unread_options(options) == ('pixel_classifier',
                                             'deeplabv3plus')
  options.meta_architecture = model_pb2.DEEPLABV3PLUS
  assert builder.unread_options(options) == (
      'hypercolumn', 'superpixel_tokenization', 'superpixel_classifier',
      'superpixel_association', 'pixel_classifier')


def test_model_geometry_of_the_baselines_checks_the_multiple():
  options = tiny_experiment.model_options(
      meta_architecture='HYPERCOLUMN_PIXEL_CLASSIFIER')
  assert builder.model_geometry(options, (96, 160)) is None
  with pytest.raises(geometry_lib.GeometryError,
                     match=r'100x160 is not a multiple of 32 .*e\.g\. 96x160'):
    builder.model_geometry(options, (100, 160))


def test_every_meta_architecture_has_one_registered_network():
  assert tuple(builder.NETWORKS) == tuple(model_pb2.MetaArchitecture.keys())
  fields = model_pb2.ModelOptions.DESCRIPTOR.fields_by_name
  for name, net in builder.NETWORKS.items():
    assert isinstance(net, network.Network)
    assert net.name == name
    assert set(net.options_read) <= set(fields), name


class _LinearProbe(components.ComponentModel):
  """docs/adding_a_network.md's example: a 1x1 conv on the deepest
  endpoint."""
  COMPONENTS = ('encoder', 'classifier')

  def __init__(self, encoder, num_classes, input_size, **kwargs):
    super().__init__(**kwargs)
    self.encoder = encoder
    self.classifier = tf_keras.layers.Conv2D(num_classes, 1,
                                             name='classifier')
    self.input_size = tuple(input_size)

  def call(self, images, training=None):
    endpoints = self.encoder(images, training=training)
    logits = tf.cast(self.classifier(endpoints[max(endpoints)]), tf.float32)
    return {'semantic_logits': tf.image.resize(logits, self.input_size)}


class _LinearProbeNetwork(network.Network):
  name = 'DEEPLABV3PLUS'  # A test cannot add a MetaArchitecture value.
  options_read = ('encoder',)

  def __init__(self):
    self.validated = []

  def validate(self, path, options):
    self.validated.append(path)

  def describe(self, options):
    return f'linear probe on {options.encoder.name}'

  def geometry(self, options, input_size):
    geometry_lib.check_input_multiple(
        input_size, encoders.OUTPUT_STRIDE, "the encoder's output stride")
    return None

  def feature_sizes(self, options, input_size):
    return f'logits {input_size[0] // 32}x{input_size[1] // 32}'

  def create(self, options, num_classes, input_size, kernels):
    del kernels  # One Conv2D: a single form.
    return _LinearProbe(network.build_encoder(options.encoder), num_classes,
                        input_size, name='linear_probe')


def test_a_network_is_added_by_its_module_and_one_registration(
    monkeypatch):
  tf_keras.backend.clear_session()
  probe = _LinearProbeNetwork()
  monkeypatch.setitem(builder.NETWORKS, probe.name, probe)
  options = tiny_experiment.options(meta_architecture='DEEPLABV3PLUS')
  options.model_options.ClearField('deeplabv3plus')
  experiment = experiment_lib.experiment_from_options(options, 'probe.txt',
                                                      mode=None)
  assert probe.validated == ['probe.txt']
  assert 'model: linear probe on tiny_convnet' in experiment.summary()
  assert 'logits 4x4' in experiment.summary()
  assert not experiment.has_superpixels and experiment.geometry is None
  with pytest.raises(experiment_lib.ConfigError, match='multiple of 32'):
    experiment_lib.model_geometry(options.model_options, (100, 128))

  model = builder.build_model(options.model_options, experiment.num_classes,
                              experiment.input_size)
  assert isinstance(model, _LinearProbe)
  images = tf.random.uniform((2, *experiment.input_size, 3), 0, 255)
  with tf.GradientTape() as tape:
    logits = model(images, training=True)['semantic_logits']
    loss = tf.reduce_mean(tf.square(logits))
  assert logits.shape == (2, *experiment.input_size,
                          experiment.num_classes)
  gradients = tape.gradient(loss, model.classifier.trainable_variables)
  assert all(float(tf.reduce_sum(tf.abs(g))) > 0 for g in gradients)
