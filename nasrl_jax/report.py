"""The run's report: report.md, report.json, table1.csv and plots/*.png.

This module owns turning the pipeline's `results` dict (plain Python types, per-fold metrics) into
what a reader sees: the aggregation over folds (mean +- std through `metrics.mean_std`), the paired
comparisons (`metrics.paired_wilcoxon`), the paper's Table 1 beside ours, the integrity statement
about what the search saw, the search-cost table and four plots. Every file is written atomically
(`io_utils`), and nothing is written before the whole `results` dict has been checked.

Plots use matplotlib's object API (`matplotlib.figure.Figure`, rendered by the Agg canvas) rather
than pyplot: no global backend switch, so importing this module in a Colab notebook leaves its
inline plotting alone, and nothing here can open a window.
"""

import csv
import io
import math
import numbers
import os

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import matplotlib.patches
import numpy as np

from nasrl_jax import io_utils
from nasrl_jax import metrics
from nasrl_jax.errors import UserInputError

# The metrics of Table 1 (image level), in the paper's column order, plus AUROC.
METRICS = ("accuracy", "sensitivity", "specificity", "auroc")
LEVELS = ("image", "subject")
# Preferred display order; models with other names follow in their given order.
MODEL_ORDER = ("NASRL", "VGG19", "RandomSearch")
# Paired tests: (a, b) pairs and the per-fold image-level metrics compared.
COMPARISONS = (("NASRL", "VGG19"), ("NASRL", "RandomSearch"))
COMPARED_METRICS = ("accuracy", "auroc")

# The paper's Table 1 (Lin et al.; 10-fold CV, 224x224, RTX 2080Ti, TensorFlow 2.11). Shown beside
# ours for reference only, labelled as the paper's; AUROC and FLOPs were not reported.
PAPER_TABLE1 = {
    "VGG19": {"accuracy": (0.72, 0.06), "sensitivity": (0.69, 0.13),
              "specificity": (0.78, 0.19), "params": 139_577_282, "fps": 38.0},
    "NASRL": {"accuracy": (0.77, 0.07), "sensitivity": (0.76, 0.10),
              "specificity": (0.77, 0.08), "params": 31_164_674, "fps": 41.0},
}
PAPER_SOURCE = "paper (Lin et al., RTX 2080Ti)"

# One colour per model, stable across plots.
_COLORS = {"NASRL": "tab:blue", "VGG19": "tab:orange", "RandomSearch": "tab:green"}
_EXTRA_COLORS = ("tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray")

TABLE1_COLUMNS = (
    "Model", "Accuracy", "Sensitivity", "Specificity", "AUROC", "Parameters", "FLOPs", "FPS",
    "accuracy_mean", "accuracy_std", "sensitivity_mean", "sensitivity_std",
    "specificity_mean", "specificity_std", "auroc_mean", "auroc_std", "folds")


# --------------------------------------------------------------------------- validation


def _validate(results):
  """Raises UserInputError naming the first malformed field; returns nothing."""
  if not isinstance(results, dict):
    raise UserInputError(f"results: expected a dict, got {type(results).__name__}")
  models = results.get("models")
  if not isinstance(models, list) or not models:
    raise UserInputError("results['models']: expected a non-empty list of model results")
  names = set()
  for i, model in enumerate(models):
    where = f"results['models'][{i}]"
    if not isinstance(model, dict) or not isinstance(model.get("name"), str):
      raise UserInputError(f"{where}: expected a dict with a string 'name'")
    if model["name"] in names:
      raise UserInputError(f"{where}: model name {model['name']!r} appears twice")
    names.add(model["name"])
    folds = model.get("folds")
    if not isinstance(folds, list) or not folds:
      raise UserInputError(f"{where} ({model['name']}): 'folds' must be a non-empty list")
    for j, fold in enumerate(folds):
      fwhere = f"{where}['folds'][{j}]"
      if not isinstance(fold, dict):
        raise UserInputError(f"{fwhere}: expected a dict")
      for level in LEVELS:
        part = fold.get(level)
        if not isinstance(part, dict):
          raise UserInputError(f"{fwhere}: missing the '{level}' metrics dict")
        for name in METRICS:
          if name not in part:
            raise UserInputError(f"{fwhere}['{level}']: missing '{name}'")
          if part[name] is not None and not isinstance(part[name], numbers.Real):
            raise UserInputError(
                f"{fwhere}['{level}']['{name}']: expected a number or None, got {part[name]!r}")
    for key in ("kernels", "filters"):
      if key in model and model[key] is not None and not isinstance(model[key], (list, tuple)):
        raise UserInputError(f"{where}['{key}']: expected a list of ints")


