"""The report's PNG plots, each returned as bytes (written by the package's `write_report`).

This module owns the drawing: search rewards per step per strategy; per model the ROC, the
reliability diagram and the decision curve of every outer fold with their mean (`curves`: never
pooled over fold models); confusion matrices summed over folds and trainings; the exported
architectures and every winner's per-layer choices. It reads the JSON-safe report object, as
report.md does.

It uses matplotlib's object API (`matplotlib.figure.Figure`, rendered by the Agg canvas) rather than
pyplot: no global backend switch, so a Colab notebook keeps its inline plotting, and nothing here
can open a window. The package imports this module only when it draws, so `import
nasrl_jax.report` does not import matplotlib.
"""

import io
import math

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import matplotlib
import matplotlib.patches
import numpy as np

from nasrl_jax.report import curves
from nasrl_jax.report import search_summary

# One colour per model and per strategy, stable across plots.
COLORS = {"NASRL": "tab:blue", "VGG19": "tab:orange", "RandomSearch": "tab:green",
          "Evolution": "tab:red", "reinforce": "tab:blue", "random": "tab:green",
          "evolution": "tab:red"}
EXTRA_COLORS = ("tab:purple", "tab:brown", "tab:pink", "tab:gray", "tab:olive")
STRATEGY_LABELS = {"reinforce": "REINFORCE (NASRL)", "random": "random search",
                   "evolution": "regularized evolution"}
DPI = 120  # Sharp enough for a report, small enough to keep each PNG near 100 kB.


def color(name, i):
  return COLORS.get(name, EXTRA_COLORS[i % len(EXTRA_COLORS)])


def _png(fig):
  """PNG bytes of a figure. Every figure here uses the constrained layout, which already keeps
  labels inside the canvas (bbox_inches="tight" would add a draw), and is printed by its canvas:
  `savefig` draws a constrained-layout figure twice, `print_png` once, to the same bytes (measured
  on every plot of a report: identical PNGs, 20 % less CPU)."""
  buf = io.BytesIO()
  fig.set_dpi(DPI)
  FigureCanvasAgg(fig).print_png(buf)
  return buf.getvalue()


def _empty(ax, text):
  ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
  ax.set_axis_off()


def _num(x):
  return math.nan if x is None else float(x)


def search_rewards(report):
  """Per strategy: mean reward and best-so-far per step (mean over outer folds and seeds), and
  every child's reward as a faint dot at its step."""
  search = search_summary.search_curves(report.get("search") or {})
  fig = Figure(figsize=(10, 4.8), layout="constrained")
  ax = fig.add_subplot(1, 1, 1)
  drawn = False
  for i, (key, c) in enumerate(search.items()):
    if not c["steps"]:
      continue
    col, label = color(key, i), STRATEGY_LABELS.get(key, key)
    offset = (i - (len(search) - 1) / 2) * 0.1  # Side by side, so the dots do not hide each other.
    if c["child_reward"]:
      ax.scatter(np.asarray(c["child_step"]) + offset, [_num(r) for r in c["child_reward"]], s=8,
                 color=col, alpha=0.2, linewidths=0, label=f"{label}: each child")
    ax.plot(c["steps"], [_num(v) for v in c["mean_reward"]], "-o", color=col, ms=4,
            label=f"{label}: mean reward ({c['runs']} searches)")
    ax.plot(c["steps"], [_num(v) for v in c["best_so_far"]], "--", color=col, lw=2,
            label=f"{label}: best so far")
    drawn = True
  metric = (report.get("search") or {}).get("reward_metric", "reward")
  ax.set_xlabel("search step")
  ax.set_ylabel(f"reward ({metric})")
  ax.set_title("Search rewards per step")
  ax.grid(alpha=0.3)
  if drawn:
    fig.legend(fontsize=8, loc="outside right center")  # Outside: inside it hides the dots.
    ax.xaxis.get_major_locator().set_params(integer=True)
  else:
    _empty(ax, "no search history")
  return _png(fig)


def _panels(report, title, width=4.2, height=4.0):
  """A figure with one square panel per model (a row), and the axes."""
  models = report["models"]
  fig = Figure(figsize=(width * len(models), height), layout="constrained")
  axes = [fig.add_subplot(1, len(models), i + 1) for i in range(len(models))]
  fig.suptitle(title)
  return fig, axes


def _fold_lines(ax, x, lines, c, label):
  """Thin lines per outer fold, the thick mean over folds."""
  for y in lines["folds"].values():
    ax.plot(x, y, color=c, lw=0.8, alpha=0.45)
  if lines["mean"] is not None:
    ax.plot(x, lines["mean"], color=c, lw=2.2, label=label)


