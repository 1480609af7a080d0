"""What the training benchmark measures, as typed records.

StepTiming (one timed function of one implementation: every round's
milliseconds, their median, minimum and maximum), PeakMemory (one forward +
backward pass in one precision) and the Ratio figures derived from them make
up TrainBenchmarkResults. train_benchmark.py fills them, train_report.py
prints them, train_child.py's child processes send theirs back as JSON of
the records (dataclasses.asdict), and `--format=json` prints
dataclasses.asdict(TrainBenchmarkResults).
"""

import dataclasses
import statistics
from typing import List, Optional, Sequence

from deeplab_sp.analysis import train_settings as settings_lib
from deeplab_sp.model import local_attention

# How PeakMemory.peak_bytes was measured (see peak_memory.py).
RSS_GROWTH = 'resident_set_growth'
GPU_ALLOCATOR_PEAK = 'gpu_allocator_peak'


@dataclasses.dataclass
class StepTiming:
  """The wall time of one timed function, in milliseconds.

  Attributes:
    implementation: NAIVE or EFFICIENT.
    part: a component (forward + backward pass), 'encoder_step' or 'step'.
    policy: the tf_keras mixed-precision policy it ran under.
    height, width, batch: the input.
    in_subprocess: whether it was timed in a child process (train_child.py).
    rounds_ms: one figure per round (timing.round_robin).
    median_ms, min_ms, max_ms: over the rounds.
  """
  implementation: str
  part: str
  policy: str
  height: int
  width: int
  batch: int
  in_subprocess: bool
  rounds_ms: List[float]
  median_ms: float
  min_ms: float
  max_ms: float

  @classmethod
  def from_rounds(cls, rounds_ms: Sequence[float], **fields) -> 'StepTiming':
    rounds_ms = [float(ms) for ms in rounds_ms]
    return cls(rounds_ms=rounds_ms, median_ms=statistics.median(rounds_ms),
               min_ms=min(rounds_ms), max_ms=max(rounds_ms), **fields)


@dataclasses.dataclass
class PeakMemory:
  """The peak memory of one forward + backward pass.

  Attributes:
    implementation: NAIVE or EFFICIENT (for the encoder, the model it was
      measured in: the encoder is the same in both).
    part: 'encoder', 'tokenization' or 'step' (loss and gradients).
    precision: FLOAT32 or BFLOAT16 (train_settings.py).
    height, width, batch: the input.
    method: RSS_GROWTH (CPU, a child process) or GPU_ALLOCATOR_PEAK.
    peak_bytes: the figure; None where not measured (out of memory, or no
      Linux /proc).
    out_of_memory: whether it needs more memory than the limit.
  """
  implementation: str
  part: str
  precision: str
  height: int
  width: int
  batch: int
  method: str
  peak_bytes: Optional[int]
  out_of_memory: bool = False


@dataclasses.dataclass
class Ratio:
  """One derived figure; which one, the list that holds it says.

  Attributes:
    part: what it is of (a row of ROWS, or 'tokenization', 'step').
    value: the ratio; None where a figure is missing.
    implementation: whose figures; None for NAIVE / EFFICIENT.
    precision: the memory precision; None for times.
  """
  part: str
  value: Optional[float]
  implementation: Optional[str] = None
  precision: Optional[str] = None


