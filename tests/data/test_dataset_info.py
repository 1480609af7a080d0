"""Tests of the dataset registry (deeplab_sp/data/dataset_info.py)."""

import pytest

from deeplab_sp.data import dataset_info


@pytest.mark.parametrize('name,num_classes,crop', [
    ('cityscapes', 19, (1024, 2048)), ('ade20k', 150, (640, 640)),
    ('synthetic', 6, (128, 128))])
def test_entries(name, num_classes, crop):
  info = dataset_info.get_dataset_info(name)
  assert info.num_classes == num_classes
  assert len(info.class_names) == len(set(info.class_names)) == num_classes
  assert len(info.colormap) == num_classes
  assert all(len(c) == 3 and all(0 <= v <= 255 for v in c)
             for c in info.colormap)
  assert info.default_crop_size == crop
  assert info.max_stored_label + info.label_offset == num_classes - 1


def test_known_values():
  assert dataset_info.IGNORE_LABEL == 255
  cityscapes = dataset_info.get_dataset_info('cityscapes')
  assert cityscapes.colormap[0] == (128, 64, 128)  # road
  assert cityscapes.class_names[18] == 'bicycle'
  ade20k = dataset_info.get_dataset_info('ade20k')
  assert (ade20k.stored_ignore_label, ade20k.label_offset) == (0, -1)
  assert ade20k.class_names[:3] == ('wall', 'building', 'sky')
  assert ade20k.class_names[-1] == 'flag'
  assert dataset_info.dataset_names() == ('ade20k', 'cityscapes', 'synthetic')


def test_unknown_name_lists_the_known_ones():
  with pytest.raises(ValueError, match='ade20k, cityscapes, synthetic'):
    dataset_info.get_dataset_info('kitti')
