"""The report's numbers per model and per search, from validated `results`.

This module owns the aggregation: per model, the metric of every (outer fold, seed) test part
(through `nasrl_jax.metrics`), a fold's value as the mean over its seeds, mean +- std over outer
folds, sd over seeds, and the 95 % CIs of the subject bootstrap (`metrics.fold_bootstrap`:
subjects resampled within each outer fold's test part); the subject-level view, the operating
point at each fold's validation threshold, grade-mode multi-class metrics, pooled out-of-fold ROC
and AUROC (`metrics.pooled_bootstrap`, shared with the paired comparisons), per held-out machine
or site, and the paper protocol's untouched search-fold test part (Wilson intervals). Besides the
models: the winners of every outer fold and how much they agree, the re-scoring summary and the
search cost per strategy. Nothing here formats text or draws.
"""

import collections
import dataclasses
import math

import numpy as np
from sklearn import metrics as skm

from nasrl_jax import metrics

# Table 1's four metrics, in the paper's column order, plus AUROC.
METRICS = ("accuracy", "sensitivity", "specificity", "auroc")
# Metrics at each fold's validation threshold (AUROC does not depend on a threshold).
THRESHOLD_METRICS = ("accuracy", "sensitivity", "specificity")
# Preferred display order; models with other names follow in their given order.
MODEL_ORDER = ("NASRL", "VGG19", "RandomSearch", "Evolution")
# Table 1 predicts fatty where P(fatty) >= 0.5 (the argmax of two classes), as the paper does; the
# validation-chosen threshold the exported model uses is reported beside it.
DECISION_THRESHOLD = 0.5
# The bootstrap's generator seed: fixed, so the same results always give the same report.
BOOTSTRAP_SEED = 0
# Monte Carlo draws for the chance level of the winners' agreement (standard error < 0.002).
CHANCE_DRAWS = 20_000


@dataclasses.dataclass
class ModelData:
  """One model's test predictions as bootstrap parts ({fold: {seed: part}}, see metrics)."""
  name: str
  image: dict  # Binary view per image: subject, label (0/1), score (P(fatty)), val_threshold,
  #              and in grade mode grade (0..C-1) and prob [n, C].
  subject: dict  # Per subject (mean P(fatty) of its images, majority label): subject, label, score.
  sizes: dict  # {fold: (n_train, n_test)}, means over the fold's seeds.
  groups: dict  # {fold: held-out machine/site name, or ""}.


@dataclasses.dataclass
class Summary:
  """Everything the report shows, before formatting."""
  models: list  # report.json's model entries, in display order.
  data: dict  # {name: ModelData}.
  pooled: dict  # {name: metrics.pooled_bootstrap result for "auroc"} (same draws for all models).
  winners: list  # One row per (outer fold, model, seed) winner.
  agreement: dict  # {model name: winner agreement}.
  rescore: dict  # {model name: re-scoring summary}.
  search_cost: list  # One row per strategy.
  search_curves: dict  # {strategy: per-step means and every child's reward}, for the plot.
  bootstrap: dict  # Resamples, seed, confidence, method.


def sorted_models(models):
  rank = {name: i for i, name in enumerate(MODEL_ORDER)}
  return sorted(models, key=lambda m: rank.get(m["name"], len(rank)))


def _nanmean(values):
  v = np.asarray(values, np.float64)
  v = v[np.isfinite(v)]
  return float(v.mean()) if v.size else math.nan


def _num(x):
  return math.nan if x is None else float(x)


# --------------------------------------------------------------------------- parts


def model_data(model, label_mode):
  """The model's predictions as bootstrap parts (binary view, per image and per subject)."""
  image, subject = collections.defaultdict(dict), collections.defaultdict(dict)
  sizes, groups = collections.defaultdict(list), {}
  for fold in model["folds"]:
    f, s = fold["fold"], fold["seed"]
    test = fold["test"]
    sid = np.asarray([str(x) for x in test["subject_id"]])
    grade = np.asarray(test["label"], np.int64)
    prob = np.asarray(test["prob"], np.float64)
    label, score = metrics.binary_view(grade, prob)
    threshold = fold.get("val_threshold")
    threshold = DECISION_THRESHOLD if threshold is None else float(threshold)
    part = {"subject": sid, "label": label, "score": score,
            "val_threshold": np.full(sid.size, threshold)}
    if label_mode == "grade":
      part.update(grade=grade, prob=prob)
    image[f][s] = part
    subjects, y_s, p_s = metrics.subject_level(sid, label, score)
    subject[f][s] = {"subject": subjects, "label": y_s, "score": p_s}
    sizes[f].append((fold["n_train"], fold["n_test"]))
    groups[f] = fold.get("group") or ""
  return ModelData(name=model["name"], image=dict(image), subject=dict(subject),
                   sizes={f: tuple(np.mean(v, axis=0)) for f, v in sizes.items()}, groups=groups)