@dataclasses.dataclass
class TrainBenchmarkResults:
  """Everything the training benchmark measured.

  Attributes:
    settings: what was measured, on what.
    step_timings: the timed functions (a function that was not timed, as it
      does not fit in memory, has none).
    peak_memory: the memory measurements (none without measure_memory).
    training_state_bytes: the weights and their two AdamW moments, float32
      (not in the peak memory figures).
    notes: what could not be measured, and why.
    speedup: per row, NAIVE ms / EFFICIENT ms (with both implementations).
    total_over_encoder: per implementation, the median over rounds of the
      round's step / encoder step.
    step_memory_over_encoder: per implementation and precision, the step's
      peak over the encoder's.
    memory_ratios: per precision, the tokenization's NAIVE / EFFICIENT peak
      (with both implementations and memory measured).
    memory_ratio: that ratio in float32, if measured.
    mode: 'train' (tools/benchmark.py's --mode).
  """
  settings: settings_lib.RunSettings
  step_timings: List[StepTiming]
  peak_memory: List[PeakMemory]
  training_state_bytes: int
  notes: List[str]
  speedup: List[Ratio] = dataclasses.field(default_factory=list)
  total_over_encoder: List[Ratio] = dataclasses.field(default_factory=list)
  step_memory_over_encoder: List[Ratio] = dataclasses.field(
      default_factory=list)
  memory_ratios: List[Ratio] = dataclasses.field(default_factory=list)
  memory_ratio: Optional[float] = None
  mode: str = 'train'

  @classmethod
  def from_measurements(cls, settings: settings_lib.RunSettings,
                        step_timings: List[StepTiming],
                        peak_memory: List[PeakMemory],
                        training_state_bytes: int, notes: List[str]
                       ) -> 'TrainBenchmarkResults':
    """The results with their ratios derived from the measurements."""
    results = cls(settings, step_timings, peak_memory, training_state_bytes,
                  notes)
    step, encoder_step = settings_lib.STEP, settings_lib.ENCODER_STEP
    precisions = settings.precisions if settings.measure_memory else []
    for i in results.implementations:
      results.total_over_encoder.append(Ratio(step, _median_round_ratio(
          results.timing(i, step), results.timing(i, encoder_step)), i))
      for p in precisions:
        memory = _ratio(results.peak_bytes(i, step, p),
                        results.encoder_peak_bytes(p))
        results.step_memory_over_encoder.append(Ratio(step, memory, i, p))
    if results.both:
      naive, efficient = local_attention.NAIVE, local_attention.EFFICIENT
      for row in settings_lib.ROWS:
        results.speedup.append(Ratio(row, _ratio(
            results.median_ms(naive, row), results.median_ms(efficient, row))))
      tokenization = settings_lib.MEMORY_PARTS[0]
      for p in precisions:
        results.memory_ratios.append(Ratio(tokenization, _ratio(
            results.peak_bytes(naive, tokenization, p),
            results.peak_bytes(efficient, tokenization, p)), precision=p))
      results.memory_ratio = ratio_value(results.memory_ratios,
                                         precision=settings_lib.FLOAT32)
    return results

  @property
  def implementations(self) -> List[str]:
    """The measured implementations, in local_attention's order."""
    return [i for i in local_attention.IMPLEMENTATIONS
            if i in self.settings.implementations]

  @property
  def both(self) -> bool:
    """Whether NAIVE and EFFICIENT are compared."""
    return len(self.implementations) == 2

  def timing(self, implementation: str, part: str) -> Optional[StepTiming]:
    return _find(self.step_timings, implementation=implementation,
                 part=part)

  def median_ms(self, implementation: str, part: str) -> Optional[float]:
    timing = self.timing(implementation, part)
    return timing.median_ms if timing else None

  def peak_bytes(self, implementation: str, part: str,
                 precision: str) -> Optional[int]:
    peak = _find(self.peak_memory, implementation=implementation, part=part,
                 precision=precision)
    return peak.peak_bytes if peak else None

  def encoder_peak_bytes(self, precision: str) -> Optional[int]:
    peak = _find(self.peak_memory, part=settings_lib.ENCODER,
                 precision=precision)
    return peak.peak_bytes if peak else None


def ratio_value(ratios: List[Ratio], **fields) -> Optional[float]:
  """The value of the Ratio of `ratios` with these fields, or None."""
  ratio = _find(ratios, **fields)
  return ratio.value if ratio else None


def _find(records, **fields):
  """The first record whose attributes equal `fields`, or None."""
  for record in records:
    if all(getattr(record, k) == v for k, v in fields.items()):
      return record
  return None


def _median_round_ratio(numerator: Optional[StepTiming],
                        denominator: Optional[StepTiming]):
  """The median over rounds of the round's ratio of two timings."""
  if not numerator or not denominator:
    return None
  return statistics.median(
      n / d for n, d in zip(numerator.rounds_ms, denominator.rounds_ms))


def _ratio(numerator, denominator):
  return numerator / denominator if numerator and denominator else None
