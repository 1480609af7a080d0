"""tools/build_folder_data.py (deeplab_sp/data/folder.py) on generated folders.

Both layouts (globs with {split}; SegNet-style split lists with a rewritten
prefix), PNG/JPEG/BMP images, single-channel and palette label PNGs, and a
description with a remapping table. Records must hold the source pixels and
stored labels exactly, the input pipeline must map them through the
description, and every bad input is one line naming the file, with nothing
written. The slow test trains, evaluates and exports from such a folder with
no code change.
"""

import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from conftest import REPO_ROOT
from deeplab_sp import experiment as experiment_lib
from deeplab_sp.data import cityscapes
from deeplab_sp.data import dataset_info
from deeplab_sp.data import folder
from deeplab_sp.data import input_pipeline
from deeplab_sp.data import tfrecord_format
from deeplab_sp.protos import config_pb2
from deeplab_sp.protos import dataset_pb2

BUILD = str(REPO_ROOT / 'tools' / 'build_folder_data.py')
TIMEOUT = 300

# A remapping table: stored 10 -> road, 20 and 21 -> car, 30 -> sky, 0 void.
DESCRIPTION = '''
name: "my_roads"
classes { name: "road" color: [128, 64, 128] stored_values: [10] }
classes { name: "car" color: [0, 0, 142] stored_values: [20, 21] }
classes { name: "sky" color: [70, 130, 180] stored_values: [30] }
ignore_values: 0
'''
STORED_VALUES = np.array([0, 10, 20, 21, 30], np.uint8)
TRAIN_IDS = {0: 255, 10: 0, 20: 1, 21: 1, 30: 2}


def _label(shape, seed):
  rng = np.random.default_rng(seed)
  return STORED_VALUES[rng.integers(0, len(STORED_VALUES), shape)]


def _image(shape, seed):
  return np.random.default_rng(seed + 100).integers(
      0, 256, list(shape) + [3]).astype(np.uint8)


def _save_palette_label(path, label):
  image = Image.fromarray(label, mode='P')
  # Colours that are not the indices: the builder must read the indices.
  image.putpalette([(3 * i + c) % 256 for i in range(256) for c in range(3)])
  image.save(path)


def _make_glob_tree(root, image_format='png', palette=True):
  """root/{train,val}/img/*.{png|jpg}, root/{split}/lab/*_mask.png."""
  expected = {}
  for split, count in (('train', 3), ('val', 2)):
    (root / split / 'img').mkdir(parents=True)
    (root / split / 'lab').mkdir(parents=True)
    for index in range(count):
      name = f'{split}_{index}'
      seed = hash(name) % 1000
      image, label = _image([6, 10], seed), _label([6, 10], seed)
      Image.fromarray(image).save(root / split / 'img' / f'{name}.{image_format}')
      label_path = root / split / 'lab' / f'{name}_mask.png'
      if palette:
        _save_palette_label(label_path, label)
      else:
        Image.fromarray(label).save(label_path)
      expected[name] = (image, label)
  return expected


def _write_description(tmp_path):
  path = tmp_path / 'my_roads.dataset.textproto'
  path.write_text(DESCRIPTION)
  return str(path)


def _run(args, cwd=REPO_ROOT):
  return subprocess.run([sys.executable, BUILD] + args, capture_output=True,
                        text=True, timeout=TIMEOUT, cwd=str(cwd))


def _records(pattern):
  return {example['image_name']: example
          for example in tfrecord_format.read_examples(str(pattern))}


def test_globs_with_palette_labels_keep_pixels_and_stored_values(tmp_path):
  expected = _make_glob_tree(tmp_path / 'src')
  out = tmp_path / 'records'
  result = _run([f'--dataset_info_file={_write_description(tmp_path)}',
                 f'--images={tmp_path}/src/{{split}}/img/*.png',
                 f'--labels={tmp_path}/src/{{split}}/lab/*.png',
                 '--label_suffix=_mask', '--splits=train,val',
                 '--num_shards=2', f'--output_dir={out}'])
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'train: 3 images in 2 shard(s)' in result.stdout
  records = {**_records(out / 'train-*'), **_records(out / 'val-*')}
  assert sorted(records) == sorted(expected)
  for name, (image, label) in expected.items():
    np.testing.assert_array_equal(records[name]['image'], image)
    np.testing.assert_array_equal(records[name]['label'], label)


