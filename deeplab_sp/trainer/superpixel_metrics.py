"""Quality of a superpixel map against a ground-truth label map (numpy).

Per image, at input resolution, for a superpixel map `superpixels` (int
[H, W], any non-negative ids, e.g. the model's 'superpixel_ids': the hard
superpixels of the SP-Transformer paper, arXiv 2309.16889, eq. 7) and a
semantic label map `labels` (int [H, W], train ids, `ignore_label` = not
labelled). Let V be the labelled (non-ignore) pixels and N = |V|. The
ground-truth segments G are the classes: all labelled pixels of one train id
(the ground truth is a semantic label map, so two touching regions of one
class are one segment). |S| below counts only the labelled pixels of a
superpixel S.

  asa: achievable segmentation accuracy. Each superpixel takes the majority
    class of its labelled pixels; ASA = (1/N) sum_S max_G |S n G|, the
    pixel accuracy of the best labelling that is constant per superpixel
    (an upper bound of what a superpixel classifier can reach).

  undersegmentation_error: the corrected undersegmentation error of Neubert
    and Protzel 2012 ("Superpixel benchmark and comparison"):
      UE = (1/N) sum_G sum_{S: |S n G| > 0} min(|S n G|, |S \\ G|),
    with |S \\ G| = |S| - |S n G| (labelled pixels of S outside G). Each
    superpixel that straddles a class boundary is charged the smaller of its
    two sides. 0 is perfect.

  boundary_recall, boundary_precision: with tolerance r pixels
    (`tolerance`, default 2) in the Chebyshev distance (a (2r+1) x (2r+1)
    square window, as in common superpixel benchmarks). Boundary pixels are
    scikit-image's `find_boundaries(mode='thick', connectivity=1)`: a pixel
    is on a boundary when one of its 4-neighbours has another id, so both
    sides of an edge are marked.
      - Ground-truth boundary pixels: labelled pixels with a labelled
        4-neighbour of another class (the edge of an ignore region is not a
        boundary: what lies beyond it is unknown).
      - Superpixel boundary pixels: every pixel with a 4-neighbour in another
        superpixel (the superpixel map covers the whole image).
      recall = fraction of ground-truth boundary pixels with a superpixel
        boundary pixel within r;
      precision = fraction of superpixel boundary pixels with a ground-truth
        boundary pixel within r, counted only at pixels whose whole
        (2r+1) x (2r+1) window is labelled (near an ignore pixel, whether a
        ground-truth boundary lies within r is unknown).
    Undefined (None) when the image has no pixel to count: no ground-truth
    boundary (recall) or no countable superpixel boundary (precision).

  num_superpixels: the number of distinct ids in the map (all pixels,
    labelled or not: a property of the superpixel map alone).

  connected_fraction: the fraction of those superpixels whose pixels form
    one 4-connected region (all pixels; regions found with scikit-image's
    measure.label(connectivity=1)).

`SuperpixelMetricsAccumulator` sums the per-image values over a split and
reports the mean over images (each image weighs the same, whatever its
number of labelled pixels). Images without a labelled pixel (e.g. the
all-ignore examples that pad the last evaluation batch) are skipped; a metric
that is undefined for an image (see above) is averaged over the images where
it is defined.
"""

from typing import Dict, Optional, Sequence

import numpy as np
from scipy import ndimage
from skimage import measure

DEFAULT_TOLERANCE = 2
DEFAULT_IGNORE_LABEL = 255

# The metrics, in report order.
METRIC_NAMES = ('asa', 'boundary_recall', 'boundary_precision',
                'undersegmentation_error', 'num_superpixels',
                'connected_fraction')
# Higher is better for all but these.
LOWER_IS_BETTER = ('undersegmentation_error',)


def _check_maps(superpixels: np.ndarray, labels: np.ndarray) -> None:
  if superpixels.ndim != 2 or superpixels.shape != labels.shape:
    raise ValueError('superpixels and labels must be 2-D maps of one shape, '
                     f'got {superpixels.shape} and {labels.shape}.')
  if superpixels.size and superpixels.min() < 0:
    raise ValueError('superpixel ids must be >= 0, got '
                     f'{superpixels.min()}.')