# --------------------------------------------------------------------------- aggregation


def _num(x):
  """None/NaN-tolerant float: None -> nan, numbers -> float."""
  return float("nan") if x is None else float(x)


def _finite(x):
  return isinstance(x, numbers.Real) and math.isfinite(x)


def _sorted_models(models):
  rank = {name: i for i, name in enumerate(MODEL_ORDER)}
  return sorted(models, key=lambda m: rank.get(m["name"], len(rank)))


def _fold_values(model, level, name):
  return [_num(f[level][name]) for f in model["folds"]]


def aggregate(model):
  """Mean and std over folds of every metric, image and subject level.

  Args:
    model: one entry of `results["models"]`.

  Returns:
    {"image": {metric: {"mean", "std", "n", "n_nan"}}, "subject": {...}} from
    `metrics.mean_std` (sample std, NaN folds left out and counted in n_nan).
  """
  return {level: {name: dict(metrics.mean_std(_fold_values(model, level, name)))
                  for name in METRICS}
          for level in LEVELS}


def compare(models):
  """Paired Wilcoxon signed-rank tests over folds for the pairs in COMPARISONS that are present.

  Folds are paired by their "fold" number; `metrics.paired_wilcoxon` drops a pair where either
  value is missing (None/NaN, e.g. AUROC of a one-class test part) and `n` says how many remained.

  Args:
    models: `results["models"]`.

  Returns:
    A list of {"a", "b", "metric", "level", "n", "mean_a", "mean_b", "mean_diff", "statistic",
    "p_value", "note"}; means are over the kept pairs.
  """
  by_name = {m["name"]: m for m in models}
  out = []
  for a, b in COMPARISONS:
    if a not in by_name or b not in by_name:
      continue
    fa = {f.get("fold", i): f for i, f in enumerate(by_name[a]["folds"])}
    fb = {f.get("fold", i): f for i, f in enumerate(by_name[b]["folds"])}
    common = sorted(set(fa) & set(fb))
    for name in COMPARED_METRICS:
      va = np.array([_num(fa[k]["image"][name]) for k in common])
      vb = np.array([_num(fb[k]["image"][name]) for k in common])
      test = metrics.paired_wilcoxon(va, vb)
      keep = np.isfinite(va) & np.isfinite(vb)
      out.append({
          "a": a, "b": b, "metric": name, "level": "image", "n": int(test["n"]),
          "mean_a": float(np.mean(va[keep])) if keep.any() else None,
          "mean_b": float(np.mean(vb[keep])) if keep.any() else None,
          "mean_diff": test["mean_diff"], "statistic": test["statistic"],
          "p_value": test["p_value"], "note": test.get("note", ""),
      })
  return out


to_json_safe = io_utils.to_json_safe  # Kept for callers of report.to_json_safe.


def build_report_json(results, summaries, comparisons):
  """The report.json object (schema in DESIGN.md), JSON-safe."""
  models = []
  for m in _sorted_models(results["models"]):
    s = summaries[m["name"]]
    entry = {
        "name": m["name"],
        "architecture": m.get("architecture"),
        "kernels": m.get("kernels"),
        "filters": m.get("filters"),
        "blocks": m.get("blocks"),
        "params": m.get("params"),
        "flops": m.get("flops"),
        "fps": m.get("fps"),
        "throughput": m.get("throughput"),
        "throughput_batch": m.get("throughput_batch"),
    }
    entry.update(s["image"])
    entry["subject"] = s["subject"]
    entry["folds"] = m["folds"]
    entry["search_fold_test"] = m.get("search_fold_test")
    models.append(entry)
  return to_json_safe({
      "models": models,
      "search": results.get("search", {}),
      "data": results.get("data", {}),
      "comparisons": comparisons,
      "paper_table1": {k: dict(v) for k, v in PAPER_TABLE1.items()},
      "command": results.get("command"),
      "config_variant": results.get("config_variant"),
      "date": results.get("date"),
      "device": results.get("device"),
  })