def test_input_pipeline_maps_through_the_description(tmp_path):
  expected = _make_glob_tree(tmp_path / 'src', palette=False)
  info = _info()
  folder.build({'val': folder.GlobSource(
      f'{tmp_path}/src/val/img/*.png', f'{tmp_path}/src/val/lab/*.png',
      '_mask')}, info, str(tmp_path / 'records'), num_shards=1)
  options = dataset_pb2.DatasetOptions(
      file_pattern=[str(tmp_path / 'records' / 'val-*')], batch_size=2,
      crop_size=[8, 12], repeat=False)
  options.dataset_description.CopyFrom(_parse_description(DESCRIPTION))
  batch = next(iter(input_pipeline.build_dataset(options, is_training=False)))
  for row, name in enumerate(batch['image_name'].numpy()):
    label = expected[name.decode()][1]
    mapped = np.vectorize(TRAIN_IDS.get)(label)
    np.testing.assert_array_equal(batch['label'][row, :6, :10], mapped)
    # Padding is ignored.
    assert (batch['label'][row, 6:].numpy() == 255).all()


def _parse_description(text):
  from google.protobuf import text_format  # pylint: disable=g-import-not-at-top
  return text_format.Parse(text, dataset_pb2.DatasetDescription())


def test_split_lists_with_rewritten_prefix_and_bmp_images(tmp_path):
  root = tmp_path / 'CamVidLike'
  expected = {}
  lines = {'train': [], 'test': []}
  for split in lines:
    (root / split).mkdir(parents=True)
    (root / f'{split}annot').mkdir()
    for index in range(2):
      name = f'{split}{index}'
      image, label = _image([5, 7], index), _label([5, 7], index + 7)
      Image.fromarray(image).save(root / split / f'{name}.bmp')
      Image.fromarray(label).save(root / f'{split}annot' / f'{name}.png')
      lines[split].append(f'/SegNet/CamVid/{split}/{name}.bmp '
                          f'/SegNet/CamVid/{split}annot/{name}.png')
      expected[name] = (image, label)
    (root / f'{split}.txt').write_text('\n'.join(lines[split]) + '\n')
  out = tmp_path / 'records'
  result = _run([f'--dataset_info_file={_write_description(tmp_path)}',
                 f'--split_lists=train={root}/train.txt,test={root}/test.txt',
                 f'--rewrite_prefix=/SegNet/CamVid={root}',
                 f'--output_dir={out}'])
  assert result.returncode == 0, result.stderr[-3000:]
  records = {**_records(out / 'train-*'), **_records(out / 'test-*')}
  assert sorted(records) == sorted(expected)
  for name, (image, label) in expected.items():
    np.testing.assert_array_equal(records[name]['image'], image)
    np.testing.assert_array_equal(records[name]['label'], label)

  # Without the rewrite, the list's first path is named with its line.
  result = _run([f'--dataset_info_file={_write_description(tmp_path)}',
                 f'--split_lists=train={root}/train.txt',
                 f'--output_dir={tmp_path / "other"}'])
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      f'build_folder_data: {root}/train.txt:1: image '
      '/SegNet/CamVid/train/train0.bmp does not exist; set --rewrite_prefix='
      'FROM=TO to move the list\'s absolute paths to your copy (e.g. '
      '/SegNet/CamVid=/data/CamVid).')


