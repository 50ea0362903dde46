"""Tests for nasrl_jax.stats: the fold-stratified bootstrap of subjects and trainings (against
brute-force resampling), the corrected t-test (scikit-learn's worked example), Wilson (Newcombe
1998) and Holm (statsmodels)."""

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
from nasrl_jax import stats as S


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


def _brute(folds, counts, b, weights=None):
  """Resample b rebuilt as real datasets: each drawn subject's images repeated, scikit-learn
  metrics per training, the fold value the (multiplicity-weighted) mean over trainings."""
  per_fold = {name: [] for name in ("accuracy", "sensitivity", "specificity", "auroc")}
  for f, parts in sorted(folds.items()):
    subjects = np.unique(parts[0]["subject"])
    per_rep = {name: [] for name in per_fold}
    for part in parts.values():
      idx = np.concatenate([np.flatnonzero(part["subject"] == s).repeat(c)
                            for s, c in zip(subjects, counts[f][b])])
      y, sc = part["label"][idx], part["score"][idx]
      pred = sc >= 0.5
      per_rep["accuracy"].append(np.mean(pred == y))
      per_rep["sensitivity"].append(np.mean(pred[y == 1]) if (y == 1).any() else np.nan)
      per_rep["specificity"].append(np.mean(~pred[y == 0]) if (y == 0).any() else np.nan)
      per_rep["auroc"].append(skm.roc_auc_score(y, sc) if 0 < y.sum() < y.size else np.nan)
    m = np.ones(len(parts)) if weights is None else weights[f][b]
    for name in per_fold:
      v = np.asarray(per_rep[name])  # Trainings share labels: nan together.
      per_fold[name].append(np.nan if np.isnan(v).all() else np.sum(m * v) / np.sum(m))
  return {k: (np.nanmean(v) if np.isfinite(v).any() else np.nan) for k, v in per_fold.items()}


def test_fold_bootstrap_equals_brute_force_resampling():
  folds = _small_folds()
  out = S.fold_bootstrap({"m": folds}, _binary_stat, n_resamples=200, seed=7)["m"]
  # Redraw the same subject counts (one draw per fold, folds in sorted order), then each fold's
  # training multiplicities (after all subject draws), and rebuild each resample by hand.
  rng = np.random.default_rng(7)
  counts = {f: S.draw_subject_counts(len(np.unique(folds[f][0]["subject"])), 200, rng)
            for f in sorted(folds)}
  mult = {f: rng.multinomial(2, [0.5, 0.5], size=200) for f in sorted(folds)}
  nan_auroc = 0
  for b in range(40):
    fixed, both = _brute(folds, counts, b), _brute(folds, counts, b, mult)
    for name in fixed:
      for want, got in ((fixed[name], out["replicates_subjects"][name][b]),
                        (both[name], out["replicates"][name][b])):
        assert (math.isnan(want) and math.isnan(got)) or got == pytest.approx(want), (b, name)
    nan_auroc += int(math.isnan(_brute({0: folds[0]}, counts, b)["auroc"]))
  assert nan_auroc > 0  # The NaN-safe path (a one-class fold in a resample) was exercised.


def test_fold_bootstrap_estimate_is_the_mean_over_folds_of_sklearn_metrics():
  folds = _small_folds()
  out = S.fold_bootstrap({"m": folds}, _binary_stat, n_resamples=300, seed=0)["m"]
  for name in ("accuracy", "auroc"):
    per_fold = [np.mean([M.binary_metrics(p["label"], p["score"])[name] for p in parts.values()])
                for parts in folds.values()]
    assert out["estimate"][name] == pytest.approx(np.nanmean(per_fold))
    for key in ("ci", "ci_subjects"):
      low, high = out[key][name]
      assert low <= out["estimate"][name] <= high
  again = S.fold_bootstrap({"m": folds}, _binary_stat, n_resamples=300, seed=0)["m"]
  np.testing.assert_array_equal(again["replicates"]["auroc"], out["replicates"]["auroc"])


