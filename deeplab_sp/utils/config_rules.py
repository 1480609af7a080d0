"""Range checks of config fields, written as tables of rules.

A config mistake should stop a run before any work starts, with one message
that names the file, the field and the fix (`ConfigError`). Most checks are
the same few range rules over many fields, so each part of the config lists
its rules as data, e.g.

  rules = (config_rules.positive('channels'),
           config_rules.at_most('channels', 'MAX_CHANNELS'),
           config_rules.non_negative('ffn_channels', '0 = no feed-forward'))
  config_rules.check(path, 'model_options.hypercolumn', options, rules)

and `check` raises on the first field that breaks one. Checks that relate
fields in ways no table says well (schedules, geometry) stay code.
"""

import dataclasses
from typing import Any, Callable, Iterable

# Upper limits of sizes. Each is far above any real setting; a value beyond
# one is most likely a typo that would otherwise surface as an out-of-memory
# error minutes into a run.
LIMITS = {
    'MAX_BATCH_SIZE': 4096,         # Global batch size of a dataset.
    'MAX_CROP_SIDE': 16384,         # Pixels per side of a crop.
    'MAX_CHANNELS': 65536,          # Any width (channels, FFN, MLP).
    'MAX_LAYERS': 1000,             # Layers of one transformer stack.
    # Files a dataset reads at once: each is a thread of tf.data's
    # interleave, and tens of thousands of threads abort the process
    # (pthread_create) instead of failing with an error.
    'MAX_PARALLEL_READS': 1024,
}
MAX_BATCH_SIZE = LIMITS['MAX_BATCH_SIZE']
MAX_CROP_SIDE = LIMITS['MAX_CROP_SIDE']
MAX_CHANNELS = LIMITS['MAX_CHANNELS']
MAX_LAYERS = LIMITS['MAX_LAYERS']
MAX_PARALLEL_READS = LIMITS['MAX_PARALLEL_READS']


class ConfigError(ValueError):
  """A configuration mistake the user can fix; the message says how."""


@dataclasses.dataclass(frozen=True)
class Rule:
  """One field's rule.

  Attributes:
    field: the field's name in the message checked (repeated fields: every
      value is checked).
    holds: whether a value keeps the rule.
    problem: what is wrong when it does not, as a function of the value;
      the error reads '<path>: <prefix>.<field> <problem>'.
  """
  field: str
  holds: Callable[[Any], bool]
  problem: Callable[[Any], str]


def positive(field: str) -> Rule:
  return Rule(field, lambda v: v > 0,
              lambda v: f'must be positive, got {v}. Set it to a value > 0 '
                        '(see its comment in protos/).')


def non_negative(field: str, meaning: str = '') -> Rule:
  """`meaning` says what 0 means, e.g. '0 = a linear projection'."""
  said = f' ({meaning})' if meaning else ''
  return Rule(field, lambda v: v >= 0,
              lambda v: f'must be >= 0{said}, got {v}.')


def at_most(field: str, limit: str) -> Rule:
  """At most LIMITS[limit]; the message names the limit's constant."""
  bound = LIMITS[limit]
  return Rule(field, lambda v: v <= bound,
              lambda v: f'is {v}, above the limit {bound} (experiment.'
                        f'{limit}); it is most likely a typo. Use a smaller '
                        'value.')


def in_unit_interval(field: str, low_open: bool, high_open: bool) -> Rule:
  interval = ('(' if low_open else '[') + '0, 1' + (')' if high_open else ']')

  def holds(v):
    return ((v > 0 if low_open else v >= 0) and
            (v < 1 if high_open else v <= 1))

  return Rule(field, holds, lambda v: f'must be in {interval}, got {v}.')


def width(field: str, meaning: str = '') -> tuple:
  """A channel count: positive (or >= 0 with a `meaning` for 0) and at
  most MAX_CHANNELS."""
  first = non_negative(field, meaning) if meaning else positive(field)
  return first, at_most(field, 'MAX_CHANNELS')


def _values(message, field: str) -> list:
  value = getattr(message, field)
  if isinstance(value, (str, bytes)) or not hasattr(value, '__len__'):
    return [value]
  return list(value)


def check(path: str, prefix: str, message, rules: Iterable[Rule]) -> None:
  """Raises ConfigError for the first value of `message` that breaks one of
  `rules`, naming `path` and the field `prefix.field`."""
  for rule in rules:
    for value in _values(message, rule.field):
      if not rule.holds(value):
        raise ConfigError(f'{path}: {prefix}.{rule.field} '
                          f'{rule.problem(value)}')


def check_choice(path: str, field: str, value, choices) -> None:
  """`value` of `field` is one of `choices` (names: modes, optimizers,
  encoders, ...)."""
  if value not in choices:
    raise ConfigError(f'{path}: unknown {field} {value!r}; use one of '
                      f'{", ".join(choices)}.')


def check_divides(path: str, prefix: str, message, divisor: str,
                  field: str) -> None:
  """`divisor` divides `field` (e.g. heads the channels)."""
  if getattr(message, field) % getattr(message, divisor):
    raise ConfigError(
        f'{path}: {prefix}.{divisor} ({getattr(message, divisor)}) must '
        f'divide {prefix}.{field} ({getattr(message, field)}).')
