"""Tests of the SP-Transformer model and its layers (issue 3)."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from deeplab_sp import experiment as config
from deeplab_sp.model import builder
from deeplab_sp.model import encoders
from deeplab_sp.model import local_attention
from deeplab_sp.model.layers import superpixel_association
from deeplab_sp.model.layers import superpixel_classifier
from deeplab_sp.model.layers import superpixel_tokenization
from deeplab_sp.protos import model_pb2


def tiny_model_options(grid=(4, 4), stride=4, channels=16, num_layers=1,
                       implementation=model_pb2.NAIVE):
  options = model_pb2.ModelOptions()
  options.encoder.name = 'tiny_convnet'
  options.encoder.tiny_convnet_base_channels = 4
  options.hypercolumn.channels = channels
  options.hypercolumn.output_stride = stride
  options.hypercolumn.mlp_hidden_channels = 0
  tokenization = options.superpixel_tokenization
  tokenization.grid_height, tokenization.grid_width = grid
  tokenization.num_layers = num_layers
  tokenization.channels = channels
  tokenization.num_heads = 2
  tokenization.ffn_channels = 2 * channels
  tokenization.implementation = implementation
  classifier = options.superpixel_classifier
  classifier.num_layers = 1
  classifier.num_heads = 2
  classifier.channels = channels
  classifier.ffn_channels = 2 * channels
  options.superpixel_association.implementation = implementation
  return options


@pytest.mark.parametrize('size,stride,grid,hypercolumn', [
    ((1024, 2048), 8, (32, 64), (128, 256)),   # Cityscapes (Table I).
    ((640, 640), 4, (40, 40), (160, 160)),     # ADE20K (Table II).
])
def test_output_shapes_at_paper_geometries(size, stride, grid, hypercolumn):
  options = tiny_model_options(grid=grid, stride=stride, channels=8,
                               implementation=model_pb2.EFFICIENT)
  model = builder.build_model(options, num_classes=19, input_size=size)
  outputs = model(tf.zeros((1, *size, 3)), training=False)
  assert outputs['semantic_logits'].shape == (1, *size, 19)
  assert outputs['semantic_logits'].dtype == tf.float32
  assert outputs['superpixel_logits'].shape == (1, *grid, 19)
  assert outputs['association'].shape == (1, *size, 9)
  assert outputs['superpixel_ids'].shape == (1, *size)
  assert outputs['superpixel_ids'].dtype == tf.int32
  geometry = config.model_geometry(options, size)
  assert (geometry.hypercolumn_height, geometry.hypercolumn_width) == hypercolumn
  tokens = model.tokenization(tf.zeros((1, *hypercolumn, 8)))
  assert tokens[0].shape == (1, *grid, 8)
  assert tokens[1].shape == (1, *hypercolumn, 8)


@pytest.fixture(scope='module')
def small_model():
  tf_keras.utils.set_random_seed(0)
  return builder.build_model(tiny_model_options(), num_classes=5,
                             input_size=(64, 64))


def test_association_is_a_distribution_over_valid_neighbors(small_model):
  images = tf.random.stateless_uniform((2, 64, 64, 3), (1, 2), 0, 255)
  outputs = small_model(images, training=False)
  association = outputs['association'].numpy()
  assert association.min() >= 0
  np.testing.assert_allclose(association.sum(-1), 1.0, atol=1e-5)
  # Border masking: slots outside the 4x4 grid get exactly zero weight.
  ids = local_attention.neighbor_superpixel_ids(64, 64, 4, 4).numpy()
  assert (ids < 0).any()
  assert np.all(association[:, ids < 0] == 0.0)
  # Hard ids are the absolute ids of valid neighbours of each pixel's cell.
  hard = outputs['superpixel_ids'].numpy()
  assert hard.min() >= 0 and hard.max() < 16
  for batch in range(2):
    assert np.all((ids == hard[batch][..., None]).any(-1))
  # ... of the most associated slot (eq. 7).
  strongest = association.argmax(-1)[..., np.newaxis]
  np.testing.assert_array_equal(
      hard, np.take_along_axis(np.broadcast_to(ids, association.shape),
                               strongest, axis=-1)[..., 0])


def test_dense_logits_are_association_weighted_superpixel_logits(small_model):
  images = tf.random.stateless_uniform((1, 64, 64, 3), (3, 4), 0, 255)
  outputs = small_model(images, training=False)
  association = outputs['association'].numpy()[0]
  superpixel_logits = outputs['superpixel_logits'].numpy()[0].reshape(16, 5)
  ids = local_attention.neighbor_superpixel_ids(64, 64, 4, 4).numpy()
  y, x = 37, 5
  expected = sum(association[y, x, s] * superpixel_logits[ids[y, x, s]]
                 for s in range(9) if ids[y, x, s] >= 0)
  np.testing.assert_allclose(outputs['semantic_logits'].numpy()[0, y, x],
                             expected, rtol=1e-5, atol=1e-5)


def test_one_layer_is_local():
  """Pixels outside superpixel i's 3x3 cells do not change S_i (eq. 3)."""
  tf_keras.utils.set_random_seed(1)
  layer = superpixel_tokenization.DualPathCrossAttention(
      channels=8, num_heads=2, ffn_channels=16, pixel_ffn_channels=16)
  superpixels = tf.random.stateless_normal((1, 5, 5, 8), (5, 6))
  pixels = tf.random.stateless_normal((1, 10, 10, 8), (7, 8))  # h = w = 2.
  base_superpixels, base_pixels = layer((superpixels, pixels))
  # Perturbations vary over channels (a constant shift would be normalised
  # away by the layer norms).
  noise = tf.random.stateless_normal((1, 10, 10, 8), (1, 3))
  superpixel_noise = tf.random.stateless_normal((1, 5, 5, 8), (2, 3))
  # Superpixel (1, 1)'s neighbourhood is cells rows 0..2, cols 0..2, i.e.
  # pixels [0:6, 0:6]. Change every pixel outside it.
  outside = np.ones((1, 10, 10, 1), np.float32)
  outside[:, 0:6, 0:6] = 0
  changed_superpixels, _ = layer((superpixels, pixels + noise * outside))
  np.testing.assert_array_equal(changed_superpixels[0, 1, 1],
                                base_superpixels[0, 1, 1])
  assert not np.allclose(changed_superpixels[0, 3, 3],
                         base_superpixels[0, 3, 3])
  # Changing a pixel inside the neighbourhood does change S_(1,1).
  inside = np.zeros((1, 10, 10, 1), np.float32)
  inside[:, 5, 5] = 1
  changed_superpixels, _ = layer((superpixels, pixels + noise * inside))
  assert not np.allclose(changed_superpixels[0, 1, 1],
                         base_superpixels[0, 1, 1])
  # Pixel (0, 0) (cell (0, 0)) only sees superpixels of cells 0..1 x 0..1.
  far = np.zeros((1, 5, 5, 1), np.float32)
  far[:, 2:, :] = 1
  far[:, :, 2:] = 1
  _, changed_pixels = layer((superpixels + superpixel_noise * far, pixels))
  np.testing.assert_array_equal(changed_pixels[0, 0:2, 0:2],
                                base_pixels[0, 0:2, 0:2])


