"""Evaluation metrics and the statistics the report rests on.

This module owns:
  * test metrics: binary (accuracy, sensitivity, specificity, AUROC, confusion) and multi-class
    for grade mode (accuracy, per-class sensitivity, macro one-vs-rest AUROC, confusion), all
    scikit-learn; the binary S0 vs S1-S3 view of grade predictions; subject-level aggregation;
    mean +- std over folds; the validation threshold (Youden's J);
  * the subject bootstrap: resampling subjects with replacement within each outer fold's test
    part, with the metrics computed for every resample at once from per-image multiplicity
    weights (`weighted_*`), for CIs of a mean over folds (`fold_bootstrap`), of a pooled
    statistic (`pooled_bootstrap`) and of a paired difference (`bootstrap_difference`);
  * Wilson intervals (statsmodels), the Nadeau-Bengio corrected resampled t-test and Holm's
    adjustment (statsmodels).

Conventions:
  * the positive class is 1 (fatty, S1-S3): sensitivity = recall of 1, specificity = recall of 0;
  * a metric that is undefined on the given data (AUROC with one class, sensitivity without
    positives) is float('nan'), never an exception, so one odd fold does not stop a report;
    JSON writers must turn NaN into null;
  * "+-" is the sample standard deviation (ddof=1) over folds, as in the paper's Table 1.

Only the weighted AUROC (a sorted Mann-Whitney sum), the bootstrap loop and the corrected t-test are
written by hand: no library installed here ships them in a vectorised or corrected form.
"""

import math
import warnings

import numpy as np
import scipy.stats
from sklearn import metrics as skm

# Bootstrap resamples by default: percentile 95 % limits need >= 1,000 (Efron & Tibshirani 1993,
# ch. 13); 2,000 keeps the limits' Monte Carlo error near 0.005 and still runs in well under a
# second per model with the vectorised statistics below.
N_RESAMPLES = 2000
# Two-sided confidence level of every interval in this module unless a caller says otherwise.
CONFIDENCE = 0.95


def _check_binary(y_true, prob, where):
  y = np.asarray(y_true)
  p = np.asarray(prob, np.float64)
  if y.ndim != 1 or p.shape != y.shape or y.size == 0:
    raise ValueError(f"{where}: y_true {y.shape} and prob {p.shape} must be equal non-empty 1-D")
  if not np.all(np.isin(y, (0, 1))):
    raise ValueError(f"{where}: y_true must contain only 0 (normal) and 1 (fatty)")
  if not np.all(np.isfinite(p)) or np.any((p < 0) | (p > 1)):
    raise ValueError(f"{where}: prob must be finite probabilities in [0, 1]")
  return y.astype(np.int64), p


def binary_metrics(y_true, prob, threshold=0.5):
  """Test metrics of a binary classifier from its probabilities of the positive class.

  Args:
    y_true: [n] labels, 0 normal, 1 fatty (positive).
    prob: [n] predicted probability of class 1.
    threshold: predict 1 where prob >= threshold.

  Returns:
    dict with accuracy, sensitivity (recall of 1), specificity (recall of 0), auroc
    (roc_auc_score; nan when only one class is present), confusion [[tn, fp], [fn, tp]], n, and
    roc {"fpr": [...], "tpr": [...]} from roc_curve (empty lists with one class). Floats are
    plain Python floats.
  """
  y, p = _check_binary(y_true, prob, "binary_metrics")
  if not 0.0 <= threshold <= 1.0:
    raise ValueError(f"binary_metrics: threshold={threshold} must be in [0, 1]")
  pred = (p >= threshold).astype(np.int64)
  (tn, fp), (fn, tp) = skm.confusion_matrix(y, pred, labels=[0, 1]).tolist()
  both = np.unique(y).size == 2
  if both:
    fpr, tpr, _ = skm.roc_curve(y, p)
    auroc = float(skm.roc_auc_score(y, p))
    roc = {"fpr": [float(v) for v in fpr], "tpr": [float(v) for v in tpr]}
  else:
    auroc = math.nan
    roc = {"fpr": [], "tpr": []}
  return {
      "accuracy": float(skm.accuracy_score(y, pred)),
      "sensitivity": float(skm.recall_score(y, pred, pos_label=1, zero_division=np.nan)),
      "specificity": float(skm.recall_score(y, pred, pos_label=0, zero_division=np.nan)),
      "auroc": auroc,
      "confusion": [[int(tn), int(fp)], [int(fn), int(tp)]],
      "n": int(y.size),
      "roc": roc,
  }


