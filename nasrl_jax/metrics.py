"""Evaluation metrics: binary test metrics, subject-level aggregation, mean +- std over folds,
paired tests between models, and the mean ROC curve with a band.

Thin wrappers over scikit-learn and scipy; this module only fixes the conventions:
  * the positive class is 1 (fatty, S1-S3): sensitivity = recall of 1, specificity = recall of 0;
  * a metric that is undefined on the given data (AUROC with one class, sensitivity without
    positives) is float('nan'), never an exception, so one odd fold does not stop a report;
    JSON writers must turn NaN into null;
  * "+-" is the sample standard deviation (ddof=1) over folds, as in the paper's Table 1.
"""

import math

import numpy as np
import scipy.stats
from sklearn import metrics as skm


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


def paired_wilcoxon(a, b):
  """Two-sided Wilcoxon signed-rank test of paired per-fold scores (scipy.stats.wilcoxon).

  Args:
    a: [n] scores of model A (e.g. per-fold accuracy of NASRL).
    b: [n] scores of model B on the same folds (e.g. VGG19).

  Returns:
    {"statistic", "p_value", "n", "mean_diff", "note"}: n counts pairs where both are not NaN;
    mean_diff is mean(a - b). With n < 2 statistic and p are nan; when every difference is zero
    the models are indistinguishable on these folds: statistic 0.0, p 1.0 (scipy would fail).
    `note` says which of these happened ('' otherwise).
  """
  a = np.asarray(a, np.float64).reshape(-1)
  b = np.asarray(b, np.float64).reshape(-1)
  if a.shape != b.shape:
    raise ValueError(f"paired_wilcoxon: a {a.shape} and b {b.shape} must pair up")
  keep = ~(np.isnan(a) | np.isnan(b))
  d = a[keep] - b[keep]
  n = int(d.size)
  mean_diff = float(np.mean(d)) if n else math.nan
  if n < 2:
    return {"statistic": math.nan, "p_value": math.nan, "n": n, "mean_diff": mean_diff,
            "note": f"only {n} paired value(s); no test"}
  if np.all(d == 0):
    return {"statistic": 0.0, "p_value": 1.0, "n": n, "mean_diff": 0.0,
            "note": "all differences are zero"}
  res = scipy.stats.wilcoxon(a[keep], b[keep], alternative="two-sided")
  return {"statistic": float(res.statistic), "p_value": float(res.pvalue), "n": n,
          "mean_diff": mean_diff, "note": ""}


def mean_roc(fprs, tprs, grid=101):
  """Vertical average of per-fold ROC curves on a common false-positive-rate grid.

  Each curve is read as the piecewise-linear ROC through its points; where a curve has several
  points at one fpr (a vertical step) the highest tpr is used, i.e. the best tpr reachable at that
  fpr. Folds with empty curves (a one-class test part) are skipped.

  Args:
    fprs: list of per-fold fpr sequences (as in binary_metrics(...)["roc"]["fpr"]).
    tprs: list of matching tpr sequences.
    grid: number of grid points on [0, 1].

  Returns:
    (grid_fpr, mean_tpr, std_tpr): float64[grid] arrays; std uses ddof=1 when more than one
    curve (0 for one curve, nan for none), to match mean_std.
  """
  if len(fprs) != len(tprs):
    raise ValueError(f"mean_roc: {len(fprs)} fpr curves but {len(tprs)} tpr curves")
  if int(grid) < 2:
    raise ValueError(f"mean_roc: grid={grid} must be >= 2")
  grid_fpr = np.linspace(0.0, 1.0, int(grid))
  curves = []
  for i, (f, t) in enumerate(zip(fprs, tprs)):
    f = np.asarray(f, np.float64)
    t = np.asarray(t, np.float64)
    if f.shape != t.shape or f.ndim != 1:
      raise ValueError(f"mean_roc: curve {i} has fpr {f.shape} and tpr {t.shape}")
    if f.size == 0:
      continue
    if np.any(np.diff(f) < 0) or f.min() < 0 or f.max() > 1:
      raise ValueError(f"mean_roc: curve {i} fpr must be non-decreasing in [0, 1]")
    xs, first = np.unique(f, return_index=True)
    ys = np.maximum.reduceat(t, first)  # f is sorted, so each run of equal fpr is contiguous.
    curves.append(np.interp(grid_fpr, xs, ys))
  if not curves:
    nan = np.full(grid_fpr.shape, np.nan)
    return grid_fpr, nan, nan.copy()
  curves = np.stack(curves)
  std = curves.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros(grid_fpr.shape)
  return grid_fpr, curves.mean(axis=0), std


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
