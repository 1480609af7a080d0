"""The tiny experiment every test builds on: the shipped default config.

Tests do not write models by hand. They start from
configs/synthetic/sp_transformer_tiny.textproto and override only what the
test is about, by dotted field path:

    options = tiny_experiment.options({
        'model_options.superpixel_tokenization.grid_height': 2,
        'train_dataset_options.crop_size': [64, 64],
    })

`FAST` shrinks the widths so a model builds and runs in well under a second;
it keeps the structure (two tokenization layers, self-attention, association).
"""

import pathlib
from typing import Any, Mapping, Optional

from google.protobuf import text_format

from deeplab_sp.protos import config_pb2

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
TINY_CONFIG = REPO_ROOT / 'configs' / 'synthetic' / 'sp_transformer_tiny.textproto'

# Narrower widths than the shipped config, for speed; same structure.
FAST = {
    'model_options.encoder.tiny_convnet_base_channels': 4,
    'model_options.hypercolumn.channels': 16,
    'model_options.hypercolumn.mlp_hidden_channels': 16,
    'model_options.superpixel_tokenization.channels': 16,
    'model_options.superpixel_tokenization.ffn_channels': 32,
    'model_options.superpixel_classifier.channels': 16,
    'model_options.superpixel_classifier.ffn_channels': 32,
}


def _set(message, dotted: str, value: Any) -> None:
  *parents, field = dotted.split('.')
  for name in parents:
    message = getattr(message, name)
  current = getattr(message, field)
  if hasattr(current, 'extend') and not isinstance(current, (str, bytes)):
    del current[:]
    current.extend(value)
  elif hasattr(current, 'CopyFrom') and not isinstance(value, (int, float,
                                                               str, bool)):
    current.CopyFrom(value)
  else:
    setattr(message, field, value)


def options(overrides: Optional[Mapping[str, Any]] = None,
            fast: bool = False) -> config_pb2.ExperimentOptions:
  """The shipped tiny ExperimentOptions with `overrides` applied.

  Args:
    overrides: dotted field path -> value (a list for repeated fields).
    fast: apply FAST first (the overrides still win).
  """
  experiment = text_format.Parse(TINY_CONFIG.read_text(),
                                 config_pb2.ExperimentOptions())
  for dotted, value in {**(FAST if fast else {}), **(overrides or {})}.items():
    _set(experiment, dotted, value)
  return experiment


def model_options(overrides: Optional[Mapping[str, Any]] = None,
                  fast: bool = True):
  """The tiny ModelOptions; keys of `overrides` are relative to it."""
  prefixed = {f'model_options.{k}': v for k, v in (overrides or {}).items()}
  return options(prefixed, fast=fast).model_options