# --------------------------------------------------------------------------- formatting


def _pm(ms, digits=2):
  """{"mean", "std"} -> "0.77 +- 0.07" ("n/a" when the mean is missing)."""
  if not ms or not _finite(ms.get("mean")):
    return "n/a"
  std = ms.get("std")
  std_text = f"{std:.{digits}f}" if _finite(std) else "n/a"
  return f"{ms['mean']:.{digits}f} +- {std_text}"


def _pm_n(ms, digits=2):
  """Like _pm, but says over how many folds when some folds had no value (e.g. one-class AUROC)."""
  text = _pm(ms, digits)
  if ms and ms.get("n_nan"):
    text += f" ({ms.get('n')} folds)"
  return text


def _int_text(x):
  return f"{int(x):,}" if _finite(x) else "n/a"


def _flops_text(x):
  if not _finite(x):
    return "n/a"
  for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
    if abs(x) >= scale:
      return f"{x / scale:.2f} {unit}"
  return f"{x:.0f}"


def _fps_text(x):
  return f"{x:.1f}" if _finite(x) else "n/a"


def _float_text(x, digits=3):
  return f"{x:.{digits}f}" if _finite(x) else "n/a"


def _p_text(p):
  if not _finite(p):
    return "n/a"
  return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"


def _seconds_text(x):
  return f"{x:.1f}" if _finite(x) else "n/a"


def _md_table(header, rows):
  lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
  for row in rows:
    lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |")
  return "\n".join(lines)


# --------------------------------------------------------------------------- table1.csv


def table1_csv(report):
  """table1.csv text: one row per model, display strings then numeric columns.

  Columns: Model, Accuracy, Sensitivity, Specificity, AUROC ("mean +- std", 2 decimals, image
  level over folds), Parameters (int), FLOPs (float, per image), FPS (batch-1 images/s), then
  <metric>_mean / <metric>_std at full precision (empty when missing) and folds (count).
  """
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator="\n")
  writer.writerow(TABLE1_COLUMNS)
  for m in report["models"]:
    row = [m["name"]] + [_pm(m[name]) for name in METRICS]
    row += ["" if m["params"] is None else int(m["params"]),
            "" if m["flops"] is None else float(m["flops"]),
            "" if m["fps"] is None else round(float(m["fps"]), 2)]
    for name in METRICS:
      for stat in ("mean", "std"):
        v = m[name].get(stat)
        row.append("" if v is None else repr(float(v)))
    row.append(len(m["folds"]))
    writer.writerow(row)
  return buf.getvalue()


# --------------------------------------------------------------------------- plots


def _color(name, i):
  return _COLORS.get(name, _EXTRA_COLORS[i % len(_EXTRA_COLORS)])


def _png(fig):
  buf = io.BytesIO()
  FigureCanvasAgg(fig)
  fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
  return buf.getvalue()


def _per_step_series(strategy, key):
  steps = [r.get("step", i) for i, r in enumerate(strategy.get("per_step") or [])]
  vals = [_num(r.get(key)) for r in (strategy.get("per_step") or [])]
  return steps, vals