def boundary_map(ids: np.ndarray,
                 valid: Optional[np.ndarray] = None) -> np.ndarray:
  """Bool [H, W]: pixels with a 4-neighbour of another id.

  Equals skimage.segmentation.find_boundaries(ids, connectivity=1,
  mode='thick'). With `valid` (bool [H, W]), only valid pixels with a valid
  4-neighbour of another id are marked.
  """
  ids = np.asarray(ids)
  if valid is None:
    valid = np.ones(ids.shape, bool)
  boundary = np.zeros(ids.shape, bool)
  # Vertical then horizontal neighbour pairs (a, b).
  for a, b in (((slice(None, -1), slice(None)), (slice(1, None), slice(None))),
               ((slice(None), slice(None, -1)), (slice(None), slice(1, None)))):
    differs = (ids[a] != ids[b]) & valid[a] & valid[b]
    boundary[a] |= differs
    boundary[b] |= differs
  return boundary


def _within(mask: np.ndarray, tolerance: int) -> np.ndarray:
  """Bool [H, W]: pixels with a `mask` pixel within Chebyshev `tolerance`."""
  if tolerance <= 0:
    return mask.copy()
  return ndimage.maximum_filter(mask.astype(np.uint8), size=2 * tolerance + 1,
                                mode='constant', cval=0).astype(bool)


def _contingency(superpixels: np.ndarray, labels: np.ndarray,
                 valid: np.ndarray) -> np.ndarray:
  """int64 [superpixels with labelled pixels, classes (+ unused)]: |S n G|.

  Rows of superpixels without a labelled pixel are dropped; columns of
  class ids that do not occur are zero (they change no metric).
  """
  sp_ids = superpixels[valid]
  class_ids = labels[valid].astype(np.int64)
  num_sp = int(sp_ids.max()) + 1
  num_classes = int(class_ids.max()) + 1
  if class_ids.min() < 0 or num_sp * num_classes > max(4 * sp_ids.size,
                                                       1 << 16):
    # Sparse or negative ids: compact both to 0..n-1 first.
    _, sp_ids = np.unique(sp_ids, return_inverse=True)
    _, class_ids = np.unique(class_ids, return_inverse=True)
    num_sp = int(sp_ids.max()) + 1
    num_classes = int(class_ids.max()) + 1
  table = np.bincount(sp_ids.ravel() * num_classes + class_ids.ravel(),
                      minlength=num_sp * num_classes).reshape(num_sp,
                                                              num_classes)
  return table[table.sum(axis=1) > 0]


def connected_components_per_superpixel(superpixels: np.ndarray
                                       ) -> Dict[int, int]:
  """Superpixel id -> number of 4-connected regions of its pixels."""
  counts = _region_counts(superpixels)
  ids = np.flatnonzero(counts)
  return dict(zip(ids.tolist(), counts[ids].tolist()))


def _region_counts(superpixels: np.ndarray) -> np.ndarray:
  """int64 [max id + 1]: number of 4-connected regions of each id."""
  # Regions of equal value (connectivity=1: 4-neighbours), labelled 1..R;
  # the ids are >= 0, so no pixel is background.
  regions = measure.label(superpixels, connectivity=1, background=-1)
  region_id = np.zeros(int(regions.max()) + 1, np.int64)
  region_id[regions.ravel()] = superpixels.ravel()
  return np.bincount(region_id[1:], minlength=int(superpixels.max()) + 1)


