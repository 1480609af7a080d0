"""Tests of deeplab_sp.model.builder: the meta-architecture and its paths."""

import pytest
import tf_keras

import tiny_experiment
from deeplab_sp.model import builder
from deeplab_sp.model import deeplabv3plus
from deeplab_sp.model import geometry as geometry_lib
from deeplab_sp.model import hypercolumn_classifier
from deeplab_sp.model import sp_transformer
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
