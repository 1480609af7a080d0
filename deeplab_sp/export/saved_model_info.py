"""What an exported SavedModel is, read from its files.

For tools/inspect_export.py. Everything is read without loading the
SavedModel's functions (which takes seconds to minutes): the signatures
from saved_model.pb, the stored facts (class names, model input size,
pixel limits) from its variables, and the experiment config from the asset
export_lib stores (assets/experiment.textproto). A directory that is not a
SavedModel, or a damaged one, is an ExportError naming what is wrong and
the fix.
"""

import os
from typing import Any, Dict, List, Optional

from google.protobuf import message as protobuf_message
import tensorflow as tf

from deeplab_sp import experiment as experiment_lib
from deeplab_sp.export import serving_module
from deeplab_sp.trainer import checkpoints
from deeplab_sp.utils import private_apis

CONFIG_ASSET = 'experiment.textproto'
_INIT_OP_SIGNATURE = '__saved_model_init_op'
# Checkpoint keys of the ServingModule's variables.
_VARIABLE_KEYS = {
    name: f'{name}/.ATTRIBUTES/VARIABLE_VALUE'
    for name in ('class_names', 'model_input_size', 'pixel_limits')}
_FIX = 'export the model again with tools/export_model.py'


class ExportError(ValueError):
  """Not a SavedModel version directory, or a damaged one."""


def _check_directory(saved_model_dir: str) -> None:
  """ExportError unless `saved_model_dir` holds a saved_model.pb."""
  hint = ('pass a version directory written by tools/export_model.py, e.g. '
          '--saved_model=exported/sp_transformer_tiny/1')
  if not tf.io.gfile.exists(saved_model_dir):
    raise ExportError(f'--saved_model {saved_model_dir} does not exist; '
                      f'{hint}.')
  if not tf.io.gfile.isdir(saved_model_dir):
    raise ExportError(f'--saved_model {saved_model_dir} is a file, not a '
                      f'SavedModel directory; {hint}.')
  if tf.io.gfile.exists(os.path.join(saved_model_dir, 'saved_model.pb')):
    return
  versions = sorted(
      int(name.rstrip('/')) for name in tf.io.gfile.listdir(saved_model_dir)
      if name.rstrip('/').isdigit() and tf.io.gfile.exists(os.path.join(
          saved_model_dir, name.rstrip('/'), 'saved_model.pb')))
  if versions:
    raise ExportError(
        f'--saved_model {saved_model_dir} is a model base directory '
        f'(versions {", ".join(map(str, versions))}); pass one version, '
        f'e.g. --saved_model={os.path.join(saved_model_dir, str(versions[-1]))}'
        '.')
  raise ExportError(f'--saved_model {saved_model_dir} holds no '
                    f'saved_model.pb, so it is not a SavedModel; {hint}.')


def _read_saved_model(saved_model_dir: str):
  path = os.path.join(saved_model_dir, 'saved_model.pb')
  saved_model = private_apis.saved_model_proto()
  try:
    with tf.io.gfile.GFile(path, 'rb') as f:
      saved_model.ParseFromString(f.read())
  except (protobuf_message.DecodeError, RuntimeError, ValueError) as e:
    raise ExportError(f'{path} is damaged (not a SavedModel protobuf: '
                      f'{e}); {_FIX}.') from None
  if (len(saved_model.meta_graphs) != 1 or
      not saved_model.meta_graphs[0].signature_def):
    raise ExportError(f'{path} is damaged or not an export of this project '
                      f'(it holds {len(saved_model.meta_graphs)} graph(s) '
                      f'and no signature); {_FIX}.')
  return saved_model


def _tensor_spec(tensor_info) -> Dict[str, Any]:
  """{'name', 'dtype', 'shape'} of a SignatureDef's TensorInfo."""
  shape = tensor_info.tensor_shape
  dims = (None if shape.unknown_rank else
          [None if dim.size < 0 else int(dim.size) for dim in shape.dim])
  return {'dtype': tf.dtypes.as_dtype(tensor_info.dtype).name,
          'shape': dims}


def _signatures(saved_model
               ) -> Dict[str, Dict[str, Dict[str, Any]]]:
  signatures = {}
  for key, signature in sorted(
      saved_model.meta_graphs[0].signature_def.items()):
    if key == _INIT_OP_SIGNATURE:
      continue
    signatures[key] = {
        part: {name: _tensor_spec(info)
               for name, info in sorted(getattr(signature, part).items())}
        for part in ('inputs', 'outputs')}
  return signatures