def plot_search_rewards(search):
  """PNG bytes: controller reward per step (mean, EMA baseline, best so far) vs random search."""
  fig = Figure(figsize=(10, 4.8), layout="constrained")
  ax = fig.add_subplot(1, 1, 1)
  styles = {"reinforce": ("tab:blue", "REINFORCE controller"),
            "random": ("tab:green", "random search")}
  drawn = False
  for key, (color, label) in styles.items():
    strategy = search.get(key)
    if not strategy:
      continue
    rewards = [_num(r) for r in strategy.get("rewards") or []]
    n_steps = len(strategy.get("per_step") or []) or strategy.get("steps") or 0
    if rewards and n_steps:
      # Individual children as faint dots at their step (children are sampled step by step).
      per = max(1, math.ceil(len(rewards) / n_steps))
      offset = -0.08 if key == "reinforce" else 0.08
      xs = [i // per + offset for i in range(len(rewards))]
      ax.scatter(xs, rewards, s=10, color=color, alpha=0.25, linewidths=0,
                 label=f"{label}: each child")
    steps, mean = _per_step_series(strategy, "mean_reward")
    if steps:
      ax.plot(steps, mean, "-o", color=color, ms=4, label=f"{label}: mean reward")
      _, best = _per_step_series(strategy, "best_so_far")
      ax.plot(steps, best, "--", color=color, lw=2, label=f"{label}: best so far")
      _, baseline = _per_step_series(strategy, "baseline")
      if any(math.isfinite(b) for b in baseline):
        ax.plot(steps, baseline, ":", color="black", lw=1.5, label=f"{label}: EMA baseline")
      drawn = True
  ax.set_xlabel("step" + (" (random search: batch of the same size)" if search.get("random")
                           else ""))
  ax.set_ylabel("reward (best validation accuracy)")
  ax.set_title("Search rewards per step")
  ax.grid(alpha=0.3)
  if drawn:
    # Outside the axes: inside, it would hide the children's dots.
    fig.legend(fontsize=8, loc="outside right center")
    # Integer steps only: fractional ticks mean nothing here.
    ax.xaxis.get_major_locator().set_params(integer=True)
  else:
    ax.text(0.5, 0.5, "no search history", ha="center", va="center", transform=ax.transAxes)
  return _png(fig)


def _roc_curves(model):
  fprs, tprs = [], []
  for fold in model["folds"]:
    roc = fold["image"].get("roc") or {}
    fpr, tpr = roc.get("fpr"), roc.get("tpr")
    if not fpr or not tpr or len(fpr) != len(tpr):
      continue  # One-class test part: no ROC curve for this fold.
    fpr, tpr = np.asarray(fpr, float), np.asarray(tpr, float)
    if np.all(np.isfinite(fpr)) and np.all(np.isfinite(tpr)):
      fprs.append(fpr)
      tprs.append(tpr)
  return fprs, tprs


def plot_roc(models, summaries):
  """PNG bytes: the mean ROC curve over folds per model with a +-1 std band."""
  fig = Figure(figsize=(5.6, 5.2))
  ax = fig.add_subplot(1, 1, 1)
  ax.plot([0, 1], [0, 1], color="gray", lw=1, ls="--", label="chance")
  for i, model in enumerate(models):
    fprs, tprs = _roc_curves(model)
    if not fprs:
      continue
    grid, mean_tpr, std_tpr = (np.asarray(x, float) for x in metrics.mean_roc(fprs, tprs))
    color = _color(model["name"], i)
    auroc = summaries[model["name"]]["image"]["auroc"]
    ax.plot(grid, mean_tpr, color=color, lw=2,
            label=f"{model['name']} (AUROC {_pm(auroc)}, {len(fprs)} folds)")
    ax.fill_between(grid, np.clip(mean_tpr - std_tpr, 0, 1), np.clip(mean_tpr + std_tpr, 0, 1),
                    color=color, alpha=0.15, linewidth=0)
  ax.set_xlim(0, 1)
  ax.set_ylim(0, 1.01)
  ax.set_aspect("equal")
  ax.set_xlabel("false positive rate (1 - specificity)")
  ax.set_ylabel("true positive rate (sensitivity)")
  ax.set_title("Mean ROC over folds (image level), band = +-1 std")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc="lower right")
  return _png(fig)


def _class_names(k):
  if k == 2:
    return ["normal (S0)", "fatty (S1-S3)"]
  if k == 4:
    return ["S0", "S1", "S2", "S3"]
  return [str(i) for i in range(k)]


