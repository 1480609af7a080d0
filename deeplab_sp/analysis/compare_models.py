"""The SP-Transformer against the per-pixel baselines: one table.

The paper's claim (arXiv 2309.16889, Table I) is a better accuracy /
efficiency trade-off than per-pixel decoders. Cityscapes cannot be trained
here, so the two sides are measured apart, each model as a config of one
meta-architecture (model_options.meta_architecture):

- Accuracy: the model's config on a trainable dataset (the generated one by
  default, CamVid's configs/camvid/*_tiny.textproto or any other), trained
  from scratch once per seed (trainer_options.random_seed) by
  deeplab_sp/trainer/train.py, and once per seed for each variant: an
  ablation given as a text-format ExperimentOptions fragment applied on top
  of the config (experiment.apply_overrides). A row of the table is a
  (model, variant), the config itself being the variant 'base'. A variant
  skips the configs whose network does not read a model_options message it
  sets (superpixel_association only applies to the SP-Transformer); any
  other problem of the resulting config is an error. Per row, over the
  seeds (mean, sample standard deviation and each seed's value): the
  validation mIoU of the last step, its mean class accuracy (when the
  evaluations have it: older eval_results.json do not), the IoU of chosen
  thin classes (by name), the superpixel metrics of SP-Transformer runs
  (ASA, undersegmentation error, connected fraction) and each run's training
  wall time (that of the invocation which finished it, for a resumed run).
- Cost: the model's config at the Cityscapes geometry (1024x2048,
  ResNet-50), paired by position with its accuracy config: parameters and
  multiply-adds (model_stats.py), and latency: the encoder and the whole
  model of every model are timed round-robin together
  (timing.round_robin, the benchmark's method), so that all of them see the
  same stretch of a machine whose speed drifts; each figure is a median over
  rounds, total / encoder the median of the per-round ratios. Variants are
  not measured: the cost columns are the base configs'.

Each run (config, variant, seed) is the experiment
`<experiment_name>_<variant>_seed<seed>`; the config it was trained with is
kept in its directory (RUN_CONFIG_FILENAME) and a finished run is reused
only when that config is identical, so that a changed variant, step count
or config is never read from an older run's results.

`tools/compare_models.py` runs both and prints the table; the library here
derives the runs' configs, reads their results and measures the costs.
"""

import dataclasses
import gc
import json
import os
import re
import statistics
import time
from typing import Callable, List, Optional, Sequence

from absl import logging
from google.protobuf import text_format
import tensorflow as tf

from deeplab_sp import experiment as experiment_lib
from deeplab_sp.analysis import benchmark
from deeplab_sp.analysis import model_stats
from deeplab_sp.analysis import timing
from deeplab_sp.model import builder
from deeplab_sp.model.kernels import profile
from deeplab_sp.protos import config_pb2
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

# The config a run was trained with, and its training wall time, kept in
# the run's directory: the key of its reuse, and its time when reused.
RUN_CONFIG_FILENAME = 'compare_models_config.textproto'
RUN_TIME_FILENAME = 'compare_models_time.json'

# The superpixel metrics of eval_results.json's 'superpixels' section that
# the table shows, with their column headers.
SUPERPIXEL_COLUMNS = (
    ('asa', 'ASA'),
    ('undersegmentation_error', 'undersegm. error'),
    ('connected_fraction', 'connected'),
)

# The components every model is timed by.
_TIMED = ('encoder', 'total')

# Variant names become part of experiment (directory) names.
_VARIANT_NAME = re.compile(r'^[A-Za-z0-9_.\-]+$')


@dataclasses.dataclass(frozen=True)
class Variant:
  """An ablation: a fragment applied on top of every config it fits.

  Attributes:
    name: the table's and the runs' name of it.
    override: text-format ExperimentOptions (experiment.apply_overrides);
      empty for the configs as they are.
  """
  name: str
  override: str = ''


BASE = Variant('base')


