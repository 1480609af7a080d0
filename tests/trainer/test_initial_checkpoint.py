"""trainer_options.initial_checkpoint(_parts): fine-tuning across classes."""

import logging
import os

from absl import logging as absl_logging
import numpy as np
import pytest
import tensorflow as tf

from deeplab_sp.model import builder
from deeplab_sp.protos import trainer_pb2
from deeplab_sp.trainer import checkpoints
from deeplab_sp.trainer import initial_checkpoint
from deeplab_sp.trainer import train_lib
import tiny_experiment
import trainer_testing

META_ARCHITECTURES = ('SP_TRANSFORMER', 'HYPERCOLUMN_PIXEL_CLASSIFIER',
                      'DEEPLABV3PLUS')
PARTS = trainer_pb2.TrainerOptions
# Fits every tiny network (multiples of 32; the SP grid of 8x8 at stride 4).
SIZE = (64, 64)


def _model(meta_architecture, num_classes, overrides=None):
  options = tiny_experiment.model_options(
      overrides, meta_architecture=meta_architecture)
  return builder.build_model(options, num_classes, SIZE)


def _values(model):
  """Position in model.variables -> value (Keras numbers the names of
  unnamed layers per process, so names differ between models)."""
  return {i: v.numpy() for i, v in enumerate(model.variables)}


def _positions(model, variables):
  refs = {v.ref() for v in variables}
  return {i for i, v in enumerate(model.variables) if v.ref() in refs}


def _class_positions(model):
  return _positions(model, [v for layer in initial_checkpoint.class_layers(
      model) for v in layer.variables])


def _write(model, directory):
  return tf.train.Checkpoint(model=model).write(os.path.join(directory,
                                                             'ckpt-7'))


@pytest.mark.parametrize('meta_architecture', META_ARCHITECTURES)
def test_class_layers_are_the_variables_whose_shape_follows_the_classes(
    meta_architecture):
  nineteen = _model(meta_architecture, 19)
  eleven = _model(meta_architecture, 11)
  assert len(nineteen.variables) == len(eleven.variables)
  differ = {i for i, (a, b) in enumerate(zip(nineteen.variables,
                                             eleven.variables))
            if a.shape != b.shape}
  assert differ and _class_positions(eleven) == differ


@pytest.mark.parametrize('meta_architecture', META_ARCHITECTURES)
def test_19_class_checkpoint_initialises_an_11_class_model(
    meta_architecture, tmp_path, caplog):
  nineteen = _model(meta_architecture, 19)
  prefix = _write(nineteen, str(tmp_path))
  eleven = _model(meta_architecture, 11)
  fresh = _values(eleven)
  class_positions = _class_positions(eleven)
  caplog.set_level(logging.INFO, logger='absl')
  left_out = initial_checkpoint.restore(eleven, prefix,
                                        PARTS.ALL_BUT_CLASS_LAYERS)
  source, restored = _values(nineteen), _values(eleven)
  for i, value in restored.items():
    if i in class_positions:
      # Not restored: still the fresh initialisation.
      np.testing.assert_array_equal(value, fresh[i], err_msg=str(i))
    else:
      np.testing.assert_array_equal(value, source[i], err_msg=str(i))
  encoder = _positions(eleven, eleven.encoder.variables)
  assert encoder and not encoder & class_positions
  # The fresh weights differed, so the equality above is the restore's.
  assert any(not np.array_equal(fresh[i], source[i]) for i in encoder)
  assert len(left_out) == 2 and all('/' in p for p in left_out)
  total = len(eleven.variables)
  assert (f'Initialised {total - 2} of {total} variables of the model from '
          f'{prefix}') in caplog.text
  assert '2 (the class layers) keep their initial values' in caplog.text


def test_left_out_variables_are_listed_at_verbosity_1(tmp_path, caplog):
  prefix = _write(_model('SP_TRANSFORMER', 19), str(tmp_path))
  eleven = _model('SP_TRANSFORMER', 11)
  caplog.set_level(logging.DEBUG, logger='absl')
  old = absl_logging.get_verbosity()
  absl_logging.set_verbosity(1)
  try:
    initial_checkpoint.restore(eleven, prefix, PARTS.ALL_BUT_CLASS_LAYERS)
  finally:
    absl_logging.set_verbosity(old)
  assert (f'Not initialised from {prefix}: '
          'model/classifier/classifier/kernel') in caplog.text
  assert 'model/classifier/classifier/bias' in caplog.text


