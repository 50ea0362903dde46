"""Tests for nasrl_jax.data.balance: rot90 top-up of the training part's minority classes."""

import jax
import numpy as np
import pytest

from nasrl_jax.data import balance as B


def _labels(counts, seed=0):
  """A shuffled label array with counts[c] images of class c."""
  lab = np.concatenate([np.full(n, c, np.int32) for c, n in enumerate(counts)])
  return np.random.default_rng(seed).permutation(lab)


def test_binary_minority_topped_up_to_majority():
  labels = _labels([14, 30])
  train = np.arange(0, 44, 1)[np.arange(44) % 11 != 0]  # Leave val/test indices out.
  idx, rot = B.balance_indices(train, labels, seed=0)
  assert idx.dtype == np.int32 and rot.dtype == np.int32
  before = B.class_counts(train, labels)
  after = B.class_counts(idx, labels)
  assert after[0] == after[1] == max(before.values())
  # Originals first, unrotated; copies rotated by 90/180/270 degrees.
  assert np.array_equal(idx[:train.size], train) and np.all(rot[:train.size] == 0)
  assert set(rot[train.size:].tolist()) <= {1, 2, 3} and rot[train.size:].size > 0
  assert set(idx.tolist()) <= set(train.tolist())  # No val/test image appears.
  minority = min(before, key=before.get)
  assert np.all(labels[idx[train.size:]] == minority)


def test_copies_spread_evenly_with_distinct_rotations():
  labels = _labels([10, 35])
  train = np.arange(45)
  idx, rot = B.balance_indices(train, labels, seed=1)
  copies = list(zip(idx[45:].tolist(), rot[45:].tolist()))
  assert len(copies) == 25 and len(set(copies)) == 25  # No (image, rotation) twice.
  per_orig = np.bincount(idx[45:], minlength=45)[labels == 0]
  assert per_orig.max() - per_orig.min() <= 1  # 25 copies over 10 originals: 2 or 3 each.


def test_capped_at_three_copies_when_full_balance_impossible():
  labels = _labels([3, 20])
  idx, rot = B.balance_indices(np.arange(23), labels, seed=0)
  assert B.class_counts(idx, labels) == {0: 12, 1: 20}  # 3 originals + 9 copies, still short.
  assert np.all(np.bincount(idx[23:], minlength=23)[labels == 0] == 3)


def test_multiclass_all_topped_up_to_largest():
  labels = _labels([5, 12, 8, 4])
  idx, _ = B.balance_indices(np.arange(labels.size), labels, seed=0)
  assert B.class_counts(idx, labels) == {0: 12, 1: 12, 2: 12, 3: 12}  # 4 -> 4 + 8 (cap 12).


def test_balanced_input_unchanged_and_deterministic_per_seed():
  labels = _labels([8, 8])
  idx, rot = B.balance_indices(np.arange(16), labels, seed=0)
  assert np.array_equal(idx, np.arange(16)) and not rot.any()
  labels = _labels([9, 30])
  a = B.balance_indices(np.arange(39), labels, seed=5)
  b = B.balance_indices(np.arange(39), labels, seed=5)
  c = B.balance_indices(np.arange(39), labels, seed=6)
  assert all(np.array_equal(x, y) for x, y in zip(a, b))
  assert not (np.array_equal(a[0], c[0]) and np.array_equal(a[1], c[1]))


def test_bad_indices_raise():
  labels = _labels([3, 5])
  with pytest.raises(ValueError, match="duplicates"):
    B.balance_indices([0, 0, 1], labels, 0)
  with pytest.raises(ValueError, match="outside"):
    B.balance_indices([0, 8], labels, 0)


def test_apply_rotations_really_rotates():
  img = np.array([[1, 2], [3, 4]], np.uint8)[None, :, :, None]  # [1, 2, 2, 1].
  images = np.concatenate([img, img + 10])
  out = B.apply_rotations(images, np.array([0, 0, 0, 1]), np.array([0, 1, 2, 3]))
  assert out.dtype == np.uint8 and out.shape == (4, 2, 2, 1)
  np.testing.assert_array_equal(out[0, ..., 0], [[1, 2], [3, 4]])
  np.testing.assert_array_equal(out[1, ..., 0], [[2, 4], [1, 3]])  # 90 deg counter-clockwise.
  np.testing.assert_array_equal(out[2, ..., 0], [[4, 3], [2, 1]])  # 180 deg.
  np.testing.assert_array_equal(out[3, ..., 0], [[13, 11], [14, 12]])  # 270 deg of image 1.
  assert images[0, 0, 0, 0] == 1  # The source is not modified.


def test_apply_rotations_refuses_odd_turns_of_non_square():
  images = np.zeros((2, 3, 4, 1), np.uint8)
  assert B.apply_rotations(images, np.array([0, 1]), np.array([0, 2])).shape == (2, 3, 4, 1)
  with pytest.raises(ValueError, match="non-square"):
    B.apply_rotations(images, np.array([0]), np.array([1]))


def test_rotate_batch_matches_host_version_under_jit():
  images = np.random.default_rng(0).integers(0, 255, (6, 5, 5, 1)).astype(np.uint8)
  labels = _labels([2, 4])
  idx, rot = B.balance_indices(np.arange(6), labels, seed=0)
  host = B.apply_rotations(images, idx, rot)
  dev = jax.jit(B.rotate_batch)(images[idx], rot)
  np.testing.assert_array_equal(np.asarray(dev), host)