def parse_variants(texts: Sequence[str]) -> List[Variant]:
  """[BASE] followed by the --variants `NAME:FRAGMENT` values.

  Raises:
    ValueError: a value without a name or a fragment, a name that cannot be
      part of an experiment name, a repeated name or 'base', or a fragment
      that is no ExperimentOptions text.
  """
  variants = [BASE]
  for text in texts:
    name, separator, override = text.partition(':')
    name, override = name.strip(), override.strip()
    if not separator or not name or not override:
      raise ValueError(
          f'--variants {text!r}: write NAME:FRAGMENT, e.g. --variants='
          '"per_superpixel:model_options { superpixel_association { '
          'upsampling: PER_SUPERPIXEL } }".')
    if not _VARIANT_NAME.match(name):
      raise ValueError(f'--variants name {name!r}: use letters, digits, '
                       "'_', '.' and '-' only (it names the runs).")
    if name in [v.name for v in variants]:
      raise ValueError(f'--variants name {name!r} is given twice or is the '
                       "reserved 'base' (the configs as they are); rename it.")
    try:
      text_format.Parse(override, config_pb2.ExperimentOptions())
    except text_format.ParseError as e:
      raise ValueError(f'--variants {name}: {e}; write text-format '
                       'ExperimentOptions fields (protos/*.proto).') from None
    variants.append(Variant(name, override))
  return variants


def _foreign_model_options(options: config_pb2.ExperimentOptions,
                           override: str) -> List[str]:
  """The model_options messages `override` sets that the network of
  `options` (with `override` applied) does not read."""
  fragment = text_format.Parse(override, config_pb2.ExperimentOptions())
  network = builder.meta_architecture(options.model_options.meta_architecture)
  return [field.name
          for field, _ in fragment.model_options.ListFields()
          if field.message_type is not None
          and field.name not in builder.NETWORKS[network].options_read]


def variant_applies(config: str, variant: Variant) -> bool:
  """Whether `variant` is run on `config` (see the module docstring)."""
  if not variant.override:
    return True
  options = experiment_lib.load_experiment(config).copy_options()
  experiment_lib.apply_overrides(options, variant.override)
  return not _foreign_model_options(options, variant.override)


@dataclasses.dataclass(frozen=True)
class ModelPair:
  """One model of the comparison.

  Attributes:
    meta_architecture: the network (builder.META_ARCHITECTURES).
    accuracy_config: its config on a trainable dataset.
    cost_config: its config at the Cityscapes geometry; None in a study of
      the accuracy alone.
  """
  meta_architecture: str
  accuracy_config: str
  cost_config: Optional[str] = None

  @property
  def name(self) -> str:
    return DISPLAY_NAMES[self.meta_architecture]


def model_pairs(accuracy_configs: Sequence[str],
                cost_configs: Optional[Sequence[str]]) -> List[ModelPair]:
  """Pairs the configs by position, checking each pair is one network.

  Args:
    accuracy_configs: one config per model.
    cost_configs: one per model, in the same order; None for a study of
      the accuracy alone (no pairing: a network may then appear twice, e.g.
      on two datasets).

  Raises:
    ValueError (experiment.ConfigError for a bad config): lists of different
      lengths, a pair of two networks, two pairs of one network, two
      accuracy configs of one experiment_name (their runs would collide).
  """
  if not accuracy_configs or (
      cost_configs is not None and len(accuracy_configs) != len(cost_configs)):
    raise ValueError(
        f'--accuracy_configs ({len(accuracy_configs)}) and --cost_configs '
        f'({len(cost_configs or ())}) must list the same number (at least '
        'one) of configs: the i-th of each is one model.')
  pairs = []
  names = {}
  for index, accuracy in enumerate(accuracy_configs):
    experiment = experiment_lib.load_experiment(accuracy, mode=None)
    names.setdefault(experiment.name, []).append(accuracy)
    network = experiment.meta_architecture
    if cost_configs is None:
      pairs.append(ModelPair(network, accuracy))
      continue
    cost = cost_configs[index]
    cost_network = experiment_lib.load_experiment(
        cost, mode=None).meta_architecture
    if network != cost_network:
      raise ValueError(
          f'{accuracy} is a {network} and {cost} a {cost_network}: the '
          'configs at the same position of --accuracy_configs and '
          '--cost_configs must be one network.')
    pairs.append(ModelPair(network, accuracy, cost))
  if cost_configs is not None:
    networks = [p.meta_architecture for p in pairs]
    repeated = {n for n in networks if networks.count(n) > 1}
    if repeated:
      raise ValueError(
          f'{", ".join(sorted(repeated))} appears more than once; give each '
          'network once (or run --stages=accuracy, which pairs no cost '
          'configs).')
  for name, configs in names.items():
    if len(configs) > 1:
      raise ValueError(
          f'{" and ".join(configs)} have one experiment_name {name!r}: give '
          'each of --accuracy_configs its own (it names their runs).')
  return pairs


