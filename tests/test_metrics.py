"""Tests for nasrl_jax.metrics against hand-computed values, scikit-learn / statsmodels, and
published worked examples (scikit-learn's corrected t-test example, Newcombe's Wilson intervals)."""

import itertools
import math

import numpy as np
import pytest
import scipy.stats
from sklearn import metrics as skm
from sklearn.datasets import make_moons
from sklearn.model_selection import RepeatedStratifiedKFold, cross_val_score
from sklearn.svm import SVC
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

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


# --------------------------------------------------------------------------- subject bootstrap


def _binary_stat(w, part):
  return M.weighted_binary_metrics(w, part["label"], part["score"])


def _small_folds():
  """2 outer folds x 2 seeds; subjects with 1-3 images, tied scores, small enough for one-class
  resamples (nan AUROC) to happen."""
  rng = np.random.default_rng(4)
  folds = {}
  for f, n_subj in ((0, 4), (1, 5)):
    reps = rng.integers(1, 4, n_subj)
    subj = np.repeat([f"f{f}s{i}" for i in range(n_subj)], reps)
    label = np.repeat(np.arange(n_subj) % 2, reps)  # Odd subjects fatty: one label per subject.
    folds[f] = {seed: {"subject": subj, "label": label,
                       "score": np.round(rng.random(subj.size), 1)} for seed in (0, 1)}
  return folds


def test_fold_bootstrap_equals_brute_force_resampling():
  folds = _small_folds()
  out = M.fold_bootstrap(folds, _binary_stat, n_resamples=200, seed=7)
  # Redraw the same subject counts (one draw per fold, folds in sorted order) and rebuild each
  # resample as a real dataset: each drawn subject's images repeated, scored by scikit-learn.
  rng = np.random.default_rng(7)
  counts = {f: M.draw_subject_counts(len(np.unique(folds[f][0]["subject"])), 200, rng)
            for f in sorted(folds)}
  nan_auroc = 0
  for b in range(40):
    per_fold = {name: [] for name in ("accuracy", "sensitivity", "specificity", "auroc")}
    for f, parts in folds.items():
      subjects = np.unique(parts[0]["subject"])
      per_seed = {name: [] for name in per_fold}
      for part in parts.values():
        idx = np.concatenate([np.flatnonzero(part["subject"] == s).repeat(c)
                              for s, c in zip(subjects, counts[f][b])])
        y, s = part["label"][idx], part["score"][idx]
        pred = s >= 0.5
        per_seed["accuracy"].append(np.mean(pred == y))
        per_seed["sensitivity"].append(np.mean(pred[y == 1]) if (y == 1).any() else np.nan)
        per_seed["specificity"].append(np.mean(~pred[y == 0]) if (y == 0).any() else np.nan)
        per_seed["auroc"].append(skm.roc_auc_score(y, s) if 0 < y.sum() < y.size else np.nan)
      for name in per_fold:
        per_fold[name].append(np.mean(per_seed[name]))  # Seeds share labels: nan together.
    for name, values in per_fold.items():
      want = np.nanmean(values) if np.isfinite(values).any() else np.nan
      got = out["replicates"][name][b]
      assert (math.isnan(want) and math.isnan(got)) or got == pytest.approx(want), (b, name)
    nan_auroc += int(any(math.isnan(v) for v in per_fold["auroc"]))
  assert nan_auroc > 0  # The NaN-safe path (a one-class fold in a resample) was exercised.


def test_fold_bootstrap_estimate_is_the_mean_over_folds_of_sklearn_metrics():
  folds = _small_folds()
  out = M.fold_bootstrap(folds, _binary_stat, n_resamples=300, seed=0)
  for name in ("accuracy", "auroc"):
    per_fold = [np.mean([M.binary_metrics(p["label"], p["score"])[name] for p in parts.values()])
                for parts in folds.values()]
    assert out["estimate"][name] == pytest.approx(np.nanmean(per_fold))
    low, high = out["ci"][name]
    assert low <= out["estimate"][name] <= high
  again = M.fold_bootstrap(folds, _binary_stat, n_resamples=300, seed=0)
  np.testing.assert_array_equal(again["replicates"]["auroc"], out["replicates"]["auroc"])