@pytest.mark.parametrize('parts,components', [
    ('ENCODER', ('encoder',)),
    ('ENCODER_HYPERCOLUMN_TOKENIZATION',
     ('encoder', 'hypercolumn', 'tokenization')),
])
def test_encoder_parts_restore_only_those_components(tmp_path, parts,
                                                      components):
  nineteen = _model('SP_TRANSFORMER', 19)
  prefix = _write(nineteen, str(tmp_path))
  eleven = _model('SP_TRANSFORMER', 11)
  fresh = _values(eleven)
  initial_checkpoint.restore(eleven, prefix,
                             PARTS.InitialCheckpointParts.Value(parts))
  inside = _positions(eleven, [v for c in components
                               for v in getattr(eleven, c).variables])
  source = _values(nineteen)
  for i, value in _values(eleven).items():
    expected = source[i] if i in inside else fresh[i]
    np.testing.assert_array_equal(value, expected, err_msg=str(i))
  assert inside and len(inside) < len(fresh)


def test_all_refuses_other_classes_listing_the_class_variables(tmp_path):
  prefix = _write(_model('SP_TRANSFORMER', 19), str(tmp_path))
  eleven = _model('SP_TRANSFORMER', 11)
  fresh = _values(eleven)
  with pytest.raises(initial_checkpoint.InitialCheckpointError) as error:
    initial_checkpoint.restore(eleven, prefix, PARTS.ALL)
  message = str(error.value)
  assert message.startswith(f'trainer_options.initial_checkpoint {prefix} '
                            'does not fit the model')
  assert 'initial_checkpoint_parts: ALL)' in message
  assert ('model/classifier/classifier/kernel (checkpoint [16, 19], model '
          '[16, 11])') in message
  assert 'model/classifier/classifier/bias (checkpoint [19], model [11])' in (
      message)
  assert 'ALL_BUT_CLASS_LAYERS' in message
  # Nothing was assigned.
  for i, value in _values(eleven).items():
    np.testing.assert_array_equal(value, fresh[i], err_msg=str(i))


def test_mismatch_in_a_requested_part_is_a_named_error(tmp_path):
  # Other hypercolumn widths: the encoder fits, the hypercolumn does not.
  prefix = _write(_model('SP_TRANSFORMER', 19,
                         {'hypercolumn.channels': 24}), str(tmp_path))
  model = _model('SP_TRANSFORMER', 11)
  with pytest.raises(initial_checkpoint.InitialCheckpointError,
                     match=r'ENCODER_HYPERCOLUMN_TOKENIZATION\): \d+ with '
                     r'other shapes: model/hypercolumn/.*Fix: use a '
                     'checkpoint of this network'):
    initial_checkpoint.restore(model, prefix,
                               PARTS.ENCODER_HYPERCOLUMN_TOKENIZATION)
  # The part that fits can still be asked for alone.
  initial_checkpoint.restore(model, prefix, PARTS.ENCODER)


def test_deeplab_has_no_hypercolumn_or_tokenization(tmp_path):
  prefix = _write(_model('DEEPLABV3PLUS', 19), str(tmp_path))
  with pytest.raises(initial_checkpoint.InitialCheckpointError,
                     match='initial_checkpoint_parts: ENCODER_HYPERCOLUMN_'
                     'TOKENIZATION, but a DeepLabV3Plus has no hypercolumn'):
    initial_checkpoint.restore(_model('DEEPLABV3PLUS', 11), prefix,
                               PARTS.ENCODER_HYPERCOLUMN_TOKENIZATION)


