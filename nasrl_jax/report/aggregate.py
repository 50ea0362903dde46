"""The report's numbers per model, from validated `results`.

This module owns the aggregation of test predictions. A model has, per outer fold, several test
trainings (its replicates: `eval.test_seeds` training seeds, times the search seeds for a searched
model); a fold's value of any metric is the mean of its trainings' values, and the metric's mean
and std are over outer folds (`intervals.summarise`, which also owns what an interval covers).
One fold-stratified bootstrap (`stats.fold_bootstrap`: subjects and trainings resampled within
each outer fold, the same subject draws for every model) gives every model's intervals and the
paired differences at once, at image and at subject level.

Per model: Table 1's metrics at threshold 0.5 (the paper's); the operating point at each
training's validation threshold (accuracy, sensitivity, specificity, balanced accuracy, PPV, NPV),
the thresholds' spread; the Brier score and calibration intercept/slope; prevalence and the
no-information rate; sensitivity by grade (S1 vs S2-S3) where CAP is known; the degenerate
(near-constant) trainings by `metrics.degenerate`; grade-mode metrics; per held-out machine or
site; the paper protocol's search-fold test part (Wilson intervals). Nothing here formats text.
"""

import collections
import dataclasses
import math

import numpy as np

from nasrl_jax import calibration
from nasrl_jax import metrics
from nasrl_jax import stats
from nasrl_jax.report import intervals
from nasrl_jax.report import search_summary

# Table 1's four metrics, in the paper's column order, plus AUROC (threshold 0.5).
METRICS = ("accuracy", "sensitivity", "specificity", "auroc")
# Metrics at each training's validation threshold (the operating point of an exported model).
THRESHOLD_METRICS = ("accuracy", "sensitivity", "specificity", "balanced_accuracy", "ppv", "npv")
# The clinical metrics also given at the top of a model's entry (at the validation threshold).
CLINICAL = ("balanced_accuracy", "ppv", "npv")
# Fatty grades for sensitivity by grade (from CAP and data.grade_cutoffs): early vs advanced.
GRADES = ("S1", "S2-S3")
# Preferred display order; models with other names follow in their given order.
MODEL_ORDER = ("NASRL", "VGG19", "RandomSearch", "Evolution")
# Table 1 predicts fatty where P(fatty) >= 0.5 (the argmax of two classes), as the paper does.
DECISION_THRESHOLD = 0.5
DEFAULT_GRADE_CUTOFFS = (238.0, 260.0, 290.0)
# Resamples the calibration fits use (the first ones of every bootstrap): the two Newton fits per
# resample were most of a report's time at 2,000; a percentile limit from 500 resamples has a
# Monte Carlo error of about 0.01 logit units.
CALIBRATION_RESAMPLES = 500
UNBOUNDED = (-math.inf, math.inf)


@dataclasses.dataclass
class ModelData:
  """One model's test predictions as bootstrap parts ({fold: {replicate: part}})."""
  name: str
  image: dict  # Per image: subject, label (0/1), score (P(fatty)), val_threshold, grade_fatty
  #              (0 normal or CAP unknown, 1 S1, 2 S2-S3), and in grade mode grade and prob [n, C].
  subject: dict  # Per subject (mean P(fatty) of its images, majority label).
  sizes: dict  # {fold: (n_train + n_val, n_test)}.
  groups: dict  # {fold: held-out machine/site name, or ""}.
  trainings: list  # The model's fold results, in order.
  searched: bool  # Chosen by a search (not a fixed architecture).


@dataclasses.dataclass
class Summary:
  """Everything the report shows, before formatting."""
  models: list  # report.json's model entries, in display order.
  data: dict  # {name: ModelData}.
  boot: dict  # {"image": fold_bootstrap result, "subject": ...} ({model name: ...} each).
  ratio: float  # n_test / (n - n_test), mean over folds (the Nadeau-Bengio correction).
  k: int  # Outer folds with test predictions.
  winners: list
  agreement: dict
  rescore: dict
  search_cost: list
  search_curves: dict
  bootstrap: dict  # Resamples, seed, confidence, method.


