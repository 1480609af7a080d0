"""Superpixel metrics on hand-made maps, and cross-checks with scikit-image."""

import numpy as np
import pytest
from scipy import ndimage
from skimage import measure
from skimage import segmentation

from deeplab_sp.trainer import superpixel_metrics as sm

# Two classes: the left half 0, the right half 1 (4x4).
_HALVES = np.array([[0, 0, 1, 1]] * 4)
# Two superpixels: the first three columns, and the last one.
_SHIFTED = np.array([[0, 0, 0, 1]] * 4)


def test_perfect_superpixels():
  metrics = sm.image_metrics(_HALVES + 7, _HALVES, tolerance=0)
  assert metrics == {'asa': 1.0, 'boundary_recall': 1.0,
                     'boundary_precision': 1.0,
                     'undersegmentation_error': 0.0, 'num_superpixels': 2.0,
                     'connected_fraction': 1.0}


def test_oversegmentation_costs_only_precision_by_hand():
  # A 2x2 grid of 2x2 cells: its boundary is columns 1-2 and rows 1-2
  # (8 + 8 - 4 shared = 12 px), of which columns 1-2 (8 px) are the ground
  # truth's: precision 8 / 12; everything else is perfect.
  grid = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])
  metrics = sm.image_metrics(grid, _HALVES, tolerance=0)
  assert metrics['boundary_precision'] == pytest.approx(2 / 3)
  assert metrics['boundary_recall'] == 1.0 and metrics['asa'] == 1.0
  assert metrics['undersegmentation_error'] == 0.0
  assert metrics['num_superpixels'] == 4


def test_shifted_superpixel_boundary_by_hand():
  # |S n G|: S0 (12 px) = 8 of class 0 + 4 of class 1; S1 (4 px) = 4 of
  # class 1. N = 16.
  # ASA = (8 + 4) / 16 = 0.75.
  # UE = [G0: min(8, 12 - 8) + G1: min(4, 12 - 4) + min(4, 4 - 4)] / 16
  #    = (4 + 4 + 0) / 16 = 0.5.
  # Boundaries (both sides marked): ground truth columns 1 and 2 (8 px),
  # superpixels columns 2 and 3 (8 px). r = 0: each shares column 2, so
  # recall = precision = 4 / 8. r = 1: column 1 is 1 px from column 2 and
  # column 3 is 1 px from column 2, so both are 1.
  metrics = sm.image_metrics(_SHIFTED, _HALVES, tolerance=0)
  assert metrics['asa'] == 0.75
  assert metrics['undersegmentation_error'] == 0.5
  assert metrics['boundary_recall'] == 0.5
  assert metrics['boundary_precision'] == 0.5
  assert metrics['num_superpixels'] == 2 and metrics['connected_fraction'] == 1
  metrics = sm.image_metrics(_SHIFTED, _HALVES, tolerance=1)
  assert metrics['boundary_recall'] == 1.0
  assert metrics['boundary_precision'] == 1.0


def test_ignore_pixels_are_excluded_by_hand():
  labels = _HALVES.copy()
  labels[3] = 255  # The last row is unlabelled: N = 12.
  # S0 (labelled): 6 of class 0 + 3 of class 1; S1: 3 of class 1.
  # ASA = (6 + 3) / 12; UE = (min(6, 3) + min(3, 6) + min(3, 0)) / 12.
  metrics = sm.image_metrics(_SHIFTED, labels, tolerance=0)
  assert metrics['asa'] == 0.75
  assert metrics['undersegmentation_error'] == 0.5
  # Ground-truth boundary: columns 1 and 2 of rows 0-2 (6 px; the edge of
  # the ignore row is no boundary). Superpixel boundary: columns 2 and 3
  # of all rows; r = 0 counts those of rows 0-2 (labelled): 6 px.
  # Recall = 3 / 6, precision = 3 / 6 (column 2 of rows 0-2).
  assert metrics['boundary_recall'] == 0.5
  assert metrics['boundary_precision'] == 0.5
  # r = 1: precision counts only pixels with no ignore pixel in their 3x3
  # window: rows 0-1 -> 4 superpixel boundary pixels, all within 1 px of
  # the ground-truth boundary. Recall: all 6 within 1 px of column 2.
  metrics = sm.image_metrics(_SHIFTED, labels, tolerance=1)
  assert metrics['boundary_recall'] == 1.0
  assert metrics['boundary_precision'] == 1.0
  # The superpixel count and connectivity use every pixel.
  assert metrics['num_superpixels'] == 2


