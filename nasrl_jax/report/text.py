"""Formatting helpers of report.md: numbers, intervals, tables (no wording of results here)."""

import math
import numbers

# Decimals of every metric shown (the paper's Table 1 uses 2).
DIGITS = 2
NOT_ESTIMABLE = "not estimable"
# How report.md names each metric.
METRIC_TITLES = {"accuracy": "Accuracy", "sensitivity": "Sensitivity",
                 "specificity": "Specificity", "auroc": "AUROC",
                 "balanced_accuracy": "Balanced accuracy", "ppv": "PPV", "npv": "NPV",
                 "brier": "Brier"}


def finite(x):
  return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def fmt(x, digits=DIGITS):
  return f"{x:.{digits}f}" if finite(x) else "n/a"


def ci_text(ci, digits=DIGITS):
  if not ci or not all(finite(v) for v in ci):
    return "[n/a]"
  return f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def stat_text(stat, digits=DIGITS, std=True):
  """A metric object -> "0.77 +- 0.07 [0.71, 0.82]", or "0.77 +- 0.07 [not estimable]"."""
  if not stat or not finite(stat.get("mean")):
    return "n/a"
  text = f"{stat['mean']:.{digits}f}"
  if std:
    text += f" +- {fmt(stat.get('std'), digits)}"
  if stat.get("estimable") is False:
    text += f" [{NOT_ESTIMABLE}]"
  else:
    text += f" {ci_text(stat.get('ci95'), digits)}"
  if stat.get("n_nan"):
    text += f" ({stat['n_folds']} of {stat['n_folds'] + stat['n_nan']} folds)"
  return text


def value_ci(v):
  """{"value", "ci95"} -> "0.81 [0.75, 0.86]"."""
  if not v or not finite(v.get("value")):
    return "n/a"
  return f"{v['value']:.{DIGITS}f} {ci_text(v.get('ci95'))}"


def int_text(x):
  return f"{int(x):,}" if finite(x) else "n/a"


def flops_text(x):
  if not finite(x):
    return "n/a"
  for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
    if abs(x) >= scale:
      return f"{x / scale:.2f} {unit}"
  return f"{x:.0f}"


def seconds_text(x):
  return f"{x:,.0f}" if finite(x) else "n/a"


def share_text(x):
  return f"{100 * x:.0f} %" if finite(x) else "n/a"


def table(header, rows):
  lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
  for row in rows:
    lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |")
  return "\n".join(lines)


def details(summary, body):
  """A collapsed block (GitHub renders <details>): long tables a reviewer opens on demand."""
  return ["<details><summary>" + summary + "</summary>", "", *body, "", "</details>", ""]


def code(text):
  return f"`{text}`" if text else "n/a"


def not_estimable_notes(rows):
  """Footnote lines for the [not estimable] cells of a table: (label, metric object) pairs."""
  seen = {}
  for label, stat in rows:
    if stat and stat.get("estimable") is False and finite(stat.get("mean")):
      seen.setdefault(stat.get("reason") or "no reason recorded", []).append(label)
  return [f"Not estimable ({reason}): {', '.join(labels)}." for reason, labels in seen.items()]
