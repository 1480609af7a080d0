"""The SP-Transformer against the per-pixel baselines: one table.

The paper's claim (arXiv 2309.16889, Table I) is a better accuracy /
efficiency trade-off than per-pixel decoders. Cityscapes cannot be trained
here, so the two sides are measured apart, each model as a pair of configs
of one meta-architecture (model_options.meta_architecture):

- Accuracy: the model's config on the generated dataset (same encoder,
  steps, batch and augmentation for all), trained from scratch once per
  seed (trainer_options.random_seed) by deeplab_sp/trainer/train.py; the
  validation mIoU of the last step, as mean, sample standard deviation and
  each seed's value, and the same of its mean class accuracy (a column of
  its own when the evaluations have it: older eval_results.json do not).
- Cost: the model's config at the Cityscapes geometry (1024x2048,
  ResNet-50): parameters and multiply-adds (model_stats.py), and latency:
  the encoder and the whole model of every model are timed round-robin
  together (timing.round_robin, the benchmark's method), so that all of
  them see the same stretch of a machine whose speed drifts; each figure is
  a median over rounds, total / encoder the median of the per-round ratios.

`tools/compare_models.py` runs both and prints the table; the library here
derives the seeds' configs, reads their results and measures the costs.
"""

import dataclasses
import gc
import json
import os
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence

from absl import logging
from google.protobuf import text_format
import tensorflow as tf

from deeplab_sp import experiment as experiment_lib
from deeplab_sp.analysis import benchmark
from deeplab_sp.analysis import model_stats
from deeplab_sp.analysis import timing
from deeplab_sp.model import builder
from deeplab_sp.trainer import evaluator
from deeplab_sp.utils import io

# How the table names each meta-architecture.
DISPLAY_NAMES = {
    builder.SP_TRANSFORMER: 'SP-Transformer',
    builder.HYPERCOLUMN_PIXEL_CLASSIFIER: 'hypercolumn + pixel MLP',
    builder.DEEPLABV3PLUS: 'DeepLabV3+',
}

# The shipped pairs: (config on the generated data, config at the
# Cityscapes geometry with ResNet-50), one per meta-architecture.
DEFAULT_ACCURACY_CONFIGS = (
    'configs/synthetic/sp_transformer_tiny.textproto',
    'configs/synthetic/hypercolumn_pixel_classifier_tiny.textproto',
    'configs/synthetic/deeplabv3plus_tiny.textproto',
)
DEFAULT_COST_CONFIGS = (
    'configs/cityscapes/sp_transformer_r50.textproto',
    'configs/cityscapes/hypercolumn_pixel_classifier_r50.textproto',
    'configs/cityscapes/deeplabv3plus_r50.textproto',
)
DEFAULT_SEEDS = (1, 2)

# The components every model is timed by.
_TIMED = ('encoder', 'total')


@dataclasses.dataclass(frozen=True)
class ModelPair:
  """One model of the comparison.

  Attributes:
    meta_architecture: the network (builder.META_ARCHITECTURES).
    accuracy_config: its config on the generated dataset.
    cost_config: its config at the Cityscapes geometry.
  """
  meta_architecture: str
  accuracy_config: str
  cost_config: str

  @property
  def name(self) -> str:
    return DISPLAY_NAMES[self.meta_architecture]


def model_pairs(accuracy_configs: Sequence[str],
                cost_configs: Sequence[str]) -> List[ModelPair]:
  """Pairs the configs by position, checking each pair is one network.

  Raises:
    ValueError (experiment.ConfigError for a bad config): lists of different
      lengths, a pair of two networks, two pairs of one network.
  """
  if len(accuracy_configs) != len(cost_configs) or not accuracy_configs:
    raise ValueError(
        f'--accuracy_configs ({len(accuracy_configs)}) and --cost_configs '
        f'({len(cost_configs)}) must list the same number (at least one) of '
        'configs: the i-th of each is one model.')
  pairs = []
  for accuracy, cost in zip(accuracy_configs, cost_configs):
    names = [experiment_lib.load_experiment(path, mode=None).meta_architecture
             for path in (accuracy, cost)]
    if names[0] != names[1]:
      raise ValueError(
          f'{accuracy} is a {names[0]} and {cost} a {names[1]}: the configs '
          'at the same position of --accuracy_configs and --cost_configs '
          'must be one network.')
    pairs.append(ModelPair(names[0], accuracy, cost))
  repeated = {p.meta_architecture for p in pairs
              if [q.meta_architecture for q in pairs].count(
                  p.meta_architecture) > 1}
  if repeated:
    raise ValueError(f'{", ".join(sorted(repeated))} appears more than once; '
                     'give each network once.')
  return pairs