def sorted_models(models):
  rank = {name: i for i, name in enumerate(MODEL_ORDER)}
  return sorted(models, key=lambda m: rank.get(m["name"], len(rank)))


def replicate(result) -> tuple:
  """A test training's replicate key within its fold: (search seed or -1, training seed)."""
  seed = result.get("seed")
  return (-1 if seed is None else int(seed), int(result.get("training_seed", 0)))


# --------------------------------------------------------------------------- parts


def _grade_fatty(cap, label, cutoffs):
  """0 normal or CAP unknown, 1 S1 (early), 2 S2-S3, for fatty images with a known CAP."""
  cap = np.asarray([math.nan if c is None else c for c in cap], np.float64)
  out = np.zeros(cap.size, np.int64)
  known = np.isfinite(cap) & (np.asarray(label) > 0)
  out[known] = np.where(cap[known] < float(cutoffs[1]), 1, 2)
  return out


def model_data(model, results) -> ModelData:
  """The model's predictions as bootstrap parts (binary view, per image and per subject)."""
  grade_mode = results["label_mode"] == "grade"
  cutoffs = (results.get("data") or {}).get("grade_cutoffs") or DEFAULT_GRADE_CUTOFFS
  image, subject = collections.defaultdict(dict), collections.defaultdict(dict)
  sizes, groups = {}, {}
  for fold in model["folds"]:
    f, r = fold["fold"], replicate(fold)
    test = fold["test"]
    sid = np.asarray([str(x) for x in test["subject_id"]])
    grade = np.asarray(test["label"], np.int64)
    prob = np.asarray(test["prob"], np.float64)
    label, score = metrics.binary_view(grade, prob)
    threshold = fold.get("val_threshold")
    threshold = DECISION_THRESHOLD if threshold is None else float(threshold)
    part = {"subject": sid, "label": label, "score": score,
            "val_threshold": np.full(sid.size, threshold)}
    if test.get("cap") is not None:
      part["grade_fatty"] = _grade_fatty(test["cap"], label, cutoffs)
    if grade_mode:
      part.update(grade=grade, prob=prob)
    image[f][r] = part
    subjects, y_s, p_s = metrics.subject_level(sid, label, score)
    subject[f][r] = {"subject": subjects, "label": y_s, "score": p_s,
                     "val_threshold": np.full(subjects.size, threshold)}
    sizes[f] = (fold["n_train"] + fold.get("n_val", 0), fold["n_test"])
    groups[f] = fold.get("group") or ""
  return ModelData(name=model["name"], image=dict(image), subject=dict(subject), sizes=sizes,
                   groups=groups, trainings=list(model["folds"]),
                   searched=any(f.get("seed") is not None for f in model["folds"]))


def statistic(grade_mode=False):
  """The one statistic every bootstrap computes (image or subject parts): every metric at once."""
  def stat(w, part):
    y, s = part["label"], part["score"]
    at_half = metrics.weighted_binary_metrics(w, y, s, DECISION_THRESHOLD)
    out = {k: at_half[k] for k in METRICS}
    at_val = metrics.weighted_binary_metrics(w, y, s, part["val_threshold"], with_auroc=False)
    out.update({f"val_{k}": v for k, v in at_val.items()})
    out["brier"] = calibration.weighted_brier(w, y, s)
    out.update(calibration.weighted_calibration(w, y, s, max_rows=CALIBRATION_RESAMPLES))
    if "grade_fatty" in part:
      pred = (s >= part["val_threshold"]).astype(np.float64)
      ww = np.atleast_2d(w)
      for i, g in enumerate(GRADES, start=1):
        mask = (part["grade_fatty"] == i).astype(np.float64)
        total = ww @ mask
        out[f"sens_{g}"] = np.divide(ww @ (pred * mask), total,
                                     out=np.full(total.shape, np.nan), where=total > 0)
    if grade_mode and "prob" in part:
      multi = metrics.weighted_multiclass_metrics(w, part["grade"], part["prob"])
      out.update({f"grade_{k}": v for k, v in multi.items()})
    return out
  return stat