def test_precision_by_hand_with_a_wrong_boundary():
  # One class; superpixels split the 4x6 image at column 3: no ground-truth
  # boundary, so recall is undefined and precision is 0 / 8.
  labels = np.zeros([4, 6], int)
  superpixels = np.array([[0, 0, 0, 1, 1, 1]] * 4)
  metrics = sm.image_metrics(superpixels, labels, tolerance=2)
  assert metrics['boundary_recall'] is None
  assert metrics['boundary_precision'] == 0.0
  assert metrics['asa'] == 1.0 and metrics['undersegmentation_error'] == 0.0


def test_connectivity_is_4_connectivity():
  # Superpixel 0 is two pixels apart; 1 and 2 are connected: 2 of 3.
  superpixels = np.array([[0, 1, 0], [1, 1, 1], [2, 2, 2]])
  metrics = sm.image_metrics(superpixels, np.zeros([3, 3], int))
  assert metrics['num_superpixels'] == 3
  assert metrics['connected_fraction'] == pytest.approx(2 / 3)
  # Diagonal contact does not connect (it would under 8-connectivity).
  checker = np.array([[0, 1], [1, 0]])
  metrics = sm.image_metrics(checker, np.zeros([2, 2], int))
  assert metrics['connected_fraction'] == 0.0
  assert sm.connected_components_per_superpixel(checker) == {0: 2, 1: 2}


def test_undersegmentation_counts_the_smaller_side_by_hand():
  # One superpixel over a 1x5 image with classes 0 0 0 1 2:
  # UE = [min(3, 2) + min(1, 4) + min(1, 4)] / 5 = 4 / 5; ASA = 3 / 5.
  metrics = sm.image_metrics(np.zeros([1, 5], int),
                             np.array([[0, 0, 0, 1, 2]]))
  assert metrics['undersegmentation_error'] == pytest.approx(0.8)
  assert metrics['asa'] == pytest.approx(0.6)


def test_all_ignore_image_is_skipped():
  assert sm.image_metrics(_SHIFTED, np.full([4, 4], 255)) is None


def test_bad_input_is_a_clear_error():
  with pytest.raises(ValueError, match='one shape'):
    sm.image_metrics(np.zeros([2, 2], int), np.zeros([3, 3], int))
  with pytest.raises(ValueError, match='>= 0'):
    sm.image_metrics(np.full([2, 2], -1), np.zeros([2, 2], int))


def test_accumulator_means_over_images():
  accumulator = sm.SuperpixelMetricsAccumulator(tolerance=0)
  single_class = np.zeros([4, 4], int)
  added = accumulator.add_batch(
      np.stack([_SHIFTED, _SHIFTED, _SHIFTED]),
      np.stack([_HALVES, single_class, np.full([4, 4], 255)]))
  assert added == 2  # The all-ignore image is skipped.
  result = accumulator.result()
  assert result['num_images'] == 2
  # ASA: (0.75 + 1) / 2; recall only from the first image (the second has
  # no ground-truth boundary); precision: (0.5 + 0) / 2.
  assert result['asa'] == pytest.approx(0.875)
  assert result['boundary_recall'] == pytest.approx(0.5)
  assert result['boundary_precision'] == pytest.approx(0.25)
  assert result['undersegmentation_error'] == pytest.approx(0.25)
  # The state survives a round trip through its vector (cross-worker sum).
  other = sm.SuperpixelMetricsAccumulator()
  other.from_vector(accumulator.to_vector() * 2)
  assert other.result() == {**result, 'num_images': 4}
  accumulator.reset()
  assert accumulator.result()['asa'] is None
  assert accumulator.result()['num_images'] == 0


