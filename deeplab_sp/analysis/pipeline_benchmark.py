"""Throughput of the input pipeline (images per second), without a model.

Builds the train (or eval) pipeline of an experiment config exactly as the
trainer does (input_pipeline.build_dataset) and times `num_batches` batches
after `warmup_batches` (which fill the prefetch and shuffle buffers).
"""

import dataclasses
import time
from typing import Optional

from deeplab_sp.data import input_pipeline
from deeplab_sp.protos import dataset_pb2

# Batches read before timing starts.
DEFAULT_WARMUP_BATCHES = 5


@dataclasses.dataclass(frozen=True)
class PipelineThroughput:
  """One measurement.

  Attributes:
    images_per_second: timed images / timed seconds.
    batches: number of timed batches.
    batch_size: images per batch.
    seconds: timed wall-clock seconds.
    is_training: whether the training pipeline (augmentation) was timed.
  """
  images_per_second: float
  batches: int
  batch_size: int
  seconds: float
  is_training: bool


def measure_throughput(dataset_options: dataset_pb2.DatasetOptions,
                       is_training: bool = True, num_batches: int = 50,
                       warmup_batches: Optional[int] = None
                       ) -> PipelineThroughput:
  """Times the pipeline of `dataset_options`.

  Args:
    dataset_options: the split's DatasetOptions.
    is_training: time the training pipeline (else evaluation).
    num_batches: batches timed. An evaluation split that ends sooner is
      timed over the batches it has.
    warmup_batches: batches read before timing; None: DEFAULT_WARMUP_BATCHES
      for training, 0 for evaluation (read once, it has few batches).

  Returns:
    The PipelineThroughput.
  """
  dataset = input_pipeline.build_dataset(dataset_options, is_training)
  iterator = iter(dataset)
  batch_size = int(dataset.element_spec['image'].shape[0])
  if warmup_batches is None:
    warmup_batches = DEFAULT_WARMUP_BATCHES if is_training else 0
  for _ in range(warmup_batches):
    next(iterator, None)
  count = 0
  start = time.perf_counter()
  for batch in iterator:
    batch['image'].numpy()  # Make sure the batch is materialised.
    count += 1
    if count >= num_batches:
      break
  seconds = time.perf_counter() - start
  return PipelineThroughput(
      images_per_second=count * batch_size / max(seconds, 1e-9),
      batches=count, batch_size=batch_size, seconds=seconds,
      is_training=is_training)
