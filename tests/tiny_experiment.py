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

The per-pixel baselines start from their shipped tiny configs the same way
(`meta_architecture=...`: configs/synthetic/<name>_tiny.textproto), with
their own FAST widths.
"""

import pathlib
from typing import Any, Mapping, Optional

from google.protobuf import text_format

from deeplab_sp.protos import config_pb2

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
TINY_CONFIG = REPO_ROOT / 'configs' / 'synthetic' / 'sp_transformer_tiny.textproto'
# The shipped tiny config of each meta-architecture.
CONFIGS = {
    'SP_TRANSFORMER': TINY_CONFIG,
    'HYPERCOLUMN_PIXEL_CLASSIFIER': (
        REPO_ROOT / 'configs' / 'synthetic' /
        'hypercolumn_pixel_classifier_tiny.textproto'),
    'DEEPLABV3PLUS': (REPO_ROOT / 'configs' / 'synthetic' /
                      'deeplabv3plus_tiny.textproto'),
}
BASELINES = ('HYPERCOLUMN_PIXEL_CLASSIFIER', 'DEEPLABV3PLUS')

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
# The same for the baselines.
FAST_BY_META_ARCHITECTURE = {
    'SP_TRANSFORMER': FAST,
    'HYPERCOLUMN_PIXEL_CLASSIFIER': {
        'model_options.encoder.tiny_convnet_base_channels': 4,
        'model_options.hypercolumn.channels': 16,
        'model_options.hypercolumn.mlp_hidden_channels': 16,
        'model_options.pixel_classifier.hidden_channels': 16,
    },
    'DEEPLABV3PLUS': {
        'model_options.encoder.tiny_convnet_base_channels': 4,
        'model_options.deeplabv3plus.aspp_channels': 16,
        'model_options.deeplabv3plus.low_level_channels': 4,
        'model_options.deeplabv3plus.decoder_channels': 16,
    },
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
            fast: bool = False,
            meta_architecture: str = 'SP_TRANSFORMER'
           ) -> config_pb2.ExperimentOptions:
  """The shipped tiny ExperimentOptions with `overrides` applied.

  Args:
    overrides: dotted field path -> value (a list for repeated fields).
    fast: apply the FAST widths first (the overrides still win).
    meta_architecture: whose tiny config (a key of CONFIGS).
  """
  experiment = text_format.Parse(CONFIGS[meta_architecture].read_text(),
                                 config_pb2.ExperimentOptions())
  fast_widths = FAST_BY_META_ARCHITECTURE[meta_architecture] if fast else {}
  for dotted, value in {**fast_widths, **(overrides or {})}.items():
    _set(experiment, dotted, value)
  return experiment


def model_options(overrides: Optional[Mapping[str, Any]] = None,
                  fast: bool = True,
                  meta_architecture: str = 'SP_TRANSFORMER'):
  """The tiny ModelOptions; keys of `overrides` are relative to it."""
  prefixed = {f'model_options.{k}': v for k, v in (overrides or {}).items()}
  return options(prefixed, fast=fast,
                 meta_architecture=meta_architecture).model_options
