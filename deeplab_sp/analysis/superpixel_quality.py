"""Superpixel quality of a trained SP-Transformer next to classic baselines.

tools/superpixel_quality.py runs `run`: it reads a split with the project's
evaluation input pipeline (labels mapped to train ids, ignore 255, padding
as in evaluation), and measures (deeplab_sp/trainer/superpixel_metrics.py)
the superpixels of these methods on the same images:

  learned: the model restored from the checkpoint; its 'superpixel_ids'
    are the hard superpixels of the SP-Transformer paper (arXiv 2309.16889,
    eq. 7): each pixel's argmax over the 9 neighbouring superpixels.
  init: the same model at initialisation (untrained; weights drawn with a
    fixed seed, `INIT_SEED`; the encoder's pretrained file is not read): the
    control that says what training changed.
  grid: the regular Hs x Ws grid the tokenizer starts from, each cell
    input_size / (Hs, Ws) pixels.
  slic: SLIC (Achanta et al. 2012, "SLIC superpixels compared to
    state-of-the-art superpixel methods"), scikit-image's
    `segmentation.slic` on the RGB image (CIELAB) with n_segments = Hs * Ws,
    compactness `SLIC_COMPACTNESS`, start_label=0 and its connectivity
    step (enforce_connectivity). That step merges the fragments SLIC leaves
    on textured images into their neighbours, and can return far fewer
    superpixels than asked (about half on the synthetic dataset). With
    `match_count` (the default), n_segments is therefore raised in
    proportion to the shortfall until SLIC returns at least Hs * Ws
    superpixels, then bisected between the last n_segments below and the
    first at or above (at most `SLIC_MAX_RUNS` runs per image); the run
    with the fewest superpixels >= Hs * Ws is kept (the most, if none
    reaches it).

The methods thus have about the same number of superpixels;
`num_superpixels` reports each method's mean.
"""

import io
import json
import os
import sys
from typing import Callable, Dict, Optional, Sequence, Tuple

from matplotlib import figure as figure_lib
from matplotlib.backends import backend_agg
import numpy as np
from skimage import segmentation
import tensorflow as tf
import tf_keras

from deeplab_sp import experiment as experiment_lib
from deeplab_sp import visualization
from deeplab_sp.data import dataset_info
from deeplab_sp.data import input_pipeline
from deeplab_sp.export import export_lib
from deeplab_sp.model import builder
from deeplab_sp.protos import dataset_pb2
from deeplab_sp.trainer import superpixel_metrics
from deeplab_sp.utils import io as io_lib

LEARNED = 'learned'
BASELINES = ('grid', 'slic', 'init')
DEFAULT_BASELINES = ('grid', 'slic', 'init')
SPLITS = ('val', 'train')
# SLIC's weight of spatial distance against CIELAB colour distance (10 is
# scikit-image's default for CIELAB input and the usual choice for SLIC).
SLIC_COMPACTNESS = 10.0
# Runs of SLIC per image at most when matching the superpixel count.
SLIC_MAX_RUNS = 6
# Seed of the untrained control's weights.
INIT_SEED = 0
DEFAULT_NUM_FIGURE_IMAGES = 4
DEFAULT_LOG_EVERY = 16

_METRIC_LABELS = {
    'asa': 'ASA (higher is better)',
    'boundary_recall': 'boundary recall',
    'boundary_precision': 'boundary precision',
    'undersegmentation_error': 'undersegmentation error (lower)',
    'num_superpixels': 'superpixels per image',
    'connected_fraction': 'connected fraction',
}


def parse_baselines(names: Sequence[str]) -> Tuple[str, ...]:
  """Validated, de-duplicated baseline names in the given order."""
  result = []
  for name in names:
    name = name.strip()
    if not name:
      continue
    if name not in BASELINES:
      raise ValueError(f'Unknown baseline {name!r} in --baselines; use any '
                       f'of {",".join(BASELINES)}.')
    if name not in result:
      result.append(name)
  return tuple(result)


