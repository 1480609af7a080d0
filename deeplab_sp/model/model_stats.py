"""Parameter counts and FLOPs of an SP-Transformer config (tools/model_stats.py).

Compared against the paper's Tables I-III (arXiv 2309.16889). FLOPs are
counted by TF's profiler (float operations of a concrete forward function,
multiply-adds counted as 2) at the config's evaluation crop size.
"""

import json

import tensorflow as tf

from deeplab_sp.model import builder

COMPONENTS = ('encoder', 'hypercolumn', 'tokenization', 'classifier',
              'association')


def _count(variables):
  return int(sum(v.shape.num_elements() for v in variables))


def _count_flops(model, input_size):
  spec = tf.TensorSpec([1, input_size[0], input_size[1], 3], tf.float32)
  concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
  graph = concrete.graph
  options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
  options['output'] = 'none'
  profile = tf.compat.v1.profiler.profile(graph=graph, cmd='op',
                                          options=options)
  return int(profile.total_float_ops)


def compute_model_stats(experiment_options, num_classes, input_size,
                        with_flops=True):
  """Returns {'total_params', 'components': {name: params}, 'flops'}."""
  model = builder.build_model(experiment_options.model_options, num_classes,
                              input_size)
  model(tf.zeros([1, input_size[0], input_size[1], 3]), training=False)
  components = {name: _count(getattr(model, name).weights)
                for name in COMPONENTS}
  stats = {'total_params': _count(model.weights), 'components': components,
           'flops': _count_flops(model, input_size) if with_flops else None}
  return stats


def format_stats(stats, fmt='text'):
  if fmt == 'json':
    return json.dumps(stats, indent=2, sort_keys=True)
  lines = [f'{name:>14s}: {params / 1e6:9.3f}M params'
           for name, params in stats['components'].items()]
  lines.append(f'{"total":>14s}: {stats["total_params"] / 1e6:9.3f}M params')
  if stats['flops'] is not None:
    lines.append(f'{"FLOPs":>14s}: {stats["flops"] / 1e9:9.1f}G')
  return '\n'.join(lines)
