"""Tests of deeplab_sp.utils.config_rules: the rule tables of config checks."""

import pytest

from deeplab_sp.protos import model_pb2
from deeplab_sp.utils import config_rules


def _check(message, *rules):
  config_rules.check('a.textproto', 'model_options.x', message, rules)


def test_each_rule_names_the_file_the_field_and_the_value():
  options = model_pb2.SuperpixelTokenizationOptions(
      num_layers=0, channels=70000, pixel_ffn_channels=-1, dropout_rate=1.0)
  cases = [
      (config_rules.positive('num_layers'),
       r'a.textproto: model_options.x.num_layers must be positive, got 0\.'),
      (config_rules.at_most('channels', 'MAX_CHANNELS'),
       r'model_options.x.channels is 70000, above the limit 65536 '
       r'\(experiment.MAX_CHANNELS\)'),
      (config_rules.non_negative('pixel_ffn_channels', '0 = none'),
       r'pixel_ffn_channels must be >= 0 \(0 = none\), got -1\.'),
      (config_rules.in_unit_interval('dropout_rate', False, True),
       r'dropout_rate must be in \[0, 1\), got 1.0\.'),
  ]
  for rule, message in cases:
    with pytest.raises(config_rules.ConfigError, match=message):
      _check(options, rule)


def test_values_that_keep_the_rules_pass():
  options = model_pb2.SuperpixelTokenizationOptions(
      num_layers=2, channels=64, num_heads=2, dropout_rate=0.0)
  _check(options, *config_rules.width('channels'),
         config_rules.in_unit_interval('dropout_rate', False, True),
         config_rules.positive('num_layers'))
  config_rules.check_divides('p', 'q', options, 'num_heads', 'channels')


def test_every_value_of_a_repeated_field_is_checked():
  options = model_pb2.DeepLabV3PlusOptions(atrous_rates=[3, 0, 9])
  with pytest.raises(config_rules.ConfigError,
                     match='atrous_rates must be positive, got 0'):
    _check(options, config_rules.positive('atrous_rates'))


def test_a_divisor_that_does_not_divide_is_named():
  options = model_pb2.SuperpixelClassifierOptions(channels=64, num_heads=3)
  with pytest.raises(config_rules.ConfigError,
                     match=r'p: q.num_heads \(3\) must divide q.channels '
                           r'\(64\)\.'):
    config_rules.check_divides('p', 'q', options, 'num_heads', 'channels')