def _points(parts, stat):
  """{(fold, replicate): {metric: value}} at unit weights."""
  out = {}
  for f, reps in parts.items():
    for r, part in reps.items():
      v = stat(np.ones((1, part["label"].size)), part)
      out[f, r] = {k: (float(x[0]) if np.ndim(x) == 1 else np.asarray(x[0])) for k, x in v.items()}
  return out


# --------------------------------------------------------------------------- one model


def _prevalence(parts):
  """Prevalence and no-information rate of the test parts (the data's, not the model's)."""
  per_fold = []
  for f in sorted(parts):
    part = next(iter(parts[f].values()))
    per_fold.append({"fold": f, "value": float(np.mean(part["label"])),
                     "n": int(part["label"].size)})
  prev = [r["value"] for r in per_fold]
  nir = [max(v, 1 - v) for v in prev]
  return ({"mean": float(np.mean(prev)), "per_fold": per_fold},
          {"mean": float(np.mean(nir)),
           "per_fold": [{"fold": r["fold"], "value": v} for r, v in zip(per_fold, nir)]})


def _thresholds(trainings):
  t = np.asarray([f.get("val_threshold", DECISION_THRESHOLD) for f in trainings], np.float64)
  return {"mean": float(t.mean()), "sd": float(t.std(ddof=1)) if t.size > 1 else math.nan,
          "min": float(t.min()), "max": float(t.max()), "n": int(t.size)}


def degenerate_rows(trainings) -> list:
  """The near-constant test trainings (`metrics.degenerate`): fold, seeds and the reason."""
  rows = []
  for f in trainings:
    _, p = metrics.binary_view(np.asarray(f["test"]["label"], np.int64),
                               np.asarray(f["test"]["prob"], np.float64))
    why = metrics.degenerate_reason(p, f.get("val_threshold", DECISION_THRESHOLD))
    if why:
      rows.append({"fold": f["fold"], "seed": f.get("seed"),
                   "training_seed": f.get("training_seed", 0), "reason": why})
  return rows


def _metric_block(names, points, boot, ratio, covers, prefix=""):
  """{name: intervals.summarise(...)} for metrics read from the points under prefix + name."""
  out = {}
  for name in names:
    key = prefix + name
    values = {fr: p[key] for fr, p in points.items()}
    out[name] = intervals.summarise(values, boot, key, ratio=ratio, covers=covers)
  return out


def _level_entry(parts, points, boot, ratio, covers):
  """Every binary metric of one level (image or subject), as report.json holds them."""
  entry = _metric_block(METRICS, points, boot, ratio, covers)
  entry["at_val_threshold"] = _metric_block(THRESHOLD_METRICS, points, boot, ratio, covers,
                                            prefix="val_")
  for name in CLINICAL:
    entry[name] = entry["at_val_threshold"][name]
  entry["brier"] = _metric_block(["brier"], points, boot, ratio, covers)["brier"]
  calibration = {}
  for name in ("intercept", "slope"):
    key = f"calibration_{name}"
    values = {fr: p[key] for fr, p in points.items()}
    calibration[name] = intervals.summarise(values, boot, key, ratio=ratio, covers=covers,
                                            bounds=UNBOUNDED)
  entry["calibration"] = calibration
  entry["prevalence"], entry["no_information_rate"] = _prevalence(parts)
  return entry