def test_trainings_that_disagree_widen_the_interval_beyond_the_subject_bootstrap():
  """Two trainings of one fold: one ranks well, one is nearly random. Resampling the trainings
  adds their disagreement to the interval; the subjects-only interval holds their mean fixed."""
  rng = np.random.default_rng(0)
  n = 60
  label = np.arange(n) % 2
  good = np.clip(0.5 + 0.4 * (label - 0.5) + rng.normal(0, 0.1, n), 0, 1)
  poor = np.clip(0.5 + 0.02 * (label - 0.5) + rng.normal(0, 0.2, n), 0, 1)
  subject = np.array([f"s{i}" for i in range(n)])
  part = lambda score: {"subject": subject, "label": label, "score": score}
  disagree = {0: {0: part(good), 1: part(poor)}}
  agree = {0: {0: part(good), 1: part(good + 1e-9)}}
  stat = lambda w, p: {"auroc": M.weighted_auroc(w, p["label"], p["score"])}
  out = S.fold_bootstrap({"d": disagree, "a": agree}, stat, n_resamples=2000, seed=3)
  width = lambda ci: float(ci["auroc"][1] - ci["auroc"][0])
  assert width(out["d"]["ci"]) > 1.5 * width(out["d"]["ci_subjects"])
  # Trainings that agree: resampling them changes nothing.
  assert width(out["a"]["ci"]) == pytest.approx(width(out["a"]["ci_subjects"]), rel=0.05)


def test_fold_bootstrap_two_subject_enumeration():
  # One fold, two subjects: a (one image, classified right) and b (one image, classified wrong).
  # Drawing two subjects with replacement gives aa, ab, ba, bb with probability 1/4 each, so the
  # resampled accuracy is 1, 1/2 or 0 with probabilities 1/4, 1/2, 1/4; the 95 % percentile
  # interval is [0, 1]; AUROC (one positive, one negative) is defined only for ab/ba.
  part = {"subject": np.array(["a", "b"]), "label": np.array([1, 1]), "score": np.array([0.9, 0.1])}
  part_auc = {"subject": np.array(["a", "b"]), "label": np.array([1, 0]),
              "score": np.array([0.9, 0.1])}
  out = S.fold_bootstrap({"m": {0: {0: part}}}, _binary_stat, n_resamples=4000, seed=1)["m"]
  acc = out["replicates"]["accuracy"]
  assert set(np.unique(acc)) == {0.0, 0.5, 1.0}
  assert np.mean(acc == 1.0) == pytest.approx(0.25, abs=0.03)
  assert np.mean(acc == 0.5) == pytest.approx(0.50, abs=0.03)
  np.testing.assert_allclose(out["ci"]["accuracy"], [0.0, 1.0])
  auc = S.fold_bootstrap({"m": {0: {0: part_auc}}}, _binary_stat, n_resamples=4000, seed=1)["m"]
  assert np.mean(np.isnan(auc["replicates"]["auroc"])) == pytest.approx(0.5, abs=0.03)
  np.testing.assert_allclose(auc["ci"]["auroc"], [1.0, 1.0])  # Finite resamples are all 1.