def split_dataset_options(options, split: str, input_size: Sequence[int],
                          num_images: int = 0) -> dataset_pb2.DatasetOptions:
  """Evaluation DatasetOptions of `split` ('val': eval_dataset_options;
  'train': the train files read like evaluation), at the model input size.
  """
  if split not in SPLITS:
    raise ValueError(f'Unknown --split={split!r}; use one of '
                     f'{", ".join(SPLITS)}.')
  dataset = dataset_pb2.DatasetOptions()
  dataset.CopyFrom(options.eval_dataset_options)
  source = (options.eval_dataset_options if split == 'val'
            else options.train_dataset_options)
  field = 'eval_dataset_options' if split == 'val' else 'train_dataset_options'
  if not any(source.file_pattern):
    raise ValueError(f'{field}.file_pattern of the config is empty, so there '
                     f'is no {split} split to read; set it or pass another '
                     '--split.')
  del dataset.file_pattern[:]
  dataset.file_pattern.extend(source.file_pattern)
  if dataset.WhichOneof('source') is None:
    # The evaluation split's dataset, else the training split's.
    which = source.WhichOneof('source')
    if which == 'dataset_description':
      dataset.dataset_description.CopyFrom(source.dataset_description)
    elif which is not None:
      setattr(dataset, which, getattr(source, which))
  if dataset.batch_size <= 0:
    dataset.batch_size = max(1, source.batch_size)
  del dataset.crop_size[:]
  dataset.crop_size.extend(int(s) for s in input_size)
  dataset.repeat = False
  dataset.max_examples = max(0, num_images)
  return dataset


def grid_superpixels(height: int, width: int, grid_height: int,
                     grid_width: int) -> np.ndarray:
  """int32 [height, width]: ids row * grid_width + col of the regular grid."""
  rows = np.arange(height) * grid_height // height
  cols = np.arange(width) * grid_width // width
  return (rows[:, None] * grid_width + cols[None, :]).astype(np.int32)


def slic_superpixels(image: np.ndarray, num_segments: int,
                     compactness: float = SLIC_COMPACTNESS,
                     match_count: bool = True) -> np.ndarray:
  """int32 [H, W] SLIC ids from 0 of an RGB image (float or uint8 0..255).

  With `match_count`, n_segments is raised until SLIC returns at least
  `num_segments` superpixels (see the module docstring).
  """
  rgb = np.clip(np.asarray(image, np.float64) / 255.0, 0.0, 1.0)
  below, above = None, None  # (n_segments, count, ids) either side.
  requested = num_segments
  for _ in range(SLIC_MAX_RUNS if match_count else 1):
    ids = segmentation.slic(rgb, n_segments=requested,
                            compactness=compactness, start_label=0,
                            channel_axis=-1).astype(np.int32)
    count = len(np.unique(ids))
    if count >= num_segments:
      if above is None or count < above[1]:
        above = (requested, count, ids)
    elif below is None or requested > below[0]:
      below = (requested, count, ids)
    if count == num_segments or (above is not None and below is None):
      break
    if above is None:  # Raise in proportion to the shortfall.
      requested = int(np.ceil(requested * num_segments / max(count, 1)))
    else:  # Bisect between below and above.
      middle = (below[0] + above[0]) // 2
      if middle in (below[0], above[0]):
        break
      requested = middle
  return (above or below)[2]


def _build_model(options, num_classes, input_size):
  model_options = type(options.model_options)()
  model_options.CopyFrom(options.model_options)
  # Every weight comes from the checkpoint (or the seed): do not read the
  # encoder's pretrained file, which need not exist here.
  model_options.encoder.ClearField('pretrained_weights')
  return builder.build_model(model_options, num_classes, input_size,
                             load_pretrained_weights=False)


def _superpixel_fn(model) -> Callable[[np.ndarray], np.ndarray]:
  predict = tf.function(
      lambda images: model(images, training=False)['superpixel_ids'])
  return lambda images: np.asarray(predict(tf.constant(images)))


def build_superpixel_fns(options, num_classes: int, input_size,
                         checkpoint_path: str, with_init: bool
                        ) -> Dict[str, Callable[[np.ndarray], np.ndarray]]:
  """'learned' (and 'init') -> images [B, H, W, 3] -> ids [B, H, W].

  Raises:
    FileNotFoundError: no checkpoint at `checkpoint_path`.
    ValueError: the checkpoint does not fit the config's model.
  """
  prefix = export_lib.resolve_checkpoint(checkpoint_path)
  fns = {}
  if with_init:
    tf_keras.utils.set_random_seed(INIT_SEED)
    fns['init'] = _superpixel_fn(_build_model(options, num_classes,
                                              input_size))
  model = _build_model(options, num_classes, input_size)
  try:
    export_lib.restore_checkpoint(model, prefix)
  except (AssertionError, ValueError, tf.errors.OpError) as e:
    raise ValueError(
        f'The checkpoint {prefix} does not fit the model of this config '
        f'({str(e).splitlines()[0][:200]}); pass the config it was trained '
        'with.') from None
  fns[LEARNED] = _superpixel_fn(model)
  return fns