def summarise_model(model, results, data: ModelData, boot: dict, ratio: float, k: int):
  """report.json's entry for one model (with its folds)."""
  grade_mode = results["label_mode"] == "grade"
  stat = statistic(grade_mode)
  points = _points(data.image, stat)
  subject_points = _points(data.subject, statistic(False))
  reps = max(len(v) for v in data.image.values())
  seeds = {r[0] for reps_ in data.image.values() for r in reps_}
  covers = intervals.sources(data.searched, reps, len(seeds) > 1, k)
  entry = {key: model.get(key) for key in (
      "name", "architecture", "kernels", "filters", "blocks", "params", "flops", "fps",
      "latency_ms_median", "throughput", "throughput_batch", "exported")}
  entry.update(_level_entry(data.image, points, boot["image"][data.name], ratio, covers))
  entry["subject"] = _level_entry(data.subject, subject_points, boot["subject"][data.name], ratio,
                                  covers)
  if any("grade_fatty" in p for reps_ in data.image.values() for p in reps_.values()):
    entry["sensitivity_by_grade"] = _metric_block(GRADES, points, boot["image"][data.name], ratio,
                                                  covers, prefix="sens_")
  entry["thresholds"] = _thresholds(data.trainings)
  entry["degenerate"] = degenerate_rows(data.trainings)
  entry["degenerate_trainings"] = len(entry["degenerate"])
  entry["trainings"] = len(data.trainings)
  entry["confusion"] = np.sum([metrics.confusion(p["label"], p["score"] >= DECISION_THRESHOLD, 2)
                               for reps_ in data.image.values() for p in reps_.values()],
                              axis=0).tolist()
  if grade_mode:
    entry["multiclass"] = _multiclass(points, boot["image"][data.name], ratio, covers, data,
                                      results["class_names"])
  if results["data"].get("outer_groups") in ("device", "site"):
    entry["per_group"] = _group_rows(data, results)
  if results["protocol"] == "paper":
    entry["search_fold_test"] = _search_fold_rows(data, results["data"]["search_fold"], results)
  entry["folds"] = [dict(fold, metrics={"image": points[fold["fold"], replicate(fold)],
                                        "subject": subject_points[fold["fold"], replicate(fold)]})
                    for fold in model["folds"]]
  entry["n_folds"] = len(data.image)
  entry["seeds"] = sorted(s for s in seeds if s >= 0)
  entry["training_seeds"] = sorted({r[1] for reps_ in data.image.values() for r in reps_})
  return entry


def _multiclass(points, boot, ratio, covers, data, class_names):
  values = lambda key, i=None: {fr: (p[key] if i is None else p[key][i])
                                for fr, p in points.items()}
  out = {"accuracy": intervals.summarise(values("grade_accuracy"), boot, "grade_accuracy",
                                         ratio=ratio, covers=covers),
         "sensitivity": {c: intervals.summarise(values("grade_sensitivity", i), boot,
                                                "grade_sensitivity", ratio=ratio, covers=covers,
                                                index=i)
                         for i, c in enumerate(class_names)},
         "auroc_macro": intervals.summarise(values("grade_auroc_macro"), boot,
                                            "grade_auroc_macro", ratio=ratio, covers=covers)}
  conf = [metrics.confusion(p["grade"], p["prob"].argmax(1), len(class_names))
          for reps_ in data.image.values() for p in reps_.values()]
  out["confusion"] = np.sum(conf, axis=0).tolist()
  return out


def _group_rows(data, results):
  """Per held-out machine/site: accuracy and AUROC with a subjects-and-trainings bootstrap CI."""
  rows = []
  for f, group in sorted(data.groups.items()):
    if not group:
      continue
    boot = stats.fold_bootstrap({data.name: {f: data.image[f]}}, statistic(),
                                seed=results.get("bootstrap_seed", 0))[data.name]
    row = {"fold": f, "group": group,
           "images": int(next(iter(data.image[f].values()))["label"].size)}
    for name in ("accuracy", "auroc"):
      low, high = boot["ci"][name]
      row[name] = {"value": float(boot["estimate"][name]), "ci95": [float(low), float(high)],
                   "ci_covers": ["subjects", "training_seeds"]}
    rows.append(row)
  return rows


