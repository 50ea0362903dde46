"""Evaluation metrics: what one test training's predictions are worth.

This module owns:
  * test metrics: binary (accuracy, sensitivity, specificity, balanced accuracy, PPV, NPV, AUROC,
    confusion), multi-class for grade mode, the binary S0 vs S1-S3 view of grade predictions,
    subject-level aggregation, mean +- std over folds, the validation threshold (Youden's J);
  * `degenerate`: whether a training's test predictions are near-constant (the one rule the
    report and every benchmark use);
  * the same metrics for B rows of per-image weights at once (`weighted_*`), which is how the
    bootstrap (`stats.py`) computes them for every resample in a few array operations.

Conventions:
  * the positive class is 1 (fatty, S1-S3): sensitivity = recall of 1, specificity = recall of 0;
  * a metric that is undefined on the given data (AUROC with one class, sensitivity without
    positives) is float('nan'), never an exception, so one odd fold does not stop a report;
    JSON writers must turn NaN into null;
  * "+-" is the sample standard deviation (ddof=1) over folds, as in the paper's Table 1.

scikit-learn is imported inside the functions that use it: the search core (`reinforce`) scores
rewards with `auroc` here and must not import scikit-learn (tests/test_imports.py).

Probability quality (Brier, calibration intercept and slope, net benefit) is `calibration.py`.
Written by hand only where no library installed here offers the vectorised form: the weighted
AUROC (a sorted Mann-Whitney sum).
"""

import math
import warnings

import numpy as np