def image_metrics(superpixels: np.ndarray, labels: np.ndarray,
                  ignore_label: int = DEFAULT_IGNORE_LABEL,
                  tolerance: int = DEFAULT_TOLERANCE
                 ) -> Optional[Dict[str, Optional[float]]]:
  """The metrics of one image (see the module docstring).

  Args:
    superpixels: int [H, W] superpixel ids (>= 0).
    labels: int [H, W] class ids, `ignore_label` for unlabelled pixels.
    ignore_label: the label of pixels excluded from the comparison.
    tolerance: boundary tolerance r in pixels (Chebyshev distance).

  Returns:
    METRIC_NAMES -> value (None where undefined), or None when the image
    has no labelled pixel.
  """
  superpixels = np.asarray(superpixels).astype(np.int64)
  labels = np.asarray(labels)
  _check_maps(superpixels, labels)
  if tolerance < 0:
    raise ValueError(f'tolerance must be >= 0, got {tolerance}.')
  valid = labels != ignore_label
  num_valid = int(valid.sum())
  if not num_valid:
    return None

  table = _contingency(superpixels, labels, valid)  # |S n G|
  sizes = table.sum(axis=1, keepdims=True)  # |S| (labelled pixels)
  asa = table.max(axis=1).sum() / num_valid
  undersegmentation = np.minimum(table, sizes - table)[table > 0].sum() / (
      num_valid)

  gt_boundary = boundary_map(labels, valid)
  sp_boundary = boundary_map(superpixels)
  num_gt_boundary = int(gt_boundary.sum())
  recall = (float((gt_boundary & _within(sp_boundary, tolerance)).sum()) /
            num_gt_boundary if num_gt_boundary else None)
  known = ~_within(~valid, tolerance)  # Whole window labelled.
  counted = sp_boundary & known
  num_counted = int(counted.sum())
  precision = (float((counted & _within(gt_boundary, tolerance)).sum()) /
               num_counted if num_counted else None)

  regions = _region_counts(superpixels)
  num_superpixels = int((regions > 0).sum())
  connected = int((regions == 1).sum())
  return {
      'asa': float(asa),
      'boundary_recall': recall,
      'boundary_precision': precision,
      'undersegmentation_error': float(undersegmentation),
      'num_superpixels': float(num_superpixels),
      'connected_fraction': connected / num_superpixels,
  }


class SuperpixelMetricsAccumulator:
  """Sums per-image metrics over a split; `result` gives means over images.

  Images without a labelled pixel are skipped; a metric undefined for an
  image is left out of that metric's mean (see the module docstring).
  """

  def __init__(self, ignore_label: int = DEFAULT_IGNORE_LABEL,
               tolerance: int = DEFAULT_TOLERANCE):
    self.ignore_label = ignore_label
    self.tolerance = tolerance
    self.reset()

  def reset(self) -> None:
    self.num_images = 0
    self.sums = dict.fromkeys(METRIC_NAMES, 0.0)
    self.counts = dict.fromkeys(METRIC_NAMES, 0)

  def add_image(self, superpixels: np.ndarray, labels: np.ndarray) -> bool:
    """Adds one image; returns False if it was skipped (nothing labelled)."""
    metrics = image_metrics(superpixels, labels, self.ignore_label,
                            self.tolerance)
    if metrics is None:
      return False
    self.num_images += 1
    for name, value in metrics.items():
      if value is not None:
        self.sums[name] += value
        self.counts[name] += 1
    return True

  def add_batch(self, superpixels: np.ndarray, labels: np.ndarray) -> int:
    """Adds a batch [B, H, W] of each; returns the number of images added."""
    return sum(self.add_image(s, l) for s, l in zip(superpixels, labels))

  def to_vector(self) -> np.ndarray:
    """float64 [1 + 2 * len(METRIC_NAMES)]: the state, for a cross-worker
    sum (the inverse of `from_vector`)."""
    return np.array([self.num_images] +
                    [self.sums[name] for name in METRIC_NAMES] +
                    [self.counts[name] for name in METRIC_NAMES], np.float64)

  def from_vector(self, vector: Sequence[float]) -> None:
    """Sets the state from `to_vector`'s layout (e.g. summed over workers)."""
    vector = np.asarray(vector, np.float64)
    n = len(METRIC_NAMES)
    self.num_images = int(round(vector[0]))
    self.sums = dict(zip(METRIC_NAMES, vector[1:1 + n].tolist()))
    self.counts = dict(zip(METRIC_NAMES,
                           [int(round(c)) for c in vector[1 + n:]]))

  def result(self) -> Dict[str, Optional[float]]:
    """METRIC_NAMES -> mean over images (None if no image), and num_images."""
    results = {name: (self.sums[name] / self.counts[name]
                      if self.counts[name] else None)
               for name in METRIC_NAMES}
    results['num_images'] = self.num_images
    return results