def seed_experiment(config: str, seed: int, training_steps: int = 0,
                    variant: Variant = BASE) -> experiment_lib.Experiment:
  """The experiment of `config` with `variant`, trained with `seed`.

  Named `<experiment_name>_<variant>_seed<seed>`, with
  trainer_options.random_seed = seed and, if `training_steps` > 0, that
  many steps (experiment.set_training_steps, after the variant).

  Raises:
    ValueError: seed <= 0, or a variant that does not apply to the config
      (variant_applies).
    experiment.ConfigError: a bad config, or a variant that makes it one.
  """
  if seed <= 0:
    raise ValueError(f'Seeds must be positive (0 means "no seed" to the '
                     f'trainer), got {seed}.')
  options = experiment_lib.load_experiment(config).copy_options()
  if variant.override:
    experiment_lib.apply_overrides(options, variant.override)
    foreign = _foreign_model_options(options, variant.override)
    if foreign:
      raise ValueError(
          f'--variants {variant.name} sets model_options.{foreign[0]}, which '
          f'the network of {config} does not read: it does not apply there.')
  options.experiment_name = (
      f'{options.experiment_name}_{variant.name}_seed{seed}')
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


def run_config_text(experiment: experiment_lib.Experiment) -> str:
  """The text that keys the reuse of the experiment's run."""
  return text_format.MessageToString(experiment.options)


def check_reusable(experiment_dir: str, config_text: str) -> None:
  """Refuses a run directory that holds a run of another config.

  Resuming it would continue another config's checkpoints, and its results
  would be read as this config's.

  Raises:
    RuntimeError: `experiment_dir` is not empty and its RUN_CONFIG_FILENAME
      is missing or differs from `config_text`.
  """
  if (not tf.io.gfile.isdir(experiment_dir)
      or not tf.io.gfile.listdir(experiment_dir)):
    return
  path = os.path.join(experiment_dir, RUN_CONFIG_FILENAME)
  stored = None
  if tf.io.gfile.exists(path):
    with tf.io.gfile.GFile(path) as f:
      stored = f.read()
  if stored != config_text:
    state = 'differs' if stored is not None else 'is missing'
    raise RuntimeError(
        f'{experiment_dir} holds a run of another config (its '
        f'{RUN_CONFIG_FILENAME} {state}): delete that directory or choose '
        'another --work_dir.')


def _read_training_seconds(experiment_dir: str) -> Optional[float]:
  path = os.path.join(experiment_dir, RUN_TIME_FILENAME)
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    return json.load(f).get('training_seconds')


