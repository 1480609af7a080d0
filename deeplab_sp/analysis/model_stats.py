"""Parameter counts per component and FLOPs of a model of this project.

Compared with Tables I and III of the SP-Transformer paper (arXiv
2309.16889). The components are the model's own (`COMPONENTS` of its class:
the SP-Transformer's encoder, hypercolumn, tokenization, classifier and
association; a baseline's, e.g. DeepLabV3+'s encoder, aspp and decoder).
FLOPs are counted by
TensorFlow's graph profiler on the frozen inference graph at the config's
evaluation size, batch 1, where a multiply-add counts as 2 FLOPs. The
paper's FLOP column matches multiply-adds (ResNet-50 alone at 1024x2048 is
about 170G multiply-adds), so `multiply_adds` (= flops / 2) is the number to
compare with Table I. TensorFlow itself has no FLOP statistics for Einsum
(the attention of both local-attention implementations and of tf_keras'
projections uses it); the Model Garden registers them (one multiply-add per
combination of the equation's indices) when official.core.train_utils is
imported, so every matmul-like op is counted. Registering them a second time
is an error, so this module uses the Model Garden's. Other ops without
statistics (e.g. resizes, exp) are not counted.
"""

from typing import Dict, Sequence

from official.core import train_utils  # pylint: disable=unused-import
import tensorflow as tf
import tf_keras

from deeplab_sp import experiment as experiment_lib
from deeplab_sp.model import builder
from deeplab_sp.model.kernels import profile
from deeplab_sp.utils import private_apis


def component_params(model: tf_keras.Model) -> Dict[str, int]:
  """Number of weights (trainable and not) of each of model.COMPONENTS."""
  return {name: int(getattr(model, name).count_params())
          for name in model.COMPONENTS}


def count_flops(model: tf_keras.Model) -> int:
  """FLOPs of one forward pass at model.input_size, batch 1.

  The model must have no XLA islands (builder.create_model(...,
  kernels=profile.SERVING)): the profiler reads the ops of one graph, not
  those of compiled function calls.

  Raises:
    ValueError: for a model built with XLA islands.
  """
  if model.kernels.xla_islands:
    raise ValueError(f'count_flops needs a model without XLA islands; it '
                     f'was built with the {model.kernels.name!r} kernels: '
                     'build it with kernels=profile.SERVING.')
  concrete = _inference_function(model).get_concrete_function(
      _input_spec(model))
  frozen = private_apis.frozen_function(concrete)
  return count_graph_flops(frozen.graph)


def _inference_function(model):
  return tf.function(lambda images: model(images, training=False))


def _input_spec(model):
  """One image of the model's input size."""
  return tf.TensorSpec((1, *model.input_size, 3), tf.float32)


def count_graph_flops(graph: tf.Graph) -> int:
  """FLOPs of the ops of `graph` that have statistics (static shapes)."""
  options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
  options['output'] = 'none'
  profile = tf.compat.v1.profiler.profile(
      graph=graph, run_meta=tf.compat.v1.RunMetadata(), cmd='op',
      options=options)
  return int(profile.total_float_ops)


def model_stats(config_path: str, with_flops: bool = True,
                overrides: Sequence[str] = ()) -> dict:
  """Returns {'total_params', 'components', 'flops', 'input_size'}.

  `overrides` are text-format ExperimentOptions fragments applied on top of
  `config_path` (--config_override; see experiment.apply_overrides).
  """
  experiment = experiment_lib.load_experiment(config_path, mode=None,
                                              overrides=overrides)
  input_size = experiment.input_size
  model = builder.create_model(experiment.options.model_options,
                               experiment.num_classes, input_size,
                               kernels=profile.SERVING)
  # Tracing one call creates the variables without computing anything.
  _inference_function(model).get_concrete_function(_input_spec(model))
  components = component_params(model)
  flops = count_flops(model) if with_flops else None
  return {
      'config': config_path,
      'input_size': list(input_size),
      'total_params': int(model.count_params()),
      'components': components,
      'flops': flops,
      'multiply_adds': flops // 2 if flops is not None else None,
  }


def format_text(stats: dict) -> str:
  """The text report of `model_stats`'s result."""
  lines = [f'{stats["config"]} at {stats["input_size"][0]}x'
           f'{stats["input_size"][1]}:']
  for name, params in stats['components'].items():
    lines.append(f'  {name:<14s}{params / 1e6:10.2f}M params')
  lines.append(f'  {"total":<14s}{stats["total_params"] / 1e6:10.2f}M params')
  if stats['flops'] is not None:
    lines.append(f'  {"FLOPs":<14s}{stats["flops"] / 1e9:10.1f}G '
                 f'({stats["multiply_adds"] / 1e9:.1f}G multiply-adds, the '
                 "paper's FLOP convention)")
  return '\n'.join(lines)
