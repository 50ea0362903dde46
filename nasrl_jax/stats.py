"""The statistics the report's intervals and tests rest on (thin over numpy, scipy, statsmodels).

This module owns:
  * the fold-stratified bootstrap: within each outer fold's test part, subjects are resampled with
    replacement (every image of a drawn subject comes along, as often as the subject was drawn)
    and, independently, the fold's test trainings (its replicates: training seeds, and search
    seeds where there are several) are resampled with replacement. One pass gives both the
    subjects-only replicates (the trainings' mean kept fixed) and the subjects-and-trainings
    replicates, with the same subject draws for every model (paired differences);
  * the percentile interval, the paired bootstrap difference;
  * Nadeau & Bengio's corrected resampled t-test / t-interval over outer folds, Holm's adjustment
    (statsmodels) and Wilson's interval (statsmodels).

Per-image metrics for B resamples at once live in `metrics` (`weighted_*`); this module only
draws, averages and reads intervals off them.
"""

import math
import warnings

import numpy as np
import scipy.stats

# Bootstrap resamples by default: percentile 95 % limits need >= 1,000 (Efron & Tibshirani 1993,
# ch. 13); 2,000 keeps the limits' Monte Carlo error near 0.005.
N_RESAMPLES = 2000
# Two-sided confidence level of every interval unless a caller says otherwise.
CONFIDENCE = 0.95