def run_accuracy(pairs: Sequence[ModelPair], seeds: Sequence[int],
                 work_dir: str, train_fn: Callable[[str, str], None],
                 training_steps: int = 0,
                 log: Callable[[str], None] = logging.info,
                 variants: Sequence[Variant] = (BASE,),
                 thin_classes: Sequence[str] = ()) -> dict:
  """Trains each (pair, variant) once per seed; the rows of the table.

  Each run's experiment (seed_experiment) is written to
  <work_dir>/configs/<experiment_name>.textproto and trained into
  <work_dir>/experiments/<experiment_name> by `train_fn`, unless that
  directory already holds an evaluation of its last step by the same config
  (RUN_CONFIG_FILENAME; a finished run is reused, an interrupted one
  resumes). Every check is done before any training.

  Args:
    pairs: the models.
    seeds: positive training seeds.
    work_dir: where the configs and experiments go.
    train_fn: (config path, model_dir) -> None; trains and evaluates the
      experiment of the config (deeplab_sp/trainer/train.py
      --mode=train_and_eval does), writing eval_results.json.
    training_steps: if > 0, overrides the configs' steps.
    log: progress lines.
    variants: parse_variants' list; each runs on the configs it applies to
      (variant_applies).
    thin_classes: class names whose IoU the rows show.

  Returns:
    summarize_runs' section.

  Raises:
    ValueError: a variant that applies to no config, a thin class that no
      evaluated dataset has.
    FileNotFoundError: a config's dataset has no records.
    RuntimeError: a run directory of another config (check_reusable); a run
      left no evaluation of its last step.
  """
  model_dir = os.path.join(work_dir, 'experiments')
  rows = []
  for variant in variants:
    applied = [pair for pair in pairs
               if variant_applies(pair.accuracy_config, variant)]
    if not applied:
      raise ValueError(
          f'--variants {variant.name} applies to none of --accuracy_configs: '
          'it sets model_options of a network none of them is.')
  for pair in pairs:
    for variant in variants:
      if not variant_applies(pair.accuracy_config, variant):
        log(f'{pair.name} ({pair.accuracy_config}): variant {variant.name} '
            'does not apply, skipped.')
        continue
      rows.append((pair, variant, [
          seed_experiment(pair.accuracy_config, seed, training_steps, variant)
          for seed in seeds]))
  class_names = {name for _, _, experiments in rows
                 for experiment in experiments
                 if experiment.eval_dataset is not None
                 for name in experiment.eval_dataset.class_names}
  unknown = [name for name in thin_classes if name not in class_names]
  if unknown:
    raise ValueError(
        f'--thin_classes {", ".join(unknown)}: no evaluated dataset has such '
        f'a class; they have {", ".join(sorted(class_names))}.')
  for _, _, experiments in rows:
    for experiment in experiments:
      missing = missing_data(experiment)
      if missing:
        raise FileNotFoundError(
            f'{experiment.path}: no file matches {missing[0]}. Build the '
            'records first; for the generated dataset of the shipped configs: '
            'tools/build_synthetic_data.py --output_dir=work_dirs/data/'
            'synthetic (run from the repository root); for CamVid: '
            'docs/datasets.md, "Your own data".')
      check_reusable(os.path.join(model_dir, experiment.name),
                     run_config_text(experiment))
  num_runs = sum(len(experiments) for _, _, experiments in rows)
  index = 0
  summaries = []
  for pair, variant, experiments in rows:
    results, seconds = [], []
    for seed, experiment in zip(seeds, experiments):
      index += 1
      run_steps = experiment.options.trainer_options.training_number_of_steps
      experiment_dir = os.path.join(model_dir, experiment.name)
      log(f'[{index}/{num_runs}] {pair.name}, {variant.name}, seed {seed}: '
          f'{experiment_dir}')
      result = finished_result(experiment_dir, run_steps)
      if result is None:
        config_path = os.path.join(work_dir, 'configs',
                                   f'{experiment.name}.textproto')
        tf.io.gfile.makedirs(os.path.dirname(config_path))
        config_text = run_config_text(experiment)
        io.write_atomically(config_path, (
            f'# {experiment.path}, variant {variant.name}, seed {seed}: '
            f'tools/compare_models.py.\n' + config_text))
        # Written first: an interrupted run resumes only with this config.
        tf.io.gfile.makedirs(experiment_dir)
        io.write_atomically(
            os.path.join(experiment_dir, RUN_CONFIG_FILENAME), config_text)
        start = time.time()
        train_fn(config_path, model_dir)
        result = finished_result(experiment_dir, run_steps)
        if result is None:
          raise RuntimeError(f'{experiment_dir} has no evaluation of step '
                             f'{run_steps} after training {config_path}.')
        elapsed = time.time() - start
        io.write_atomically(os.path.join(experiment_dir, RUN_TIME_FILENAME),
                            json.dumps({'training_seconds': elapsed}))
        log(f'trained in {elapsed:.0f} s')
      else:
        log(f'reusing its evaluation of step {result["step"]}')
      log(f'val mIoU {result["miou"]:.4f}')
      results.append(result)
      seconds.append(_read_training_seconds(experiment_dir))
    summaries.append({
        'model': experiments[0].meta_architecture,
        'config': pair.accuracy_config,
        'experiment_name': experiment_lib.load_experiment(
            pair.accuracy_config, mode=None).name,
        'variant': variant.name,
        'override': variant.override,
        'training_steps':
            experiments[0].options.trainer_options.training_number_of_steps,
        'results': results,
        'training_seconds': seconds,
    })
  return summarize_runs(summaries, seeds, thin_classes)


def spread(values: Sequence[float]) -> dict:
  """{'mean', 'std' (sample; None for one value), 'values'}."""
  values = [float(v) for v in values]
  return {'mean': statistics.fmean(values),
          'std': statistics.stdev(values) if len(values) > 1 else None,
          'values': values}


def _spread_if_all(values: Sequence[Optional[float]]) -> Optional[dict]:
  """spread(values), or None when any is missing (an older evaluation, a
  class absent from the split)."""
  if not values or any(value is None for value in values):
    return None
  return spread(values)


