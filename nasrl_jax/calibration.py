"""Probability quality for B rows of per-image weights at once (the bootstrap's form, as in
`metrics.py`): the Brier score, the calibration intercept and slope (logistic recalibration, Cox
1958) and the net benefit of a decision curve (Vickers & Elkin 2006).

Written by hand because no library installed here fits a weighted logistic recalibration for
every bootstrap row at once: Newton steps over all rows together, checked against statsmodels in
the tests. With one row of ones these are the unweighted metrics.
"""

import numpy as np
import scipy.special

from nasrl_jax import metrics

# Probabilities are clipped to [CLIP, 1 - CLIP] before the logit of the calibration fit.
CLIP = 1e-6


def weighted_brier(weights, y_true, score):
  """Brier score (mean squared error of P(fatty) against the 0/1 label) for each row of weights."""
  y = np.asarray(y_true, np.float64).reshape(-1)
  s = np.asarray(score, np.float64).reshape(-1)
  w = metrics.weight_rows(weights, y.size, "weighted_brier")
  return metrics.safe_ratio(w @ np.square(s - y), w.sum(axis=1))


def _logit(p):
  p = np.clip(np.asarray(p, np.float64), CLIP, 1.0 - CLIP)
  return np.log(p) - np.log1p(-p)


def _newton(w, y, x, slope: bool, iterations: int, tol: float, start=(0.0, 1.0)):
  """Weighted logistic fit per row of w: logit P(y) = a + b x (slope) or a + x (offset x).

  Returns (a, b, converged) with b = 1 for the offset fit. Rows start at `start`, iterate until
  their step is below tol; rows whose coefficients run off (separation) stop there and count as
  not converged.
  """
  rows = w.shape[0]
  a, b = np.full(rows, float(start[0])), np.full(rows, float(start[1]))
  done = np.zeros(rows, bool)
  active = np.arange(rows)
  for _ in range(iterations):
    wa = w[active]
    mu = scipy.special.expit(a[active, None] + b[active, None] * x)
    r, v = wa * (y - mu), wa * mu * (1.0 - mu)
    g0, h00 = r.sum(axis=1), v.sum(axis=1)
    if slope:
      g1, h01, h11 = r @ x, v @ x, v @ (x * x)
      det = h00 * h11 - h01 ** 2
      ok = det > 1e-12 * np.maximum(h00 * h11, 1e-300)
      det = np.where(ok, det, 1.0)
      da, db = (h11 * g0 - h01 * g1) / det, (h00 * g1 - h01 * g0) / det
    else:
      ok = h00 > 0
      da, db = g0 / np.where(ok, h00, 1.0), np.zeros_like(g0)
    da, db = np.where(ok, da, 0.0), np.where(ok, db, 0.0)
    a[active] += da
    b[active] += db
    small = (np.abs(da) < tol) & (np.abs(db) < tol)
    runaway = ~ok | (np.abs(a[active]) > 1e3) | (np.abs(b[active]) > 1e3)
    done[active[small & ~runaway]] = True
    active = active[~(small | runaway)]
    if active.size == 0:
      break
  return a, b, done


def weighted_calibration(weights, y_true, score, iterations=30, tol=1e-8, max_rows=None):
  """Calibration intercept and slope (logistic recalibration) for each row of weights.

  slope: b of logit P(y = 1) = a + b logit(p), fitted by maximum likelihood (1 = well calibrated,
  < 1 = predictions too extreme); intercept: a of logit P(y = 1) = a + logit(p) (calibration in the
  large, slope fixed at 1; 0 = well calibrated, > 0 = risks too low). Both by Newton steps on all
  rows at once. NaN where a fit is undefined: one class only, predictions that do not vary (the
  slope), or a fit that does not converge (separation).

  Args:
    weights: [B, n] (or [n]) non-negative weights.
    y_true: [n] labels 0/1.
    score: [n] probability of class 1.
    iterations, tol: Newton's limits.
    max_rows: fit only the first max_rows rows (the rest are NaN): a bootstrap's calibration
      interval from fewer resamples, the fits being most of a report's computing time.

  Returns:
    {"calibration_intercept": [B], "calibration_slope": [B]}.
  """
  y = np.asarray(y_true, np.float64).reshape(-1)
  x = _logit(np.asarray(score).reshape(-1))
  w_all = metrics.weight_rows(weights, y.size, "weighted_calibration")
  out = {k: np.full(w_all.shape[0], np.nan) for k in ("calibration_intercept",
                                                      "calibration_slope")}
  w = w_all[:max_rows] if max_rows else w_all
  total, pos = w.sum(axis=1), w @ y
  both = (pos > 0) & (pos < total)
  xm = np.divide(w @ x, total, out=np.zeros_like(total), where=total > 0)
  spread = np.divide(w @ (x * x), total, out=np.zeros_like(total), where=total > 0) - xm ** 2
  # Bootstrap rows are perturbations of the unit-weight data: starting them at its fit saves
  # most of Newton's iterations.
  unit = np.ones((1, y.size))
  a0, _, ok0 = _newton(unit, y, x, False, iterations, tol)
  a, _, ok = _newton(w, y, x, False, iterations, tol, (a0[0] if ok0[0] else 0.0, 1.0))
  out["calibration_intercept"][:w.shape[0]] = np.where(both & ok, a, np.nan)
  a0, b0, ok0 = _newton(unit, y, x, True, iterations, tol)
  _, b, ok = _newton(w, y, x, True, iterations, tol,
                     (a0[0], b0[0]) if ok0[0] else (0.0, 1.0))
  out["calibration_slope"][:w.shape[0]] = np.where(both & ok & (spread > 1e-10), b, np.nan)
  return out


def net_benefit(y_true, score, thresholds):
  """Net benefit of treating where P(fatty) >= t, for each threshold t (Vickers & Elkin 2006).

  NB(t) = TP / n - FP / n * t / (1 - t): true positives found, less false positives weighed by the
  odds at which a patient would accept the intervention. "Treat all" is `net_benefit(y, ones)`.

  Returns:
    float64 [len(thresholds)].
  """
  y = np.asarray(y_true).astype(bool).reshape(-1)
  s = np.asarray(score, np.float64).reshape(-1)
  t = np.asarray(thresholds, np.float64).reshape(-1)
  if np.any((t <= 0) | (t >= 1)):
    raise ValueError("net_benefit: thresholds must lie strictly between 0 and 1")
  pred = s[None, :] >= t[:, None]
  n = max(y.size, 1)
  tp = (pred & y).sum(axis=1) / n
  fp = (pred & ~y).sum(axis=1) / n
  return tp - fp * t / (1.0 - t)
