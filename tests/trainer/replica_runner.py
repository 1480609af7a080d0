"""Computes one training step's values on 1 or 2 replicas (test helper).

Run as a subprocess by test_replicas.py, because logical devices must be set
before TensorFlow initialises:

  python tests/trainer/replica_runner.py CHECK STRATEGY OUT_NPZ

CHECK: 'loss' (the trainer's loss and gradients of one global batch),
'batchnorm' (one training step of the tiny model with synchronized
BatchNorm: moving statistics, weights and outputs) or 'batchnorm_unsynced'
(the same without synchronization). STRATEGY: 'single' (one device,
the whole batch) or 'mirrored' (2 logical CPUs, half the batch each). The
values are written to OUT_NPZ.
"""

import pathlib
import sys

import numpy as np
import tensorflow as tf

# Images of the global batch; the mirrored run gives each replica half.
GLOBAL_BATCH = 4


def _strategy(name):
  if name == 'mirrored':
    cpu = tf.config.list_physical_devices('CPU')[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    return tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])
  return tf.distribute.get_strategy()


def _batch(size, num_classes):
  """A global batch whose images have different numbers of valid pixels."""
  rng = np.random.RandomState(0)
  images = rng.uniform(0, 255, [GLOBAL_BATCH, size, size, 3])
  labels = rng.randint(0, num_classes, [GLOBAL_BATCH, size, size])
  for i in range(GLOBAL_BATCH):
    labels[i, :2 * i] = 255  # Image i: 2i ignored rows.
  return {'image': images.astype(np.float32),
          'label': labels.astype(np.int32)}


def _set_weights(model):
  rng = np.random.RandomState(1)
  model.set_weights([rng.normal(0, 0.3, w.shape).astype(w.dtype)
                     for w in model.get_weights()])


def _distribute(strategy, batch):
  dataset = tf.data.Dataset.from_tensors(batch)
  return next(iter(strategy.experimental_distribute_dataset(dataset)))


def _local(strategy, value):
  return tf.concat(strategy.experimental_local_results(value), 0).numpy()


def check_loss(strategy):
  import trainer_testing  # pylint: disable=g-import-not-at-top
  from deeplab_sp.trainer import optimizer as optimizer_lib  # pylint: disable=g-import-not-at-top
  from deeplab_sp.trainer import trainer as trainer_lib  # pylint: disable=g-import-not-at-top
  options = trainer_testing.tiny_options().trainer_options
  options.top_k_percent_pixels = 20
  batch = _batch(16, 19)
  with strategy.scope():
    model = trainer_testing.StandInModel(19)
    model(tf.zeros([1, 16, 16, 3]))
    _set_weights(model)
    optimizer = optimizer_lib.SplitOptimizer(options)
  trainer = trainer_lib.Trainer(
      strategy, model, optimizer,
      strategy.experimental_distribute_dataset(
          tf.data.Dataset.from_tensors(batch)), options)
  grads, share = strategy.run(tf.function(trainer.replica_gradients),
                              args=(_distribute(strategy, batch),))
  values = {'loss': strategy.reduce(tf.distribute.ReduceOp.SUM, share, None)}
  for variable, grad in zip(model.trainable_variables, grads):
    values['grad/' + variable.name] = strategy.reduce(
        tf.distribute.ReduceOp.SUM, grad, None)
  return {k: v.numpy() for k, v in values.items()}


def check_batchnorm(strategy, synchronized=True):
  """One training step of the tiny SP-Transformer (tiny_convnet: BN)."""
  import trainer_testing  # pylint: disable=g-import-not-at-top
  import tiny_experiment  # pylint: disable=g-import-not-at-top
  from deeplab_sp.model import builder  # pylint: disable=g-import-not-at-top
  from deeplab_sp.trainer import optimizer as optimizer_lib  # pylint: disable=g-import-not-at-top
  from deeplab_sp.trainer import trainer as trainer_lib  # pylint: disable=g-import-not-at-top
  model_options = tiny_experiment.model_options(
      {'encoder.sync_batchnorm': synchronized})
  options = trainer_testing.tiny_options().trainer_options
  size, num_classes = 64, 5
  batch = _batch(size, num_classes)
  with strategy.scope():
    model = builder.build_model(model_options, num_classes, (size, size))
    _set_weights(model)
    optimizer = optimizer_lib.SplitOptimizer(options)
  trainer = trainer_lib.Trainer(
      strategy, model, optimizer,
      strategy.experimental_distribute_dataset(
          tf.data.Dataset.from_tensors(batch)), options)
  batch_norms = [v for v in model.variables if 'moving_' in v.name]
  assert batch_norms, 'the tiny encoder has no BatchNormalization'
  before = [v.numpy() for v in batch_norms]
  trainer.train_step(iter(strategy.experimental_distribute_dataset(
      tf.data.Dataset.from_tensors(batch))))
  values = {}
  for old, variable in zip(before, batch_norms):
    assert not np.allclose(old, variable.numpy()), variable.name
    values['stat/' + variable.name] = variable.numpy()
  for variable in model.trainable_variables:
    values['weight/' + variable.name] = variable.numpy()
  outputs = strategy.run(
      tf.function(lambda images: model(images, training=False)),
      args=(_distribute(strategy, batch)['image'],))
  values['logits'] = _local(strategy, outputs['semantic_logits'])
  return values


def main(check, strategy_name, out):
  strategy = _strategy(strategy_name)
  # Imported after the device setup. tests/ holds the shared tiny config.
  tests_dir = pathlib.Path(__file__).resolve().parent
  sys.path.insert(0, str(tests_dir.parent))
  sys.path.insert(0, str(tests_dir))
  values = {
      'loss': check_loss,
      'batchnorm': check_batchnorm,
      'batchnorm_unsynced': lambda s: check_batchnorm(s, synchronized=False),
  }[check](strategy)
  np.savez(out, **values)
  print('DONE', flush=True)


if __name__ == '__main__':
  main(*sys.argv[1:4])
