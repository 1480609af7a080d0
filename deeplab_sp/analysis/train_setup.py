"""What the training benchmark calls: the trainer's step and its parts.

`TrainingSetup` builds one local attention implementation's model, optimizer
and trainer on a fixed batch of random images and labels, and makes the
no-argument tf.functions that train_benchmark.py times and measures:

  * the trainer's whole step (deeplab_sp/trainer/trainer.py,
    `Trainer.train_step`): forward pass, per-image top-k% cross-entropy,
    gradients and the updates of both optimizers of the SplitOptimizer;
  * its forward and backward pass without the update
    (`Trainer.replica_gradients`), whose peak memory is measured;
  * the encoder's own step: its forward and backward pass and the backbone
    optimizer's update of its variables;
  * the forward and backward pass of one component on its real inputs,
    recorded from one forward pass of the model in training mode
    (timing.py): the gradients of the component's variables and of its
    inputs (not of the images), from a fixed random output gradient (only
    through the dense logits for the association, as in the loss).

The parent process and the child processes (train_child.py) build the same
setup from the same ExperimentOptions, so their figures are comparable.
"""

import functools
import itertools
from typing import Callable, Dict

from google.protobuf import text_format
import numpy as np
import tensorflow as tf
import tf_keras

from deeplab_sp import experiment as experiment_lib
from deeplab_sp.analysis import benchmark
from deeplab_sp.analysis import timing
from deeplab_sp.analysis import train_settings as settings_lib
from deeplab_sp.protos import config_pb2
from deeplab_sp.trainer import optimizer as optimizer_lib
from deeplab_sp.trainer import trainer as trainer_lib

# The tf_keras policy of each measured memory precision.
POLICIES = {settings_lib.FLOAT32: 'float32',
            settings_lib.BFLOAT16: 'mixed_bfloat16'}
# AdamW keeps two moments per weight: weights + moments = 3 float32 copies.
_STATE_COPIES = 3

SEED = 0


def random_batch(batch: int, size, num_classes: int) -> Dict[str, tf.Tensor]:
  """{'image': float32 [batch, H, W, 3] in [0, 255], 'label': int32}."""
  rng = np.random.default_rng(SEED + 1)
  labels = rng.integers(0, num_classes, size=(batch, *size))
  return {'image': benchmark.random_images(batch, size),
          'label': tf.constant(labels, tf.int32)}


class TrainingSetup:
  """One implementation's model, optimizer and trainer, ready to time.

  Attributes:
    model: the SPTransformer built from the config.
    trainer: the experiment's Trainer (train_step, replica_gradients) on the
      default strategy, with a SplitOptimizer built from the config.
    batch: the fixed batch every step trains on.
    calls: component -> (layer, args, kwargs) of its call in training mode.
  """

  def __init__(self, experiment: experiment_lib.Experiment,
               implementation: str, size, batch: int):
    self.model = benchmark.build_model(experiment, implementation, size)
    trainer_options = experiment.options.trainer_options
    optimizer = optimizer_lib.SplitOptimizer(
        trainer_options,
        dynamic_loss_scale=trainer_options.mixed_precision == 'float16')
    # No dataset: every step reads the same batch (see `step`).
    self.trainer = trainer_lib.Trainer(tf.distribute.get_strategy(),
                                       self.model, optimizer, None,
                                       trainer_options)
    self.batch = random_batch(batch, size, experiment.num_classes)

  @functools.cached_property
  def calls(self):
    """Component -> (layer, args, kwargs), recorded on first use."""
    return timing.record_calls(
        self.model, self.batch['image'],
        {name: name for name in settings_lib.COMPONENTS}, training=True)

  def step(self) -> Callable[[], object]:
    """The trainer's whole step as a no-argument tf.function."""
    return _function(self.trainer.train_step, itertools.repeat(self.batch))

  def loss_and_gradients(self) -> Callable[[], object]:
    """The step's forward and backward pass (no update), a tf.function."""
    return _function(self.trainer.replica_gradients, self.batch)

  def forward_backward(self, component: str) -> Callable[[], object]:
    """One component's forward and backward pass, a tf.function."""
    layer, args, kwargs = self.calls[component]
    return forward_backward_call(
        layer, args, kwargs,
        differentiate_inputs=component != settings_lib.ENCODER,
        differentiated_outputs=_differentiated_outputs(component))

  def encoder_step(self) -> Callable[[], object]:
    """The encoder's forward and backward pass and its optimizer update."""
    return _function(_encoder_step,
                     self.forward_backward(settings_lib.ENCODER),
                     self.model.encoder.trainable_variables,
                     self.trainer.optimizer.backbone)

  def timed_part(self, part: str) -> Callable[[], object]:
    """The function timed as `part` (settings_lib.ROWS)."""
    if part == settings_lib.STEP:
      return self.step()
    if part == settings_lib.ENCODER_STEP:
      return self.encoder_step()
    return self.forward_backward(part)

  def measured_part(self, part: str) -> Callable[[], object]:
    """The forward + backward pass whose peak memory is `part`'s."""
    if part == settings_lib.STEP:
      return self.loss_and_gradients()
    return self.forward_backward(part)


