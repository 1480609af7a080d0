"""Initialises a model from parts of another model's checkpoint.

trainer_options.initial_checkpoint starts training from a checkpoint of
another run (fine-tuning); trainer_options.initial_checkpoint_parts chooses
what it initialises: everything but the class layers (the default), all,
the encoder, or the encoder, hypercolumn and tokenization. So a 19-class
Cityscapes checkpoint can start an 11-class model: its class layers keep
their fresh initialisation.

The class layers are the layers whose variables' shapes depend on the
number of classes (`class_layers`): only the last class projection of each
network; the SP-Transformer's association has no class-dependent weights.

The parts are the model's `checkpoint_items` (the Model Garden's
convention: a dict of its components by name, e.g. the SP-Transformer's
encoder, hypercolumn, tokenization, classifier and association). A
checkpoint is read in either of two layouts:
  * the whole model, tf.train.Checkpoint(model=model), as the trainer
    writes it (keys 'model/...');
  * parts at its root, tf.train.Checkpoint(**model.checkpoint_items) or a
    single part, tf.train.Checkpoint(encoder=model.encoder) (keys
    'encoder/...'): a part restores alone, e.g. an encoder-only checkpoint
    with initial_checkpoint_parts ENCODER.

Every variable of the parts asked for must be in the checkpoint with the
model's shape, else InitialCheckpointError lists those that do not fit and
the fix. Values are read one variable at a time and assigned (the
checkpoint's keys are the object paths of the layout's root); the optimizer
state is never read.
"""

import collections
import os
from typing import Dict, List, Mapping, Sequence, Tuple

from absl import logging
import tensorflow as tf
import tf_keras

from deeplab_sp.model import deeplabv3plus
from deeplab_sp.model import hypercolumn_classifier
from deeplab_sp.model import sp_transformer
from deeplab_sp.protos import trainer_pb2
from deeplab_sp.trainer import checkpoints
from deeplab_sp.utils import private_apis

FIELD = 'trainer_options.initial_checkpoint'
PARTS_FIELD = 'trainer_options.initial_checkpoint_parts'
_Parts = trainer_pb2.TrainerOptions.InitialCheckpointParts
# The components of ENCODER_HYPERCOLUMN_TOKENIZATION (those a network has).
_FEATURE_COMPONENTS = ('encoder', 'hypercolumn', 'tokenization')
# The root child of a whole-model checkpoint (the trainer's).
MODEL_KEY = 'model'
# Variables named in one error message; the rest are counted.
_MAX_LISTED = 10
_VARIABLE_SUFFIX = '/.ATTRIBUTES/VARIABLE_VALUE'


class InitialCheckpointError(ValueError):
  """The initial checkpoint is missing, not a checkpoint, or does not fit."""


def parts_name(parts: int) -> str:
  return _Parts.Name(parts)


def class_layers(model: tf_keras.Model) -> List[tf_keras.layers.Layer]:
  """The layers of `model` whose variables depend on the number of classes.

  Raises:
    InitialCheckpointError: `model` is not one of the networks of
      deeplab_sp.model.builder (a model of another model_fn).
  """
  if isinstance(model, sp_transformer.SPTransformer):
    return [model.classifier.classifier]
  if isinstance(model, hypercolumn_classifier.HypercolumnPixelClassifier):
    return [model.pixel_classifier.output_projection]
  if isinstance(model, deeplabv3plus.DeepLabV3Plus):
    return [private_apis.segmentation_head_classifier(model.decoder)]
  raise InitialCheckpointError(
      f'{PARTS_FIELD}: ALL_BUT_CLASS_LAYERS does not know the class layers '
      f'of a {type(model).__name__}; set {PARTS_FIELD}: ALL (or ENCODER).')


def checkpoint_items(model: tf_keras.Model) -> Dict[str, object]:
  """The parts of `model` by name.

  Its `checkpoint_items` (every network of deeplab_sp.model.builder has
  them); for a model of another model_fn without them, those of its
  attributes named like the SP-Transformer's feature components (encoder,
  hypercolumn, tokenization).
  """
  items = getattr(model, 'checkpoint_items', None)
  if items is not None:
    return dict(items)
  return {name: getattr(model, name) for name in _FEATURE_COMPONENTS
          if hasattr(model, name)}


def _escape(name: str) -> str:
  """A child's name as tf.train.Checkpoint writes it into keys."""
  return name.replace('.', '..').replace('/', '.S')


def _object_paths(children: Mapping[str, object]
                 ) -> Dict[int, Tuple[str, object]]:
  """id(trackable) -> (its path in the checkpoint, trackable).

  The paths of tf.train.Checkpoint(**children): the shortest path from the
  root, found breadth first in the order tf.train.Checkpoint saves (the
  first path found names an object reachable by several).
  """
  root = tf.train.Checkpoint(**children)
  view = tf.train.TrackableView(root)
  paths = {id(root): ('', root)}
  queue = collections.deque([root])
  while queue:
    parent = queue.popleft()
    parent_path = paths[id(parent)][0]
    for name, child in view.children(parent).items():
      if id(child) in paths:
        continue
      path = f'{parent_path}/{_escape(name)}' if parent_path else _escape(name)
      paths[id(child)] = (path, child)
      queue.append(child)
  return paths