def summed_confusion(model):
  """Image-level confusion matrix summed over folds (rows true, columns predicted), or None."""
  mats = [np.asarray(f["image"]["confusion"], float) for f in model["folds"]
          if f["image"].get("confusion") is not None]
  mats = [m for m in mats if m.ndim == 2 and m.shape[0] == m.shape[1]]
  if not mats or len({m.shape for m in mats}) != 1:
    return None
  return np.sum(mats, axis=0)


def plot_confusion(models):
  """PNG bytes: summed image-level confusion matrices, one panel per model."""
  n = len(models)
  fig = Figure(figsize=(3.9 * n, 3.9))
  for i, model in enumerate(models):
    ax = fig.add_subplot(1, n, i + 1)
    mat = summed_confusion(model)
    ax.set_title(model["name"])
    if mat is None:
      ax.text(0.5, 0.5, "no confusion matrix", ha="center", va="center", transform=ax.transAxes)
      ax.set_axis_off()
      continue
    k = mat.shape[0]
    # Colour by the row fraction so the imbalanced classes (96 vs 214) read alike.
    frac = mat / np.maximum(mat.sum(axis=1, keepdims=True), 1)
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for r in range(k):
      for c in range(k):
        ax.text(c, r, f"{int(round(mat[r, c]))}\n({frac[r, c]:.0%})", ha="center", va="center",
                fontsize=10, color="white" if frac[r, c] > 0.6 else "black")
    names = _class_names(k)
    ax.set_xticks(range(k), names, fontsize=8)
    ax.set_yticks(range(k), names, fontsize=8, rotation=90, va="center")
    ax.set_xlabel("predicted")
    if i == 0:
      ax.set_ylabel("true")
  fig.suptitle("Confusion matrices summed over folds (image level; % of the true class)")
  fig.tight_layout()
  return _png(fig)


def _pool_positions(blocks, n_layers):
  """Indices after which a 2x2 max-pool sits (after each block)."""
  if not blocks or sum(blocks) != n_layers:
    return []
  return list(np.cumsum(blocks))


def plot_architectures(models):
  """PNG bytes: each model's conv layers (bar height = filters, label = kernel, pools marked)."""
  drawable = [m for m in models if m.get("kernels") and m.get("filters")
              and len(m["kernels"]) == len(m["filters"])]
  n = max(len(drawable), 1)
  fig = Figure(figsize=(9, 2.4 * n + 0.8), layout="constrained")
  if not drawable:
    ax = fig.add_subplot(1, 1, 1)
    ax.text(0.5, 0.5, "no architectures", ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    return _png(fig)
  all_kernels = sorted({int(k) for m in drawable for k in m["kernels"]})
  cmap = matplotlib.colormaps["viridis"]
  kernel_color = {k: cmap(i / max(len(all_kernels) - 1, 1)) for i, k in enumerate(all_kernels)}
  top = max(max(m["filters"]) for m in drawable)
  for i, model in enumerate(drawable):
    ax = fig.add_subplot(n, 1, i + 1)
    kernels, filters = [int(k) for k in model["kernels"]], [int(f) for f in model["filters"]]
    xs = np.arange(1, len(filters) + 1)
    ax.bar(xs, filters, color=[kernel_color[k] for k in kernels], edgecolor="black", lw=0.5)
    for x, k, f in zip(xs, kernels, filters):
      ax.text(x, f + top * 0.02, f"{k}x{k}", ha="center", va="bottom", fontsize=7)
    for p in _pool_positions(model.get("blocks"), len(filters)):
      ax.axvline(p + 0.5, color="red", ls="--", lw=1)
      ax.text(p + 0.5, top * 1.2, "pool", color="red", ha="center", va="top", fontsize=7,
              bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5})
    ax.set_xlim(0.4, len(filters) + 0.9)
    ax.set_ylim(0, top * 1.22)
    ax.set_xticks(xs)
    ax.set_ylabel("filters")
    params = model.get("params")
    ax.set_title(f"{model['name']}  ({_int_text(params)} parameters)", fontsize=10, loc="left")
    ax.grid(axis="y", alpha=0.3)
    if i == len(drawable) - 1:
      ax.set_xlabel("conv layer (label: kernel size; dashed red: 2x2 max-pool)")
  handles = [matplotlib.patches.Patch(color=kernel_color[k], label=f"kernel {k}x{k}")
             for k in all_kernels]
  fig.legend(handles=handles, loc="outside upper center", ncol=len(handles), fontsize=8,
             title="Conv layers per model (bar height = filters)", title_fontsize=10)
  return _png(fig)