def _random_maps(seed, size=(24, 20), num_ids=6, num_classes=3):
  rng = np.random.default_rng(seed)
  # Blocky maps with some single-pixel noise (fragmented superpixels).
  blocks = rng.integers(0, num_ids, size=(size[0] // 4, size[1] // 4))
  superpixels = np.kron(blocks, np.ones([4, 4], int))
  noise = rng.random(size) < 0.05
  superpixels[noise] = rng.integers(0, num_ids, size=noise.sum())
  labels = np.kron(rng.integers(0, num_classes, size=(size[0] // 3,
                                                      size[1] // 2)),
                   np.ones([3, 2], int))
  return superpixels, labels


@pytest.mark.parametrize('seed', range(5))
def test_boundaries_match_skimage_find_boundaries(seed):
  superpixels, labels = _random_maps(seed)
  for ids in (superpixels, labels):
    np.testing.assert_array_equal(
        sm.boundary_map(ids),
        segmentation.find_boundaries(ids, connectivity=1, mode='thick'))


@pytest.mark.parametrize('seed', range(5))
def test_connectivity_matches_a_label_per_superpixel(seed):
  # An independent count: scipy's 4-connected labelling of each
  # superpixel's mask alone.
  superpixels, _ = _random_maps(seed)
  expected = {int(sp): ndimage.label(superpixels == sp)[1]
              for sp in np.unique(superpixels)}
  assert sm.connected_components_per_superpixel(superpixels) == expected
  # The count of regions of equal value is skimage's.
  regions = measure.label(superpixels, connectivity=1, background=-1)
  assert sum(expected.values()) == regions.max()


def test_sparse_ids_give_the_same_metrics():
  superpixels, labels = _random_maps(0)
  labels[:2] = 255
  dense = sm.image_metrics(superpixels, labels)
  sparse_labels = np.where(labels == 255, 255, labels * 1000)
  sparse_ids = sm.image_metrics(superpixels * 100003 + 7, sparse_labels)
  assert sparse_ids == pytest.approx(dense)


@pytest.mark.parametrize('seed', range(5))
@pytest.mark.parametrize('tolerance', [0, 1, 2, 3])
def test_boundary_scores_match_a_distance_transform(seed, tolerance):
  # No ignore pixels: ground-truth and superpixel boundaries are
  # find_boundaries of each map; "within r" is a chessboard distance <= r.
  superpixels, labels = _random_maps(seed)
  gt = segmentation.find_boundaries(labels, connectivity=1, mode='thick')
  sp = segmentation.find_boundaries(superpixels, connectivity=1,
                                    mode='thick')
  to_sp = ndimage.distance_transform_cdt(~sp, metric='chessboard')
  to_gt = ndimage.distance_transform_cdt(~gt, metric='chessboard')
  metrics = sm.image_metrics(superpixels, labels, tolerance=tolerance)
  assert metrics['boundary_recall'] == pytest.approx(
      np.mean(to_sp[gt] <= tolerance))
  assert metrics['boundary_precision'] == pytest.approx(
      np.mean(to_gt[sp] <= tolerance))


@pytest.mark.parametrize('seed', range(5))
def test_asa_and_undersegmentation_match_a_direct_loop(seed):
  superpixels, labels = _random_maps(seed)
  labels[:3] = 255  # Some unlabelled rows.
  valid = labels != 255
  n = valid.sum()
  asa, ue = 0, 0
  for s in np.unique(superpixels):
    in_s = (superpixels == s) & valid
    if in_s.any():
      asa += np.bincount(labels[in_s]).max()
    for g in np.unique(labels[valid]):
      inside = (in_s & (labels == g)).sum()
      if inside:
        ue += min(inside, in_s.sum() - inside)
  metrics = sm.image_metrics(superpixels, labels)
  assert metrics['asa'] == pytest.approx(asa / n)
  assert metrics['undersegmentation_error'] == pytest.approx(ue / n)