def _part_prefixes(model: tf_keras.Model, parts: int,
                   children: Mapping[str, object],
                   paths: Dict[int, Tuple[str, object]]
                  ) -> Tuple[List[str], List[str], str]:
  """(paths restored, paths left out, a description of what is left out).

  A variable is restored when its path starts with one of the first
  prefixes and none of the second. `children` are the checkpoint root's
  (the layout), `paths` their _object_paths.
  """
  def path_of(layer) -> str:
    return paths[id(layer)][0] + '/'

  everything = [_escape(name) + '/' for name in children]
  if parts == _Parts.ALL:
    return everything, [], ''
  if parts == _Parts.ALL_BUT_CLASS_LAYERS:
    return everything, [path_of(layer) for layer in class_layers(model)], (
        'the class layers')
  items = checkpoint_items(model)
  if parts == _Parts.ENCODER:
    names = ('encoder',)
    if 'encoder' not in items:
      raise InitialCheckpointError(
          f'{PARTS_FIELD}: ENCODER, but a {type(model).__name__} has no '
          f'encoder; set {PARTS_FIELD}: ALL (or ALL_BUT_CLASS_LAYERS).')
  elif parts == _Parts.ENCODER_HYPERCOLUMN_TOKENIZATION:
    names = tuple(name for name in _FEATURE_COMPONENTS if name in items)
    if names == ('encoder',):
      raise InitialCheckpointError(
          f'{PARTS_FIELD}: ENCODER_HYPERCOLUMN_TOKENIZATION, but a '
          f'{type(model).__name__} has no hypercolumn or tokenization; set '
          f'{PARTS_FIELD}: ENCODER or ALL_BUT_CLASS_LAYERS.')
  else:
    raise InitialCheckpointError(
        f'{PARTS_FIELD}: unknown value {parts}; use one of '
        f'{", ".join(_Parts.keys())}.')
  return [path_of(items[name]) for name in names], [], (
      'not in the ' + ', '.join(names))


def _listed(items: Sequence[str]) -> str:
  shown = ', '.join(items[:_MAX_LISTED])
  if len(items) > _MAX_LISTED:
    shown += f' and {len(items) - _MAX_LISTED} more'
  return shown


def _raise_not_a_checkpoint(path: str, prefix: str) -> None:
  """Why `prefix` (from FIELD's value `path`) has no .index, as an error."""
  if path.endswith('.index') or '.data-' in os.path.basename(path):
    stem = path[:-len('.index')] if path.endswith('.index') else (
        path[:path.rindex('.data-')])
    raise InitialCheckpointError(
        f'{FIELD} {path} is one file of a checkpoint: set it to the '
        f'checkpoint prefix {stem} (without .index or .data-*).')
  if tf.io.gfile.exists(prefix):
    raise InitialCheckpointError(
        f'{FIELD} {path} is a file, not a TensorFlow checkpoint (no '
        f'{prefix}.index): set it to a checkpoint prefix such as '
        '<experiment directory>/ckpt-1000 (encoder weights files go to '
        'model_options.encoder.pretrained_weights).')
  if tf.io.gfile.glob(prefix + '.data-*'):
    raise checkpoints.DamagedCheckpointError(
        f'Checkpoint {prefix} ({FIELD}) is damaged: {prefix}.index is '
        f'missing (its data files are there). Restore {prefix}.index from a '
        f'backup, or set {FIELD} to another checkpoint.')
  what = path if prefix == path else f'{path} lists {prefix}, which'
  raise InitialCheckpointError(
      f'{FIELD} {what} does not exist: set it to an existing checkpoint '
      'prefix (e.g. <experiment directory>/ckpt-1000, the path without '
      '.index) or directory, or remove it to start from scratch.')


def resolve(path: str) -> str:
  """The checkpoint prefix that `path` (FIELD's value) names.

  A directory gives its newest checkpoint (checkpoints.latest_checkpoint:
  from its `checkpoint` list, or the newest complete one on disk).

  Raises:
    InitialCheckpointError: nothing there, or not a checkpoint (each
      message names FIELD and the fix).
    checkpoints.DamagedCheckpointError: its files are damaged.
  """
  if tf.io.gfile.isdir(path):
    prefix = checkpoints.latest_checkpoint(path)
    if prefix is None:
      raise InitialCheckpointError(
          f'{FIELD} {path} is a directory without checkpoints (no '
          'ckpt-N.index): point it at a checkpoint prefix such as '
          '<experiment directory>/ckpt-1000, or at the experiment directory '
          'of a trained run.')
  else:
    prefix = path
  if not tf.io.gfile.exists(prefix + '.index'):
    _raise_not_a_checkpoint(path, prefix)
  try:
    checkpoints.verify_checkpoint(prefix)
  except checkpoints.DamagedCheckpointError as e:
    raise checkpoints.DamagedCheckpointError(
        f'{str(e).rstrip(".")} ({FIELD}). Restore its files from a backup, '
        f'or set {FIELD} to another checkpoint.') from e.__cause__
  return prefix