# --------------------------------------------------------------------------- report.md


def _data_section(data):
  if not data:
    return ["No data summary was recorded."]
  lines = []
  shape = data.get("image_shape")
  lines.append(f"- Source: {data.get('name') or 'n/a'}")
  lines.append(f"- Images: {data.get('images', 'n/a')}, subjects: {data.get('subjects', 'n/a')}, "
               f"image shape: {'x'.join(str(s) for s in shape) if shape else 'n/a'}")
  labels = data.get("labels") or {}
  if labels:
    names = _class_names(len(labels))
    parts = [f"{names[int(k)] if str(k).isdigit() and int(k) < len(names) else k}: {v}"
             for k, v in sorted(labels.items(), key=lambda kv: str(kv[0]))]
    lines.append(f"- Images per label: {', '.join(parts)}")
  devices = data.get("devices") or {}
  if devices:
    lines.append("- Images per machine: " +
                 ", ".join(f"{k or 'unknown'}: {v}" for k, v in devices.items()))
  lines.append(f"- Cross-validation: {data.get('num_folds', 'n/a')} folds, split by subject; "
               f"the search used fold {data.get('search_fold', 'n/a')}")
  return lines


def _integrity_text(data):
  saw = (data or {}).get("search_saw") or {}
  f = (data or {}).get("search_fold", "f")
  return (
      f"**What the search saw.** The search trained and scored children only on fold "
      f"{f}'s train part ({saw.get('train_images', 'n/a')} images, "
      f"{saw.get('train_subjects', 'n/a')} subjects) and validation part "
      f"({saw.get('val_images', 'n/a')} images, {saw.get('val_subjects', 'n/a')} subjects). "
      f"Fold {f}'s test part ({saw.get('test_images_never_seen', 'n/a')} images) was never seen "
      f"by the search, so the table below is the clean held-out estimate. The other folds' test "
      f"parts lie inside fold {f}'s train/validation data, which the search did see: the k-fold "
      f"numbers of Table 1 are therefore optimistic for NASRL and RandomSearch (their "
      f"architecture was chosen on data that contains those test parts). VGG19 was fixed in "
      f"advance and carries no such bias.")


def _search_section(search):
  lines = []
  strategies = [(k, label) for k, label in (("reinforce", "REINFORCE controller"),
                                            ("random", "random search")) if search.get(k)]
  if not strategies:
    return ["No search was recorded."]
  rows = []
  for key, label in strategies:
    s = search[key]
    wall, comp = s.get("wall_seconds"), s.get("compile_seconds")
    share = f"{100 * comp / wall:.0f}%" if _finite(wall) and _finite(comp) and wall > 0 else "n/a"
    best = s.get("best") or {}
    rows.append([label, s.get("children", "n/a"), s.get("steps", "n/a"), _seconds_text(wall),
                 f"{_seconds_text(comp)} ({share})", _seconds_text(s.get("train_seconds")),
                 s.get("memo_hits", "n/a"), s.get("failed", "n/a"),
                 _float_text(best.get("reward")), _int_text(best.get("params")),
                 f"`{best.get('architecture', 'n/a')}`"])
  lines.append(_md_table(["strategy", "children", "steps", "wall s", "compile s (share)",
                          "train s", "memo hits", "failed", "best reward", "best params",
                          "best architecture"], rows))
  lines.append("")
  lines.append(f"Search ran on {search.get('devices', 'n/a')} device(s), "
               f"{search.get('processes', 'n/a')} process(es).")
  return lines


