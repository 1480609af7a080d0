"""Tests of deeplab_sp/data/dataset_info.py: the registry and descriptions."""

from google.protobuf import text_format
import numpy as np
import pytest

from deeplab_sp.data import dataset_info
from deeplab_sp.protos import dataset_pb2

IGNORE = dataset_info.IGNORE_LABEL
INVALID = dataset_info.INVALID_LABEL


@pytest.mark.parametrize('name,num_classes', [
    ('cityscapes', 19), ('ade20k', 150), ('synthetic', 6)])
def test_entries(name, num_classes):
  info = dataset_info.get_dataset_info(name)
  assert info.num_classes == num_classes
  assert len(info.class_names) == len(set(info.class_names)) == num_classes
  assert len(info.colormap) == num_classes
  assert all(len(c) == 3 and all(0 <= v <= 255 for v in c)
             for c in info.colormap)


def test_known_values():
  assert dataset_info.IGNORE_LABEL == 255
  cityscapes = dataset_info.get_dataset_info('cityscapes')
  assert cityscapes.colormap[0] == (128, 64, 128)  # road
  assert cityscapes.class_names[18] == 'bicycle'
  # Train ids 0..18 stored as they are, 19..254 undefined, 255 ignored.
  assert cityscapes.label_table[:19] == tuple(range(19))
  assert set(cityscapes.label_table[19:255]) == {INVALID}
  assert cityscapes.label_table[255] == IGNORE
  ade20k = dataset_info.get_dataset_info('ade20k')
  assert ade20k.label_table == (IGNORE,) + tuple(range(150))
  assert ade20k.describe_stored_values() == '1..150 (classes), 0 (ignored)'
  assert ade20k.class_names[:3] == ('wall', 'building', 'sky')
  assert ade20k.class_names[-1] == 'flag'
  assert dataset_info.dataset_names() == ('ade20k', 'cityscapes', 'synthetic')


def test_unknown_name_lists_the_known_ones():
  with pytest.raises(ValueError, match='ade20k, cityscapes, synthetic'):
    dataset_info.get_dataset_info('kitti')


def _description(text):
  return text_format.Parse(text, dataset_pb2.DatasetDescription())


_TABLE_DESCRIPTION = '''
  name: "remapped"
  classes { name: "road" color: [128, 64, 128] stored_values: [7] }
  classes { name: "car" color: [0, 0, 142] stored_values: [26, 27] }
  ignore_values: [0, 255]
'''


def test_table_description_maps_stored_values():
  info = dataset_info.from_description(_description(_TABLE_DESCRIPTION))
  assert info.class_names == ('road', 'car')
  assert info.colormap == ((128, 64, 128), (0, 0, 142))
  label = np.array([[7, 26, 27], [0, 255, 7]])
  np.testing.assert_array_equal(info.map_labels(label),
                                [[0, 1, 1], [IGNORE, IGNORE, 0]])
  np.testing.assert_array_equal(
      info.invalid_stored_values(np.array([[7, 8], [300, -1]])), [-1, 8, 300])
  assert info.describe_stored_values() == (
      '7, 26..27 (classes), 0, 255 (ignored)')


def test_offset_description_equals_ade20k():
  description = dataset_pb2.DatasetDescription(
      name='ade20k', label_offset=-1, ignore_values=[0])
  ade20k = dataset_info.ADE20K
  for name, color in zip(ade20k.class_names, ade20k.colormap):
    description.classes.add(name=name, color=color)
  assert dataset_info.from_description(description) == ade20k


@pytest.mark.parametrize('name', ['cityscapes', 'ade20k', 'synthetic'])
def test_registered_entries_round_trip_through_descriptions(name):
  info = dataset_info.get_dataset_info(name)
  description = dataset_pb2.DatasetDescription()
  dataset_info.to_description(info, description)
  assert dataset_info.from_description(description) == info


@pytest.mark.parametrize('text,field', [
    ('name: "a b"', "name 'a b'"),
    ('classes { name: "x" color: [1, 2, 3] }', '1 class'),
    ('classes { name: "x" color: [1, 2, 3] } classes { name: "x" '
     'color: [1, 2, 3] }', "names \\['x'\\]"),
    ('classes { name: "x" color: [1, 2] } classes { name: "y" '
     'color: [1, 2, 3] }', r'classes\[0\].color'),
    ('classes { name: "x" color: [1, 2, 300] } classes { name: "y" '
     'color: [1, 2, 3] }', r'classes\[0\].color'),
    ('classes { name: "x" color: [1, 2, 3] stored_values: 4 } '
     'classes { name: "y" color: [1, 2, 3] stored_values: 4 }',
     r'classes\[1\].stored_values: stored value 4 is mapped twice'),
    ('classes { name: "x" color: [1, 2, 3] stored_values: 4 } '
     'classes { name: "y" color: [1, 2, 3] }',
     r'classes\[1\].stored_values is empty'),
    ('classes { name: "x" color: [1, 2, 3] } classes { name: "y" '
     'color: [1, 2, 3] } ignore_values: 1', 'stored value 1 is mapped twice'),
    ('classes { name: "x" color: [1, 2, 3] } classes { name: "y" '
     'color: [1, 2, 3] } label_offset: 5', 'outside 0..65535'),
    ('classes { name: "x" color: [1, 2, 3] stored_values: 0 } classes { '
     'name: "y" color: [1, 2, 3] stored_values: 1 } label_offset: -1',
     'use one of the two mappings'),
])
def test_bad_descriptions_name_the_field(text, field):
  if not text.startswith('name'):
    text = 'name: "d" ' + text
  with pytest.raises(dataset_info.DescriptionError, match=field):
    dataset_info.from_description(_description(text))


def test_from_options_reads_either_source():
  options = dataset_pb2.DatasetOptions(dataset='synthetic')
  assert dataset_info.from_options(options) is dataset_info.SYNTHETIC
  options.dataset_description.CopyFrom(_description(_TABLE_DESCRIPTION))
  assert not options.HasField('dataset')  # One source at a time.
  assert dataset_info.from_options(options).name == 'remapped'
  options.dataset_info_file = 'x.textproto'
  with pytest.raises(ValueError, match='is not resolved'):
    dataset_info.from_options(options)