def _layout(model: tf_keras.Model, prefix: str,
            shapes: Mapping[str, object]) -> Dict[str, object]:
  """The root children of the checkpoint's layout, as objects of `model`.

  {MODEL_KEY: model} for a whole-model checkpoint; the model's
  checkpoint_items for one of its parts at the root.

  Raises:
    InitialCheckpointError: the checkpoint holds neither.
  """
  roots = sorted({key.split('/', 1)[0] for key in shapes if '/' in key})
  if MODEL_KEY in roots:
    return {MODEL_KEY: model}
  items = checkpoint_items(model)
  if any(_escape(name) in roots for name in items):
    return items
  hint = (' A Model Garden backbone checkpoint goes to '
          'model_options.encoder.pretrained_weights (encoder '
          'resnet50_model_garden).' if 'backbone' in roots else '')
  raise InitialCheckpointError(
      f'{FIELD} {prefix} holds neither a model (tf.train.Checkpoint('
      f'{MODEL_KEY}=...), as the trainer writes it) nor a part of a '
      f'{type(model).__name__} ({", ".join(items)}, e.g. '
      'tf.train.Checkpoint(encoder=...)); its root holds '
      f'{", ".join(roots) or "nothing"}.{hint}')


def restore(model: tf_keras.Model, prefix: str, parts: int) -> List[str]:
  """Assigns the `parts` of `model` from the checkpoint `prefix`.

  Call with the model built (its variables created) and, under a
  tf.distribute strategy, in its scope.

  Args:
    model: the network.
    prefix: a checkpoint prefix (see resolve): of tf.train.Checkpoint(
      model=model), as the trainer writes it, or of some of the model's
      checkpoint_items at the root (tf.train.Checkpoint(encoder=...)).
    parts: an InitialCheckpointParts value.

  Returns:
    The checkpoint paths of the variables left at their initial values.

  Raises:
    InitialCheckpointError: the checkpoint holds neither layout, or a
      variable of the parts asked for is missing from it or has another
      shape there (all are listed).
  """
  reader = tf.train.load_checkpoint(prefix)
  shapes = reader.get_variable_to_shape_map()
  children = _layout(model, prefix, shapes)
  paths = _object_paths(children)
  included, excluded, left_out_what = _part_prefixes(model, parts, children,
                                                     paths)
  restored, left_out, missing, mismatched = [], [], [], []
  if MODEL_KEY not in children:
    # Variables in none of the parts (a model whose parts do not cover it):
    # ALL asks for them, which a checkpoint of parts cannot give.
    inside = {id(v) for part in children.values()
              for v in getattr(part, 'variables', ())}
    outside = [v.name for v in model.variables if id(v) not in inside]
    (missing if parts == _Parts.ALL else left_out).extend(outside)
  for path, trackable in sorted(paths.values(), key=lambda item: item[0]):
    if not isinstance(trackable, tf.Variable):
      continue
    if (not any(path.startswith(p) for p in included) or
        any(path.startswith(p) for p in excluded)):
      left_out.append(path)
      continue
    key = path + _VARIABLE_SUFFIX
    if key not in shapes:
      missing.append(path)
    elif list(shapes[key]) != trackable.shape.as_list():
      mismatched.append(f'{path} (checkpoint {list(shapes[key])}, model '
                        f'{trackable.shape.as_list()})')
    else:
      restored.append((key, trackable))
  name = parts_name(parts)
  if missing or mismatched:
    problems = []
    if mismatched:
      problems.append(f'{len(mismatched)} with other shapes: '
                      f'{_listed(mismatched)}')
    if missing:
      problems.append(f'{len(missing)} missing from it: {_listed(missing)}')
    fix = ('set trainer_options.initial_checkpoint_parts: '
           'ALL_BUT_CLASS_LAYERS to start the class layers afresh (other '
           'classes), or ENCODER' if parts == _Parts.ALL else
           'use a checkpoint of this network (encoder, widths, layers), or '
           'ask for fewer parts with trainer_options.initial_checkpoint_parts')
    raise InitialCheckpointError(
        f'{FIELD} {prefix} does not fit the model of this config in the '
        f'parts asked for ({PARTS_FIELD}: {name}): '
        f'{"; ".join(problems)}. Fix: {fix}.')
  for key, variable in restored:
    variable.assign(tf.cast(reader.get_tensor(key), variable.dtype))
  logging.info(
      'Initialised %d of %d variables of the model from %s (%s: %s)%s.',
      len(restored), len(restored) + len(left_out), prefix, PARTS_FIELD,
      name, f'; {len(left_out)} ({left_out_what}) keep their initial values '
      '(listed with --v=1)' if left_out else '')
  for path in left_out:
    logging.vlog(1, 'Not initialised from %s: %s', prefix, path)
  return left_out