def _image_statistic(grade):
  """The statistic of every image-level bootstrap: Table 1, the validation threshold, grades."""
  def statistic(w, part):
    out = metrics.weighted_binary_metrics(w, part["label"], part["score"], DECISION_THRESHOLD)
    at_val = metrics.weighted_binary_metrics(w, part["label"], part["score"],
                                             part["val_threshold"], with_auroc=False)
    out.update({f"val_{k}": at_val[k] for k in THRESHOLD_METRICS})
    if grade:
      multi = metrics.weighted_multiclass_metrics(w, part["grade"], part["prob"])
      out.update({f"grade_{k}": v for k, v in multi.items()})
    return out
  return statistic


def _subject_statistic(w, part):
  return metrics.weighted_binary_metrics(w, part["label"], part["score"], DECISION_THRESHOLD)


def _auroc_statistic(w, part):
  return {"auroc": metrics.weighted_auroc(w, part["label"], part["score"])}


# --------------------------------------------------------------------------- summaries


def summarise_values(values, estimate, ci):
  """mean +- std over folds, sd over seeds and the bootstrap CI of one metric.

  Args:
    values: {(fold, seed): value} (nan where undefined for that test part).
    estimate: the bootstrap's point estimate (same definition; used only as a cross-check).
    ci: (low, high) of the bootstrap.

  Returns:
    {"mean", "std", "ci95", "std_over_seeds", "n_folds", "n_nan", "per_fold": [{"fold", "value"}],
     "per_seed": [{"seed", "value"}], "ci_extended"}: mean and std over outer folds (a fold's value
    is the mean over its seeds); `ci_extended` is True when the percentile interval missed the
    mean (a skewed bootstrap distribution) and was widened to reach it, so it never claims more
    precision than the percentile interval gives.
  """
  folds = sorted({f for f, _ in values})
  seeds = sorted({s for _, s in values})
  per_fold = {f: _nanmean([v for (ff, _), v in values.items() if ff == f]) for f in folds}
  per_seed = {s: _nanmean([v for (_, ss), v in values.items() if ss == s]) for s in seeds}
  ms = metrics.mean_std([per_fold[f] for f in folds])
  finite_seeds = [v for v in per_seed.values() if math.isfinite(v)]
  low, high = (float(x) for x in ci)
  mean = ms["mean"]
  if math.isfinite(mean) and math.isfinite(estimate) and abs(mean - estimate) > 1e-9:
    raise AssertionError(f"bootstrap estimate {estimate} differs from the mean {mean}")
  extended = bool(math.isfinite(mean) and math.isfinite(low) and not low <= mean <= high)
  if extended:
    low, high = min(low, mean), max(high, mean)
  return {"mean": mean, "std": ms["std"], "ci95": [low, high],
          "std_over_seeds": (float(np.std(finite_seeds, ddof=1)) if len(finite_seeds) > 1
                             else math.nan),
          "n_folds": ms["n"], "n_nan": ms["n_nan"],
          "per_fold": [{"fold": f, "value": per_fold[f]} for f in folds],
          "per_seed": [{"seed": s, "value": per_seed[s]} for s in seeds],
          "ci_extended": extended}


def _column(boot, key, index=None):
  est = boot["estimate"][key]
  ci = boot["ci"][key]
  if index is not None:
    return float(est[index]), ci[:, index]
  return float(est), ci


def _at_unit_weights(stats):
  return {k: (float(v[0]) if np.ndim(v) == 1 else [float(x) for x in v[0]])
          for k, v in stats.items()}


