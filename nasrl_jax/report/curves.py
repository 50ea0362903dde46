"""Per-outer-fold curves for the plots: ROC, reliability and net benefit, never pooled over folds.

Each test training gives one curve on a fixed grid; a fold's curve is the mean over its trainings
and the plotted mean is over folds, so predictions of different fold models (which may sit on
different probability scales) are never thrown into one pool. Reads a model entry of the report
object (its `folds` with test predictions).
"""

import collections
import warnings

import numpy as np
from sklearn import metrics as skm

from nasrl_jax import calibration
from nasrl_jax import metrics

FPR_GRID = np.linspace(0.0, 1.0, 101)
# Decision-curve thresholds (Vickers & Elkin 2006): the range a screening decision could use.
NET_BENEFIT_THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.01), 2)
RELIABILITY_BINS = 10


def _trainings_by_fold(entry):
  out = collections.defaultdict(list)
  for f in entry.get("folds") or []:
    y, p = metrics.binary_view(np.asarray(f["test"]["label"], np.int64),
                               np.asarray(f["test"]["prob"], np.float64))
    out[f["fold"]].append((y, p))
  return dict(sorted(out.items()))


def _fold_means(per_fold):
  """{fold: [curve per training]} -> ({fold: mean curve}, mean over folds); NaN points (an empty
  reliability bin) are left out of the means."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # An all-NaN bin stays NaN.
    folds = {f: np.nanmean(np.stack(c), axis=0) for f, c in per_fold.items() if c}
    if not folds:
      return {}, None
    return folds, np.nanmean(np.stack(list(folds.values())), axis=0)


def roc(entry):
  """{"fpr", "folds": {fold: tpr}, "mean": tpr}: vertical averaging of each training's ROC."""
  per_fold = {}
  for f, trainings in _trainings_by_fold(entry).items():
    curves = []
    for y, p in trainings:
      if np.unique(y).size == 2:
        fpr, tpr, _ = skm.roc_curve(y, p)
        curves.append(np.interp(FPR_GRID, fpr, tpr))
    per_fold[f] = curves
  folds, mean = _fold_means(per_fold)
  return {"fpr": FPR_GRID, "folds": folds, "mean": mean}


def reliability(entry, bins=RELIABILITY_BINS):
  """{"bins" (centres), "folds": {fold: observed frequency per bin}, "mean"}: equal-width bins of
  P(fatty); a bin without predictions in a training is NaN there (left out of the means)."""
  edges = np.linspace(0.0, 1.0, bins + 1)
  per_fold = {}
  for f, trainings in _trainings_by_fold(entry).items():
    curves = []
    for y, p in trainings:
      which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
      count = np.bincount(which, minlength=bins).astype(np.float64)
      pos = np.bincount(which, weights=y.astype(np.float64), minlength=bins)
      curves.append(np.divide(pos, count, out=np.full(bins, np.nan), where=count > 0))
    per_fold[f] = curves
  folds, mean = _fold_means(per_fold)
  return {"bins": (edges[:-1] + edges[1:]) / 2, "folds": folds, "mean": mean}


def decision_curve(entry, thresholds=NET_BENEFIT_THRESHOLDS):
  """{"thresholds", "folds": {fold: net benefit}, "mean", "treat_all": mean over folds}."""
  per_fold, treat_all = {}, {}
  for f, trainings in _trainings_by_fold(entry).items():
    per_fold[f] = [calibration.net_benefit(y, p, thresholds) for y, p in trainings]
    y = trainings[0][0]
    treat_all[f] = [calibration.net_benefit(y, np.ones_like(y, np.float64), thresholds)]
  folds, mean = _fold_means(per_fold)
  _, all_mean = _fold_means(treat_all)
  return {"thresholds": thresholds, "folds": folds, "mean": mean, "treat_all": all_mean}