def subject_level(subject_id, y_true, prob):
  """Aggregates image predictions per subject.

  A subject's probability is the mean of its images' probabilities; its label is the majority
  label of its images (a subject normally has one CAP measurement, hence one label; if labels
  are mixed and tied, the higher label -- fatty -- wins, the conservative choice for screening).

  Args:
    subject_id: [n] subject of each image.
    y_true: [n] integer labels.
    prob: [n] predicted probability of class 1.

  Returns:
    (subjects, y_subj, prob_subj): sorted unique subject ids, int64 labels, float64 mean
    probabilities, aligned.
  """
  sid = np.asarray(subject_id)
  y = np.asarray(y_true)
  p = np.asarray(prob, np.float64)
  if sid.ndim != 1 or y.shape != sid.shape or p.shape != sid.shape or sid.size == 0:
    raise ValueError(
        f"subject_level: subject_id {sid.shape}, y_true {y.shape} and prob {p.shape} must be "
        "equal non-empty 1-D")
  if y.dtype.kind not in "iub":
    raise ValueError(f"subject_level: y_true must be integer labels, got {y.dtype}")
  subjects, inv, counts = np.unique(sid, return_inverse=True, return_counts=True)
  prob_subj = np.bincount(inv, weights=p, minlength=subjects.size) / counts
  classes, y_inv = np.unique(y, return_inverse=True)
  votes = np.zeros((subjects.size, classes.size), np.int64)
  np.add.at(votes, (inv, y_inv), 1)
  # argmax over reversed classes picks the highest label among tied majorities.
  y_subj = classes[classes.size - 1 - np.argmax(votes[:, ::-1], axis=1)]
  return subjects, y_subj.astype(np.int64), prob_subj


def mean_std(values):
  """Mean and sample standard deviation over folds, ignoring NaN.

  Args:
    values: 1-D sequence of floats (one per fold); NaN entries (undefined for that fold) are left
      out and counted.

  Returns:
    {"mean", "std", "n", "n_nan"}: std uses ddof=1 (the sample std behind the paper's "+-") when
    n > 1, is 0.0 when n == 1; mean and std are nan when n == 0.
  """
  v = np.asarray(values, np.float64).reshape(-1)
  nan = np.isnan(v)
  v = v[~nan]
  n = int(v.size)
  if n == 0:
    mean, std = math.nan, math.nan
  else:
    mean = float(np.mean(v))
    std = float(np.std(v, ddof=1)) if n > 1 else 0.0
  return {"mean": mean, "std": std, "n": n, "n_nan": int(nan.sum())}


def youden_threshold(y_true, prob, default=0.5) -> float:
  """Decision threshold maximising Youden's J = sensitivity + specificity - 1 (sklearn roc_curve).

  Used on validation data to pick the exported model's threshold. Returns `default` when the
  labels hold one class only.
  """
  y = np.asarray(y_true)
  p = np.asarray(prob, np.float64)
  if np.unique(y).size < 2:
    return float(default)
  fpr, tpr, thr = skm.roc_curve(y, p)
  best = int(np.argmax(tpr - fpr))
  return float(np.clip(thr[best], 0.0, 1.0))


# --------------------------------------------------------------------------- grade mode


def _check_multiclass(y_true, prob, where):
  y = np.asarray(y_true)
  p = np.asarray(prob, np.float64)
  if y.ndim != 1 or p.ndim != 2 or p.shape[0] != y.size or y.size == 0 or p.shape[1] < 2:
    raise ValueError(f"{where}: y_true {y.shape} must be [n] and prob {p.shape} [n, C>=2], n > 0")
  if y.dtype.kind not in "iub" or np.any((y < 0) | (y >= p.shape[1])):
    raise ValueError(f"{where}: y_true must be integer labels in [0, {p.shape[1]})")
  if not np.all(np.isfinite(p)) or np.any((p < 0) | (p > 1)):
    raise ValueError(f"{where}: prob must be finite probabilities in [0, 1]")
  return y.astype(np.int64), p