def _point_metrics(part, grade):
  """Metrics of one test part: the bootstrap's weighted functions at unit weights.

  Those functions are tested equal to scikit-learn's metrics (tests/test_metrics.py); they are
  used here because scikit-learn's input validation costs ~15 ms a call, and a report has
  hundreds of (model, fold, seed) parts.
  """
  n = part["label"].size
  ones = np.ones((1, n))
  image = _at_unit_weights(metrics.weighted_binary_metrics(
      ones, part["label"], part["score"], DECISION_THRESHOLD))
  image.update(confusion=metrics.confusion(part["label"], part["score"] >= DECISION_THRESHOLD, 2),
               n=int(n), threshold=DECISION_THRESHOLD)
  threshold = float(part["val_threshold"][0])
  at_val = _at_unit_weights(metrics.weighted_binary_metrics(
      ones, part["label"], part["score"], threshold, with_auroc=False))
  at_val.update(confusion=metrics.confusion(part["label"], part["score"] >= threshold, 2),
                n=int(n), threshold=threshold)
  out = {"image": image, "at_val_threshold": at_val}
  if grade:
    c = part["prob"].shape[1]
    out["multiclass"] = _at_unit_weights(
        metrics.weighted_multiclass_metrics(ones, part["grade"], part["prob"]))
    out["multiclass"]["confusion"] = metrics.confusion(part["grade"], part["prob"].argmax(1), c)
  return out


def _subject_point(part):
  out = _at_unit_weights(_subject_statistic(np.ones((1, part["label"].size)), part))
  out.update(n=int(part["label"].size))
  return out


def _group_rows(data, boot_seed):
  """Per held-out machine/site: accuracy and AUROC with a subject-bootstrap CI of that fold."""
  rows = []
  for f, group in sorted(data.groups.items()):
    if not group:
      continue
    boot = metrics.fold_bootstrap({f: data.image[f]}, _image_statistic(False), seed=boot_seed)
    row = {"fold": f, "group": group,
           "images": int(next(iter(data.image[f].values()))["label"].size)}
    for name in ("accuracy", "auroc"):
      est, ci = _column(boot, name)
      row[name] = {"value": est, "ci95": [float(ci[0]), float(ci[1])]}
    rows.append(row)
  return rows


def _search_fold_rows(data, search_fold, boot_seed):
  """Paper protocol: the search fold's untouched test part, per seed, with Wilson intervals."""
  rows = []
  for s, part in sorted(data.image.get(search_fold, {}).items()):
    y, pred = part["label"].astype(bool), part["score"] >= DECISION_THRESHOLD
    counts = {"accuracy": (int(np.sum(pred == y)), int(y.size)),
              "sensitivity": (int(np.sum(pred & y)), int(y.sum())),
              "specificity": (int(np.sum(~pred & ~y)), int((~y).sum()))}
    row = {"fold": search_fold, "seed": s, "images": int(y.size),
           "subjects": int(np.unique(part["subject"]).size)}
    for name, (k, n) in counts.items():
      low, high = metrics.wilson_interval(k, n)
      row[name] = {"value": k / n if n else math.nan, "count": k, "n": n, "ci95": [low, high],
                   "ci_method": "wilson"}
    boot = metrics.fold_bootstrap({search_fold: {s: part}}, _auroc_statistic, seed=boot_seed)
    est, ci = _column(boot, "auroc")
    row["auroc"] = {"value": est, "ci95": [float(ci[0]), float(ci[1])],
                    "ci_method": "subject bootstrap"}
    rows.append(row)
  return rows