def measure(dataset, superpixel_fns, baselines: Sequence[str], grid_size,
            tolerance: int = superpixel_metrics.DEFAULT_TOLERANCE,
            num_images: int = 0,
            num_figure_images: int = DEFAULT_NUM_FIGURE_IMAGES,
            log_every: int = DEFAULT_LOG_EVERY,
            log: Callable[[str], None] = print,
            slic_match_count: bool = True):
  """Measures every method on the labelled images of `dataset`.

  Args:
    dataset: batches of 'image' [B, H, W, 3], 'label' [B, H, W] and
      'image_name' [B] (evaluation pipeline; '' marks padding examples).
    superpixel_fns: model methods -> images -> ids (build_superpixel_fns).
    baselines: names among BASELINES ('init' only if in superpixel_fns).
    grid_size: (Hs, Ws) of the model's superpixel grid.
    tolerance: boundary tolerance in pixels.
    num_images: stop after this many images (0: all).
    num_figure_images: keep this many images and their superpixels.
    log_every: log a progress line every this many images.
    log: where progress lines go.
    slic_match_count: see slic_superpixels.

  Returns:
    (methods, {method: accumulator result}, figure examples: a list of
    (image, label, {method: ids}), number of images measured).
  """
  methods = [LEARNED] + [name for name in baselines
                         if name != 'init' or 'init' in superpixel_fns]
  accumulators = {
      method: superpixel_metrics.SuperpixelMetricsAccumulator(
          dataset_info.IGNORE_LABEL, tolerance) for method in methods}
  grid_height, grid_width = grid_size
  examples = []
  count = 0
  for batch in dataset:
    images = batch['image'].numpy()
    labels = batch['label'].numpy()
    names = batch['image_name'].numpy()
    model_ids = {method: superpixel_fns[method](images)
                 for method in methods if method in superpixel_fns}
    for i, (image, label) in enumerate(zip(images, labels)):
      if not names[i] or not (label != dataset_info.IGNORE_LABEL).any():
        continue  # Padding example, or nothing labelled.
      ids = {}
      for method in methods:
        if method in model_ids:
          ids[method] = model_ids[method][i]
        elif method == 'grid':
          ids[method] = grid_superpixels(*label.shape, grid_height,
                                         grid_width)
        else:
          ids[method] = slic_superpixels(image, grid_height * grid_width,
                                         match_count=slic_match_count)
        accumulators[method].add_image(ids[method], label)
      if len(examples) < num_figure_images:
        examples.append((image, label, ids))
      count += 1
      if log_every > 0 and count % log_every == 0:
        log(f'{count} images measured')
      if num_images and count >= num_images:
        break
    if num_images and count >= num_images:
      break
  results = {method: accumulators[method].result() for method in methods}
  return methods, results, examples, count


def format_table(methods: Sequence[str],
                 results: Dict[str, Dict[str, Optional[float]]]) -> str:
  """A text table: one row per metric, one column per method."""
  header = ['metric'] + list(methods)
  rows = []
  for name in superpixel_metrics.METRIC_NAMES:
    row = [_METRIC_LABELS[name]]
    for method in methods:
      value = results[method][name]
      row.append('-' if value is None else
                 f'{value:.1f}' if name == 'num_superpixels' else
                 f'{value:.4f}')
    rows.append(row)
  widths = [max(len(r[c]) for r in [header] + rows)
            for c in range(len(header))]
  lines = ['  '.join(cell.ljust(w) if c == 0 else cell.rjust(w)
                     for c, (cell, w) in enumerate(zip(row, widths)))
           for row in [header] + rows]
  lines.insert(1, '  '.join('-' * w for w in widths))
  return '\n'.join(lines)


def figure_png(examples, methods: Sequence[str],
               colormap: Sequence[Sequence[int]]) -> bytes:
  """PNG bytes: per image, the image, its labels and each method's
  superpixel boundaries (skimage.segmentation.mark_boundaries)."""
  columns = 2 + len(methods)
  rows = max(1, len(examples))
  figure = figure_lib.Figure(figsize=(2.2 * columns, 2.3 * rows))
  backend_agg.FigureCanvasAgg(figure)
  for r, (image, label, ids) in enumerate(examples):
    rgb = np.clip(image / 255.0, 0.0, 1.0)
    panels = [('image', rgb),
              ('ground truth', visualization.colorize_label_map(label,
                                                                colormap))]
    for method in methods:
      count = len(np.unique(ids[method]))
      panels.append((f'{method} ({count})', segmentation.mark_boundaries(
          rgb, ids[method], color=(1, 1, 0))))
    for c, (title, panel) in enumerate(panels):
      axis = figure.add_subplot(rows, columns, r * columns + c + 1)
      axis.imshow(panel, interpolation='nearest')
      axis.set_axis_off()
      if r == 0:
        axis.set_title(title, fontsize=9)
  figure.tight_layout()
  buffer = io.BytesIO()
  figure.savefig(buffer, format='png', dpi=100)
  return buffer.getvalue()