def build_markdown(results, report, comparisons, plot_paths):
  """report.md text."""
  data = results.get("data") or {}
  models = report["models"]
  out = ["# NASRL early fatty-liver detection: report", ""]
  out += ["Produced by:", "", "```", str(results.get("command") or "n/a"), "```", ""]
  out += [f"- Config variant: `{results.get('config_variant') or 'default'}`",
          f"- Date: {results.get('date') or 'n/a'}",
          f"- Device: {results.get('device') or 'n/a'}", ""]

  out += ["## Data", ""] + _data_section(data) + [""]

  k = data.get("num_folds") or len(models[0]["folds"])
  out += ["## Table 1: k-fold cross-validation (image level)", "",
          f"Mean +- std over {k} folds of each fold's test part. Rows marked "
          f"*{PAPER_SOURCE}* are the paper's published numbers (224x224 images, TensorFlow), "
          f"shown for reference only; they are not results of this run. FPS is batch-1 "
          f"inference on this run's device.", ""]
  rows = []
  for m in models:
    rows.append([f"**{m['name']}**", "this run"] + [_pm_n(m[n]) for n in METRICS] +
                [_int_text(m["params"]), _flops_text(m["flops"]), _fps_text(m["fps"])])
    paper = PAPER_TABLE1.get(m["name"])
    if paper:
      rows.append([f"*{m['name']}*", f"*{PAPER_SOURCE}*"] +
                  [f"*{paper[n][0]:.2f} +- {paper[n][1]:.2f}*" if n in paper else "n/a"
                   for n in METRICS] +
                  [f"*{paper['params']:,}*", "n/a", f"*{paper['fps']:.0f}*"])
  out.append(_md_table(["Model", "Source", "Accuracy", "Sensitivity", "Specificity", "AUROC",
                        "Parameters", "FLOPs", "FPS"], rows))
  out += ["", "Machine-readable: [table1.csv](table1.csv), [report.json](report.json).", ""]

  out += ["### Per subject", "",
          "The same folds scored per subject (each subject's images aggregated into one "
          "prediction by the pipeline).", ""]
  rows = [[m["name"]] + [_pm_n(m["subject"][n]) for n in METRICS] for m in models]
  out += [_md_table(["Model", "Accuracy", "Sensitivity", "Specificity", "AUROC"], rows), ""]

  out += ["### Per fold (image accuracy)", ""]
  fold_ids = sorted({f.get("fold", i) for m in models for i, f in enumerate(m["folds"])},
                    key=lambda x: (str(type(x)), x))
  rows = []
  for m in models:
    by_fold = {f.get("fold", i): f for i, f in enumerate(m["folds"])}
    rows.append([m["name"]] + [_float_text(by_fold[i]["image"]["accuracy"], 2)
                               if i in by_fold else "" for i in fold_ids])
  out += [_md_table(["Model"] + [f"fold {i}" for i in fold_ids], rows), ""]

  out += ["## Held-out result on the search fold", "", _integrity_text(data), ""]
  rows = []
  for m in models:
    sft = m.get("search_fold_test") or {}
    for level in LEVELS:
      part = sft.get(level)
      if not part:
        continue
      rows.append([m["name"], level] + [_float_text(part.get(n)) for n in METRICS] +
                  [part.get("n", "n/a")])
  if rows:
    out += [_md_table(["Model", "level", "Accuracy", "Sensitivity", "Specificity", "AUROC", "n"],
                      rows), ""]
  else:
    out += ["No search-fold test result was recorded.", ""]

  n_pairs = max([int(c["n"]) for c in comparisons if c.get("n")] or [0])
  floor = (f" With {n_pairs} folds the smallest two-sided p-value the exact test can reach is "
           f"{2.0 / 2 ** n_pairs:.2g}; treat these as descriptive." if n_pairs else "")
  out += ["## Paired comparisons", "",
          "Wilcoxon signed-rank test on per-fold image-level values (folds paired by number; "
          "folds with a missing value are dropped, see n)." + floor, ""]
  if comparisons:
    notes = any(c.get("note") for c in comparisons)
    rows = [[f"{c['a']} vs {c['b']}", c["metric"], c["n"], _float_text(c["mean_a"]),
             _float_text(c["mean_b"]), _float_text(c["mean_diff"]),
             _float_text(c["statistic"], 1), _p_text(c["p_value"])] +
            ([c.get("note") or ""] if notes else []) for c in comparisons]
    out += [_md_table(["comparison", "metric", "n", "mean A", "mean B", "mean A-B", "W",
                       "p-value"] + (["note"] if notes else []), rows), ""]
  else:
    out += ["No pair of compared models (NASRL with VGG19 or RandomSearch) is present.", ""]

  out += ["## Architectures", ""]
  rows = [[m["name"], f"`{m.get('architecture') or 'n/a'}`", _int_text(m["params"]),
           _flops_text(m["flops"]), _fps_text(m["fps"]),
           (f"{_fps_text(m.get('throughput'))} (batch {m.get('throughput_batch')})"
            if _finite(m.get("throughput")) else "n/a")] for m in models]
  out += [_md_table(["Model", "architecture", "Parameters", "FLOPs", "FPS (batch 1)",
                     "images/s (large batch)"], rows), ""]

  search = results.get("search") or {}
  out += ["## Search cost", ""] + _search_section(search) + [""]
  seeds = search.get("seeds") or []
  out += ["### Results per search seed", ""]
  if seeds:
    rows = [[s.get("seed", "n/a"), _float_text(s.get("best_reward")),
             f"`{s.get('best_architecture', 'n/a')}`"] for s in seeds]
    out += [_md_table(["seed", "best reward", "best architecture"], rows), ""]
  else:
    out += ["Only one search seed was run.", ""]

  out += ["## Plots", ""]
  captions = {"search_rewards": "Search rewards per step", "roc": "Mean ROC curves",
              "confusion": "Confusion matrices", "architectures": "Architectures"}
  for key, path in plot_paths.items():
    rel = os.path.join("plots", os.path.basename(path))
    out += [f"### {captions.get(key, key)}", "", f"![{captions.get(key, key)}]({rel})", ""]
  return "\n".join(out).rstrip() + "\n"