def summarise_model(model, results, boot_seed=BOOTSTRAP_SEED):
  """report.json's entry for one model (with its folds) and its bootstrap parts."""
  grade = results["label_mode"] == "grade"
  class_names = results["class_names"]
  data = model_data(model, results["label_mode"])
  points = {(f, s): _point_metrics(part, grade)
            for f, parts in data.image.items() for s, part in parts.items()}
  subject_points = {(f, s): _subject_point(p)
                    for f, parts in data.subject.items() for s, p in parts.items()}
  image_boot = metrics.fold_bootstrap(data.image, _image_statistic(grade), seed=boot_seed)
  subject_boot = metrics.fold_bootstrap(data.subject, _subject_statistic, seed=boot_seed)

  def summary(pick, key, index=None, level="image"):
    """One metric: `pick` reads its value from a part's point metrics, `key` names it in the
    bootstrap's statistic (column `index` for per-class values)."""
    boot, values = (image_boot, points) if level == "image" else (subject_boot, subject_points)
    est, ci = _column(boot, key, index)
    return summarise_values({k: pick(v) for k, v in values.items()}, est, ci)

  entry = {key: model.get(key) for key in (
      "name", "architecture", "kernels", "filters", "blocks", "params", "flops", "fps",
      "latency_ms_median", "throughput", "throughput_batch", "exported")}
  for name in METRICS:
    entry[name] = summary(lambda p, n=name: p["image"][n], name)
  entry["subject"] = {name: summary(lambda p, n=name: p[n], name, level="subject")
                      for name in METRICS}
  entry["at_val_threshold"] = {
      name: summary(lambda p, n=name: p["at_val_threshold"][n], f"val_{name}")
      for name in THRESHOLD_METRICS}
  entry["confusion"] = np.sum([p["image"]["confusion"] for p in points.values()], axis=0).tolist()
  if grade:
    entry["multiclass"] = {
        "accuracy": summary(lambda p: p["multiclass"]["accuracy"], "grade_accuracy"),
        "sensitivity": {c: summary(lambda p, i=i: p["multiclass"]["sensitivity"][i],
                                   "grade_sensitivity", index=i)
                        for i, c in enumerate(class_names)},
        "auroc_macro": summary(lambda p: p["multiclass"]["auroc_macro"], "grade_auroc_macro"),
        "confusion": np.sum([p["multiclass"]["confusion"] for p in points.values()],
                            axis=0).tolist(),
    }
  if results["data"].get("outer_groups") in ("device", "site"):
    entry["per_group"] = _group_rows(data, boot_seed)
  if results["protocol"] == "paper":
    entry["search_fold_test"] = _search_fold_rows(data, results["data"]["search_fold"], boot_seed)
  entry["folds"] = [dict(fold, metrics=dict(points[fold["fold"], fold["seed"]],
                                            subject=subject_points[fold["fold"], fold["seed"]]))
                    for fold in model["folds"]]
  entry["n_folds"] = len(data.image)
  entry["seeds"] = sorted({s for parts in data.image.values() for s in parts})
  return entry, data


def pooled_roc(data):
  """ROC of the model's pooled out-of-fold predictions (all folds and seeds), scikit-learn."""
  parts = [p for parts in data.image.values() for p in parts.values()]
  y = np.concatenate([p["label"] for p in parts])
  s = np.concatenate([p["score"] for p in parts])
  if np.unique(y).size < 2:
    return {"fpr": [], "tpr": []}
  fpr, tpr, _ = skm.roc_curve(y, s)
  return {"fpr": fpr.tolist(), "tpr": tpr.tolist()}


# --------------------------------------------------------------------------- winners


def parse_architecture(text):
  """('3x64 3x64 | 3x128 ...') -> (kernels, filters) lists, or None if it is not that form."""
  try:
    layers = [layer.split("x") for layer in str(text).replace("|", " ").split()]
    return [int(k) for k, _ in layers], [int(f) for _, f in layers]
  except ValueError:
    return None


def layer_choices(winner):
  """A winner's (kernels, filters) lists, from its fields or its architecture string."""
  kernels, filters = winner.get("kernels"), winner.get("filters")
  if kernels and filters:
    return list(kernels), list(filters)
  return parse_architecture(winner.get("architecture", "")) or (None, None)


def winner_rows(results):
  """One row per winner: nested from outer_folds; paper from the models' folds (one per seed)."""
  rows = []
  for entry in results.get("outer_folds") or []:
    for name, winners in entry["winners"].items():
      for w in winners:
        rows.append(dict(w, fold=entry["fold"], group=entry.get("group", ""), model=name))
  if rows or results["protocol"] == "nested":
    return rows
  searched = set((results.get("rescore") or {}).keys()) | {
      s.get("model") for s in ((results.get("search") or {}).get("strategies") or {}).values()}
  for model in results["models"]:
    if model["name"] not in searched:
      continue
    seen = {}
    for fold in model["folds"]:
      seen.setdefault(fold["seed"], fold)
    for s, fold in sorted(seen.items()):
      rows.append({"model": model["name"], "fold": results["data"]["search_fold"], "seed": s,
                   "group": "", "architecture": fold.get("architecture"),
                   "params": fold.get("params"), "flops": fold.get("flops")})
  return rows