def _function(python_function, *args):
  """tf.function of python_function(*args) without arguments.

  Through functools.partial, so that TensorFlow does not count the many
  functions made from one Python function as retracing (and warn).
  """
  return tf.function(functools.partial(python_function, *args),
                     autograph=False)


def _encoder_step(gradients, variables, optimizer):
  variable_gradients = gradients()[:len(variables)]
  optimizer.apply_gradients(zip(variable_gradients, variables),
                            experimental_aggregate_gradients=False)


def _differentiated_outputs(component):
  """The outputs the loss depends on: the association's dense logits."""
  if component == 'association':
    return lambda outputs: [outputs['semantic_logits']]
  return lambda outputs: [t for t in tf.nest.flatten(outputs)
                          if t.dtype.is_floating]


def forward_backward_call(layer, args, kwargs, differentiate_inputs: bool,
                          differentiated_outputs) -> Callable[[], list]:
  """A no-argument tf.function: gradients of one layer call.

  Args:
    layer: a layer (or model).
    args, kwargs: its recorded arguments ('training' is set to True).
    differentiate_inputs: also return the gradients of the floating-point
      tensor arguments (a component inside the model propagates them).
    differentiated_outputs: outputs -> the list of tensors to differentiate.

  Returns:
    The function; it returns the gradients of the layer's trainable
    variables (in that order), then of its differentiated inputs, of
    sum(output * g) for a fixed random output gradient g.
  """
  if 'training' in kwargs:
    kwargs = dict(kwargs, training=True)
  inputs = [a for a in tf.nest.flatten(args)
            if differentiate_inputs and tf.is_tensor(a) and
            a.dtype.is_floating]
  call = functools.partial(_outputs, layer, args, kwargs,
                           differentiated_outputs)
  # The outputs' shapes, from a trace (no computation).
  outputs = _function(call).get_concrete_function().structured_outputs
  rng = np.random.default_rng(SEED + 2)
  cotangents = [tf.constant(rng.normal(size=t.shape), t.dtype)
                for t in outputs]
  return _function(_gradients, call, inputs, layer.trainable_variables,
                   cotangents)


def _outputs(layer, args, kwargs, differentiated_outputs):
  return differentiated_outputs(layer(*args, **kwargs))


def _gradients(call, inputs, variables, cotangents):
  with tf.GradientTape() as tape:
    tape.watch(inputs)
    outputs = call()
  return tape.gradient(outputs, variables + inputs,
                       output_gradients=cotangents)


def training_state_bytes(model) -> int:
  """Bytes of the weights and their AdamW moments, in float32."""
  count = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
  return _STATE_COPIES * 4 * count


def options_text(experiment: experiment_lib.Experiment) -> str:
  """The experiment's options as a child process receives them."""
  return text_format.MessageToString(experiment.options)


def experiment_from_text(options: str) -> experiment_lib.Experiment:
  """The experiment of `options_text`'s output (in a child process)."""
  return experiment_lib.experiment_from_options(
      text_format.Parse(options, config_pb2.ExperimentOptions()), mode=None)


class policy:  # pylint: disable=invalid-name
  """Context: tf_keras' global mixed-precision policy, restored after."""

  def __init__(self, name):
    self._name = name
    self._previous = None

  def __enter__(self):
    self._previous = tf_keras.mixed_precision.global_policy()
    tf_keras.mixed_precision.set_global_policy(self._name)

  def __exit__(self, *unused):
    tf_keras.mixed_precision.set_global_policy(self._previous)