def seed_experiment(config: str, seed: int, training_steps: int = 0
                   ) -> experiment_lib.Experiment:
  """The experiment of `config` trained with `seed`.

  Named `<experiment_name>_seed<seed>`, with trainer_options.random_seed =
  seed and, if `training_steps` > 0, that many steps
  (experiment.set_training_steps).

  Raises:
    experiment.ConfigError: a bad config.
  """
  if seed <= 0:
    raise ValueError(f'Seeds must be positive (0 means "no seed" to the '
                     f'trainer), got {seed}.')
  options = experiment_lib.load_experiment(config).copy_options()
  options.experiment_name = f'{options.experiment_name}_seed{seed}'
  options.trainer_options.random_seed = seed
  if training_steps:
    experiment_lib.set_training_steps(options.trainer_options,
                                      training_steps)
  return experiment_lib.experiment_from_options(options, config)


def missing_data(experiment: experiment_lib.Experiment) -> List[str]:
  """The file patterns of the experiment's datasets that match no file."""
  patterns = [pattern
              for field in ('train_dataset_options', 'eval_dataset_options')
              for pattern in getattr(experiment.options, field).file_pattern]
  return [pattern for pattern in patterns if not tf.io.gfile.glob(pattern)]


def finished_result(experiment_dir: str, steps: int) -> Optional[dict]:
  """eval_results.json of a run that evaluated its last step, else None."""
  path = os.path.join(experiment_dir, evaluator.EVAL_RESULTS_FILENAME)
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    results = json.load(f)
  return results if results.get('step', 0) >= steps else None


def run_accuracy(pairs: Sequence[ModelPair], seeds: Sequence[int],
                 work_dir: str, train_fn: Callable[[str, str], None],
                 training_steps: int = 0,
                 log: Callable[[str], None] = logging.info) -> dict:
  """Trains each pair's accuracy config once per seed; their mIoU spread.

  Each seed's experiment (seed_experiment) is written to
  <work_dir>/configs/<experiment_name>.textproto and trained into
  <work_dir>/experiments/ by `train_fn`, unless that directory already
  holds an evaluation of its last step (a finished run is reused).

  Args:
    pairs: the models.
    seeds: positive training seeds.
    work_dir: where the configs and experiments go.
    train_fn: (config path, model_dir) -> None; trains and evaluates the
      experiment of the config (deeplab_sp/trainer/train.py
      --mode=train_and_eval does), writing eval_results.json.
    training_steps: if > 0, overrides the configs' steps.
    log: progress lines.

  Returns:
    summarize_accuracy's section.

  Raises:
    FileNotFoundError: a config's dataset has no records (before any
      training).
    RuntimeError: a run left no evaluation of its last step.
  """
  model_dir = os.path.join(work_dir, 'experiments')
  runs = [(pair, seed, seed_experiment(pair.accuracy_config, seed,
                                       training_steps))
          for pair in pairs for seed in seeds]
  for _, _, experiment in runs:
    missing = missing_data(experiment)
    if missing:
      raise FileNotFoundError(
          f'{experiment.path}: no file matches {missing[0]}. Build the '
          'records first; for the generated dataset of the shipped configs: '
          'tools/build_synthetic_data.py --output_dir=work_dirs/data/'
          'synthetic (run from the repository root).')
  mious, steps, class_accuracies = {}, {}, {}
  for index, (pair, seed, experiment) in enumerate(runs):
    run_steps = experiment.options.trainer_options.training_number_of_steps
    experiment_dir = os.path.join(model_dir, experiment.name)
    log(f'[{index + 1}/{len(runs)}] {pair.name}, seed {seed}: '
        f'{experiment_dir}')
    result = finished_result(experiment_dir, run_steps)
    if result is None:
      config_path = os.path.join(work_dir, 'configs',
                                 f'{experiment.name}.textproto')
      tf.io.gfile.makedirs(os.path.dirname(config_path))
      io.write_atomically(config_path, (
          f'# {experiment.path} with seed {seed}: tools/compare_models.py.\n'
          + text_format.MessageToString(experiment.options)))
      start = time.time()
      train_fn(config_path, model_dir)
      result = finished_result(experiment_dir, run_steps)
      if result is None:
        raise RuntimeError(f'{experiment_dir} has no evaluation of step '
                           f'{run_steps} after training {config_path}.')
      log(f'trained in {time.time() - start:.0f} s')
    else:
      log(f'reusing its evaluation of step {result["step"]}')
    log(f'val mIoU {result["miou"]:.4f}')
    mious.setdefault(pair.meta_architecture, []).append(result['miou'])
    class_accuracies.setdefault(pair.meta_architecture, []).append(
        result.get('mean_class_accuracy'))
    steps[pair.meta_architecture] = run_steps
  return summarize_accuracy(pairs, seeds, mious, steps, class_accuracies)


