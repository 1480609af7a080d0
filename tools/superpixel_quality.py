r"""Measures the learned superpixels of a checkpoint next to SLIC and the grid.

For every image of a split (read with the evaluation input pipeline, labels
mapped as in evaluation), the hard superpixels of the model restored from
--checkpoint_path are compared with the ground-truth labels, together with
baselines of the same number of superpixels: the regular grid the tokenizer
starts from, SLIC (Achanta et al. 2012) and the same model untrained
(fixed seed). Prints a table (metric x method), and writes
<output_dir>/superpixel_quality_<split>.json and a PNG with each method's
boundaries on a few images. Metric definitions:
deeplab_sp/trainer/superpixel_metrics.py; methods:
deeplab_sp/analysis/superpixel_quality.py.

Example (from the repository root, after the main job trained the model):
  .venv/bin/python tools/superpixel_quality.py \
    --config_file=work_dirs/main_job_config.textproto \
    --checkpoint_path=work_dirs/experiments/synthetic_sp_transformer_tiny
"""

# First, before anything loads TensorFlow: hides its start-up log lines
# unless TF_CPP_MIN_LOG_LEVEL is set (deeplab_sp/utils/tf_startup.py).
from deeplab_sp.utils import tf_startup  # pylint: disable=g-bad-import-order,unused-import

import json

from absl import app
from absl import flags

from deeplab_sp.analysis import superpixel_quality
from deeplab_sp.trainer import superpixel_metrics
from deeplab_sp.utils import cli

_CONFIG_FILE = flags.DEFINE_string(
    'config_file', None, 'Experiment .textproto the checkpoint was trained '
    'with (model, dataset and its file patterns).', required=True)
_CONFIG_OVERRIDE = cli.define_config_override()
_CHECKPOINT_PATH = flags.DEFINE_string(
    'checkpoint_path', None, 'Checkpoint prefix (.../ckpt-1500) or the '
    'directory holding checkpoints (its latest one is used).', required=True)
_SPLIT = flags.DEFINE_enum(
    'split', 'val', list(superpixel_quality.SPLITS),
    "'val': eval_dataset_options' files; 'train': train_dataset_options' "
    'files, read like evaluation (no augmentation).')
_NUM_IMAGES = flags.DEFINE_integer(
    'num_images', 0, 'Measure the first N labelled images (0: all).')
_BASELINES = flags.DEFINE_list(
    'baselines', list(superpixel_quality.DEFAULT_BASELINES),
    'Methods measured next to the learned superpixels: any of grid (the '
    "tokenizer's initial grid), slic (scikit-image SLIC, same number of "
    'superpixels), init (the model untrained, fixed seed).')
_FORMAT = flags.DEFINE_enum(
    'format', 'text', ['text', 'json'],
    'What is printed on stdout: the table, or the JSON report.')
_OUTPUT_DIR = flags.DEFINE_string(
    'output_dir', None, 'Where the JSON report and the PNG go (default: '
    '<checkpoint directory>/superpixel_quality).')
_TOLERANCE = flags.DEFINE_integer(
    'tolerance', superpixel_metrics.DEFAULT_TOLERANCE,
    'Boundary tolerance in pixels (Chebyshev distance) for boundary recall '
    'and precision.')
_SLIC_MATCH_COUNT = flags.DEFINE_bool(
    'slic_match_count', True, 'Raise SLIC\'s n_segments until it returns at '
    'least as many superpixels as the model has (its connectivity step '
    'merges fragments on textured images); false: n_segments = Hs * Ws.')
_NUM_FIGURE_IMAGES = flags.DEFINE_integer(
    'num_figure_images', superpixel_quality.DEFAULT_NUM_FIGURE_IMAGES,
    'Images shown in the PNG.')
_LOG_EVERY = flags.DEFINE_integer(
    'log_every', superpixel_quality.DEFAULT_LOG_EVERY,
    'Print a progress line (stderr) every this many images (0: never).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  report = superpixel_quality.run(
      _CONFIG_FILE.value, _CHECKPOINT_PATH.value, split=_SPLIT.value,
      num_images=_NUM_IMAGES.value, baselines=_BASELINES.value,
      tolerance=_TOLERANCE.value, output_dir=_OUTPUT_DIR.value,
      num_figure_images=_NUM_FIGURE_IMAGES.value, log_every=_LOG_EVERY.value,
      slic_match_count=_SLIC_MATCH_COUNT.value,
      overrides=_CONFIG_OVERRIDE.value)
  if _FORMAT.value == 'json':
    print(json.dumps(report, indent=2))
  else:
    print(f'Superpixel quality on {report["num_images"]} {report["split"]} '
          f'images ({report["superpixel_grid"][0]}x'
          f'{report["superpixel_grid"][1]} superpixels, boundary tolerance '
          f'{report["tolerance"]} px):')
    print(report['table'])
    print(f'Figure: {report["figure"]}\nJSON: {report["json"]}')


if __name__ == '__main__':
  app.run(cli.main_with_clear_errors('superpixel_quality', main))
