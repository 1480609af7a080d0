"""Label maps that fit neither dataset nor image: one line naming the record.

The input pipeline's assertions name the image and the fix; the tools add
the shard and the record's index, and print no traceback.
"""

from google.protobuf import text_format
import numpy as np
import pytest
import reliability_helpers as helpers
import tensorflow as tf

from deeplab_sp.data import tfrecord_format


def _replace_label(shard, index, label):
  """Rewrites record `index` of `shard` with `label`; returns its image name."""
  examples = [tf.train.Example.FromString(record.numpy())
              for record in tf.data.TFRecordDataset(shard)]
  features = examples[index].features.feature
  features[tfrecord_format.LABEL_ENCODED_KEY].bytes_list.value[0] = (
      tfrecord_format.encode_label_png(label))
  with tf.io.TFRecordWriter(shard) as writer:
    for example in examples:
      writer.write(example.SerializeToString())
  return features[tfrecord_format.IMAGE_FILENAME_KEY].bytes_list.value[
      0].decode()


def _run(tmp_path, mode):
  data_dir = tmp_path / 'data'
  config = tmp_path / 'config.textproto'
  config.write_text(text_format.MessageToString(
      helpers.options(data_dir, steps=2)))
  before = helpers.snapshot(data_dir)
  result = helpers.run_tool([
      'deeplab_sp/trainer/train.py', f'--config_file={config}',
      f'--mode={mode}', f'--model_dir={tmp_path / "runs"}'], timeout=600)
  assert helpers.snapshot(data_dir) == before
  return result


@pytest.mark.slow
def test_label_values_outside_the_classes_name_the_record(tmp_path):
  shards = helpers.write_records(tmp_path / 'data')
  shard = shards['train'][1]
  label = np.zeros([helpers.SIZE, helpers.SIZE], np.uint8)
  label[3, 4] = 200  # The synthetic dataset has 6 classes.
  image = _replace_label(shard, 1, label)
  result = _run(tmp_path, 'train')
  helpers.assert_one_line_error(
      result, 'train', f'Label map of image {image} (record 1 of shard '
      f'{shard}) has values outside', 'rebuild the records', '[200]')


@pytest.mark.slow
def test_a_label_map_of_another_size_names_the_record(tmp_path):
  shards = helpers.write_records(tmp_path / 'data')
  # In the evaluation split: the evaluator of train_and_eval reads it.
  shard = shards['val'][1]
  image = _replace_label(
      shard, 1, np.zeros([helpers.SIZE // 2, helpers.SIZE], np.uint8))
  result = _run(tmp_path, 'train_and_eval')
  helpers.assert_one_line_error(
      result, 'train', f'The label map of image {image} (record 1 of shard '
      f'{shard}) does not have the size of the image',
      'rebuild the record', f'[{helpers.SIZE} {helpers.SIZE}] '
      f'[{helpers.SIZE // 2} {helpers.SIZE}]')