def chance_agreement(n_winners, n_choices, draws=CHANCE_DRAWS, seed=BOOTSTRAP_SEED):
  """Expected share of the most common choice when n_winners pick uniformly among n_choices.

  The scale against which a layer's agreement reads: 30 winners choosing uniformly among 4
  kernel sizes already share the modal one 35 % of the time, 3 winners 56 %. Monte Carlo with a
  fixed seed (exact enough at CHANCE_DRAWS, and deterministic).
  """
  if n_winners < 1 or n_choices < 1:
    return None
  rng = np.random.default_rng(seed)
  counts = rng.multinomial(n_winners, np.full(n_choices, 1.0 / n_choices), size=draws)
  return float(np.mean(counts.max(axis=1)) / n_winners)


def agreement(winners, kernel_choices=None, filter_choices=None):
  """How much a model's winners agree, per layer and overall.

  Args:
    winners: rows of `winner_rows` for one model (each with kernels/filters or an architecture
      string).
    kernel_choices, filter_choices: how many values a layer can take, for the chance level
      (None: no chance level).

  Returns:
    {"winners", "distinct", "modal_architecture", "modal_count", "kernel_agreement",
     "filter_agreement", "kernel_chance", "filter_chance", "per_layer"}: a layer's agreement is
    the share of winners that took the most common choice at that layer; the two agreements
    average it over layers (1.0: every winner chose alike); the chance values are that share
    under uniform random choices (`chance_agreement`). None where winners have no per-layer
    choices or differ in depth.
  """
  archs = collections.Counter(str(w.get("architecture")) for w in winners)
  modal, modal_count = archs.most_common(1)[0] if archs else (None, 0)
  out = {"winners": len(winners), "distinct": len(archs), "modal_architecture": modal,
         "modal_count": modal_count, "kernel_agreement": None, "filter_agreement": None,
         "kernel_chance": None, "filter_chance": None, "per_layer": []}
  choices = [layer_choices(w) for w in winners]
  if not choices or any(k is None for k, _ in choices) or len({len(k) for k, _ in choices}) != 1:
    return out
  kernels = np.array([k for k, _ in choices])
  filters = np.array([f for _, f in choices])
  shares = []
  for layer in range(kernels.shape[1]):
    row = {"layer": layer + 1}
    for key, values in (("kernel", kernels[:, layer]), ("filter", filters[:, layer])):
      value, count = collections.Counter(values.tolist()).most_common(1)[0]
      row[f"{key}_mode"], row[f"{key}_share"] = int(value), count / len(values)
    shares.append((row["kernel_share"], row["filter_share"]))
    out["per_layer"].append(row)
  out["kernel_agreement"] = float(np.mean([k for k, _ in shares]))
  out["filter_agreement"] = float(np.mean([f for _, f in shares]))
  if kernel_choices:
    out["kernel_chance"] = chance_agreement(len(winners), kernel_choices)
  if filter_choices:
    out["filter_chance"] = chance_agreement(len(winners), filter_choices)
  return out


# --------------------------------------------------------------------------- re-scoring, search


def rescore_summary(rows):
  """Search reward vs re-scored mean of one model's candidates, per search (fold, seed).

  Returns:
    {"searches", "candidates", "changed", "mean_search_reward", "mean_rescore", "mean_optimism"}
    for the chosen candidates: `changed` counts searches where re-scoring picked another child than
    the highest search reward; optimism is search reward - re-scored mean (the winner's curse).
  """
  by_search = collections.defaultdict(list)
  for row in rows:
    by_search[row["fold"], row["seed"]].append(row)
  chosen, changed = [], 0
  for cands in by_search.values():
    flagged = [c for c in cands if c.get("chosen")]
    pick = flagged[0] if flagged else max(cands, key=lambda c: _num(c.get("mean")))
    top = max(cands, key=lambda c: _num(c.get("search_reward")))
    changed += int(pick["architecture"] != top["architecture"])
    chosen.append(pick)
  rewards = [_num(c.get("search_reward")) for c in chosen]
  means = [_num(c.get("mean")) for c in chosen]
  return {"searches": len(by_search), "candidates": len(rows), "changed": changed,
          "mean_search_reward": _nanmean(rewards), "mean_rescore": _nanmean(means),
          "mean_optimism": _nanmean(np.subtract(rewards, means))}