def _stored_values(saved_model_dir: str) -> Dict[str, Any]:
  """The stored variables of _VARIABLE_KEYS that the export has.

  Every value is read first, checking its checksum (a read of the weights'
  size), so damaged weights are found here rather than when served.
  """
  prefix = os.path.join(saved_model_dir, 'variables', 'variables')
  try:
    checkpoints.verify_checkpoint(prefix)
  except checkpoints.DamagedCheckpointError as e:
    # Its message is `Checkpoint <prefix> is damaged: <what>`.
    what = str(e).split(' is damaged: ', 1)[-1].rstrip('.')
    raise ExportError(f'{saved_model_dir} is damaged: in its variables '
                      f'{prefix}, {what}; {_FIX}.') from None
  reader = tf.train.load_checkpoint(prefix)
  keys = reader.get_variable_to_shape_map()
  return {name: reader.get_tensor(key)
          for name, key in _VARIABLE_KEYS.items() if key in keys}


def _config(saved_model_dir: str) -> Dict[str, Optional[Any]]:
  """The stored config: its path, summary and model input size."""
  path = os.path.join(saved_model_dir, 'assets', CONFIG_ASSET)
  if not tf.io.gfile.exists(path):
    return {'config_path': None, 'config_summary': None, 'input_size': None}
  try:
    experiment = experiment_lib.experiment_from_options(
        experiment_lib.parse_experiment_options(
            experiment_lib.read_config_text(path), path), path, mode=None)
  except experiment_lib.ConfigError as e:
    return {'config_path': path, 'input_size': None,
            'config_summary': f'(does not resolve with this version of '
                              f'deeplab_sp: {e})'}
  return {'config_path': path, 'input_size': list(experiment.input_size),
          'config_summary': experiment.summary(with_path=False)}


def describe(saved_model_dir: str) -> Dict[str, Any]:
  """What the export at `saved_model_dir` is, as a JSON-able dict.

  Keys: saved_model, tensorflow_version, signatures ({key: {'inputs',
  'outputs': {name: {'dtype', 'shape'}}}}), model_input_size ([H, W]),
  max_input_pixels, max_batch_pixels, class_names, config_path and
  config_summary (None: not stored, or not what this project exports).

  Raises:
    ExportError: not a SavedModel version directory, or damaged.
  """
  _check_directory(saved_model_dir)
  saved_model = _read_saved_model(saved_model_dir)
  stored = _stored_values(saved_model_dir)
  config = _config(saved_model_dir)
  input_size = stored.get('model_input_size')
  limits = stored.get('pixel_limits')
  names = stored.get('class_names')
  return {
      'saved_model': saved_model_dir,
      'tensorflow_version':
          saved_model.meta_graphs[0].meta_info_def.tensorflow_version,
      'signatures': _signatures(saved_model),
      'model_input_size': ([int(v) for v in input_size]
                           if input_size is not None else
                           config['input_size']),
      'max_input_pixels': int(limits[0]) if limits is not None else None,
      'max_batch_pixels': int(limits[1]) if limits is not None else None,
      'class_names': ([name.decode('utf-8') for name in names]
                      if names is not None else None),
      'config_path': config['config_path'],
      'config_summary': config['config_summary'],
  }


def config_text(info: Dict[str, Any]) -> Optional[str]:
  """The full text of the stored config of `describe`'s dict (or None)."""
  if not info['config_path']:
    return None
  return experiment_lib.read_config_text(info['config_path'])


def _spec_text(name: str, spec: Dict[str, Any]) -> str:
  shape = ('unknown rank' if spec['shape'] is None else
           '[' + ', '.join('None' if d is None else str(d)
                           for d in spec['shape']) + ']')
  return f'{name}: {spec["dtype"]} {shape}'


def as_text(info: Dict[str, Any]) -> str:
  """`describe`'s dict as lines for a terminal."""
  unknown = '(not stored)'
  lines: List[str] = [f'SavedModel {info["saved_model"]} (written by '
                      f'TensorFlow {info["tensorflow_version"] or "?"})']
  size = info['model_input_size']
  lines.append('Model input size: ' + (f'{size[0]}x{size[1]} (height x '
                                       'width; images of other sizes are '
                                       'resized to fit)' if size else unknown))
  if info['max_input_pixels'] is not None:
    lines.append(f'Limits: {info["max_input_pixels"]} pixels per image, '
                 f'{info["max_batch_pixels"]} per batch (batch size x '
                 'largest height x largest width)')
  names = info['class_names']
  lines.append(f'Classes ({len(names)}): {", ".join(names)}' if names else
               f'Classes: {unknown}')
  if info['config_path']:
    lines.append(f'Experiment config: {info["config_path"]}')
    lines.extend('  ' + line for line in info['config_summary'].splitlines())
  else:
    lines.append('Experiment config: (not stored; exported before the '
                 'config was stored, or not by tools/export_model.py)')
  lines.append('Signatures:')
  for key, signature in info['signatures'].items():
    lines.append(f'  {key}')
    for part in ('inputs', 'outputs'):
      for index, (name, spec) in enumerate(signature[part].items()):
        label = f'{part}:' if index == 0 else ''
        alias = serving_module.DEEPLAB2_ALIASES.get(name)
        note = f" (= {alias}, DeepLab2's name)" if alias else ''
        lines.append(f'    {label:<9}{_spec_text(name, spec)}{note}')
  return '\n'.join(lines)