def multiclass_metrics(y_true, prob):
  """Test metrics of a C-class classifier (grade mode: S0..S3) from its softmax outputs.

  The prediction is the most probable class. The macro AUROC is scikit-learn's one-vs-rest macro
  average (`roc_auc_score(..., multi_class="ovr", average="macro")`) when every class is present;
  a small test part often lacks the rarest grade, and then the average runs over the classes that
  are present (with both their positives and negatives), rather than being undefined.

  Args:
    y_true: [n] integer labels in [0, C).
    prob: [n, C] class probabilities.

  Returns:
    dict with accuracy, sensitivity ([C] recall per class, nan for a class absent from y_true),
    auroc_per_class ([C], one class vs the rest, nan when undefined), auroc_macro (nan when no
    class is defined), confusion ([C][C], rows true, columns predicted) and n.
  """
  y, p = _check_multiclass(y_true, prob, "multiclass_metrics")
  labels = np.arange(p.shape[1])
  pred = np.argmax(p, axis=1)
  sens = skm.recall_score(y, pred, labels=labels, average=None, zero_division=np.nan)
  per_class = [float(skm.roc_auc_score(y == k, p[:, k])) if 0 < np.sum(y == k) < y.size
               else math.nan for k in labels]
  defined = [a for a in per_class if not math.isnan(a)]
  return {
      "accuracy": float(skm.accuracy_score(y, pred)),
      "sensitivity": [float(s) for s in sens],
      "auroc_per_class": per_class,
      "auroc_macro": float(np.mean(defined)) if defined else math.nan,
      "confusion": skm.confusion_matrix(y, pred, labels=labels).tolist(),
      "n": int(y.size),
  }


def binary_view(y_true, prob):
  """The binary S0 vs S1-S3 view of C-class predictions.

  Args:
    y_true: [n] integer labels, 0 normal (S0), > 0 fatty.
    prob: [n, C] class probabilities (C = 2 in binary mode, 4 in grade mode).

  Returns:
    (y_fatty int64 [n], p_fatty float64 [n]) with y_fatty = y > 0 and p_fatty = 1 - p[:, 0],
    clipped to [0, 1] (a float32 softmax can sum to 1 + 1e-7).
  """
  y, p = _check_multiclass(y_true, prob, "binary_view")
  return (y > 0).astype(np.int64), np.clip(1.0 - p[:, 0], 0.0, 1.0)


# --------------------------------------------------------------------------- weighted metrics
# Every function here takes weights [B, n] (one row per bootstrap resample: the multiplicity of
# each image) and returns one value per row, so B resamples cost a few array operations instead of
# B calls into scikit-learn. With one row of ones they are the unweighted metrics.


def _rows(weights, n, where):
  w = np.asarray(weights, np.float64)
  if w.ndim == 1:
    w = w[None, :]
  if w.ndim != 2 or w.shape[1] != n or np.any(w < 0):
    raise ValueError(f"{where}: weights {w.shape} must be non-negative [B, {n}]")
  return w


def _ratio(num, den):
  """num / den elementwise, nan where den is 0 (an undefined rate, not an error)."""
  num = np.asarray(num, np.float64)
  den = np.asarray(den, np.float64)
  return np.divide(num, den, out=np.full(np.broadcast(num, den).shape, np.nan), where=den > 0)