def _bad_tree(tmp_path, case):
  src = tmp_path / 'src'
  _make_glob_tree(src, palette=False)
  if case == 'unmatched':
    Image.fromarray(_image([6, 10], 1)).save(src / 'val' / 'img' / 'extra.png')
    return 'image ' + str(src / 'val' / 'img' / 'extra.png') + ' has no label'
  if case == 'value':
    label = _label([6, 10], 3)
    label[2, 3] = 11
    Image.fromarray(label).save(src / 'val' / 'lab' / 'val_1_mask.png')
    return (f'Label {src}/val/lab/val_1_mask.png has values [11] outside 10, '
            '20..21, 30 (classes), 0 (ignored)')
  if case == 'size':
    Image.fromarray(_label([6, 9], 3)).save(src / 'val' / 'lab' /
                                            'val_0_mask.png')
    return f'but its label {src}/val/lab/val_0_mask.png is 6x9'
  if case == 'truncated':
    path = src / 'train' / 'img' / 'train_2.png'
    path.write_bytes(path.read_bytes()[:40])
    return f'Cannot read image {path}'
  raise AssertionError(case)


def _info():
  return dataset_info.from_description(_parse_description(DESCRIPTION))


@pytest.mark.parametrize('case', ['unmatched', 'value', 'size', 'truncated'])
def test_bad_inputs_are_named_and_write_nothing(tmp_path, case):
  message = _bad_tree(tmp_path, case)
  out = tmp_path / 'records'
  out.mkdir()
  (out / 'mine.txt').write_text('a user file')
  sources = folder.sources_from_flags(
      images=f'{tmp_path}/src/{{split}}/img/*.png',
      labels=f'{tmp_path}/src/{{split}}/lab/*.png', label_suffix='_mask',
      splits=['train', 'val'], split_lists=None, list_root='',
      rewrite_prefix=None)
  with pytest.raises(ValueError) as error:
    folder.build(sources, _info(), str(out))
  assert message in str(error.value)
  assert sorted(os.listdir(out)) == ['mine.txt']