def summarize_runs(runs: Sequence[dict], seeds: Sequence[int],
                   thin_classes: Sequence[str] = ()) -> dict:
  """The 'accuracy' section: each row's spreads over the seeds.

  Args:
    runs: one dict per row (model, variant): 'model' (meta_architecture),
      'config', 'experiment_name' (the config's), 'variant', 'override',
      'training_steps', 'results' (the seeds' eval_results.json) and
      'training_seconds' (the seeds' training wall times, None unknown).
    seeds: the seeds each row was trained with.
    thin_classes: the class names whose IoU each row gets.

  Returns:
    JSON-ready {'seeds', 'thin_classes', 'rows': [{'model', 'config',
    'experiment_name', 'variant', 'override', 'training_steps',
    'training_seconds', 'mean', 'std', 'values' (val mIoU),
    'thin_class_iou': {class: spread or None}, and when every seed has it
    'mean_class_accuracy' and 'superpixels' ({metric: spread})}]}.
  """
  rows = []
  for run in runs:
    results = run['results']
    row = {key: run[key] for key in (
        'model', 'config', 'experiment_name', 'variant', 'override',
        'training_steps', 'training_seconds')}
    row.update(spread([result['miou'] for result in results]))
    accuracy = _spread_if_all(
        [result.get('mean_class_accuracy') for result in results])
    if accuracy:
      row['mean_class_accuracy'] = accuracy
    row['thin_class_iou'] = {
        name: _spread_if_all([result.get('per_class_iou', {}).get(name)
                              for result in results])
        for name in thin_classes}
    superpixels = {
        metric: _spread_if_all([result.get('superpixels', {}).get(metric)
                                for result in results])
        for metric, _ in SUPERPIXEL_COLUMNS}
    if any(superpixels.values()):
      row['superpixels'] = superpixels
    rows.append(row)
  return {'seeds': list(seeds), 'thin_classes': list(thin_classes),
          'rows': rows}