def test_fine_tuning_run_starts_from_the_19_class_checkpoint(tmp_path):
  """The trainer wires it (stand-in model: fast; ENCODER, as it has no
  known class layers)."""
  options = trainer_testing.tiny_options(steps=5)
  train_lib.run_experiment(trainer_testing.experiment(options, 'train'),
                           str(tmp_path / 'nineteen'),
                           model_fn=trainer_testing.stand_in_model_fn,
                           dataset_fn=trainer_testing.make_dataset_fn())
  source = str(tmp_path / 'nineteen' / 'test_experiment')
  options.trainer_options.initial_checkpoint = source  # Its newest: ckpt-5.
  options.trainer_options.initial_checkpoint_parts = PARTS.ENCODER
  options.trainer_options.base_learning_rate = 1e-9  # Weights barely move.
  built = []

  def model_fn(experiment):
    del experiment  # Unused: 11 classes instead of its 19.
    built.append(trainer_testing.StandInModel(11))
    return built[-1]

  train_lib.run_experiment(
      trainer_testing.experiment(options, 'train'), str(tmp_path / 'eleven'),
      model_fn=model_fn,
      dataset_fn=trainer_testing.make_dataset_fn(num_classes=11))
  nineteen = trainer_testing.StandInModel(19)
  nineteen(tf.zeros([1, 16, 16, 3]))
  tf.train.Checkpoint(model=nineteen).read(
      os.path.join(source, 'ckpt-5')).expect_partial()
  pairs = list(zip(nineteen.encoder.trainable_variables,
                   built[0].encoder.trainable_variables))
  assert pairs
  # Five steps at learning rate 1e-9 from the 19-class weights.
  for expected, actual in pairs:
    np.testing.assert_allclose(actual.numpy(), expected.numpy(), atol=1e-6,
                               err_msg=actual.name)
  assert built[0].classifier.kernel.shape[-1] == 11
  # ALL_BUT_CLASS_LAYERS needs to know the class layers.
  options.trainer_options.initial_checkpoint_parts = (
      PARTS.ALL_BUT_CLASS_LAYERS)
  with pytest.raises(initial_checkpoint.InitialCheckpointError,
                     match='ALL_BUT_CLASS_LAYERS does not know the class '
                     'layers of a StandInModel; set trainer_options.'
                     'initial_checkpoint_parts: ALL'):
    train_lib.run_experiment(
        trainer_testing.experiment(options, 'train'),
        str(tmp_path / 'default'), model_fn=model_fn,
        dataset_fn=trainer_testing.make_dataset_fn(num_classes=11))
  # The default restores everything: other classes are a named error.
  options.trainer_options.ClearField('initial_checkpoint_parts')
  assert options.trainer_options.initial_checkpoint_parts == PARTS.ALL
  with pytest.raises(initial_checkpoint.InitialCheckpointError,
                     match='initial_checkpoint_parts: ALL_BUT_CLASS_LAYERS'):
    train_lib.run_experiment(
        trainer_testing.experiment(options, 'train'),
        str(tmp_path / 'default_all'), model_fn=model_fn,
        dataset_fn=trainer_testing.make_dataset_fn(num_classes=11))


@pytest.mark.parametrize('setup,fragments', [
    ('missing', ['does not exist', 'remove it to start from scratch']),
    ('not_a_checkpoint', ['is a file, not a TensorFlow checkpoint',
                          'pretrained_weights']),
    ('index_file', ['is one file of a checkpoint', 'without .index']),
    ('empty_directory', ['is a directory without checkpoints']),
])
def test_wrong_initial_checkpoint_names_the_field_and_the_fix(
    tmp_path, setup, fragments):
  path = str(tmp_path / 'init')
  if setup == 'not_a_checkpoint':
    with open(path, 'w') as f:
      f.write('weights.h5 of another tool')
  elif setup == 'index_file':
    path = _write(_model('SP_TRANSFORMER', 19), str(tmp_path)) + '.index'
  elif setup == 'empty_directory':
    os.makedirs(path)
  options = trainer_testing.tiny_options(steps=5)
  options.trainer_options.initial_checkpoint = path
  options.trainer_options.initial_checkpoint_parts = PARTS.ALL
  with pytest.raises(initial_checkpoint.InitialCheckpointError) as error:
    train_lib.run_experiment(
        trainer_testing.experiment(options, 'train'), str(tmp_path / 'run'),
        model_fn=trainer_testing.stand_in_model_fn,
        dataset_fn=trainer_testing.make_dataset_fn())
  message = str(error.value)
  assert message.startswith(f'trainer_options.initial_checkpoint {path} ')
  assert 'damaged' not in message and 'backup' not in message
  for fragment in fragments:
    assert fragment in message
  assert not os.path.exists(tmp_path / 'run' / 'test_experiment' /
                            'ckpt-2.index')