# --------------------------------------------------------------------------- entry point


def write_report(results: dict, workdir: str) -> dict:
  """Writes report.md, report.json, table1.csv and plots/*.png under `workdir`.

  Args:
    results: the pipeline's results dict (plain Python types; see docs/notes_report.md).
    workdir: the run's folder; created if missing.

  Returns:
    {"report_md", "report_json", "table1_csv": path, "plots": {name: path}}.

  Raises:
    UserInputError: `results` is malformed (nothing is written then).
  """
  _validate(results)
  models = _sorted_models(results["models"])
  summaries = {m["name"]: aggregate(m) for m in models}
  comparisons = to_json_safe(compare(models))
  report = build_report_json(results, summaries, comparisons)

  # Render everything in memory first, so a failure leaves no half-written report behind.
  plots_dir = os.path.join(workdir, "plots")
  pngs = {
      "search_rewards": plot_search_rewards(results.get("search") or {}),
      "roc": plot_roc(models, summaries),
      "confusion": plot_confusion(models),
      "architectures": plot_architectures(models),
  }
  plot_paths = {k: os.path.join(plots_dir, f"{k}.png") for k in pngs}
  markdown = build_markdown(results, report, comparisons, plot_paths)
  csv_text = table1_csv(report)

  for key, data in pngs.items():
    io_utils.atomic_write_bytes(plot_paths[key], data)
  paths = {
      "report_json": os.path.join(workdir, "report.json"),
      "table1_csv": os.path.join(workdir, "table1.csv"),
      "report_md": os.path.join(workdir, "report.md"),
  }
  io_utils.atomic_write_json(paths["report_json"], report)
  io_utils.atomic_write_text(paths["table1_csv"], csv_text)
  io_utils.atomic_write_text(paths["report_md"], markdown)
  paths["plots"] = plot_paths
  return paths