def default_output_dir(checkpoint_path: str) -> str:
  """<checkpoint directory>/superpixel_quality."""
  directory = (checkpoint_path if tf.io.gfile.isdir(checkpoint_path)
               else os.path.dirname(checkpoint_path))
  return os.path.join(directory, 'superpixel_quality')


def run(config_file: str, checkpoint_path: str, split: str = 'val',
        num_images: int = 0, baselines: Sequence[str] = DEFAULT_BASELINES,
        tolerance: int = superpixel_metrics.DEFAULT_TOLERANCE,
        output_dir: Optional[str] = None,
        num_figure_images: int = DEFAULT_NUM_FIGURE_IMAGES,
        log_every: int = DEFAULT_LOG_EVERY,
        log: Callable[[str], None] = None,
        slic_match_count: bool = True,
        overrides: Sequence[str] = ()) -> Dict:
  """Measures, writes <output_dir>/superpixel_quality_<split>.{json,png}.

  `overrides` are text-format ExperimentOptions fragments applied on top of
  `config_file` (--config_override; see experiment.apply_overrides).

  Returns:
    The report (also the JSON file): settings, 'methods' (column order),
    'results' {method: {metric: mean}}, 'table' (text), and the paths.

  Raises:
    ValueError / FileNotFoundError: bad flags, config, split or checkpoint
      (one-line messages for tools/superpixel_quality.py).
  """
  log = log or (lambda line: print(line, file=sys.stderr, flush=True))
  if tolerance < 0:
    raise ValueError(f'--tolerance must be >= 0, got {tolerance}.')
  if num_images < 0:
    raise ValueError(f'--num_images must be >= 0 (0: all), got {num_images}.')
  baselines = parse_baselines(baselines)
  experiment = experiment_lib.load_experiment(config_file, mode=None,
                                              overrides=overrides)
  if not experiment.has_superpixels:
    raise ValueError(
        f'{config_file}: model_options.meta_architecture is '
        f'{experiment.meta_architecture}, a per-pixel network without '
        'superpixels; superpixel_quality measures the superpixels of an '
        'SP-Transformer (meta_architecture: SP_TRANSFORMER). Pass the config '
        'and checkpoint of one.')
  options = experiment.options
  num_classes, input_size = experiment.num_classes, experiment.input_size
  dataset_options = split_dataset_options(options, split, input_size,
                                          num_images)
  dataset = input_pipeline.build_dataset(dataset_options, is_training=False)
  fns = build_superpixel_fns(options, num_classes, input_size,
                             checkpoint_path, with_init='init' in baselines)
  tokenization = options.model_options.superpixel_tokenization
  grid_size = (tokenization.grid_height, tokenization.grid_width)
  log(f'Measuring superpixels of {split} ({num_images or "all"} images), '
      f'{grid_size[0]}x{grid_size[1]} superpixels, methods '
      f'{LEARNED},{",".join(baselines)}.')
  methods, results, examples, count = measure(
      dataset, fns, baselines, grid_size, tolerance, num_images,
      num_figure_images, log_every, log, slic_match_count)
  if not count:
    raise ValueError(f'The {split} split has no labelled image to measure.')
  log(f'{count} images measured.')
  output_dir = output_dir or default_output_dir(checkpoint_path)
  tf.io.gfile.makedirs(output_dir)
  figure_path = os.path.join(output_dir, f'superpixel_quality_{split}.png')
  json_path = os.path.join(output_dir, f'superpixel_quality_{split}.json')
  info = dataset_info.from_options(dataset_options)
  io_lib.write_atomically(figure_path,
                          figure_png(examples, methods, info.colormap))
  report = {
      'config_file': config_file,
      'config_overrides': list(overrides),
      'checkpoint': checkpoint_path,
      'split': split,
      'num_images': count,
      'input_size': list(input_size),
      'superpixel_grid': list(grid_size),
      'tolerance': tolerance,
      'slic_compactness': SLIC_COMPACTNESS,
      'slic_match_count': slic_match_count,
      'init_seed': INIT_SEED,
      'methods': list(methods),
      'results': results,
      'table': format_table(methods, results),
      'figure': figure_path,
      'json': json_path,
  }
  io_lib.write_atomically(json_path, json.dumps(report, indent=2) + '\n')
  return report