def measure_costs(pairs: Sequence[ModelPair], num_warmup: int = 1,
                  num_runs: int = 5, jit_compile: bool = False,
                  progress: Callable[[str], None] = logging.info) -> dict:
  """Parameters, multiply-adds and latency of each pair's cost config.

  Pairs without one (cost_config None) are left out.

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
    if pair.cost_config is None:
      continue
    experiment = experiment_lib.load_experiment(pair.cost_config, mode=None)
    options = experiment.copy_options().model_options
    # Random weights: no pretrained file is needed (nor read).
    options.encoder.ClearField('pretrained_weights')
    size = experiment.input_size
    progress(f'{pair.name}: building {pair.cost_config} at '
             f'{size[0]}x{size[1]}')
    model = builder.build_model(options, experiment.num_classes, size)
    progress(f'{pair.name}: counting multiply-adds')
    flops = model_stats.count_flops(builder.create_model(
        options, experiment.num_classes, size, kernels=profile.SERVING))
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


def _format_spread(entry: Optional[dict]) -> str:
  if not entry:
    return 'n/a'
  text = f"{entry['mean']:.3f}"
  if entry['std'] is not None:
    text += f" ± {entry['std']:.3f}"
  return text + ' (' + ', '.join(f'{v:.3f}' for v in entry['values']) + ')'


def _format_seconds(row: dict) -> str:
  seconds = row.get('training_seconds')
  if not seconds:
    return 'unknown'
  return ', '.join('?' if s is None else f'{s:.0f}' for s in seconds)


def _join_words(words: Sequence[str]) -> str:
  """'a', 'a and b', 'a, b and c'."""
  return (', '.join(words[:-1]) + ' and ' + words[-1] if len(words) > 1
          else words[0])


def accuracy_rows(accuracy: Optional[dict]) -> List[dict]:
  """The rows of an 'accuracy' section, also of one by an older version
  (keyed by meta_architecture, the configs as they are)."""
  if not accuracy:
    return []
  if 'rows' in accuracy:
    return list(accuracy['rows'])
  return [dict(entry, model=name, variant=BASE.name)
          for name, entry in accuracy.get('models', {}).items()]


def _table_rows(pairs: Sequence[ModelPair], rows: Sequence[dict]
               ) -> List[tuple]:
  """(pair or None, row or None) in table order: each pair's rows (a None
  row when it has none), then the rows of no pair."""
  ordered, used = [], set()
  for pair in pairs:
    matched = [index for index, row in enumerate(rows)
               if index not in used and row['model'] == pair.meta_architecture
               and row.get('config', pair.accuracy_config)
               == pair.accuracy_config]
    used.update(matched)
    ordered += [(pair, rows[index]) for index in matched] or [(pair, None)]
  ordered += [(None, row) for index, row in enumerate(rows)
              if index not in used]
  return ordered


def format_table(pairs: Sequence[ModelPair], accuracy: Optional[dict],
                 costs: Optional[dict]) -> str:
  """The study as a Markdown table, with lines on how it was measured.

  A row per (model, variant) of `accuracy` (the pairs without any: one 'not
  trained' row); columns for the mean class accuracy and the superpixel
  metrics when a row has them, one per thin class, and the cost columns
  when `costs` is given (the base configs' only).

  Args:
    pairs: the models, in table order.
    accuracy: summarize_runs' result (or an older version's) or None.
    costs: measure_costs' result or None.
  """
  rows = accuracy_rows(accuracy)
  thin_classes = (accuracy or {}).get('thin_classes', [])
  cost_models = (costs or {}).get('models', {})
  with_class_accuracy = any('mean_class_accuracy' in row for row in rows)
  with_superpixels = any('superpixels' in row for row in rows)
  header = ['model', 'variant', 'val mIoU']
  if with_class_accuracy:
    header.append('val mean class acc.')
  header += [f'IoU {class_name}' for class_name in thin_classes]
  if with_superpixels:
    header += [title for _, title in SUPERPIXEL_COLUMNS]
  if rows:
    header.append('train s / run')
  if costs:
    header += ['params', 'multiply-adds', 'encoder ms', 'total ms',
               'total / encoder']
  lines = ['| ' + ' | '.join(header) + ' |',
           '|' + '---|' * len(header)]
  # Two configs of one network (e.g. on two datasets) are told apart by
  # their experiment names.
  configs_of = {}
  for row in rows:
    configs_of.setdefault(row['model'], set()).add(row.get('experiment_name'))
  for pair, row in _table_rows(pairs, rows):
    network = row['model'] if row else pair.meta_architecture
    name = DISPLAY_NAMES[network]
    if row and len(configs_of[network]) > 1:
      name += f" ({row.get('experiment_name')})"
    variant = row['variant'] if row else BASE.name
    cells = [name, variant]
    if row is None:
      cells += ['not trained'] * (len(header) - 2 - (5 if costs else 0))
    else:
      cells.append(_format_spread(row))
      if with_class_accuracy:
        cells.append(_format_spread(row.get('mean_class_accuracy')))
      cells += [_format_spread(row.get('thin_class_iou', {}).get(class_name))
                for class_name in thin_classes]
      if with_superpixels:
        superpixels = row.get('superpixels', {})
        cells += [_format_spread(superpixels.get(metric))
                  for metric, _ in SUPERPIXEL_COLUMNS]
      cells.append(_format_seconds(row))
    if costs:
      cost = cost_models.get(network) if variant == BASE.name else None
      if cost:
        cells += [f"{cost['params'] / 1e6:.2f}M",
                  f"{cost['multiply_adds'] / 1e9:.1f}G",
                  f"{cost['encoder_ms']:.0f}", f"{cost['total_ms']:.0f}",
                  f"{cost['total_over_encoder']:.2f}x"]
      else:
        cells += ['not measured'] * 5
    lines.append('| ' + ' | '.join(cells) + ' |')
  notes = []
  if rows:
    steps = sorted({row['training_steps'] for row in rows})
    measures = ['mIoU']
    if with_class_accuracy:
      measures.append('mean class accuracy')
    if thin_classes:
      measures.append('class IoU')
    if with_superpixels:
      measures.append('superpixel metrics')
    notes.append(
        f"{_join_words(measures)}: mean ± sample std over seeds "
        f"{accuracy['seeds']} (each seed's value; n/a: not measured by every "
        f"seed), {' / '.join(map(str, steps))} training steps; train s / "
        "run: each seed's training wall time (? : not recorded).")
    variants = {row['variant']: row.get('override') for row in rows
                if row['variant'] != BASE.name}
    for variant, override in variants.items():
      notes.append(f'Variant {variant}: `{override}`.')
  if costs:
    settings = costs['settings']
    sizes = sorted({tuple(c['input_size']) for c in cost_models.values()})
    size_text = ', '.join(f'{h}x{w}' for h, w in sizes)
    notes.append(
        f'Cost at {size_text} (batch 1) of the base configs: median of '
        f'{settings["num_runs"]} round-robin rounds after '
        f'{settings["num_warmup"]} warm-up, {settings["execution_mode"]}, '
        f'{settings["device"]}.')
  return '\n'.join(lines + [''] + notes)