def _nanmean(x, axis):
  """np.nanmean without the all-NaN RuntimeWarning (an all-NaN slice is a legitimate nan here)."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    return np.nanmean(x, axis=axis)


def draw_subject_counts(n_subjects, n_resamples, rng):
  """How often each subject is drawn when n_subjects are drawn with replacement, per resample.

  Args:
    n_subjects: subjects in the stratum (one outer fold's test part).
    n_resamples: B.
    rng: a numpy Generator; consumes one `integers` call.

  Returns:
    int64 [B, n_subjects], each row summing to n_subjects.
  """
  draws = rng.integers(0, n_subjects, size=(n_resamples, n_subjects))
  counts = np.zeros((n_resamples, n_subjects), np.int64)
  np.add.at(counts, (np.arange(n_resamples)[:, None], draws), 1)
  return counts


def percentile_interval(replicates, confidence=CONFIDENCE):
  """Percentile bootstrap interval along axis 0, NaN replicates left out.

  Returns:
    float64 [2, ...]: low and high limits (nan where no replicate is finite).
  """
  r = np.asarray(replicates, np.float64)
  tail = 100.0 * (1.0 - confidence) / 2.0
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    return np.nanpercentile(r, [tail, 100.0 - tail], axis=0)


def _mean_of(dicts):
  """Elementwise mean of a list of {name: array} dicts (NaN ignored: an undefined member)."""
  return {k: _nanmean(np.stack([d[k] for d in dicts]), axis=0) for k in dicts[0]}


def _weighted_mean_of(dicts, weights):
  """Mean of {name: [B, ...]} dicts with per-row multiplicities `weights` [B, R] (NaN ignored)."""
  out = {}
  for k in dicts[0]:
    v = np.stack([d[k] for d in dicts], axis=1)  # [B, R, ...]
    w = weights.reshape(weights.shape + (1,) * (v.ndim - 2)).astype(np.float64)
    w = np.where(np.isfinite(v), w, 0.0)
    total = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
      out[k] = np.where(total > 0, np.nansum(np.where(w > 0, v, 0.0) * w, axis=1) / total,
                        np.nan)
  return out


def _scalar(x):
  x = np.asarray(x, np.float64)
  return float(x) if x.ndim == 0 else x


def _subjects(parts):
  return np.unique(np.concatenate([np.asarray(p["subject"]).astype(str) for p in parts]))


def fold_bootstrap(models, statistic, *, n_resamples=N_RESAMPLES, seed=0, confidence=CONFIDENCE):
  """Fold-stratified bootstrap of a mean over outer folds, for several models with shared draws.

  Within each outer fold, subjects are drawn with replacement from the union of every model's
  test subjects of that fold (the same draws for every model: differences are paired), and each
  model's replicates of the fold (its test trainings) are drawn with replacement, independently
  per model. A fold's value is the mean over its replicates of `statistic`; the statistic of a
  resample is the mean of the fold values over the folds where it is defined.

  Args:
    models: {name: {fold: {replicate: part}}}; a part is a dict of aligned [n] arrays holding at
      least "subject" and whatever `statistic` reads.
    statistic: f(weights [B, n], part) -> {name: float64 [B] or [B, ...]}.
    n_resamples: B.
    seed: seeds the numpy Generator (folds draw in sorted order, then models in the given order).
    confidence: two-sided level of the percentile intervals.

  Returns:
    {model: {"estimate": {name: value}, "replicates": {name: [B, ...]} (subjects and
    replicates resampled), "replicates_subjects": {...} (subjects only), "ci", "ci_subjects"
    ({name: [2, ...]}), "n_replicates": {fold: R}}}.
  """
  if not models or not any(models.values()):
    raise ValueError("fold_bootstrap: no folds")
  rng = np.random.default_rng(seed)
  fold_ids = sorted({f for folds in models.values() for f in folds})
  counts, subjects = {}, {}
  for f in fold_ids:
    subjects[f] = _subjects([p for folds in models.values() for p in folds.get(f, {}).values()])
    counts[f] = draw_subject_counts(subjects[f].size, n_resamples, rng)
  out = {}
  for name, folds in models.items():
    full, fixed, points, sizes = [], [], [], {}
    for f in sorted(folds):
      reps = [folds[f][r] for r in sorted(folds[f])]
      sizes[f] = len(reps)
      values = [statistic(counts[f][:, np.searchsorted(subjects[f],
                                                      np.asarray(p["subject"]).astype(str))], p)
                for p in reps]
      multiplicity = rng.multinomial(len(reps), np.full(len(reps), 1.0 / len(reps)),
                                     size=n_resamples)
      fixed.append(_mean_of(values))
      full.append(_weighted_mean_of(values, multiplicity))
      points.append(_mean_of([statistic(np.ones((1, np.asarray(p["subject"]).size)), p)
                              for p in reps]))
    replicates, replicates_subjects = _mean_of(full), _mean_of(fixed)
    out[name] = {
        "estimate": {k: _scalar(v[0]) for k, v in _mean_of(points).items()},
        "replicates": replicates, "replicates_subjects": replicates_subjects,
        "ci": {k: percentile_interval(v, confidence) for k, v in replicates.items()},
        "ci_subjects": {k: percentile_interval(v, confidence)
                        for k, v in replicates_subjects.items()},
        "n_replicates": sizes}
  return out


def bootstrap_difference(estimate_a, estimate_b, replicates_a, replicates_b,
                         confidence=CONFIDENCE):
  """Paired bootstrap of a difference A - B (replicates drawn on the same subjects).

  Returns:
    {"diff", "ci95": [low, high] (percentile), "p", "n_resamples"}: p is two-sided,
    2 * min(P*(diff <= 0), P*(diff >= 0)) over the finite resamples, floored at 1 / (B + 1) (a
    bootstrap of B resamples cannot show a smaller p) and capped at 1.
  """
  d = np.asarray(replicates_a, np.float64) - np.asarray(replicates_b, np.float64)
  d = d[np.isfinite(d)]
  diff = float(estimate_a) - float(estimate_b)
  if d.size == 0:
    return {"diff": diff, "ci95": [math.nan, math.nan], "p": math.nan, "n_resamples": 0}
  low, high = percentile_interval(d, confidence)
  p = 2.0 * min(np.mean(d <= 0), np.mean(d >= 0))
  return {"diff": diff, "ci95": [float(low), float(high)],
          "p": float(min(1.0, max(p, 1.0 / (d.size + 1)))), "n_resamples": int(d.size)}


def wilson_interval(count, nobs, confidence=CONFIDENCE):
  """Wilson score interval of a proportion count / nobs (statsmodels `proportion_confint`).

  Returns:
    (low, high) floats; (nan, nan) when nobs is 0.
  """
  # Imported here: statsmodels pulls in pandas (about a second).
  from statsmodels.stats.proportion import proportion_confint  # pylint: disable=g-import-not-at-top
  if int(nobs) <= 0:
    return math.nan, math.nan
  low, high = proportion_confint(int(count), int(nobs), alpha=1.0 - confidence, method="wilson")
  return float(low), float(high)


def corrected_ttest(values, n_train, n_test, confidence=CONFIDENCE):
  """Nadeau & Bengio's corrected resampled t-test (and t-interval) of per-fold values.

  The folds' training sets overlap, so per-fold values are correlated and the plain t's variance
  var(d) / k is too small. Nadeau & Bengio (2003) correct it to (1 / k + n_test / n_train) var(d):
    t = mean(d) / sqrt((1 / k + n_test / n_train) var(d, ddof=1)),  df = k - 1,
  with a two-sided p-value against 0 and the interval mean(d) +- t_{df, (1 + confidence) / 2} se
  (scikit-learn's example "Statistical comparison of models using grid search" computes the same t,
  one-sided). Applied to per-fold differences A - B it is the paired test; applied to one model's
  per-fold values its interval covers everything that varies between outer folds.

  Args:
    values: [k] per-fold values or differences; NaN folds (undefined there) are left out.
    n_train: images a fold's model is trained on (n - n_test under k-fold CV).
    n_test: test images per fold.
    confidence: two-sided level of the interval.

  Returns:
    {"diff", "t", "df", "p", "ci95": [low, high], "se", "k", "n_train", "n_test", "note"}: "diff" is
    the mean; with k < 2 the test is undefined (t, p, CI nan); with zero variance, identical values
    of 0 give t 0 and p 1, any other constant t +-inf and p 0 ("note" says so).
  """
  d = np.asarray(values, np.float64).reshape(-1)
  d = d[np.isfinite(d)]
  k = int(d.size)
  if not (n_train > 0 and n_test > 0):
    raise ValueError(f"corrected_ttest: n_train={n_train} and n_test={n_test} must be > 0")
  out = {"diff": float(np.mean(d)) if k else math.nan, "t": math.nan, "df": k - 1,
         "p": math.nan, "ci95": [math.nan, math.nan], "se": math.nan, "k": k,
         "n_train": float(n_train), "n_test": float(n_test), "note": ""}
  if k < 2:
    out["note"] = f"only {k} fold(s) with a value; no test"
    return out
  mean = out["diff"]
  se = math.sqrt((1.0 / k + n_test / n_train) * float(np.var(d, ddof=1)))
  out["se"] = se
  if se == 0.0:
    out.update(t=0.0 if mean == 0 else math.copysign(math.inf, mean),
               p=1.0 if mean == 0 else 0.0, ci95=[mean, mean],
               note="every fold gave the same value")
    return out
  t = mean / se
  half = float(scipy.stats.t.ppf(0.5 + confidence / 2.0, k - 1)) * se
  out.update(t=t, p=float(2.0 * scipy.stats.t.sf(abs(t), k - 1)), ci95=[mean - half, mean + half])
  return out


def holm(p_values):
  """Holm's step-down adjustment (statsmodels `multipletests(method="holm")`).

  Args:
    p_values: sequence of p-values; NaN (a test that could not run) stays NaN and is not counted
      in the family.

  Returns:
    float64 array of adjusted p-values, aligned with the input.
  """
  from statsmodels.stats.multitest import multipletests  # pylint: disable=g-import-not-at-top
  p = np.asarray(p_values, np.float64).reshape(-1)
  out = np.full(p.shape, np.nan)
  ok = np.isfinite(p)
  if ok.any():
    out[ok] = multipletests(p[ok], method="holm")[1]
  return out