def test_fold_bootstrap_two_subject_enumeration():
  # One fold, two subjects: a (one image, classified right) and b (one image, classified wrong).
  # Drawing two subjects with replacement gives aa, ab, ba, bb with probability 1/4 each, so the
  # resampled accuracy is 1, 1/2 or 0 with probabilities 1/4, 1/2, 1/4; the 95 % percentile
  # interval is [0, 1]; AUROC (one positive, one negative) is defined only for ab/ba.
  part = {"subject": np.array(["a", "b"]), "label": np.array([1, 1]), "score": np.array([0.9, 0.1])}
  part_auc = {"subject": np.array(["a", "b"]), "label": np.array([1, 0]),
              "score": np.array([0.9, 0.1])}
  out = M.fold_bootstrap({0: {0: part}}, _binary_stat, n_resamples=4000, seed=1)
  acc = out["replicates"]["accuracy"]
  assert set(np.unique(acc)) == {0.0, 0.5, 1.0}
  assert np.mean(acc == 1.0) == pytest.approx(0.25, abs=0.03)
  assert np.mean(acc == 0.5) == pytest.approx(0.50, abs=0.03)
  np.testing.assert_allclose(out["ci"]["accuracy"], [0.0, 1.0])
  auc = M.fold_bootstrap({0: {0: part_auc}}, _binary_stat, n_resamples=4000, seed=1)
  assert np.mean(np.isnan(auc["replicates"]["auroc"])) == pytest.approx(0.5, abs=0.03)
  np.testing.assert_allclose(auc["ci"]["auroc"], [1.0, 1.0])  # Finite resamples are all 1.


def test_pooled_bootstrap_and_paired_difference():
  folds = _small_folds()
  flipped = {f: {r: dict(p, score=1.0 - p["score"]) for r, p in parts.items()}
             for f, parts in folds.items()}
  stat = lambda w, p: {"auroc": M.weighted_auroc(w, p["label"], p["score"])}
  out = M.pooled_bootstrap({"a": folds, "same": folds, "flip": flipped}, stat, n_resamples=500,
                           seed=3)
  # The point estimate is the pooled AUROC per seed (scikit-learn), averaged over seeds.
  want = np.mean([skm.roc_auc_score(np.concatenate([folds[f][r]["label"] for f in folds]),
                                    np.concatenate([folds[f][r]["score"] for f in folds]))
                  for r in (0, 1)])
  assert out["a"]["estimate"]["auroc"] == pytest.approx(want)
  a, same, flip = (out[k] for k in ("a", "same", "flip"))
  d = M.bootstrap_difference(a["estimate"]["auroc"], same["estimate"]["auroc"],
                             a["replicates"]["auroc"], same["replicates"]["auroc"])
  assert d["diff"] == 0.0 and d["ci95"] == [0.0, 0.0] and d["p"] == 1.0
  d = M.bootstrap_difference(a["estimate"]["auroc"], flip["estimate"]["auroc"],
                             a["replicates"]["auroc"], flip["replicates"]["auroc"])
  # Flipping the scores mirrors the AUROC in every resample (1 - AUROC): same draws, paired.
  np.testing.assert_allclose(flip["replicates"]["auroc"], 1.0 - a["replicates"]["auroc"])
  assert d["diff"] == pytest.approx(2 * want - 1)
  assert d["ci95"][0] <= d["diff"] <= d["ci95"][1]
  if d["ci95"][0] > 0:
    assert d["p"] == pytest.approx(1.0 / (d["n_resamples"] + 1))  # The floor: never below 1/(B+1).


# --------------------------------------------------------------------------- intervals and tests


def test_wilson_interval_matches_newcombe_1998():
  # Newcombe (1998), Statistics in Medicine 17:857-872, Table II, method 3 (score interval
  # without continuity correction): 81/263, 15/148, 0/20 and 1/29.
  for (count, nobs), want in {(81, 263): (0.2553, 0.3662), (15, 148): (0.0624, 0.1605),
                              (0, 20): (0.0, 0.1611), (1, 29): (0.0061, 0.1718)}.items():
    assert M.wilson_interval(count, nobs) == pytest.approx(want, abs=5e-5)
    assert M.wilson_interval(count, nobs) == pytest.approx(
        proportion_confint(count, nobs, method="wilson"))
  assert all(math.isnan(v) for v in M.wilson_interval(0, 0))


