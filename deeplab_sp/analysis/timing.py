"""Wall-clock timing of a model's components on their real inputs.

The benchmark of the SP-Transformer (Table IV of arXiv 2309.16889 breaks
the latency down by component) times each component alone, on the
arguments the model really passes it: `record_calls` runs the model once
and records them; `compiled_call` replays one as a tf.function (optionally
XLA); `round_robin` times several such calls over the same stretch of time.
"""

import time
from typing import Callable, Dict, Mapping, Optional

import tensorflow as tf


def record_calls(model, images: tf.Tensor, layers: Mapping[str, str],
                 training: bool = False) -> Dict[str, tuple]:
  """Runs `model` once and returns each layer's (layer, args, kwargs).

  Args:
    model: called as model(images, training=training).
    images: its input.
    layers: name -> attribute of `model` holding the layer to record.
    training: the mode of that call (and so of the recorded kwargs).

  Returns:
    name -> (layer, args, kwargs) of the layer's first call. A layer the
    model lacks or does not call is left out.
  """
  recorded = {}
  originals = {}
  for name, attribute in layers.items():
    layer = getattr(model, attribute, None)
    if layer is None:
      continue
    originals[name] = layer
    def recording_call(*args, _name=name, _call=layer.call, **kwargs):
      recorded.setdefault(_name, (args, kwargs))
      return _call(*args, **kwargs)
    layer.call = recording_call
  try:
    model(images, training=training)
  finally:
    for layer in originals.values():
      del layer.call  # Back to the class's method.
  return {name: (originals[name], *recorded[name])
          for name in layers if name in recorded}


def synchronize():
  """Waits for the devices to finish the work queued so far."""
  tf.test.experimental.sync_devices()


def time_once(function: Callable[[], object]) -> float:
  """Wall time of one `function()` call in milliseconds, synchronised."""
  start = time.perf_counter()
  function()
  synchronize()
  return 1000.0 * (time.perf_counter() - start)


def compiled_call(layer, args, kwargs, jit_compile: bool):
  """A no-argument tf.function calling layer(*args, **kwargs)."""
  @tf.function(jit_compile=jit_compile, autograph=False)
  def call():
    return layer(*args, **kwargs)
  return call


def round_robin(functions: Mapping[str, Callable[[], object]],
                num_warmup: int, num_runs: int,
                progress: Optional[Callable[[str], None]] = None
               ) -> Dict[str, list]:
  """name -> [ms of each of `num_runs` rounds] for no-argument functions.

  Each function is warmed up first (at least once: tracing, compilation);
  then every round calls each function once. All of them are thus timed
  over the same stretch of time, so a machine whose speed drifts (shared
  CPUs) slows them alike, and per-round ratios stay meaningful.
  `progress`, if given, is called with a line after each function's
  warm-up and each round.
  """
  for name, function in functions.items():
    for _ in range(max(num_warmup, 1)):
      time_once(function)
    if progress:
      progress(f'  warmed up {name}')
  times = {name: [] for name in functions}
  for index in range(num_runs):
    for name, function in functions.items():
      times[name].append(time_once(function))
    if progress:
      progress(f'  round {index + 1}/{num_runs} done')
  return times
