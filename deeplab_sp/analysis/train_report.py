"""The training benchmark's text report, from its TrainBenchmarkResults."""

from typing import Optional

from deeplab_sp.analysis import train_measurements as measurements
from deeplab_sp.analysis import train_settings as settings_lib


def format_table(results: measurements.TrainBenchmarkResults) -> str:
  """A text report of train_benchmark.run_train_benchmark's results."""
  settings = results.settings
  implementations = results.implementations
  geometry = settings.geometry
  both = results.both
  lines = [
      f'Training step, input {settings.height}x{settings.width}, '
      f'batch {settings.batch}, encoder {settings.encoder}, '
      f'hypercolumn {geometry.hypercolumn_height}x'
      f'{geometry.hypercolumn_width}, superpixels '
      f'{geometry.grid_height}x{geometry.grid_width}, '
      f'{settings.num_layers} tokenization layers x '
      f'{settings.channels} channels, {settings.timing_policy}, '
      f'{settings.device}.',
      "Forward + backward of each component, the encoder's step (with its "
      'optimizer update) and the whole trainer step; median of '
      f'{settings.num_runs} rounds after {max(settings.num_warmup, 1)}'
      ' warm-up, milliseconds' + (
          '; the two steps of each implementation timed in a subprocess of '
          'their own.' if settings.steps_in_subprocess else '.'), '']
  header = f'{"":<16s}' + ''.join(f'{i:>12s}' for i in implementations)
  lines.append(header + (f'{"speedup":>10s}' if both else ''))
  for row in settings_lib.ROWS:
    line = f'{row:<16s}' + ''.join(
        _cell(results.median_ms(i, row), '{:12.1f}') for i in implementations)
    if both:
      speedup = measurements.ratio_value(results.speedup, part=row)
      line += _cell(speedup, '{:9.2f}x', 10)
    lines.append(line)
  lines.append(f'{"step/encoder":<16s}' + ''.join(
      _cell(measurements.ratio_value(results.total_over_encoder,
                                     implementation=i), '{:11.2f}x')
      for i in implementations))
  if settings.measure_memory:
    lines += _memory_lines(results)
  for note in results.notes:
    lines.append('Note: ' + note)
  return '\n'.join(lines)


def _memory_lines(results: measurements.TrainBenchmarkResults) -> list:
  """The peak memory section of the report."""
  settings = results.settings
  implementations = results.implementations
  lines = ['', 'Peak memory of the forward + backward pass (' + (
      'allocator peak' if settings.device.startswith('GPU') else
      'resident-set growth') + ', MiB):']
  header = f'{"":<24s}' + ''.join(f'{i:>12s}' for i in implementations)
  lines.append(header + (f'{"ratio":>10s}' if results.both else ''))
  for precision in settings.precisions:
    for part in settings_lib.MEMORY_PARTS:
      line = f'{part + " " + precision:<24s}' + ''.join(
          _cell(_mib(results.peak_bytes(i, part, precision)), '{:12.1f}')
          for i in implementations)
      if results.both and part == 'tokenization':
        ratio = measurements.ratio_value(results.memory_ratios,
                                         precision=precision)
        line += _cell(ratio, '{:9.2f}x', 10)
      lines.append(line)
    lines.append(f'{"encoder " + precision:<24s}' + _cell(
        _mib(results.encoder_peak_bytes(precision)), '{:12.1f}'))
    lines.append(f'{"step/encoder " + precision:<24s}' + ''.join(
        _cell(measurements.ratio_value(results.step_memory_over_encoder,
                                       implementation=i, precision=precision),
              '{:11.2f}x') for i in implementations))
  lines.append('Weights and AdamW moments (float32, not in the figures '
               f'above): {_mib(results.training_state_bytes):.1f} MiB.')
  return lines


def format_bytes(value: Optional[int]) -> str:
  """'12.3 MiB', or 'n/a' for None (progress lines)."""
  return 'n/a' if value is None else f'{value / 2**20:.1f} MiB'


def _mib(value):
  return None if value is None else value / 2**20


def _cell(value, form, width=12):
  return f'{"n/a":>{width}s}' if value is None else form.format(value)
