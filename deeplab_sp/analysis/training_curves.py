"""The training curves of an experiment as one PNG: loss and mIoU by step.

The loss comes from the TensorBoard scalars `loss` of `<experiment>/train/`
(written by orbit every trainer_options.save_summaries_steps), the mIoU from
`<experiment>/eval_history.jsonl` (one line per evaluation, written by
deeplab_sp/trainer/evaluator.py). Drawn with matplotlib's Agg backend (no
display needed) and written atomically. tools/main_job.py writes
`<experiment>/training_curves.png` at its end.
"""

import io
import os
from typing import List, Tuple

from matplotlib import figure as figure_lib
from matplotlib.backends import backend_agg
import tensorflow as tf

from deeplab_sp.trainer import evaluator
from deeplab_sp.utils import io as io_lib

CURVES_FILENAME = 'training_curves.png'
LOSS_TAG = 'loss'


def read_scalars(summary_dir: str, tag: str) -> List[Tuple[int, float]]:
  """(step, value) of scalar `tag` in the event files of `summary_dir`.

  Sorted by step; when a step was written twice (a resumed run repeats its
  last steps' summaries), the later file wins.
  """
  values = {}
  for path in sorted(tf.io.gfile.glob(os.path.join(summary_dir,
                                                   'events.out.tfevents.*'))):
    for record in tf.data.TFRecordDataset(path):
      event = tf.compat.v1.Event.FromString(record.numpy())
      for value in event.summary.value:
        if value.tag != tag:
          continue
        if value.HasField('tensor'):
          values[event.step] = float(tf.make_ndarray(value.tensor))
        else:
          values[event.step] = float(value.simple_value)
  return sorted(values.items())


def curves_png(losses: List[Tuple[int, float]],
               history: List[dict], title: str = '') -> bytes:
  """PNG bytes: the loss (left) and the mIoU (right) against the step."""
  figure = figure_lib.Figure(figsize=(10, 3.8))
  backend_agg.FigureCanvasAgg(figure)
  loss_axis = figure.add_subplot(1, 2, 1)
  if losses:
    steps, values = zip(*losses)
    loss_axis.plot(steps, values, color='tab:blue')
  else:
    loss_axis.text(0.5, 0.5, 'no loss summaries', ha='center',
                   transform=loss_axis.transAxes)
  loss_axis.set_xlabel('step')
  loss_axis.set_ylabel('training loss')
  loss_axis.grid(alpha=0.3)
  miou_axis = figure.add_subplot(1, 2, 2)
  points = [(entry['step'], entry['miou']) for entry in history
            if entry.get('miou') is not None]
  if points:
    steps, values = zip(*sorted(points))
    miou_axis.plot(steps, values, color='tab:orange', marker='o')
  else:
    miou_axis.text(0.5, 0.5, 'no evaluations', ha='center',
                   transform=miou_axis.transAxes)
  miou_axis.set_xlabel('step')
  miou_axis.set_ylabel('validation mIoU')
  miou_axis.grid(alpha=0.3)
  if title:
    figure.suptitle(title)
  figure.tight_layout()
  buffer = io.BytesIO()
  figure.savefig(buffer, format='png', dpi=100)
  return buffer.getvalue()


def write_curves(experiment_dir: str, title: str = '') -> str:
  """Writes `<experiment_dir>/training_curves.png`; returns its path."""
  losses = read_scalars(os.path.join(experiment_dir, 'train'), LOSS_TAG)
  history = evaluator.read_history(experiment_dir)
  path = os.path.join(experiment_dir, CURVES_FILENAME)
  io_lib.write_atomically(path, curves_png(losses, history, title))
  return path