def test_naive_and_efficient_models_agree():
  tf_keras.utils.set_random_seed(2)
  naive = builder.build_model(tiny_model_options(grid=(2, 4), num_layers=2),
                              num_classes=3, input_size=(32, 64))
  efficient = builder.build_model(
      tiny_model_options(grid=(2, 4), num_layers=2,
                         implementation=model_pb2.EFFICIENT),
      num_classes=3, input_size=(32, 64))
  efficient.set_weights(naive.get_weights())
  images = tf.random.stateless_uniform((2, 32, 64, 3), (9, 9), 0, 255)
  expected = naive(images, training=False)
  actual = efficient(images, training=False)
  for key in ('semantic_logits', 'association', 'superpixel_logits'):
    np.testing.assert_allclose(actual[key], expected[key], rtol=1e-4,
                               atol=1e-5)


def test_wrong_input_size_is_a_clear_error(small_model):
  with pytest.raises(ValueError, match=r'multiple of .* 16x16'):
    small_model(tf.zeros((1, 60, 64, 3)))
  with pytest.raises(config.ConfigError, match='not divisible'):
    builder.build_model(tiny_model_options(), 5, input_size=(72, 64))


def test_other_multiple_of_the_geometry_works(small_model):
  # Built for 64x64 (h = w = 4); 32x96 gives h = 2, w = 6.
  outputs = small_model(tf.zeros((1, 32, 96, 3)), training=False)
  assert outputs['semantic_logits'].shape == (1, 32, 96, 5)