@pytest.fixture(scope="module")
def sklearn_example_scores():
  """Per-split ROC AUC of scikit-learn's example "Statistical comparison of models using grid
  search" (examples/model_selection/plot_grid_search_stats.py): SVCs on make_moons(noise=0.352,
  random_state=1, n_samples=100), 10 x 10-fold RepeatedStratifiedKFold(random_state=0)."""
  x, y = make_moons(noise=0.352, random_state=1, n_samples=100)
  cv = RepeatedStratifiedKFold(n_splits=10, n_repeats=10, random_state=0)
  models = {"rbf": SVC(kernel="rbf", random_state=0),
            "linear": SVC(kernel="linear", random_state=0),
            "3_poly": SVC(kernel="poly", degree=3, random_state=0),
            "2_poly": SVC(kernel="poly", degree=2, random_state=0)}
  return {k: cross_val_score(m, x, y, scoring="roc_auc", cv=cv) for k, m in models.items()}


def test_corrected_ttest_reproduces_the_sklearn_worked_example(sklearn_example_scores):
  s = sklearn_example_scores
  d = s["rbf"] - s["linear"]
  r = M.corrected_ttest(d, n_train=90, n_test=10)
  # Printed by the example (scikit-learn 1.4 documentation): "Corrected t-value: 0.750",
  # "Corrected p-value: 0.227" (one-sided, t.sf); ours is two-sided, so twice that.
  assert round(r["t"], 3) == 0.750
  assert round(r["p"] / 2, 3) == 0.227
  assert r["df"] == 99 and r["k"] == 100
  # Its 95 % interval of the mean difference (the example's Bayesian t posterior uses the same
  # corrected scale): [-0.016445, 0.036445].
  assert r["ci95"] == pytest.approx([-0.016445, 0.036445], abs=5e-7)
  # And the example's uncorrected t (2.611): the correction is what makes the difference.
  assert round(np.mean(d) / np.sqrt(np.var(d, ddof=1) / d.size), 3) == 2.611
  # Its pairwise table: t for every pair of kernels.
  table = {("rbf", "3_poly"): 1.657, ("rbf", "2_poly"): 4.565, ("linear", "3_poly"): 1.111,
           ("linear", "2_poly"): 4.276, ("3_poly", "2_poly"): 3.851}
  for (a, b), t in table.items():
    assert round(M.corrected_ttest(s[a] - s[b], 90, 10)["t"], 3) == t


def test_corrected_ttest_hand_value_and_edge_cases():
  d = np.array([0.02, 0.05, -0.01, 0.04])  # mean 0.025, var 0.0007.
  r = M.corrected_ttest(d, n_train=80, n_test=20)
  se = math.sqrt((1 / 4 + 20 / 80) * 0.0007)
  assert r["t"] == pytest.approx(0.025 / se)
  assert r["p"] == pytest.approx(2 * scipy.stats.t.sf(0.025 / se, 3))
  half = scipy.stats.t.ppf(0.975, 3) * se
  assert r["ci95"] == pytest.approx([0.025 - half, 0.025 + half])
  r = M.corrected_ttest([0.02, np.nan, 0.05, -0.01, 0.04], 80, 20)  # A NaN fold is left out.
  assert r["k"] == 4 and r["t"] == pytest.approx(0.025 / se)
  r = M.corrected_ttest([0.0, 0.0, 0.0], 80, 20)
  assert r["t"] == 0.0 and r["p"] == 1.0
  r = M.corrected_ttest([0.1], 80, 20)
  assert math.isnan(r["p"]) and "no test" in r["note"]
  with pytest.raises(ValueError, match="must be > 0"):
    M.corrected_ttest(d, 0, 20)


def test_holm_hand_value_statsmodels_and_nan():
  p = [0.01, 0.04, 0.03, 0.005]
  # Sorted: 0.005 * 4 = 0.02, 0.01 * 3 = 0.03, 0.03 * 2 = 0.06, 0.04 * 1 -> max(0.06, 0.04).
  np.testing.assert_allclose(M.holm(p), [0.03, 0.06, 0.06, 0.02])
  np.testing.assert_allclose(M.holm(p), multipletests(p, method="holm")[1])
  got = M.holm([0.01, np.nan, 0.04])
  assert math.isnan(got[1])
  np.testing.assert_allclose(got[[0, 2]], [0.02, 0.04])  # A family of two, not three.
  assert M.holm([0.9, 0.8]).max() <= 1.0


def test_confusion_matches_sklearn():
  rng = np.random.default_rng(5)
  y, pred = rng.integers(0, 4, 60), rng.integers(0, 4, 60)
  assert M.confusion(y, pred, 4) == skm.confusion_matrix(y, pred, labels=range(4)).tolist()
  assert M.confusion([1, 1], [1, 1], 2) == [[0, 0], [0, 2]]  # Absent classes still counted as 0.