# A training is degenerate (near-constant) when the interquartile range of its test P(fatty) is
# below DEGENERATE_IQR, or when its validation threshold puts at least DEGENERATE_ONE_CLASS of its
# test images in one class.
DEGENERATE_IQR = 0.05
DEGENERATE_ONE_CLASS = 0.95


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
    (`weighted_auroc` at unit weights, equal to roc_auc_score; nan with one class), confusion [[tn, fp], [fn, tp]], n, and
    roc {"fpr": [...], "tpr": [...]} from roc_curve (empty lists with one class). Floats are
    plain Python floats.
  """
  from sklearn import metrics as skm  # pylint: disable=g-import-not-at-top  (see module doc)
  y, p = _check_binary(y_true, prob, "binary_metrics")
  if not 0.0 <= threshold <= 1.0:
    raise ValueError(f"binary_metrics: threshold={threshold} must be in [0, 1]")
  pred = (p >= threshold).astype(np.int64)
  (tn, fp), (fn, tp) = skm.confusion_matrix(y, pred, labels=[0, 1]).tolist()
  both = np.unique(y).size == 2
  if both:
    fpr, tpr, _ = skm.roc_curve(y, p)
    auroc = _unit_auroc(y == 1, p)
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
  labels hold one class only or a probability is not finite.
  """
  from sklearn import metrics as skm  # pylint: disable=g-import-not-at-top  (see module doc)
  y = np.asarray(y_true)
  p = np.asarray(prob, np.float64)
  if np.unique(y).size < 2 or not np.all(np.isfinite(p)):
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

  The prediction is the most probable class. The macro AUROC is the one-vs-rest macro average
  (scikit-learn's `roc_auc_score(..., multi_class="ovr", average="macro")`, computed by
  `weighted_auroc` at unit weights) when every class is present;
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
  from sklearn import metrics as skm  # pylint: disable=g-import-not-at-top  (see module doc)
  y, p = _check_multiclass(y_true, prob, "multiclass_metrics")
  labels = np.arange(p.shape[1])
  pred = np.argmax(p, axis=1)
  sens = skm.recall_score(y, pred, labels=labels, average=None, zero_division=np.nan)
  per_class = [_unit_auroc(y == k, p[:, k]) if 0 < np.sum(y == k) < y.size
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


def weight_rows(weights, n, where):
  """weights as float64 [B, n] (a vector is one row), checked non-negative."""
  w = np.asarray(weights, np.float64)
  if w.ndim == 1:
    w = w[None, :]
  if w.ndim != 2 or w.shape[1] != n or np.any(w < 0):
    raise ValueError(f"{where}: weights {w.shape} must be non-negative [B, {n}]")
  return w


def safe_ratio(num, den):
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
  w = weight_rows(weights, y.size, "weighted_auroc")
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
  return safe_ratio(wins, pos.sum(axis=0) * neg.sum(axis=0))


def _unit_auroc(positive, score) -> float:
  """AUROC of one binary split at unit weights (the module's one AUROC, `weighted_auroc`)."""
  positive = np.asarray(positive, bool)
  return float(weighted_auroc(np.ones((1, positive.size)), positive, score)[0])


def auroc(labels, probs, num_classes: int) -> float:
  """AUROC of softmax outputs: binary, P(class 1); grade mode, the macro one-vs-rest mean.

  NaN when a class is missing or a probability is not finite. The project's one AUROC: the
  weighted Mann-Whitney sum at unit weights (equal to scikit-learn's `roc_auc_score`, tested).
  """
  y = np.asarray(labels).reshape(-1)
  p = np.asarray(probs, np.float64)
  if y.size == 0 or not np.all(np.isfinite(p)) or np.unique(y).size < min(2, num_classes):
    return float("nan")
  if num_classes == 2:
    return _unit_auroc(y == 1, p[:, 1])
  if np.unique(y).size < num_classes:
    return float("nan")
  return float(np.mean([_unit_auroc(y == k, p[:, k]) for k in range(num_classes)]))


def weighted_binary_metrics(weights, y_true, score, threshold=0.5, with_auroc=True):
  """Threshold metrics (and AUROC) for each row of weights.

  Args:
    weights: [B, n] (or [n]) non-negative weights.
    y_true: [n] labels 0/1.
    score: [n] probability of class 1.
    threshold: scalar or [n]; predict 1 where score >= threshold.
    with_auroc: also the AUROC (threshold-free, and most of the cost).

  Returns:
    {"accuracy", "sensitivity", "specificity", "balanced_accuracy", "ppv", "npv", "auroc"}:
    float64 [B] each (weighted rates; nan where a rate's denominator has no weight, e.g. PPV when
    nothing is called positive); no "auroc" when with_auroc is False.
  """
  y = np.asarray(y_true).astype(bool).reshape(-1)
  s = np.asarray(score, np.float64).reshape(-1)
  w = weight_rows(weights, y.size, "weighted_binary_metrics")
  pred = s >= np.asarray(threshold, np.float64)
  f = lambda mask: w @ mask.astype(np.float64)
  tp, tn, fp, fn = f(pred & y), f(~pred & ~y), f(pred & ~y), f(~pred & y)
  sens, spec = safe_ratio(tp, tp + fn), safe_ratio(tn, tn + fp)
  out = {"accuracy": safe_ratio(tp + tn, w.sum(axis=1)), "sensitivity": sens, "specificity": spec,
         "balanced_accuracy": (sens + spec) / 2.0, "ppv": safe_ratio(tp, tp + fp),
         "npv": safe_ratio(tn, tn + fn)}
  if with_auroc:
    out["auroc"] = weighted_auroc(w, y, s)
  return out


def degenerate_reason(prob, threshold) -> str:
  """Why a training's test predictions are near-constant, or '' when they are not.

  Near-constant: the interquartile range of P(fatty) is below DEGENERATE_IQR, or the validation
  threshold puts at least DEGENERATE_ONE_CLASS of the test images in one class. Such a model
  ranks by noise in the third decimal; its AUROC may still sit above 0.5, so "learned" needs both.

  Args:
    prob: [n] test P(fatty) of one training.
    threshold: its validation threshold.
  """
  p = np.asarray(prob, np.float64).reshape(-1)
  if p.size == 0:
    return ""
  q1, q3 = np.percentile(p, [25, 75])
  if q3 - q1 < DEGENERATE_IQR:
    return f"interquartile range of P(fatty) {q3 - q1:.3f} < {DEGENERATE_IQR}"
  share = float(np.mean(p >= threshold))
  if max(share, 1.0 - share) >= DEGENERATE_ONE_CLASS:
    cls = "fatty" if share >= 0.5 else "normal"
    return (f"the validation threshold {threshold:.3f} calls {100 * max(share, 1 - share):.0f} % "
            f"of the test images {cls}")
  return ""


def degenerate(prob, threshold) -> bool:
  """Whether a training's test predictions are near-constant (see `degenerate_reason`)."""
  return bool(degenerate_reason(prob, threshold))


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
  w = weight_rows(weights, y.size, "weighted_multiclass_metrics")
  correct = (np.argmax(p, axis=1) == y)
  sens, auc = [], []
  for k in range(p.shape[1]):
    is_k = y == k
    sens.append(safe_ratio(w @ (correct & is_k).astype(np.float64), w @ is_k.astype(np.float64)))
    auc.append(weighted_auroc(w, is_k, p[:, k]))
  return {
      "accuracy": safe_ratio(w @ correct.astype(np.float64), w.sum(axis=1)),
      "sensitivity": np.stack(sens, axis=1),
      "auroc_macro": _nanmean(np.stack(auc, axis=1), axis=1),
  }


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
