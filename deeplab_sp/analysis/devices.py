"""Which device the benchmarks measure: the CPU or a GPU.

The benchmarks (benchmark.py, train_benchmark.py) time on whatever device
TensorFlow places the model on and measure memory the way that device
allows (peak_memory.py). `select` makes that choice explicit: 'auto' (a GPU
when one is visible, else the CPU), 'cpu' (GPUs hidden from this process),
or 'gpu' (an error when there is none). It must run before TensorFlow
places any tensor on a device.
"""

import os

import tensorflow as tf

AUTO, CPU, GPU = 'auto', 'cpu', 'gpu'
DEVICES = (AUTO, CPU, GPU)


def select(device: str) -> None:
  """Makes TensorFlow run on `device` (one of DEVICES).

  Raises:
    ValueError: for an unknown name, or 'gpu' where TensorFlow sees no GPU.
  """
  if device not in DEVICES:
    raise ValueError(f'Unknown device {device!r}: use one of '
                     f'{", ".join(DEVICES)}.')
  gpus = tf.config.list_physical_devices('GPU')
  if device == GPU and not gpus:
    raise ValueError(
        '--device=gpu, but TensorFlow sees no GPU on this machine (install '
        'the CUDA build of TensorFlow, `pip install tensorflow[and-cuda]`, '
        'and check nvidia-smi), or use --device=cpu.')
  if device == CPU and gpus:
    tf.config.set_visible_devices([], 'GPU')


def gpu_in_use() -> bool:
  """Whether TensorFlow places work on a GPU (one is visible)."""
  return bool(tf.config.list_logical_devices('GPU'))


def describe() -> str:
  """'GPU (1)' or 'CPU (2 cores)': the device measured, for the reports."""
  gpus = tf.config.list_logical_devices('GPU')
  if gpus:
    names = sorted({tf.config.experimental.get_device_details(device).get(
        'device_name', 'GPU') for device in tf.config.list_physical_devices(
            'GPU')})
    return f'GPU ({len(gpus)} x {", ".join(names)})'
  return f'CPU ({os.cpu_count()} cores)'