def test_a_bad_label_is_one_line_at_the_command_line(tmp_path):
  message = _bad_tree(tmp_path, 'value')
  out = tmp_path / 'records'
  result = _run([f'--dataset_info_file={_write_description(tmp_path)}',
                 f'--images={tmp_path}/src/{{split}}/img/*.png',
                 f'--labels={tmp_path}/src/{{split}}/lab/*.png',
                 '--label_suffix=_mask', f'--output_dir={out}'])
  assert result.returncode == 1, result.stderr[-3000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('build_folder_data: ') and message in last, last
  assert 'Traceback' not in result.stderr
  assert not out.exists() or not os.listdir(out)


@pytest.mark.parametrize('flags,message', [
    (dict(images='a/*.png'), '--images and --labels go together'),
    (dict(images='a/{split}/*.png', labels='b/*.png', split_lists=['t=x']),
     'not both and not neither'),
    (dict(images='a/*.png', labels='b/*.png', splits=['train', 'val']),
     'the globs have no {split}'),
    (dict(split_lists=['train']), "entry 'train': write SPLIT=LIST_FILE"),
    (dict(split_lists=['a=x', 'a=y']), "names split 'a' twice"),
    (dict(split_lists=['a=x'], rewrite_prefix='/SegNet'),
     'write FROM=TO'),
])
def test_flag_errors(flags, message):
  arguments = dict(images=None, labels=None, label_suffix='',
                   splits=['train'], split_lists=None, list_root='',
                   rewrite_prefix=None)
  arguments.update(flags)
  with pytest.raises(ValueError, match=message):
    folder.sources_from_flags(**arguments)


def test_unmatched_names_and_duplicates_are_named(tmp_path):
  (tmp_path / 'a').mkdir()
  (tmp_path / 'b').mkdir()
  for name in ('x.png', 'y.png'):
    Image.fromarray(_image([2, 2], 0)).save(tmp_path / 'a' / name)
  with pytest.raises(ValueError, match=r"Split 'val': 1 file\(s\) without a "
                     r'partner \(image .*a/y.png has no label\)'):
    Image.fromarray(_label([2, 2], 0)).save(tmp_path / 'b' / 'x.png')
    folder.pairs_from_globs(folder.GlobSource(
        f'{tmp_path}/a/*.png', f'{tmp_path}/b/*.png'), 'val')
  list_file = tmp_path / 'list.txt'
  list_file.write_text('a/x.png b/x.png\n\na/x.png b/x.png\n')
  with pytest.raises(ValueError, match=r'list.txt:3: image name .x. was '
                     'already listed on line 1'):
    folder.pairs_from_list(folder.ListSource(str(list_file), str(tmp_path)),
                           'train')
  list_file.write_text('a/x.png\n')
  with pytest.raises(ValueError, match=r'list.txt:1: expected "image_path '
                     'label_path"'):
    folder.pairs_from_list(folder.ListSource(str(list_file), str(tmp_path)),
                           'train')


def test_bad_description_file_is_named(tmp_path):
  path = tmp_path / 'bad.textproto'
  path.write_text('name: "x" classes { name: "a" color: [1, 2] } '
                  'classes { name: "b" color: [1, 2, 3] }')
  options = config_pb2.ExperimentOptions()
  options.eval_dataset_options.dataset_info_file = str(path)
  experiment_lib.resolve_dataset_info_files(options, 'my.textproto')
  with pytest.raises(dataset_info.DescriptionError,
                     match=r'classes\[0\].color is \[1, 2\]; write three'):
    dataset_info.from_options(options.eval_dataset_options)
  path.write_text('name: "x" clases {}')
  with pytest.raises(experiment_lib.ConfigError,
                     match=f'{path}:1:.*clases.*DatasetDescription'):
    experiment_lib.resolve_dataset_info_files(config_pb2.ExperimentOptions(
        train_dataset_options=dataset_pb2.DatasetOptions(
            dataset_info_file=str(path))), 'my.textproto')
  with pytest.raises(experiment_lib.ConfigError,
                     match='my.textproto: train_dataset_options.'
                     "dataset_info_file 'missing.textproto' is not a file"):
    experiment_lib.resolve_dataset_info_files(config_pb2.ExperimentOptions(
        train_dataset_options=dataset_pb2.DatasetOptions(
            dataset_info_file='missing.textproto')), 'my.textproto')


@pytest.mark.slow
def test_folder_dataset_trains_evaluates_and_exports(tmp_path):
  """No code change: a description file, the builder, train.py, export."""
  _make_glob_tree(tmp_path / 'src', image_format='jpg')
  description = _write_description(tmp_path)
  data = tmp_path / 'records'
  result = _run([f'--dataset_info_file={description}',
                 f'--images={tmp_path}/src/{{split}}/img/*.jpg',
                 f'--labels={tmp_path}/src/{{split}}/lab/*.png',
                 '--label_suffix=_mask', f'--output_dir={data}'])
  assert result.returncode == 0, result.stderr[-3000:]

  import tiny_experiment  # pylint: disable=g-import-not-at-top
  from google.protobuf import text_format  # pylint: disable=g-import-not-at-top
  overrides = {
      'experiment_name': 'my_roads',
      'model_options.superpixel_tokenization.grid_height': 2,
      'model_options.superpixel_tokenization.grid_width': 2,
      'trainer_options.training_number_of_steps': 4,
      'trainer_options.warmup_steps': 1,
      'trainer_options.save_checkpoints_steps': 2,
      'trainer_options.steps_per_loop': 2,
      'trainer_options.log_steps': 2,
      'trainer_options.save_summaries_steps': 2,
      'trainer_options.save_image_summaries_steps': 2,
      'evaluator_options.eval_interval_steps': 4,
  }
  for field, split in (('train_dataset_options', 'train'),
                       ('eval_dataset_options', 'val')):
    overrides[f'{field}.dataset_info_file'] = description
    overrides[f'{field}.file_pattern'] = [str(data / f'{split}-*')]
    overrides[f'{field}.batch_size'] = 2
    overrides[f'{field}.crop_size'] = [32, 32]
  options = tiny_experiment.options(overrides, fast=True)
  config = tmp_path / 'my_roads.textproto'
  config.write_text(text_format.MessageToString(options))
  model_dir = tmp_path / 'experiments'
  train = subprocess.run(
      [sys.executable, str(REPO_ROOT / 'deeplab_sp' / 'trainer' / 'train.py'),
       f'--config_file={config}', '--mode=train_and_eval',
       f'--model_dir={model_dir}'], capture_output=True, text=True,
      timeout=TIMEOUT, cwd=str(REPO_ROOT))
  assert train.returncode == 0, train.stderr[-3000:]
  with open(model_dir / 'my_roads' / 'eval_results.json') as f:
    results = json.load(f)
  assert sorted(results['per_class_iou']) == ['car', 'road', 'sky']
  assert results['num_images'] == 2

  export_dir = tmp_path / 'export'
  export = subprocess.run(
      [sys.executable, str(REPO_ROOT / 'tools' / 'export_model.py'),
       f'--config_file={config}',
       f'--checkpoint_path={model_dir / "my_roads"}',
       f'--output_path={export_dir}'], capture_output=True, text=True,
      timeout=TIMEOUT, cwd=str(REPO_ROOT))
  assert export.returncode == 0, export.stderr[-3000:]
  loaded = tf.saved_model.load(str(export_dir / "1"))
  assert [n.decode() for n in loaded.class_names.numpy()] == [
      'road', 'car', 'sky']
  np.testing.assert_array_equal(loaded.colormap.numpy(),
                                [[128, 64, 128], [0, 0, 142], [70, 130, 180]])


def test_cityscapes_as_a_description_gives_the_same_records_and_batches(
    tmp_path):
  """The registered entry, written as a description, changes nothing: the
  folder builder writes the Cityscapes builder's records, and the input
  pipeline reads the same batches (so the same metrics) under either."""
  root = tmp_path / 'cityscapes'
  for index, city in enumerate(('aachen', 'bremen')):
    name = f'{city}_000000_000019'
    image, label = _image([6, 10], index), _random_train_ids(index)
    for kind, suffix, array in (('leftImg8bit', '_leftImg8bit', image),
                                ('gtFine', '_gtFine_labelTrainIds', label)):
      directory = root / kind / 'val' / city
      directory.mkdir(parents=True, exist_ok=True)
      Image.fromarray(array).save(directory / f'{name}{suffix}.png')
  cityscapes.build(str(root), str(tmp_path / 'registered'), ['val'], 1)
  description = dataset_pb2.DatasetDescription()
  dataset_info.to_description(dataset_info.CITYSCAPES, description)
  folder.build({'val': folder.GlobSource(
      f'{root}/leftImg8bit/val/*/*.png', f'{root}/gtFine/val/*/*.png',
      label_suffix='_gtFine_labelTrainIds', image_suffix='_leftImg8bit')},
               dataset_info.from_description(description),
               str(tmp_path / 'described'), num_shards=1)
  shard = 'val-00000-of-00001.tfrecord'
  assert ((tmp_path / 'registered' / shard).read_bytes() ==
          (tmp_path / 'described' / shard).read_bytes())

  batches = []
  for source in ('registered', 'described'):
    options = dataset_pb2.DatasetOptions(
        file_pattern=[str(tmp_path / 'registered' / 'val-*')], batch_size=2,
        crop_size=[8, 16], repeat=False)
    if source == 'registered':
      options.dataset = 'cityscapes'
    else:
      options.dataset_description.CopyFrom(description)
    batches.append(next(iter(input_pipeline.build_dataset(
        options, is_training=False))))
  for key in ('image', 'label', 'image_name'):
    np.testing.assert_array_equal(batches[0][key], batches[1][key])
  assert (batches[0]['label'].numpy() == 255).any()


def _random_train_ids(seed):
  label = np.random.default_rng(seed).integers(0, 19, [6, 10]).astype(
      np.uint8)
  label[0, :3] = 255
  return label