def _nanmean(x, axis):
  """np.nanmean without the all-NaN RuntimeWarning (an all-NaN slice is a legitimate nan here)."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    return np.nanmean(x, axis=axis)


def weighted_auroc(weights, y_true, score):
  """AUROC for each row of weights: the weighted Mann-Whitney statistic, ties counted 1/2.

  AUROC = sum over positive i, negative j of w_i w_j ([s_i > s_j] + [s_i == s_j] / 2), divided by
  (sum of positive weights)(sum of negative weights). Scores are sorted once; within each run of
  tied scores the weights are summed, so a row costs O(n) after the sort. With integer weights this
  is the AUROC of the dataset with each image repeated w times (sklearn's `roc_auc_score` with
  `sample_weight`).

  Args:
    weights: [B, n] (or [n]) non-negative weights.
    y_true: [n] labels, 1 (or True) positive.
    score: [n] scores, higher means more likely positive.

  Returns:
    float64 [B]; nan where a row gives no weight to one of the two classes.
  """
  y = np.asarray(y_true).astype(bool).reshape(-1)
  s = np.asarray(score, np.float64).reshape(-1)
  if s.shape != y.shape or y.size == 0:
    raise ValueError(
        f"weighted_auroc: y_true {y.shape} and score {s.shape} must be equal and non-empty")
  w = _rows(weights, y.size, "weighted_auroc")
  order = np.argsort(s, kind="stable")
  s, y = s[order], y[order]
  # Images along axis 0, resamples along axis 1 (contiguous): reduceat then sums whole rows,
  # several times faster than reducing along the last axis of [B, n].
  wt = np.ascontiguousarray(w.T[order])
  starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # First index of each run of equal scores.
  pos = np.add.reduceat(wt * y[:, None], starts, axis=0)
  neg = np.add.reduceat(wt * ~y[:, None], starts, axis=0)
  below = np.cumsum(neg, axis=0) - neg  # Negative weight strictly below each run.
  wins = np.sum(pos * (below + 0.5 * neg), axis=0)
  return _ratio(wins, pos.sum(axis=0) * neg.sum(axis=0))


def weighted_binary_metrics(weights, y_true, score, threshold=0.5, with_auroc=True):
  """Accuracy, sensitivity, specificity and AUROC for each row of weights.

  Args:
    weights: [B, n] (or [n]) non-negative weights.
    y_true: [n] labels 0/1.
    score: [n] probability of class 1.
    threshold: scalar or [n]; predict 1 where score >= threshold.
    with_auroc: also the AUROC (threshold-free, and most of the cost).

  Returns:
    {"accuracy", "sensitivity", "specificity", "auroc"}: float64 [B] each (weighted means; nan
    where the rate's denominator has no weight); no "auroc" when with_auroc is False.
  """
  y = np.asarray(y_true).astype(bool).reshape(-1)
  s = np.asarray(score, np.float64).reshape(-1)
  w = _rows(weights, y.size, "weighted_binary_metrics")
  pred = s >= np.asarray(threshold, np.float64)
  pos, neg = y.astype(np.float64), (~y).astype(np.float64)
  out = {
      "accuracy": _ratio(w @ (pred == y).astype(np.float64), w.sum(axis=1)),
      "sensitivity": _ratio(w @ (pred & y).astype(np.float64), w @ pos),
      "specificity": _ratio(w @ (~pred & ~y).astype(np.float64), w @ neg),
  }
  if with_auroc:
    out["auroc"] = weighted_auroc(w, y, s)
  return out


def weighted_multiclass_metrics(weights, y_true, prob):
  """Grade-mode metrics of `multiclass_metrics` for each row of weights.

  Args:
    weights: [B, n] (or [n]) non-negative weights.
    y_true: [n] integer labels in [0, C).
    prob: [n, C] class probabilities.

  Returns:
    {"accuracy": [B], "sensitivity": [B, C], "auroc_macro": [B]}: the macro AUROC averages the
    classes defined in that row (both positives and negatives weighted), as `multiclass_metrics`.
  """
  y = np.asarray(y_true).reshape(-1)
  p = np.asarray(prob, np.float64)
  w = _rows(weights, y.size, "weighted_multiclass_metrics")
  correct = (np.argmax(p, axis=1) == y)
  sens, auc = [], []
  for k in range(p.shape[1]):
    is_k = y == k
    sens.append(_ratio(w @ (correct & is_k).astype(np.float64), w @ is_k.astype(np.float64)))
    auc.append(weighted_auroc(w, is_k, p[:, k]))
  return {
      "accuracy": _ratio(w @ correct.astype(np.float64), w.sum(axis=1)),
      "sensitivity": np.stack(sens, axis=1),
      "auroc_macro": _nanmean(np.stack(auc, axis=1), axis=1),
  }


# --------------------------------------------------------------------------- subject bootstrap
# A part is one model's predictions on one outer fold's test part for one replicate (search seed):
# a dict of aligned [n] arrays holding at least "subject" and whatever the statistic reads.
# Folds are {fold: {replicate: part}}; the replicates of a fold predict the same test subjects.


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


def _union_subjects(parts):
  return np.unique(np.concatenate([np.asarray(p["subject"]).astype(str) for p in parts]))


def _subject_index(subjects, part):
  return np.searchsorted(subjects, np.asarray(part["subject"]).astype(str))


def _mean_of(dicts):
  """Elementwise mean of a list of {name: array} dicts (NaN ignored: an undefined member)."""
  return {k: _nanmean(np.stack([d[k] for d in dicts]), axis=0) for k in dicts[0]}


def percentile_interval(replicates, confidence=CONFIDENCE):
  """Percentile bootstrap interval along axis 0, NaN replicates left out.

  Args:
    replicates: [B, ...] bootstrap values.
    confidence: two-sided level.

  Returns:
    float64 [2, ...]: low and high limits (nan where no replicate is finite).
  """
  r = np.asarray(replicates, np.float64)
  tail = 100.0 * (1.0 - confidence) / 2.0
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    return np.nanpercentile(r, [tail, 100.0 - tail], axis=0)


def fold_bootstrap(folds, statistic, *, n_resamples=N_RESAMPLES, seed=0, confidence=CONFIDENCE):
  """Subject bootstrap CI of a mean over outer folds of a per-fold statistic.

  Each resample draws, within each outer fold (stratified by fold), as many subjects as that
  fold's test part holds, with replacement; every image of a drawn subject comes along, as many
  times as the subject was drawn (its weight). Each resample then computes the same statistic as
  the point estimate: per fold the mean over replicates (seeds) of `statistic`, then the mean over
  folds, leaving out folds where it is undefined (e.g. AUROC of a resample with one class). The
  point estimate is `statistic` at unit weights, so the two can never disagree in definition.

  Args:
    folds: {fold: {replicate: part}} (see above).
    statistic: f(weights [B, n], part) -> {name: float64 [B] or [B, ...]}.
    n_resamples: B.
    seed: seeds the numpy Generator; folds draw in sorted order, one call each.
    confidence: two-sided level of the percentile interval.

  Returns:
    {"estimate": {name: float or array}, "ci": {name: [2, ...] low/high},
     "replicates": {name: [B, ...]}, "n_resamples", "seed", "confidence"}.
  """
  if not folds:
    raise ValueError("fold_bootstrap: no folds")
  rng = np.random.default_rng(seed)
  fold_reps, fold_points = [], []
  for f in sorted(folds):
    parts = folds[f]
    subjects = _union_subjects(parts.values())
    counts = draw_subject_counts(subjects.size, n_resamples, rng)
    reps, points = [], []
    for r in sorted(parts):
      idx = _subject_index(subjects, parts[r])
      reps.append(statistic(counts[:, idx], parts[r]))
      points.append(statistic(np.ones((1, idx.size)), parts[r]))
    fold_reps.append(_mean_of(reps))
    fold_points.append(_mean_of(points))
  replicates = _mean_of(fold_reps)
  estimate = {k: _scalar(v[0]) for k, v in _mean_of(fold_points).items()}
  return {"estimate": estimate,
          "ci": {k: percentile_interval(v, confidence) for k, v in replicates.items()},
          "replicates": replicates, "n_resamples": int(n_resamples), "seed": seed,
          "confidence": confidence}


def _scalar(x):
  x = np.asarray(x, np.float64)
  return float(x) if x.ndim == 0 else x


def _concat_parts(parts):
  return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}


def pooled_bootstrap(models, statistic, *, n_resamples=N_RESAMPLES, seed=0,
                     confidence=CONFIDENCE):
  """Subject bootstrap of a statistic of pooled out-of-fold predictions, for several models at once.

  Per model and replicate (seed), the test parts of all outer folds are pooled and `statistic` is
  computed on the pool; the model's value is the mean over its replicates. Subjects are drawn as
  in `fold_bootstrap` (within each outer fold, from the union of every model's test subjects of
  that fold), and every model sees the same draws, so differences between models are paired.

  Args:
    models: {name: {fold: {replicate: part}}}.
    statistic: f(weights [B, n], part) -> {name: float64 [B] or [B, ...]}.
    n_resamples, seed, confidence: as in `fold_bootstrap`.

  Returns:
    {model name: {"estimate", "ci", "replicates"}} as in `fold_bootstrap`.
  """
  if not models:
    raise ValueError("pooled_bootstrap: no models")
  rng = np.random.default_rng(seed)
  fold_ids = sorted({f for folds in models.values() for f in folds})
  counts, subjects = {}, {}
  for f in fold_ids:
    subjects[f] = _union_subjects(
        [p for folds in models.values() for p in folds.get(f, {}).values()])
    counts[f] = draw_subject_counts(subjects[f].size, n_resamples, rng)
  out = {}
  for name, folds in models.items():
    reps, points = [], []
    for r in sorted({r for parts in folds.values() for r in parts}):
      members = [(f, folds[f][r]) for f in fold_ids if r in folds.get(f, {})]
      weights = np.concatenate(
          [counts[f][:, _subject_index(subjects[f], part)] for f, part in members], axis=1)
      pool = _concat_parts([part for _, part in members])
      reps.append(statistic(weights, pool))
      points.append(statistic(np.ones((1, weights.shape[1])), pool))
    replicates = _mean_of(reps)
    out[name] = {"estimate": {k: _scalar(v[0]) for k, v in _mean_of(points).items()},
                 "ci": {k: percentile_interval(v, confidence) for k, v in replicates.items()},
                 "replicates": replicates}
  return out


def bootstrap_difference(estimate_a, estimate_b, replicates_a, replicates_b,
                         confidence=CONFIDENCE):
  """Paired bootstrap of a difference A - B (replicates drawn on the same subjects).

  Args:
    estimate_a, estimate_b: the point estimates.
    replicates_a, replicates_b: [B] values on the same resamples (`pooled_bootstrap`).
    confidence: two-sided level.

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


# --------------------------------------------------------------------------- tests and intervals


def wilson_interval(count, nobs, confidence=CONFIDENCE):
  """Wilson score interval of a proportion count / nobs (statsmodels `proportion_confint`).

  Returns:
    (low, high) floats; (nan, nan) when nobs is 0.
  """
  # Imported here: statsmodels pulls in pandas (about a second), which the training side of the
  # pipeline, importing this module for its metrics, does not need.
  from statsmodels.stats.proportion import proportion_confint
  if int(nobs) <= 0:
    return math.nan, math.nan
  low, high = proportion_confint(int(count), int(nobs), alpha=1.0 - confidence, method="wilson")
  return float(low), float(high)


def corrected_ttest(differences, n_train, n_test, confidence=CONFIDENCE):
  """Nadeau & Bengio's corrected resampled t-test of per-fold differences A - B.

  The folds' training sets overlap, so per-fold differences are correlated and the plain paired
  t-test's variance var(d) / k is too small. Nadeau & Bengio (2003) correct it to
  (1 / k + n_test / n_train) var(d):
    t = mean(d) / sqrt((1 / k + n_test / n_train) var(d, ddof=1)),  df = k - 1,
  with a two-sided p-value and the CI mean(d) +- t_{df, (1 + confidence) / 2} * se from the same
  corrected standard error (scikit-learn's example "Statistical comparison of models using grid
  search" computes the same t, one-sided).

  Args:
    differences: [k] per-fold differences; NaN folds (undefined for either model) are left out.
    n_train: training images per fold (mean over folds).
    n_test: test images per fold (mean over folds).
    confidence: two-sided level of the CI.

  Returns:
    {"diff", "t", "df", "p", "ci95": [low, high], "se", "k", "n_train", "n_test", "note"}: with
    k < 2 the test is undefined (t, p, CI nan); with zero variance, identical differences of 0
    give t 0 and p 1, any other constant difference t +-inf and p 0 ("note" says so).
  """
  d = np.asarray(differences, np.float64).reshape(-1)
  d = d[np.isfinite(d)]
  k = int(d.size)
  if not (n_train > 0 and n_test > 0):
    raise ValueError(f"corrected_ttest: n_train={n_train} and n_test={n_test} must be > 0")
  out = {"diff": float(np.mean(d)) if k else math.nan, "t": math.nan, "df": k - 1,
         "p": math.nan, "ci95": [math.nan, math.nan], "se": math.nan, "k": k,
         "n_train": float(n_train), "n_test": float(n_test), "note": ""}
  if k < 2:
    out["note"] = f"only {k} fold(s) with a value for both models; no test"
    return out
  mean = out["diff"]
  se = math.sqrt((1.0 / k + n_test / n_train) * float(np.var(d, ddof=1)))
  out["se"] = se
  if se == 0.0:
    out.update(t=0.0 if mean == 0 else math.copysign(math.inf, mean),
               p=1.0 if mean == 0 else 0.0, ci95=[mean, mean],
               note="every fold gave the same difference")
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
  from statsmodels.stats.multitest import multipletests  # Lazy: see wilson_interval.
  p = np.asarray(p_values, np.float64).reshape(-1)
  out = np.full(p.shape, np.nan)
  ok = np.isfinite(p)
  if ok.any():
    out[ok] = multipletests(p[ok], method="holm")[1]
  return out


def confusion(y_true, y_pred, num_classes):
  """Confusion matrix [C][C] (rows true, columns predicted) as nested lists of ints.

  Same as scikit-learn's `confusion_matrix(y_true, y_pred, labels=range(C))`, counted with
  np.bincount because the report needs hundreds of them and scikit-learn's input checks cost a few
  milliseconds per call.
  """
  y = np.asarray(y_true, np.int64).reshape(-1)
  p = np.asarray(y_pred, np.int64).reshape(-1)
  c = int(num_classes)
  return np.bincount(y * c + p, minlength=c * c).reshape(c, c).tolist()
