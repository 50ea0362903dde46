"""Tests for nasrl_jax.metrics against hand-computed values and scikit-learn / scipy."""

import math

import numpy as np
import pytest
import scipy.stats
from sklearn import metrics as skm

from nasrl_jax import metrics as M

Y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
P = np.array([0.1, 0.4, 0.6, 0.2, 0.9, 0.7, 0.3, 0.8, 0.5, 0.45])


def test_binary_metrics_hand_values():
  m = M.binary_metrics(Y, P)
  # pred = [0 0 1 0 1 1 0 1 1 0]: tn 3, fp 1, fn 2, tp 4.
  assert m["confusion"] == [[3, 1], [2, 4]]
  assert m["n"] == 10
  assert m["accuracy"] == pytest.approx(0.7)
  assert m["sensitivity"] == pytest.approx(4 / 6)
  assert m["specificity"] == pytest.approx(3 / 4)
  # Pairs (pos, neg) ranked right: for negatives 0.1, 0.2, 0.4, 0.6 the positives above them
  # number 6, 6, 5, 3 -> 20 of 24.
  assert m["auroc"] == pytest.approx(20 / 24)
  assert m["auroc"] == pytest.approx(skm.roc_auc_score(Y, P))
  fpr, tpr, _ = skm.roc_curve(Y, P)
  assert m["roc"]["fpr"] == pytest.approx(fpr.tolist())
  assert m["roc"]["tpr"] == pytest.approx(tpr.tolist())
  assert all(type(v) is float for v in m["roc"]["fpr"])


def test_binary_metrics_threshold():
  m = M.binary_metrics(Y, P, threshold=0.35)
  assert m["confusion"] == [[2, 2], [1, 5]]
  assert m["sensitivity"] == pytest.approx(5 / 6)


def test_binary_metrics_one_class_gives_nan_not_error():
  m = M.binary_metrics([1, 1, 1], [0.9, 0.2, 0.6])
  assert math.isnan(m["auroc"]) and math.isnan(m["specificity"])
  assert m["sensitivity"] == pytest.approx(2 / 3)
  assert m["confusion"] == [[0, 0], [1, 2]]
  assert m["roc"] == {"fpr": [], "tpr": []}


def test_binary_metrics_rejects_bad_input():
  with pytest.raises(ValueError, match="only 0"):
    M.binary_metrics([0, 2], [0.1, 0.2])
  with pytest.raises(ValueError, match="finite"):
    M.binary_metrics([0, 1], [0.1, np.nan])
  with pytest.raises(ValueError, match="equal"):
    M.binary_metrics([0, 1], [0.1])


def test_subject_level_mean_prob_and_majority_label():
  sid = np.array(["b", "a", "b", "c", "c", "a", "a"])
  y = np.array([1, 0, 1, 0, 1, 0, 1])
  p = np.array([0.8, 0.2, 0.6, 0.1, 0.5, 0.4, 0.3])
  subjects, ys, ps = M.subject_level(sid, y, p)
  assert subjects.tolist() == ["a", "b", "c"]
  assert ys.tolist() == [0, 1, 1]  # a: 0,0,1 -> 0; b: 1,1 -> 1; c: 0,1 tie -> 1 (fatty).
  np.testing.assert_allclose(ps, [0.3, 0.7, 0.3])


def test_mean_std():
  r = M.mean_std([0.7, 0.8, 0.9])
  assert r["mean"] == pytest.approx(0.8) and r["std"] == pytest.approx(0.1)  # ddof=1.
  assert r["n"] == 3 and r["n_nan"] == 0
  r = M.mean_std([0.5, np.nan, 0.7])
  assert r["mean"] == pytest.approx(0.6) and r["std"] == pytest.approx(math.sqrt(0.02))
  assert r["n"] == 2 and r["n_nan"] == 1
  assert M.mean_std([0.4]) == {"mean": 0.4, "std": 0.0, "n": 1, "n_nan": 0}
  r = M.mean_std([np.nan])
  assert math.isnan(r["mean"]) and math.isnan(r["std"]) and r["n_nan"] == 1


def test_paired_wilcoxon_hand_value_and_scipy():
  a = np.array([0.8, 0.7, 0.9, 0.75, 0.85])
  b = a - np.array([0.01, 0.02, 0.03, 0.04, 0.05])
  r = M.paired_wilcoxon(a, b)
  # All 5 differences positive: W- = 0, exact two-sided p = 2 / 2**5.
  assert r["statistic"] == 0.0 and r["p_value"] == pytest.approx(2 / 32)
  assert r["n"] == 5 and r["mean_diff"] == pytest.approx(0.03) and r["note"] == ""
  rng = np.random.default_rng(0)
  a, b = rng.random(10), rng.random(10)
  ref = scipy.stats.wilcoxon(a, b)
  r = M.paired_wilcoxon(a, b)
  assert r["statistic"] == pytest.approx(ref.statistic)
  assert r["p_value"] == pytest.approx(ref.pvalue)


def test_paired_wilcoxon_degenerate_cases():
  r = M.paired_wilcoxon([0.7, 0.8, 0.9], [0.7, 0.8, 0.9])
  assert r["p_value"] == 1.0 and r["statistic"] == 0.0 and "zero" in r["note"]
  r = M.paired_wilcoxon([0.7, np.nan], [0.6, 0.5])  # One usable pair.
  assert math.isnan(r["p_value"]) and r["n"] == 1 and r["mean_diff"] == pytest.approx(0.1)
  with pytest.raises(ValueError, match="pair up"):
    M.paired_wilcoxon([1, 2], [1])


def test_mean_roc_hand_curves():
  perfect = ([0.0, 0.0, 1.0], [0.0, 1.0, 1.0])
  diagonal = ([0.0, 1.0], [0.0, 1.0])
  grid, mean, std = M.mean_roc([perfect[0], diagonal[0], []],
                               [perfect[1], diagonal[1], []], grid=5)
  np.testing.assert_allclose(grid, [0, 0.25, 0.5, 0.75, 1.0])
  np.testing.assert_allclose(mean, [0.5, 0.625, 0.75, 0.875, 1.0])  # Empty curve skipped.
  np.testing.assert_allclose(std, np.std([[1.0] * 5, grid], axis=0, ddof=1))


def test_mean_roc_of_one_sklearn_curve_passes_through_its_points():
  fpr, tpr, _ = skm.roc_curve(Y, P)
  grid, mean, std = M.mean_roc([fpr], [tpr], grid=101)
  for f in np.unique(fpr):  # 4 negatives: every fpr is a multiple of 0.25, a grid point.
    i = int(round(f * 100))
    assert grid[i] == pytest.approx(f)
    assert mean[i] == pytest.approx(tpr[fpr == f].max())
  assert np.all(np.diff(mean) >= 0) and np.all(std == 0)
  _, mean, _ = M.mean_roc([], [])
  assert np.all(np.isnan(mean))


def test_youden_threshold_maximises_sensitivity_plus_specificity():
  y = np.array([0, 0, 0, 1, 1, 1])
  p = np.array([0.1, 0.3, 0.6, 0.55, 0.8, 0.9])
  # Brute force over the scores as thresholds gives the best achievable J.
  best = max(p, key=lambda t: np.mean(p[y == 1] >= t) + np.mean(p[y == 0] < t))
  t = M.youden_threshold(y, p)
  assert np.mean(p[y == 1] >= t) + np.mean(p[y == 0] < t) == pytest.approx(
      np.mean(p[y == 1] >= best) + np.mean(p[y == 0] < best))
  assert M.youden_threshold([1, 1, 1], [0.2, 0.4, 0.9]) == 0.5