def test_damaged_initial_checkpoint_names_the_field(tmp_path):
  prefix = _write(_model('SP_TRANSFORMER', 19), str(tmp_path))
  data = prefix + '.data-00000-of-00001'
  with open(data, 'rb') as f:
    content = f.read()
  with open(data, 'wb') as f:
    f.write(content[:len(content) // 2])
  with pytest.raises(checkpoints.DamagedCheckpointError,
                     match=f'Checkpoint {prefix} is damaged: .*'
                     r'\(trainer_options.initial_checkpoint\). Restore its '
                     'files from a backup, or set trainer_options.'
                     'initial_checkpoint to another checkpoint'):
    initial_checkpoint.resolve(prefix)


def test_initial_checkpoint_without_its_index_names_it(tmp_path):
  prefix = _write(_model('SP_TRANSFORMER', 19), str(tmp_path))
  os.remove(prefix + '.index')
  with pytest.raises(checkpoints.DamagedCheckpointError,
                     match=f'{prefix}.index is missing.*set trainer_options.'
                     'initial_checkpoint to another checkpoint'):
    initial_checkpoint.resolve(prefix)


# The parts of each network: its components, in the order they run.
PARTS_OF = {
    'SP_TRANSFORMER': ('encoder', 'hypercolumn', 'tokenization', 'classifier',
                       'association'),
    'HYPERCOLUMN_PIXEL_CLASSIFIER': ('encoder', 'hypercolumn',
                                     'pixel_classifier'),
    'DEEPLABV3PLUS': ('encoder', 'aspp', 'decoder'),
}


@pytest.mark.parametrize('meta_architecture', META_ARCHITECTURES)
def test_checkpoint_items_list_each_networks_parts(meta_architecture):
  model = _model(meta_architecture, 5)
  items = model.checkpoint_items
  assert tuple(items) == PARTS_OF[meta_architecture]
  for name, part in items.items():
    assert part is getattr(model, name)
  # Together the parts hold every variable of the model, each once.
  held = [id(v) for part in items.values() for v in part.variables]
  assert len(held) == len(set(held))
  assert set(held) == {id(v) for v in model.variables}


@pytest.mark.parametrize('meta_architecture', META_ARCHITECTURES)
def test_a_checkpoint_of_one_part_restores_into_that_part(meta_architecture,
                                                          tmp_path):
  source = _model(meta_architecture, 5)
  expected = _values(source)
  fresh = _model(meta_architecture, 5)
  before = _values(fresh)
  restored = set()
  # One part after the other: each restores its own variables only.
  for name in PARTS_OF[meta_architecture]:
    part = source.checkpoint_items[name]
    if not part.variables:
      continue  # The association: nothing to restore.
    prefix = tf.train.Checkpoint(**{name: part}).write(
        str(tmp_path / name / 'part'))
    tf.train.Checkpoint(**{name: fresh.checkpoint_items[name]}).read(
        prefix).assert_consumed()
    inside = _positions(fresh, fresh.checkpoint_items[name].variables)
    # The fresh weights differed, so the equality is the restore's.
    assert any(not np.array_equal(before[i], expected[i]) for i in inside)
    restored |= inside
    for i, value in _values(fresh).items():
      np.testing.assert_array_equal(
          value, expected[i] if i in restored else before[i],
          err_msg=f'{name} {i}')
  assert restored == set(before)


def test_an_encoder_checkpoint_initialises_the_encoder_alone(tmp_path):
  source = _model('SP_TRANSFORMER', 19)
  prefix = tf.train.Checkpoint(encoder=source.encoder).write(
      str(tmp_path / 'encoder'))
  model = _model('SP_TRANSFORMER', 11)
  fresh = _values(model)
  left_out = initial_checkpoint.restore(model, prefix, PARTS.ENCODER)
  encoder = _positions(model, model.encoder.variables)
  expected = _values(source)
  for i, value in _values(model).items():
    np.testing.assert_array_equal(
        value, expected[i] if i in encoder else fresh[i], err_msg=str(i))
  assert len(left_out) == len(fresh) - len(encoder)
  assert all(not path.startswith('encoder/') for path in left_out)
  # Parts it does not hold are named.
  with pytest.raises(initial_checkpoint.InitialCheckpointError,
                     match=r'\d+ missing from it: hypercolumn/'):
    initial_checkpoint.restore(model, prefix,
                               PARTS.ENCODER_HYPERCOLUMN_TOKENIZATION)


@pytest.mark.parametrize('meta_architecture', META_ARCHITECTURES)
def test_a_checkpoint_of_all_parts_initialises_other_classes(
    meta_architecture, tmp_path):
  nineteen = _model(meta_architecture, 19)
  prefix = tf.train.Checkpoint(**nineteen.checkpoint_items).write(
      str(tmp_path / 'parts'))
  eleven = _model(meta_architecture, 11)
  fresh = _values(eleven)
  class_positions = _class_positions(eleven)
  left_out = initial_checkpoint.restore(eleven, prefix,
                                        PARTS.ALL_BUT_CLASS_LAYERS)
  source = _values(nineteen)
  for i, value in _values(eleven).items():
    expected = fresh[i] if i in class_positions else source[i]
    np.testing.assert_array_equal(value, expected, err_msg=str(i))
  assert len(left_out) == 2


def test_a_checkpoint_of_neither_layout_is_a_named_error(tmp_path):
  # A Model Garden checkpoint: its ResNet at the root as `backbone`.
  backbone = _model('SP_TRANSFORMER', 5).encoder.backbone
  prefix = tf.train.Checkpoint(backbone=backbone).write(
      str(tmp_path / 'backbone'))
  with pytest.raises(initial_checkpoint.InitialCheckpointError) as error:
    initial_checkpoint.restore(_model('SP_TRANSFORMER', 5), prefix,
                               PARTS.ENCODER)
  message = str(error.value)
  assert message.startswith(f'trainer_options.initial_checkpoint {prefix} '
                            'holds neither a model')
  assert 'its root holds backbone' in message
  assert 'model_options.encoder.pretrained_weights' in message