def _total(runs, key):
  values = [r.get(key) for r in runs if r.get(key) is not None]
  return sum(values) if values else None


def search_cost(search):
  """One row per strategy: its runs' children, distinct, memo hits, failures and seconds, summed."""
  rows = []
  for key, strategy in (search.get("strategies") or {}).items():
    runs = strategy.get("runs") or []
    row = {"strategy": key, "model": strategy.get("model"), "runs": len(runs)}
    for field in ("children", "distinct", "memo_hits", "failed", "does_not_fit", "wall_seconds",
                  "compile_seconds", "train_seconds"):
      row[field] = _total(runs, field)
    wall, comp = row["wall_seconds"], row["compile_seconds"]
    row["compile_share"] = comp / wall if wall and comp is not None else None
    row["best_reward_mean"] = _nanmean([_num(r.get("best_reward")) for r in runs])
    rows.append(row)
  return rows


def search_curves(search):
  """Per strategy: mean over its runs of the per-step mean reward and best-so-far, and every
  child's reward placed at its step (children are sampled step by step)."""
  out = {}
  for key, strategy in (search.get("strategies") or {}).items():
    by_step = collections.defaultdict(lambda: {"mean": [], "best": []})
    dots_x, dots_y = [], []
    for run in strategy.get("runs") or []:
      steps = run.get("per_step") or []
      for i, row in enumerate(steps):
        step = row.get("step", i)
        by_step[step]["mean"].append(_num(row.get("mean_reward")))
        by_step[step]["best"].append(_num(row.get("best_so_far")))
      rewards = [_num(r) for r in run.get("rewards") or []]
      if rewards and steps:
        per = max(1, math.ceil(len(rewards) / len(steps)))
        dots_x += [i // per for i in range(len(rewards))]
        dots_y += rewards
    steps = sorted(by_step)
    out[key] = {"model": strategy.get("model"), "steps": steps,
                "mean_reward": [_nanmean(by_step[s]["mean"]) for s in steps],
                "best_so_far": [_nanmean(by_step[s]["best"]) for s in steps],
                "child_step": dots_x, "child_reward": dots_y,
                "runs": len(strategy.get("runs") or [])}
  return out


# --------------------------------------------------------------------------- entry point


def summarise(results, boot_seed=BOOTSTRAP_SEED):
  """All of the report's numbers from validated `results`.

  Args:
    results: the pipeline's results dict, already checked by `schema.validate`.
    boot_seed: the bootstrap generator's seed.

  Returns:
    a Summary.
  """
  entries, data = [], {}
  for model in sorted_models(results["models"]):
    entry, data[model["name"]] = summarise_model(model, results, boot_seed)
    entries.append(entry)
  pooled = metrics.pooled_bootstrap({name: d.image for name, d in data.items()}, _auroc_statistic,
                                    seed=boot_seed)
  for entry in entries:
    p = pooled[entry["name"]]
    low, high = p["ci"]["auroc"]
    entry["auroc_pooled"] = {"value": p["estimate"]["auroc"], "ci95": [float(low), float(high)]}
    entry["roc_pooled"] = pooled_roc(data[entry["name"]])
  winners = winner_rows(results)
  by_model = collections.defaultdict(list)
  for w in winners:
    by_model[w["model"]].append(w)
  # The choice sets are not in `results`: the values any winner took are a lower bound on them
  # (exact once the winners have used every option, as they do at any real budget).
  choices = [layer_choices(w) for w in winners]
  kernel_choices = len({k for ks, _ in choices if ks for k in ks}) or None
  filter_choices = len({f for _, fs in choices if fs for f in fs}) or None
  search = results.get("search") or {}
  return Summary(
      models=entries, data=data, pooled=pooled, winners=winners,
      agreement={name: agreement(ws, kernel_choices, filter_choices)
                 for name, ws in by_model.items()},
      rescore={name: rescore_summary(rows) for name, rows in (results.get("rescore") or {}).items()
               if rows},
      search_cost=search_cost(search), search_curves=search_curves(search),
      bootstrap={"resamples": metrics.N_RESAMPLES, "seed": boot_seed,
                 "confidence": metrics.CONFIDENCE,
                 "method": "percentile; subjects resampled with replacement within each outer "
                           "fold's test part; statistic = mean over folds of the per-fold metric "
                           "(a fold's value: mean over seeds)"})