def test_shared_subject_draws_make_differences_paired():
  folds = _small_folds()
  flipped = {f: {r: dict(p, score=1.0 - p["score"]) for r, p in parts.items()}
             for f, parts in folds.items()}
  stat = lambda w, p: {"auroc": M.weighted_auroc(w, p["label"], p["score"])}
  out = S.fold_bootstrap({"a": folds, "same": folds, "flip": flipped}, stat, n_resamples=500,
                         seed=3)
  a, same, flip = (out[k] for k in ("a", "same", "flip"))
  # Subject draws are shared; training draws differ per model, so compare the subjects-only
  # replicates for exact pairing.
  np.testing.assert_allclose(same["replicates_subjects"]["auroc"],
                             a["replicates_subjects"]["auroc"])
  np.testing.assert_allclose(flip["replicates_subjects"]["auroc"],
                             1.0 - a["replicates_subjects"]["auroc"])
  d = S.bootstrap_difference(a["estimate"]["auroc"], same["estimate"]["auroc"],
                             a["replicates_subjects"]["auroc"], same["replicates_subjects"]["auroc"])
  assert d["diff"] == 0.0 and d["ci95"] == [0.0, 0.0] and d["p"] == 1.0
  d = S.bootstrap_difference(a["estimate"]["auroc"], flip["estimate"]["auroc"],
                             a["replicates"]["auroc"], flip["replicates"]["auroc"])
  assert d["diff"] == pytest.approx(2 * a["estimate"]["auroc"] - 1)
  assert d["ci95"][0] <= d["diff"] <= d["ci95"][1]
  if d["ci95"][0] > 0:
    assert d["p"] == pytest.approx(1.0 / (d["n_resamples"] + 1))  # The floor: never below 1/(B+1).


# --------------------------------------------------------------------------- intervals and tests


def test_wilson_interval_matches_newcombe_1998():
  # Newcombe (1998), Statistics in Medicine 17:857-872, Table II, method 3 (score interval
  # without continuity correction): 81/263, 15/148, 0/20 and 1/29.
  for (count, nobs), want in {(81, 263): (0.2553, 0.3662), (15, 148): (0.0624, 0.1605),
                              (0, 20): (0.0, 0.1611), (1, 29): (0.0061, 0.1718)}.items():
    assert S.wilson_interval(count, nobs) == pytest.approx(want, abs=5e-5)
    assert S.wilson_interval(count, nobs) == pytest.approx(
        proportion_confint(count, nobs, method="wilson"))
  assert all(math.isnan(v) for v in S.wilson_interval(0, 0))


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
  r = S.corrected_ttest(d, n_train=90, n_test=10)
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
    assert round(S.corrected_ttest(s[a] - s[b], 90, 10)["t"], 3) == t


def test_corrected_ttest_hand_value_and_edge_cases():
  d = np.array([0.02, 0.05, -0.01, 0.04])  # mean 0.025, var 0.0007.
  r = S.corrected_ttest(d, n_train=80, n_test=20)
  se = math.sqrt((1 / 4 + 20 / 80) * 0.0007)
  assert r["t"] == pytest.approx(0.025 / se)
  assert r["p"] == pytest.approx(2 * scipy.stats.t.sf(0.025 / se, 3))
  half = scipy.stats.t.ppf(0.975, 3) * se
  assert r["ci95"] == pytest.approx([0.025 - half, 0.025 + half])
  r = S.corrected_ttest([0.02, np.nan, 0.05, -0.01, 0.04], 80, 20)  # A NaN fold is left out.
  assert r["k"] == 4 and r["t"] == pytest.approx(0.025 / se)
  r = S.corrected_ttest([0.0, 0.0, 0.0], 80, 20)
  assert r["t"] == 0.0 and r["p"] == 1.0
  r = S.corrected_ttest([0.1], 80, 20)
  assert math.isnan(r["p"]) and "no test" in r["note"]
  with pytest.raises(ValueError, match="must be > 0"):
    S.corrected_ttest(d, 0, 20)


def test_holm_hand_value_statsmodels_and_nan():
  p = [0.01, 0.04, 0.03, 0.005]
  # Sorted: 0.005 * 4 = 0.02, 0.01 * 3 = 0.03, 0.03 * 2 = 0.06, 0.04 * 1 -> max(0.06, 0.04).
  np.testing.assert_allclose(S.holm(p), [0.03, 0.06, 0.06, 0.02])
  np.testing.assert_allclose(S.holm(p), multipletests(p, method="holm")[1])
  got = S.holm([0.01, np.nan, 0.04])
  assert math.isnan(got[1])
  np.testing.assert_allclose(got[[0, 2]], [0.02, 0.04])  # A family of two, not three.
  assert S.holm([0.9, 0.8]).max() <= 1.0