def test_xla_forward_and_training_step(small_model):
  images = tf.random.stateless_uniform((2, 64, 64, 3), (1, 1), 0, 255)
  labels = tf.random.stateless_uniform((2, 64, 64), (2, 2), 0, 5, tf.int32)
  optimizer = tf_keras.optimizers.SGD(0.1)

  @tf.function(jit_compile=True)
  def forward(images):
    return small_model(images, training=False)['semantic_logits']

  @tf.function(jit_compile=True)
  def train_step(images, labels):
    with tf.GradientTape() as tape:
      logits = small_model(images, training=True)['semantic_logits']
      loss = tf.reduce_mean(
          tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    grads = tape.gradient(loss, small_model.trainable_variables)
    optimizer.apply_gradients(zip(grads, small_model.trainable_variables))
    return loss

  np.testing.assert_allclose(forward(images),
                             small_model(images)['semantic_logits'],
                             rtol=1e-4, atol=1e-4)
  first = train_step(images, labels)
  assert np.isfinite(first.numpy())
  for _ in range(3):
    last = train_step(images, labels)
  assert last.numpy() < first.numpy()


def test_layers_round_trip_their_config():
  layers = [
      superpixel_tokenization.SuperpixelTokenization(
          4, 8, 2, 16, 4, 32, 8, 'EFFICIENT', 0.1),
      superpixel_classifier.SuperpixelClassifier(7, 2, 2, 16, 0, 0.0),
      superpixel_association.SuperpixelAssociation(False, 'NAIVE'),
  ]
  for layer in layers:
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


def test_resnet50_loads_keras_applications_weights(tmp_path):
  reference = tf_keras.applications.ResNet50(
      include_top=False, weights=None, input_shape=(None, None, 3))
  path = str(tmp_path / 'resnet50_notop.h5')
  reference.save_weights(path)
  encoder = encoders.build_encoder('resnet50')
  images = tf.random.stateless_uniform((1, 64, 64, 3), (4, 4), 0, 255)
  encoder(images)
  encoder.load_pretrained_weights(path)
  endpoints = encoder(images, training=False)
  preprocessed = tf_keras.applications.resnet50.preprocess_input(images)
  layer_names = {2: 'conv1_relu', 8: 'conv3_block4_out',
                 32: 'conv5_block3_out'}
  probe = tf_keras.Model(reference.input,
                         [reference.get_layer(n).output
                          for n in layer_names.values()])
  expected = probe(preprocessed, training=False)
  for stride, value in zip(layer_names, expected):
    np.testing.assert_array_equal(endpoints[stride].numpy(), value.numpy())


def test_missing_or_wrong_weight_files_are_clear_errors(tmp_path):
  encoder = encoders.build_encoder('tiny_convnet', tiny_convnet_base_channels=4)
  encoder(tf.zeros((1, 32, 32, 3)))
  with pytest.raises(FileNotFoundError, match='Nothing is downloaded'):
    encoder.load_pretrained_weights(str(tmp_path / 'missing.h5'))
  other = encoders.build_encoder('tiny_convnet', tiny_convnet_base_channels=8)
  other(tf.zeros((1, 32, 32, 3)))
  path = str(tmp_path / 'other.h5')
  other.backbone.save_weights(path)
  with pytest.raises(ValueError, match='does not fit encoder'):
    encoder.load_pretrained_weights(path)
  with pytest.raises(ValueError, match='Unknown encoder'):
    encoders.build_encoder('vgg16')


def test_encoder_checkpoint_round_trip(tmp_path):
  source = encoders.build_encoder('tiny_convnet', tiny_convnet_base_channels=4)
  images = tf.random.stateless_uniform((1, 32, 32, 3), (5, 5), 0, 255)
  source(images)
  prefix = tf.train.Checkpoint(encoder=source).write(str(tmp_path / 'enc'))
  target = encoders.build_encoder('tiny_convnet', tiny_convnet_base_channels=4)
  target(images)
  target.load_pretrained_weights(prefix)
  for stride, value in source(images, training=False).items():
    np.testing.assert_array_equal(target(images, training=False)[stride],
                                  value)


def test_matmul_self_attention_equals_tf_keras():
  """The classifier's attention core (matmuls) equals tf_keras' (einsums)."""
  tokens = tf.constant(np.random.default_rng(0).normal(
      size=(2, 12, 16)).astype(np.float32))
  ours = superpixel_classifier.MultiHeadSelfAttention(4, 4)
  theirs = tf_keras.layers.MultiHeadAttention(4, 4)
  ours(tokens, tokens)
  theirs(tokens, tokens)
  rng = np.random.default_rng(1)
  for mine, reference in zip(ours.weights, theirs.weights):
    value = rng.normal(size=reference.shape).astype(np.float32)
    mine.assign(value)
    reference.assign(value)
  def outputs_and_gradients(layer, with_scores):
    with tf.GradientTape() as tape:
      tape.watch(tokens)
      if with_scores:
        output, scores = layer(tokens, tokens, return_attention_scores=True)
      else:
        output, scores = layer(tokens, tokens), tf.zeros(())
      loss = tf.reduce_sum(output * tf.range(16, dtype=tf.float32))
    return [output, scores] + tape.gradient(loss, [tokens] + layer.weights)

  def op_types(layer):
    graph = tf.function(lambda t: layer(t, t)).get_concrete_function(
        tokens).graph
    return {op.type for op in graph.get_operations()}

  assert 'Einsum' in op_types(theirs)
  assert 'Einsum' not in op_types(ours)  # The matmul path is taken.
  for with_scores in (True, False):
    # Eagerly and in a graph (where grappler fuses the bias adds).
    for call in (outputs_and_gradients, tf.function(outputs_and_gradients)):
      mine, reference = ([t.numpy() for t in call(layer, with_scores)]
                         for layer in (ours, theirs))
      # The key bias's gradient is 0 in exact arithmetic (a constant shift
      # of each query's logits) and round-off in both: absolute tolerance
      # relative to the largest gradient.
      scale = max(np.abs(t).max() for t in reference)
      for a, b in zip(mine, reference):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * scale)
