"""A tiny experiment and test images for the export and predict tests."""

import io

import numpy as np
from PIL import Image

from deeplab_sp.protos import config_pb2

# Model input size of tiny_options().
SIZE = 64


def tiny_options() -> config_pb2.ExperimentOptions:
  options = config_pb2.ExperimentOptions()
  options.experiment_name = 'export_test'
  model = options.model_options
  model.encoder.name = 'tiny_convnet'
  model.encoder.tiny_convnet_base_channels = 4
  model.hypercolumn.channels = 16
  model.hypercolumn.output_stride = 4
  tokenization = model.superpixel_tokenization
  tokenization.grid_height = tokenization.grid_width = 4
  tokenization.num_layers = 1
  tokenization.channels = 16
  tokenization.num_heads = 2
  tokenization.ffn_channels = 32
  classifier = model.superpixel_classifier
  classifier.num_layers = 1
  classifier.num_heads = 2
  classifier.channels = 16
  classifier.ffn_channels = 32
  for dataset in (options.train_dataset_options,
                  options.eval_dataset_options):
    dataset.dataset = 'cityscapes'
    dataset.file_pattern.append('unused-*.tfrecord')
    dataset.batch_size = 2
    dataset.crop_size.extend([SIZE, SIZE])
  options.trainer_options.training_number_of_steps = 1
  return options


def png_bytes(image: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format='PNG')
  return buffer.getvalue()


def random_image(height, width, seed=0) -> np.ndarray:
  return np.random.RandomState(seed).randint(
      0, 256, [height, width, 3]).astype(np.uint8)