def roc(report):
  """Per model: each outer fold's ROC (mean of its test trainings, vertical averaging) and the
  mean over folds, labelled with the model's AUROC and its interval."""
  fig, axes = _panels(report, "ROC per outer fold (thin) and mean over folds (thick), P(fatty)")
  for i, (ax, m) in enumerate(zip(axes, report["models"])):
    ax.plot([0, 1], [0, 1], color="gray", lw=1, ls="--")
    a = m["auroc"]
    ci = a.get("ci95") if a.get("estimable") else None
    text = f"{_num(a.get('mean')):.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
    _fold_lines(ax, curves.FPR_GRID, curves.roc(m), color(m["name"], i), f"AUROC {text}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("1 - specificity")
    if i == 0:
      ax.set_ylabel("sensitivity")
    ax.set_title(m["name"], fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
  return _png(fig)


def calibration(report):
  """Reliability per model: observed share of fatty images per bin of predicted P(fatty), per
  outer fold and mean over folds, against the diagonal of perfect calibration."""
  fig, axes = _panels(report, "Reliability per outer fold (thin) and mean over folds (thick)")
  for i, (ax, m) in enumerate(zip(axes, report["models"])):
    ax.plot([0, 1], [0, 1], color="gray", lw=1, ls="--", label="perfect")
    rel = curves.reliability(m)
    slope = m["calibration"]["slope"].get("mean")
    _fold_lines(ax, rel["bins"], rel, color(m["name"], i), f"slope {_num(slope):.2f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.set_aspect("equal")
    ax.set_xlabel("predicted P(fatty)")
    if i == 0:
      ax.set_ylabel("observed share fatty")
    ax.set_title(m["name"], fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
  return _png(fig)


def decision_curve(report):
  """Net benefit per model against the decision threshold, per outer fold and mean over folds,
  with the treat-all and treat-none strategies."""
  fig, axes = _panels(report, "Decision curves: net benefit per outer fold (thin) and mean "
                      "(thick)")
  for i, (ax, m) in enumerate(zip(axes, report["models"])):
    dc = curves.decision_curve(m)
    t = dc["thresholds"]
    if dc["treat_all"] is not None:
      ax.plot(t, dc["treat_all"], color="black", lw=1, ls=":", label="treat all")
    ax.axhline(0.0, color="gray", lw=1, ls="--", label="treat none")
    _fold_lines(ax, t, dc, color(m["name"], i), m["name"])
    prevalence = m["prevalence"]["mean"]
    ax.set_ylim(-0.05, max(0.1, 1.1 * prevalence))
    ax.set_xlim(t[0], t[-1])
    ax.set_xlabel("threshold probability")
    if i == 0:
      ax.set_ylabel("net benefit")
    ax.set_title(m["name"], fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
  return _png(fig)


def _confusion_panel(ax, mat, names, title, show_ylabel):
  mat = np.asarray(mat, float)
  k = mat.shape[0]
  frac = mat / np.maximum(mat.sum(axis=1, keepdims=True), 1)  # Row fraction: classes read alike.
  ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
  for r in range(k):
    for c in range(k):
      ax.text(c, r, f"{int(round(mat[r, c]))}\n({frac[r, c]:.0%})", ha="center", va="center",
              fontsize=9 if k <= 2 else 7, color="white" if frac[r, c] > 0.6 else "black")
  ax.set_xticks(range(k), names, fontsize=8)
  ax.set_yticks(range(k), names, fontsize=8, rotation=90, va="center")
  ax.set_xlabel("predicted")
  if show_ylabel:
    ax.set_ylabel("true")
  ax.set_title(title, fontsize=10)


def confusion(report):
  """Binary (S0 vs S1-S3) confusion per model, summed over folds and seeds; grade mode adds the
  four-grade matrices in a second row."""
  models = report["models"]
  grade = any(m.get("multiclass") for m in models)
  rows, n = (2 if grade else 1), len(models)
  fig = Figure(figsize=(3.9 * n, 3.9 * rows), layout="constrained")
  binary_names = ["S0", "S1-S3"]
  for i, m in enumerate(models):
    _confusion_panel(fig.add_subplot(rows, n, i + 1), m["confusion"], binary_names,
                     f"{m['name']} (at 0.5)", i == 0)
    if grade:
      ax = fig.add_subplot(rows, n, n + i + 1)
      if m.get("multiclass"):
        _confusion_panel(ax, m["multiclass"]["confusion"], report.get("class_names") or [],
                         f"{m['name']}, grades", i == 0)
      else:
        _empty(ax, "no grades")
  fig.suptitle("Confusion matrices summed over outer folds and test trainings (% of the true class)")
  return _png(fig)


def _pool_positions(blocks, n_layers):
  if not blocks or sum(blocks) != n_layers:
    return []
  return list(np.cumsum(blocks))


def architectures(report):
  """Each exported model's conv layers: bar height = filters, label = kernel, pools marked."""
  drawable = [m for m in report["models"] if m.get("kernels") and m.get("filters")
              and len(m["kernels"]) == len(m["filters"])]
  fig = Figure(figsize=(9, 2.4 * max(len(drawable), 1) + 0.8), layout="constrained")
  if not drawable:
    _empty(fig.add_subplot(1, 1, 1), "no architectures")
    return _png(fig)
  all_kernels = sorted({int(k) for m in drawable for k in m["kernels"]})
  cmap = matplotlib.colormaps["viridis"]
  kernel_color = {k: cmap(i / max(len(all_kernels) - 1, 1)) for i, k in enumerate(all_kernels)}
  top = max(max(m["filters"]) for m in drawable)
  for i, m in enumerate(drawable):
    ax = fig.add_subplot(len(drawable), 1, i + 1)
    kernels, filters = [int(k) for k in m["kernels"]], [int(f) for f in m["filters"]]
    xs = np.arange(1, len(filters) + 1)
    ax.bar(xs, filters, color=[kernel_color[k] for k in kernels], edgecolor="black", lw=0.5)
    for x, k, f in zip(xs, kernels, filters):
      ax.text(x, f + top * 0.02, f"{k}x{k}", ha="center", va="bottom", fontsize=7)
    for p in _pool_positions(m.get("blocks"), len(filters)):
      ax.axvline(p + 0.5, color="red", ls="--", lw=1)
    ax.set_xlim(0.4, len(filters) + 0.9)
    ax.set_ylim(0, top * 1.22)
    ax.set_xticks(xs)
    ax.set_ylabel("filters")
    params = m.get("params")
    ax.set_title(f"{m['name']}  ({int(params):,} parameters)" if params else m["name"],
                 fontsize=10, loc="left")
    ax.grid(axis="y", alpha=0.3)
    if i == len(drawable) - 1:
      ax.set_xlabel("conv layer (label: kernel size; dashed red: 2x2 max-pool)")
  handles = [matplotlib.patches.Patch(color=kernel_color[k], label=f"kernel {k}x{k}")
             for k in all_kernels]
  fig.legend(handles=handles, loc="outside upper center", ncol=len(handles), fontsize=8,
             title="Exported conv layers per model (bar height = filters)", title_fontsize=10)
  return _png(fig)


def winners(report):
  """Every winner's per-layer choices: kernel size (left) and filter count (right), one row per
  winner (outer fold, seed), one pair of panels per model. Columns that are one colour top to
  bottom are layers where the winners agree."""
  by_model = {}
  for w in report.get("winners") or []:
    kernels, filters = search_summary.layer_choices(w)
    if kernels is not None:
      by_model.setdefault(w["model"], []).append((w, kernels, filters))
  fig = Figure(figsize=(11, 1.2 + sum(0.12 * len(v) + 0.9 for v in by_model.values())),
               layout="constrained")
  if not by_model:
    _empty(fig.add_subplot(1, 1, 1), "no winners with per-layer choices")
    return _png(fig)
  grid = fig.add_gridspec(len(by_model), 2, height_ratios=[len(v) + 4 for v in by_model.values()])
  legends = {}
  for j, (key, cmap_name) in enumerate((("kernel", "viridis"), ("filters", "Oranges"))):
    values = sorted({v for rows in by_model.values() for _, ks, fs in rows
                     for v in (ks if j == 0 else fs)})
    cmap = matplotlib.colormaps[cmap_name].resampled(max(len(values), 2))
    legends[key] = (values, cmap)
  for i, (name, rows) in enumerate(by_model.items()):
    rows = sorted(rows, key=lambda r: (r[0].get("fold", 0), r[0].get("seed", 0)))
    for j, key in enumerate(("kernel", "filters")):
      values, cmap = legends[key]
      index = {v: n for n, v in enumerate(values)}
      cells = np.array([[index[v] for v in (ks if j == 0 else fs)] for _, ks, fs in rows])
      ax = fig.add_subplot(grid[i, j])
      ax.imshow(cells, cmap=cmap, vmin=-0.5, vmax=len(values) - 0.5, aspect="auto",
                interpolation="nearest")
      ax.set_xticks(range(cells.shape[1]), range(1, cells.shape[1] + 1), fontsize=6)
      ax.set_yticks([])
      ax.set_ylabel(f"{len(rows)} winners" if j == 0 else "", fontsize=8)
      ax.set_title(f"{name}: {key} per layer", fontsize=9, loc="left")
      if i == len(by_model) - 1:
        ax.set_xlabel("conv layer", fontsize=8)
  handles = [matplotlib.patches.Patch(color=cmap(n),
                                      label=f"{v}x{v}" if key == "kernel" else str(v))
             for key, (values, cmap) in legends.items() for n, v in enumerate(values)]
  fig.legend(handles=handles, loc="outside upper center", ncol=len(handles), fontsize=7,
             title="Winners per layer (rows: outer fold x seed; colour: kernel size, then filters)",
             title_fontsize=9)
  return _png(fig)


# The plots in the order report.md shows them.
PLOTS = {"search_rewards": search_rewards, "roc": roc, "calibration": calibration,
         "decision_curve": decision_curve, "confusion": confusion,
         "architectures": architectures, "winners": winners}


def render(report):
  """{name: PNG bytes} for every plot in PLOTS."""
  return {name: draw(report) for name, draw in PLOTS.items()}