def spread(values: Sequence[float]) -> dict:
  """{'mean', 'std' (sample; None for one value), 'values'}."""
  values = [float(v) for v in values]
  return {'mean': statistics.fmean(values),
          'std': statistics.stdev(values) if len(values) > 1 else None,
          'values': values}


def measure_costs(pairs: Sequence[ModelPair], num_warmup: int = 1,
                  num_runs: int = 5, jit_compile: bool = False,
                  progress: Callable[[str], None] = logging.info) -> dict:
  """Parameters, multiply-adds and latency of each pair's cost config.

  Every model is built (random weights: the cost does not depend on them)
  at its config's evaluation size, its multiply-adds counted, and its
  encoder and total calls on one random image recorded; then all of them
  are timed round-robin (see the module docstring).

  Returns:
    JSON-ready {'settings': {...}, 'models': {meta_architecture: {'config',
    'input_size', 'params', 'multiply_adds', 'encoder_ms', 'total_ms',
    'total_over_encoder'}}}.
  """
  functions = {}
  models = {}
  for pair in pairs:
    experiment = experiment_lib.load_experiment(pair.cost_config, mode=None)
    options = experiment.copy_options().model_options
    # Random weights: no pretrained file is needed (nor read).
    options.encoder.ClearField('pretrained_weights')
    size = experiment.input_size
    progress(f'{pair.name}: building {pair.cost_config} at '
             f'{size[0]}x{size[1]}')
    model = builder.build_model(options, experiment.num_classes, size)
    progress(f'{pair.name}: counting multiply-adds')
    flops = model_stats.count_flops(model)
    models[pair.meta_architecture] = {
        'config': pair.cost_config,
        'input_size': list(size),
        'params': int(model.count_params()),
        'multiply_adds': flops // 2,
    }
    calls = benchmark.record_component_inputs(
        model, benchmark.random_images(1, size), _TIMED)
    for component in _TIMED:
      functions[(pair.meta_architecture, component)] = timing.compiled_call(
          *calls[component], jit_compile=jit_compile)
    gc.collect()
  progress(f'Timing {len(functions)} calls round-robin: {num_warmup} '
           f'warm-up and {num_runs} timed round(s)')
  rounds = timing.round_robin(functions, num_warmup, num_runs)
  for name, entry in models.items():
    encoder, total = rounds[(name, 'encoder')], rounds[(name, 'total')]
    entry['encoder_ms'] = statistics.median(encoder)
    entry['total_ms'] = statistics.median(total)
    entry['total_over_encoder'] = statistics.median(
        t / e for t, e in zip(total, encoder))
    progress(f"  {DISPLAY_NAMES[name]}: encoder {entry['encoder_ms']:.1f} "
             f"ms, total {entry['total_ms']:.1f} ms")
  return {
      'settings': {'num_warmup': num_warmup, 'num_runs': num_runs,
                   'execution_mode': (benchmark.XLA if jit_compile
                                      else benchmark.TF_FUNCTION),
                   'device': benchmark.device_name()},
      'models': models,
  }