def _search_fold_rows(data, search_fold, results):
  """Paper protocol: the search fold's untouched test part, per training, Wilson intervals."""
  rows = []
  for r, part in sorted(data.image.get(search_fold, {}).items()):
    y, pred = part["label"].astype(bool), part["score"] >= DECISION_THRESHOLD
    counts = {"accuracy": (int(np.sum(pred == y)), int(y.size)),
              "sensitivity": (int(np.sum(pred & y)), int(y.sum())),
              "specificity": (int(np.sum(~pred & ~y)), int((~y).sum()))}
    row = {"fold": search_fold, "seed": None if r[0] < 0 else r[0], "training_seed": r[1],
           "images": int(y.size), "subjects": int(np.unique(part["subject"]).size)}
    for name, (c, n) in counts.items():
      low, high = stats.wilson_interval(c, n)
      row[name] = {"value": c / n if n else math.nan, "count": c, "n": n, "ci95": [low, high],
                   "ci_method": "wilson"}
    boot = stats.fold_bootstrap({data.name: {search_fold: {r: part}}}, statistic(),
                                seed=results.get("bootstrap_seed", 0))[data.name]
    low, high = boot["ci_subjects"]["auroc"]
    row["auroc"] = {"value": float(boot["estimate"]["auroc"]), "ci95": [float(low), float(high)],
                    "ci_method": "subject bootstrap"}
    rows.append(row)
  return rows


# --------------------------------------------------------------------------- entry point


def _ratio(data: dict) -> float:
  """n_test / (n - n_test) over the outer folds of every model (the test parts are shared)."""
  sizes = [s for d in data.values() for s in d.sizes.values()]
  n_rest = float(np.mean([s[0] for s in sizes]))
  n_test = float(np.mean([s[1] for s in sizes]))
  return n_test / n_rest if n_rest > 0 else math.inf


def summarise(results) -> Summary:
  """All of the report's numbers from validated `results`."""
  seed = int(results.get("bootstrap_seed", 0))
  ordered = sorted_models(results["models"])
  data = {m["name"]: model_data(m, results) for m in ordered}
  grade_mode = results["label_mode"] == "grade"
  boot = {"image": stats.fold_bootstrap({n: d.image for n, d in data.items()},
                                        statistic(grade_mode), seed=seed),
          "subject": stats.fold_bootstrap({n: d.subject for n, d in data.items()}, statistic(),
                                          seed=seed)}
  ratio = _ratio(data)
  k = max(len(d.image) for d in data.values())
  entries = [summarise_model(m, results, data[m["name"]], boot, ratio, k) for m in ordered]
  winners = search_summary.winner_rows(results)
  by_model = collections.defaultdict(list)
  for w in winners:
    by_model[w["model"]].append(w)
  # The choice sets are not in `results`: the values any winner took are a lower bound on them
  # (exact once the winners have used every option, as they do at any real budget).
  choices = [search_summary.layer_choices(w) for w in winners]
  kernel_choices = len({k_ for ks, _ in choices if ks for k_ in ks}) or None
  filter_choices = len({f for _, fs in choices if fs for f in fs}) or None
  search = results.get("search") or {}
  return Summary(
      models=entries, data=data, boot=boot, ratio=ratio, k=k, winners=winners,
      agreement={name: search_summary.agreement(ws, kernel_choices, filter_choices)
                 for name, ws in by_model.items()},
      rescore={name: search_summary.rescore_summary(rows)
               for name, rows in (results.get("rescore") or {}).items() if rows},
      search_cost=search_summary.search_cost(search),
      search_curves=search_summary.search_curves(search),
      bootstrap={"resamples": stats.N_RESAMPLES, "seed": seed, "confidence": stats.CONFIDENCE,
                 "method": "percentile; within each outer fold's test part, subjects resampled "
                           "with replacement (every image of a drawn subject coming along) and "
                           "the fold's test trainings resampled with replacement; statistic = "
                           "mean over folds of the fold value (mean over its trainings)"})
