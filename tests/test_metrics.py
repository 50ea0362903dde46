"""Tests for nasrl_jax.metrics against hand-computed values and scikit-learn / statsmodels."""

import math

import numpy as np
import pytest
import statsmodels.api as sm
from sklearn import metrics as skm

from nasrl_jax import calibration as C
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


def test_youden_threshold_maximises_sensitivity_plus_specificity():
  y = np.array([0, 0, 0, 1, 1, 1])
  p = np.array([0.1, 0.3, 0.6, 0.55, 0.8, 0.9])
  # Brute force over the scores as thresholds gives the best achievable J.
  best = max(p, key=lambda t: np.mean(p[y == 1] >= t) + np.mean(p[y == 0] < t))
  t = M.youden_threshold(y, p)
  assert np.mean(p[y == 1] >= t) + np.mean(p[y == 0] < t) == pytest.approx(
      np.mean(p[y == 1] >= best) + np.mean(p[y == 0] < best))
  assert M.youden_threshold([1, 1, 1], [0.2, 0.4, 0.9]) == 0.5


# --------------------------------------------------------------------------- grade mode


def _grade_case(seed=0, n=40, classes=4):
  rng = np.random.default_rng(seed)
  y = np.repeat(np.arange(classes), n // classes)
  logits = rng.normal(size=(y.size, classes)) + 1.5 * np.eye(classes)[y]
  p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
  return y, p


def test_multiclass_metrics_match_sklearn():
  y, p = _grade_case()
  m = M.multiclass_metrics(y, p)
  pred = p.argmax(axis=1)
  assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
  assert m["sensitivity"] == pytest.approx(skm.recall_score(y, pred, average=None).tolist())
  assert m["auroc_macro"] == pytest.approx(
      skm.roc_auc_score(y, p, multi_class="ovr", average="macro"))
  assert m["confusion"] == skm.confusion_matrix(y, pred).tolist()
  assert m["n"] == y.size


def test_multiclass_metrics_with_an_absent_grade():
  y, p = _grade_case()
  keep = y != 3  # A test part without any S3 image: common with 31 images.
  m = M.multiclass_metrics(y[keep], p[keep])
  assert math.isnan(m["sensitivity"][3]) and math.isnan(m["auroc_per_class"][3])
  present = [skm.roc_auc_score(y[keep] == k, p[keep][:, k]) for k in range(3)]
  assert m["auroc_macro"] == pytest.approx(np.mean(present))


def test_binary_view_is_s0_against_the_rest():
  y = np.array([0, 1, 2, 3, 0])
  p = np.array([[0.7, 0.1, 0.1, 0.1], [0.2, 0.5, 0.2, 0.1], [0.1, 0.1, 0.1, 0.7],
                [0.4, 0.2, 0.2, 0.2], [1.0, 0.0, 0.0, 0.0]])
  yb, pb = M.binary_view(y, p)
  assert yb.tolist() == [0, 1, 1, 1, 0]
  np.testing.assert_allclose(pb, [0.3, 0.8, 0.9, 0.6, 0.0], atol=1e-12)
  with pytest.raises(ValueError, match="integer labels"):
    M.binary_view([0, 4], p[:2])


# --------------------------------------------------------------------------- weighted metrics


def test_weighted_auroc_matches_sklearn_sample_weight_with_ties():
  rng = np.random.default_rng(1)
  y = rng.integers(0, 2, 50)
  s = np.round(rng.random(50), 1)  # Rounded: many ties across the classes.
  weights = rng.integers(0, 4, (6, 50))
  got = M.weighted_auroc(weights, y, s)
  want = [skm.roc_auc_score(y, s, sample_weight=w) for w in weights]
  np.testing.assert_allclose(got, want, rtol=1e-12)
  assert M.weighted_auroc(np.ones(50), y, s)[0] == pytest.approx(skm.roc_auc_score(y, s))


def test_weighted_auroc_hand_value_and_one_class_rows():
  # Positives 0.8 (weight 2) and 0.5 (weight 1); negatives 0.5 (weight 1) and 0.2 (weight 3).
  # Pairs won: 0.8 beats both (2 * 4 = 8), 0.5 beats 0.2 (1 * 3) and ties 0.5 (1 * 1 / 2): 11.5
  # of (3 * 4) = 12.
  y, s = [1, 1, 0, 0], [0.8, 0.5, 0.5, 0.2]
  w = [[2, 1, 1, 3], [1, 1, 0, 0]]  # Second row: no negative weight, so undefined.
  got = M.weighted_auroc(w, y, s)
  assert got[0] == pytest.approx(11.5 / 12) and math.isnan(got[1])


def test_weighted_binary_and_multiclass_metrics_match_sklearn():
  rng = np.random.default_rng(2)
  y, s = rng.integers(0, 2, 30), rng.random(30)
  w = rng.integers(0, 3, 30)
  got = M.weighted_binary_metrics(w, y, s, threshold=0.4)
  pred = (s >= 0.4).astype(int)
  assert got["accuracy"][0] == pytest.approx(skm.accuracy_score(y, pred, sample_weight=w))
  assert got["sensitivity"][0] == pytest.approx(skm.recall_score(y, pred, sample_weight=w))
  assert got["specificity"][0] == pytest.approx(
      skm.recall_score(y, pred, pos_label=0, sample_weight=w))
  assert got["auroc"][0] == pytest.approx(skm.roc_auc_score(y, s, sample_weight=w))
  unit = M.binary_metrics(y, s, threshold=0.4)
  for name in ("accuracy", "sensitivity", "specificity", "auroc"):
    assert M.weighted_binary_metrics(np.ones(30), y, s, 0.4)[name][0] == pytest.approx(unit[name])
  yg, pg = _grade_case(seed=3)
  wg = rng.integers(1, 3, yg.size)
  got = M.weighted_multiclass_metrics(wg, yg, pg)
  pred = pg.argmax(axis=1)
  assert got["accuracy"][0] == pytest.approx(skm.accuracy_score(yg, pred, sample_weight=wg))
  np.testing.assert_allclose(got["sensitivity"][0],
                             skm.recall_score(yg, pred, average=None, sample_weight=wg))
  assert got["auroc_macro"][0] == pytest.approx(np.mean(
      [skm.roc_auc_score(yg == k, pg[:, k], sample_weight=wg) for k in range(4)]))


def test_confusion_matches_sklearn():
  rng = np.random.default_rng(5)
  y, pred = rng.integers(0, 4, 60), rng.integers(0, 4, 60)
  assert M.confusion(y, pred, 4) == skm.confusion_matrix(y, pred, labels=range(4)).tolist()
  assert M.confusion([1, 1], [1, 1], 2) == [[0, 0], [0, 2]]  # Absent classes still counted as 0.


# --------------------------------------------------------------------------- clinical metrics


def test_weighted_ppv_npv_balanced_accuracy_and_brier_match_sklearn():
  rng = np.random.default_rng(2)
  y = rng.integers(0, 2, 80)
  p = np.clip(0.3 * y + rng.uniform(0, 0.7, 80), 0, 1)
  w = rng.integers(0, 3, 80)
  got = M.weighted_binary_metrics(w, y, p, 0.45, with_auroc=False)
  pred = (p >= 0.45).astype(int)
  assert got["balanced_accuracy"][0] == pytest.approx(
      skm.balanced_accuracy_score(y, pred, sample_weight=w))
  assert got["ppv"][0] == pytest.approx(skm.precision_score(y, pred, sample_weight=w))
  assert got["npv"][0] == pytest.approx(
      skm.precision_score(1 - y, 1 - pred, sample_weight=w))
  assert C.weighted_brier(w, y, p)[0] == pytest.approx(skm.brier_score_loss(y, p, sample_weight=w))
  # Nothing called positive: PPV is undefined (nan), not 0.
  assert math.isnan(M.weighted_binary_metrics(np.ones(80), y, p, 2.0)["ppv"][0])


def test_calibration_intercept_and_slope_match_statsmodels_per_bootstrap_row():
  rng = np.random.default_rng(0)
  n = 150
  p = rng.uniform(0.05, 0.95, n)
  y = (rng.uniform(size=n) < p ** 1.5).astype(int)  # Miscalibrated on purpose.
  x = np.log(p / (1 - p))
  w = np.vstack([np.ones(n), rng.multinomial(n, np.ones(n) / n, size=3)])
  got = C.weighted_calibration(w, y, p)
  for row in range(w.shape[0]):
    slope = sm.GLM(y, sm.add_constant(x), family=sm.families.Binomial(),
                   freq_weights=w[row]).fit()
    large = sm.GLM(y, np.ones((n, 1)), family=sm.families.Binomial(), offset=x,
                   freq_weights=w[row]).fit()
    assert got["calibration_slope"][row] == pytest.approx(slope.params[1], abs=1e-6)
    assert got["calibration_intercept"][row] == pytest.approx(large.params[0], abs=1e-6)
  # Perfectly calibrated in expectation: y drawn from p itself.
  big = rng.uniform(0.05, 0.95, 20000)
  calibrated = C.weighted_calibration(np.ones(big.size), rng.uniform(size=big.size) < big, big)
  assert calibrated["calibration_slope"][0] == pytest.approx(1.0, abs=0.08)
  assert calibrated["calibration_intercept"][0] == pytest.approx(0.0, abs=0.05)
  # Undefined: constant predictions (slope), one class only (both); max_rows leaves the rest NaN.
  flat = C.weighted_calibration(np.ones(n), y, np.full(n, 0.6))
  assert math.isnan(flat["calibration_slope"][0]) and math.isfinite(flat["calibration_intercept"][0])
  one = C.weighted_calibration(np.ones(n), np.ones(n), p)
  assert math.isnan(one["calibration_slope"][0]) and math.isnan(one["calibration_intercept"][0])
  part = C.weighted_calibration(w, y, p, max_rows=2)
  assert np.isfinite(part["calibration_slope"][:2]).all()
  assert np.isnan(part["calibration_slope"][2:]).all()


def test_net_benefit_hand_values():
  # 4 fatty, 6 normal. At t = 0.5 the rule p >= 0.5 finds 3 true and 1 false positive:
  # NB = 3/10 - 1/10 * 0.5/0.5 = 0.2. At t = 0.2: 4 TP, 3 FP -> 0.4 - 0.3 * 0.25 = 0.325.
  y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
  p = np.array([0.9, 0.8, 0.6, 0.3, 0.7, 0.4, 0.25, 0.1, 0.1, 0.05])
  np.testing.assert_allclose(C.net_benefit(y, p, [0.5, 0.2]), [0.2, 0.325])
  # Treat all: prevalence - (1 - prevalence) t / (1 - t).
  np.testing.assert_allclose(C.net_benefit(y, np.ones(10), [0.25]), [0.4 - 0.6 / 3])
  with pytest.raises(ValueError, match="strictly between"):
    C.net_benefit(y, p, [0.0])


def test_degenerate_is_a_narrow_spread_or_one_class_at_the_threshold():
  rng = np.random.default_rng(0)
  spread = rng.uniform(0.1, 0.9, 100)
  assert not M.degenerate(spread, 0.5)
  near_constant = 0.51 + rng.uniform(0, 0.04, 100)  # The quick job's 0.509-0.549.
  assert M.degenerate(near_constant, 0.3)
  assert "interquartile range" in M.degenerate_reason(near_constant, 0.3)
  one_sided = np.concatenate([rng.uniform(0.6, 0.95, 96), rng.uniform(0.0, 0.3, 4)])
  assert M.degenerate(one_sided, 0.5)  # IQR is wide, but 96 % are called fatty.
  assert "96 % of the test images fatty" in M.degenerate_reason(one_sided, 0.5)
  assert not M.degenerate(one_sided, 0.8)


def test_the_one_auroc_matches_sklearn_binary_and_macro():
  rng = np.random.default_rng(3)
  y = rng.integers(0, 2, 50)
  p = rng.uniform(size=50)
  assert M.auroc(y, np.stack([1 - p, p], 1), 2) == pytest.approx(skm.roc_auc_score(y, p))
  g = rng.integers(0, 4, 80)
  prob = rng.dirichlet(np.ones(4), 80)
  assert M.auroc(g, prob, 4) == pytest.approx(
      skm.roc_auc_score(g, prob, multi_class="ovr", average="macro"))
  assert math.isnan(M.auroc(np.ones(5, int), np.full((5, 2), 0.5), 2))  # One class.
  assert math.isnan(M.auroc(g[g < 3], prob[g < 3], 4))  # A grade missing.