def _format_miou(entry: Optional[dict]) -> str:
  if not entry:
    return 'not trained'
  text = f"{entry['mean']:.3f}"
  if entry['std'] is not None:
    text += f" ± {entry['std']:.3f}"
  return text + ' (' + ', '.join(f'{v:.3f}' for v in entry['values']) + ')'


def _format_class_accuracy(entry: Optional[dict]) -> str:
  if not entry:
    return 'not trained'
  if not entry.get('mean_class_accuracy'):
    return 'not measured'
  return _format_miou(entry['mean_class_accuracy'])


def format_table(pairs: Sequence[ModelPair], accuracy: Optional[dict],
                 costs: Optional[dict]) -> str:
  """The comparison as a Markdown table, with a line on how it was measured.

  Args:
    pairs: the models, in table order.
    accuracy: summarize_accuracy's result or None.
    costs: measure_costs' result or None.
  """
  accuracy_models = (accuracy or {}).get('models', {})
  cost_models = (costs or {}).get('models', {})
  # The column is left out of tables of older results, which lack it.
  with_class_accuracy = any('mean_class_accuracy' in entry
                            for entry in accuracy_models.values())
  class_header = ' val mean class acc. |' if with_class_accuracy else ''
  lines = [
      f'| model | val mIoU, generated data |{class_header} params | '
      'multiply-adds | encoder ms | total ms | total / encoder |',
      '|---|---|' + ('---|' if with_class_accuracy else '') +
      '---|---|---|---|---|']
  for pair in pairs:
    cost = cost_models.get(pair.meta_architecture)
    entry = accuracy_models.get(pair.meta_architecture)
    row = [pair.name, _format_miou(entry)]
    if with_class_accuracy:
      row.append(_format_class_accuracy(entry))
    if cost:
      row += [f"{cost['params'] / 1e6:.2f}M",
              f"{cost['multiply_adds'] / 1e9:.1f}G",
              f"{cost['encoder_ms']:.0f}", f"{cost['total_ms']:.0f}",
              f"{cost['total_over_encoder']:.2f}x"]
    else:
      row += ['not measured'] * 5
    lines.append('| ' + ' | '.join(row) + ' |')
  notes = []
  if accuracy_models:
    steps = sorted({m['training_steps'] for m in accuracy_models.values()})
    measures = ('mIoU and mean class accuracy' if with_class_accuracy
                else 'mIoU')
    notes.append(
        f"{measures}: mean ± sample std over seeds {accuracy['seeds']} (each "
        f"seed's value), {' / '.join(map(str, steps))} training steps.")
  if costs:
    settings = costs['settings']
    sizes = sorted({tuple(c['input_size']) for c in cost_models.values()})
    size_text = ', '.join(f'{h}x{w}' for h, w in sizes)
    notes.append(
        f'Cost at {size_text} (batch 1): median of {settings["num_runs"]} '
        f'round-robin rounds after {settings["num_warmup"]} warm-up, '
        f'{settings["execution_mode"]}, {settings["device"]}.')
  return '\n'.join(lines + [''] + notes)


def summarize_accuracy(
    pairs: Sequence[ModelPair], seeds: Sequence[int],
    mious: Dict[str, List[float]], steps: Dict[str, int],
    class_accuracies: Optional[Dict[str, List[Optional[float]]]] = None
) -> dict:
  """The 'accuracy' section: each network's mIoU spread over the seeds.

  Args:
    pairs: the models.
    seeds: the seeds each was trained with.
    mious: meta_architecture -> the seeds' val mIoU (networks without any
      are left out).
    steps: meta_architecture -> training steps.
    class_accuracies: meta_architecture -> the seeds' val mean class
      accuracy (None where an evaluation has none); a network gets a
      'mean_class_accuracy' spread only when every seed has one.
  """
  models = {}
  for pair in pairs:
    name = pair.meta_architecture
    if not mious.get(name):
      continue
    models[name] = dict(spread(mious[name]), training_steps=steps[name])
    accuracies = (class_accuracies or {}).get(name)
    if accuracies and all(value is not None for value in accuracies):
      models[name]['mean_class_accuracy'] = spread(accuracies)
  return {'seeds': list(seeds), 'models': models}
