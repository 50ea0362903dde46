"""What one model metric is worth: its mean over outer folds and an interval that says what it covers.

This module owns the rule that turns per-training values and bootstrap replicates into the
report's metric object:

  {"mean", "std", "ci95", "ci95_subjects_only", "ci_covers", "ci_method", "estimable", "reason",
   "n_folds", "n_nan", "per_fold", "per_seed", "std_over_seeds", "sd_training_seeds"}

* A fold's value is the mean over its test trainings (training seeds, and search seeds where there
  are several) of the training's metric; mean and std are over outer folds.
* With at least MIN_FOLDS outer folds, `ci95` is the Nadeau-Bengio corrected t-interval of the
  per-fold values (ratio n_test / (n - n_test)): it covers everything that varies between outer
  folds (test subjects, training seeds, each fold's own search).
* Below MIN_FOLDS outer folds, no fold-level interval is estimable; `ci95` is then the bootstrap
  over test subjects and test trainings within each outer fold, and says so.
* `ci95_subjects_only` is the subject bootstrap with every training's predictions held fixed, kept
  beside it so a reader sees how much of the uncertainty the trainings add.
* Not estimable (zero variance, undefined in every fold, an interval that would leave the
  metric's possible range): `ci95` is None, `estimable` False and `reason` says why; the mean may
  still be given. Nothing is clipped.
"""

import math

import numpy as np

from nasrl_jax import metrics
from nasrl_jax import stats

# Fewer outer folds than this give a corrected t with df < 4: no fold-level interval or test.
MIN_FOLDS = 5
# Values this close count as equal (a fold mean of equal values is not bit-exact in float).
ZERO_SPREAD = 1e-12


def _nanmean(values):
  v = np.asarray(values, np.float64)
  v = v[np.isfinite(v)]
  return float(v.mean()) if v.size else math.nan


def _pair(ci):
  low, high = (float(x) for x in ci)
  return [low, high] if math.isfinite(low) and math.isfinite(high) else None


def sources(searched: bool, n_replicates: int, several_search_seeds: bool, folds: int) -> list:
  """What an interval covers, in the report's words (`ci_covers`)."""
  if folds >= MIN_FOLDS:
    return ["subjects", "training_seeds", "outer_folds"] + (["searches"] if searched else [])
  out = ["subjects"]
  if n_replicates > 1:
    out.append("training_seeds")
  if several_search_seeds:
    out.append("search_seeds")
  return out


def not_estimable(reason: str) -> dict:
  return {"ci95": None, "estimable": False, "reason": reason}


def fold_interval(per_fold: list, ratio: float, bounds) -> dict:
  """The corrected t-interval of per-fold values, or why it is not estimable."""
  finite = [v for v in per_fold if math.isfinite(v)]
  if len(finite) < MIN_FOLDS:
    return not_estimable(f"defined in {len(finite)} outer folds; a fold-level interval needs "
                         f"{MIN_FOLDS}")
  if max(finite) - min(finite) <= ZERO_SPREAD:
    return not_estimable("zero variance over the outer folds")
  test = stats.corrected_ttest(finite, n_train=1.0, n_test=ratio)
  ci = _pair(test["ci95"])
  if ci is None or ci[0] < bounds[0] or ci[1] > bounds[1]:
    return not_estimable(f"the interval would leave the metric's range [{bounds[0]:g}, "
                         f"{bounds[1]:g}]")
  return {"ci95": ci, "estimable": True, "reason": ""}


def bootstrap_interval(ci, mean: float) -> dict:
  """A percentile interval as the report's interval, or why it is not estimable."""
  ci = _pair(ci)
  if ci is None:
    return not_estimable("undefined in every resample (one class only)")
  if ci[1] - ci[0] <= ZERO_SPREAD:
    return not_estimable("zero variance: every resample gave the same value")
  if math.isfinite(mean):  # A skewed bootstrap distribution can miss the mean: widen to reach it.
    ci = [min(ci[0], mean), max(ci[1], mean)]
  return {"ci95": ci, "estimable": True, "reason": ""}


def summarise(values: dict, boot: dict, key: str, *, ratio: float, covers: list,
              bounds=(0.0, 1.0), index=None) -> dict:
  """One model metric (see the module docstring).

  Args:
    values: {(fold, (search seed, training seed)): value} (nan where undefined for a training).
    boot: this model's `stats.fold_bootstrap` result.
    key: the metric's name in the bootstrap statistic.
    ratio: n_test / (n - n_test), mean over folds (the Nadeau-Bengio correction).
    covers: `sources(...)` for this model.
    bounds: the metric's possible range (an interval outside it is not estimable).
    index: column of a per-class metric ([B, C] replicates).
  """
  pick = (lambda a: np.asarray(a)[..., index]) if index is not None else np.asarray
  folds = sorted({f for f, _ in values})
  per_fold = {f: _nanmean([v for (ff, _), v in values.items() if ff == f]) for f in folds}
  ms = metrics.mean_std([per_fold[f] for f in folds])
  mean = ms["mean"]
  estimate = float(pick(boot["estimate"][key]))
  if math.isfinite(mean) and math.isfinite(estimate) and abs(mean - estimate) > 1e-9:
    raise AssertionError(f"bootstrap estimate {estimate} differs from the mean {mean}")
  out = {"mean": mean, "std": ms["std"], "n_folds": ms["n"], "n_nan": ms["n_nan"],
         "per_fold": [{"fold": f, "value": per_fold[f]} for f in folds]}
  subjects = bootstrap_interval(pick(boot["ci_subjects"][key]), mean)
  out["ci95_subjects_only"] = subjects["ci95"]
  if not math.isfinite(mean):
    out.update(not_estimable("undefined in every outer fold (one class only)"),
               ci_covers=covers, ci_method="none")
  elif len(folds) >= MIN_FOLDS:
    out.update(fold_interval([per_fold[f] for f in folds], ratio, bounds), ci_covers=covers,
               ci_method="Nadeau-Bengio corrected t-interval over outer folds")
  else:
    out.update(bootstrap_interval(pick(boot["ci"][key]), mean), ci_covers=covers,
               ci_method="percentile bootstrap of " + " and ".join(c.replace("_", " ")
                                                                   for c in covers)
                         + " within each outer fold")
  out.update(_seed_spread(values))
  return out


def _seed_spread(values: dict) -> dict:
  """Mean over folds per search seed, sd over search seeds, and the mean sd over training seeds."""
  search_seeds = sorted({r[0] for _, r in values if r[0] >= 0})
  per_seed = {s: _nanmean([_nanmean([v for (f2, r), v in values.items() if f2 == f and r[0] == s])
                           for f in sorted({f for f, _ in values})]) for s in search_seeds}
  finite = [v for v in per_seed.values() if math.isfinite(v)]
  groups = {}
  for (f, r), v in values.items():
    if math.isfinite(v):
      groups.setdefault((f, r[0]), []).append(v)
  sds = [float(np.std(g, ddof=1)) for g in groups.values() if len(g) > 1]
  return {"per_seed": [{"seed": s, "value": per_seed[s]} for s in search_seeds],
          "std_over_seeds": float(np.std(finite, ddof=1)) if len(finite) > 1 else math.nan,
          "sd_training_seeds": float(np.mean(sds)) if sds else math.nan}
