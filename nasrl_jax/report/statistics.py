"""The comparisons: the pre-specified primary family, the exploratory rest, and their sentences.

This module owns
  * the primary family (`config.eval.primary`): per comparison, the Nadeau-Bengio corrected
    resampled t-test on per-outer-fold differences (a fold's value: the mean over its test
    trainings; ratio n_test / (n - n_test)), Holm's adjustment over this family alone, and the
    only verdicts the report states;
  * the secondary comparisons (NASRL against every other model on accuracy and AUROC, and the
    paired fold-wise bootstrap of the primary metric over test subjects and trainings, which is
    conditional on these outer folds' searches): listed as exploratory, without claims;
  * the wording: one sentence per comparison and one "did the model learn" sentence per model.

A fold-level test needs `intervals.MIN_FOLDS` outer folds; below that, and with zero variance or
an interval outside the difference's possible range, a comparison is "not estimable (reason)":
never a clipped or impossible number. AUROCs are compared fold by fold, never on pooled
probabilities of different fold models.
"""

import math

import numpy as np

from nasrl_jax import stats
from nasrl_jax.report import intervals
from nasrl_jax.report import primary as primary_lib

# The model every other model is compared with in the secondary table.
REFERENCE = "NASRL"
# Secondary corrected t-tests: (level, metric) of NASRL against every other model.
SECONDARY = (("image", "accuracy"), ("image", "auroc"), ("subject", "auroc"))
# Family-wise significance level for the Holm-adjusted p-values of the primary family.
ALPHA = 0.05
# p-values below this are printed as "< 0.001".
P_FLOOR = 0.001
# The AUROC of a classifier that learned nothing.
CHANCE_AUROC = 0.5
TEST_T = "nadeau_bengio_corrected_t"
TEST_BOOTSTRAP = "paired_fold_bootstrap"
TEST_LABELS = {TEST_T: "Nadeau-Bengio corrected t-test over outer folds",
               TEST_BOOTSTRAP: "paired bootstrap of test subjects and trainings within each "
                               "outer fold (conditional on these folds' searches)"}
METRIC_LABELS = {"accuracy": "accuracy", "auroc": "AUROC", "sensitivity": "sensitivity",
                 "specificity": "specificity", "balanced_accuracy": "balanced accuracy",
                 "ppv": "PPV", "npv": "NPV", "brier": "Brier score"}


def _block(entry, level):
  return entry if level == "image" else entry["subject"]


def _per_fold(entry, level, metric):
  return {row["fold"]: row["value"] for row in _block(entry, level)[metric]["per_fold"]}


def _boot_key(metric):
  return f"val_{metric}" if metric in primary_lib.AT_VALIDATION_THRESHOLD else metric


def _base(a, b, level, metric, test):
  return {"a": a, "b": b, "metric": metric, "level": level, "test": test, "diff": math.nan,
          "ci95": None, "p": None, "p_holm": None, "significant": None, "estimable": False,
          "reason": ""}


def t_row(a, b, level, metric, summary):
  """One corrected t-test of per-fold differences A - B over the folds both have."""
  row = _base(a, b, level, metric, TEST_T)
  entries = {m["name"]: m for m in summary.models}
  missing = [n for n in (a, b) if n not in entries]
  if missing:
    return dict(row, reason=f"no model named {', '.join(missing)} in this run")
  va, vb = _per_fold(entries[a], level, metric), _per_fold(entries[b], level, metric)
  folds = sorted(f for f in set(va) & set(vb) if math.isfinite(va[f]) and math.isfinite(vb[f]))
  diffs = [va[f] - vb[f] for f in folds]
  row.update(folds=folds, differences=diffs, k=len(folds),
             diff=float(np.mean(diffs)) if diffs else math.nan)
  if len(folds) < intervals.MIN_FOLDS:
    return dict(row, reason=f"{len(folds)} outer folds: a fold-level test needs at least "
                            f"{intervals.MIN_FOLDS}")
  if max(diffs) - min(diffs) <= intervals.ZERO_SPREAD:
    return dict(row, reason="zero variance: every outer fold gave the same difference")
  test = stats.corrected_ttest(diffs, n_train=1.0, n_test=summary.ratio)
  row.update({k: test[k] for k in ("t", "df", "se")}, ratio=summary.ratio)
  low, high = test["ci95"]
  if low < -1.0 or high > 1.0:
    return dict(row, reason="the interval would leave the difference's range [-1, 1]")
  return dict(row, ci95=[float(low), float(high)], p=float(test["p"]), estimable=True)


def bootstrap_row(a, b, level, metric, summary):
  """The paired fold-wise bootstrap of A - B (same subject draws; trainings resampled)."""
  row = _base(a, b, level, metric, TEST_BOOTSTRAP)
  boot = summary.boot[level]
  if a not in boot or b not in boot:
    return dict(row, reason="a model is missing")
  key = _boot_key(metric)
  ba, bb = boot[a], boot[b]
  d = stats.bootstrap_difference(ba["estimate"][key], bb["estimate"][key], ba["replicates"][key],
                                 bb["replicates"][key])
  row.update(diff=d["diff"], n_resamples=d["n_resamples"])
  ci = d["ci95"]
  if not all(math.isfinite(x) for x in ci):
    return dict(row, reason="undefined in every resample")
  if ci[1] - ci[0] <= intervals.ZERO_SPREAD:
    return dict(row, reason="zero variance: every resample gave the same difference")
  return dict(row, ci95=[float(x) for x in ci], p=d["p"], estimable=True)


def primary_family(summary, primary: primary_lib.Primary) -> dict:
  """The primary family with Holm over it alone; report.json's `primary`."""
  rows = [t_row(a, b, primary.level, primary.metric, summary) for a, b in primary.comparisons]
  p = [r["p"] if r["estimable"] else math.nan for r in rows]
  adjusted = stats.holm(p)
  family = int(np.isfinite(p).sum())
  for row, p_holm in zip(rows, adjusted):
    if row["estimable"]:
      row["p_holm"] = float(p_holm)
      row["significant"] = bool(p_holm < ALPHA)
    else:
      row["significant"] = False
    row["family"] = family
    row["sentence"] = sentence(row)
  return {**primary.to_json(), "comparisons": rows, "family": family, "alpha": ALPHA,
          "test": TEST_T}


def secondary(summary, primary: primary_lib.Primary) -> list:
  """Every other comparison: exploratory, no Holm, no verdict."""
  names = [m["name"] for m in summary.models]
  if REFERENCE not in names:
    return []
  taken = {(a, b, primary.level, primary.metric) for a, b in primary.comparisons}
  rows = []
  for b in names:
    if b == REFERENCE:
      continue
    for level, metric in SECONDARY + ((primary.level, primary.metric),):
      if (REFERENCE, b, level, metric) in taken or any(
          (r["b"], r["level"], r["metric"]) == (b, level, metric) for r in rows):
        continue
      rows.append(t_row(REFERENCE, b, level, metric, summary))
    rows.append(bootstrap_row(REFERENCE, b, primary.level, primary.metric, summary))
  for row in rows:
    row["exploratory"] = True
    row["sentence"] = sentence(row)
  return rows


def compare(summary, primary: primary_lib.Primary):
  """(report.json's `primary`, its secondary `comparisons`)."""
  return primary_family(summary, primary), secondary(summary, primary)


# --------------------------------------------------------------------------- wording


def p_text(p):
  """0.71, 0.043, 0.004, '< 0.001'; 'n/a' when undefined."""
  if p is None or not math.isfinite(p):
    return "n/a"
  if p < P_FLOOR:
    return f"< {P_FLOOR}"
  return f"{p:.3f}" if p < ALPHA else f"{p:.2f}"


def p_clause(label, p):
  """'adjusted p = 0.71' or 'adjusted p < 0.001'."""
  text = p_text(p)
  return f"{label} {text}" if text.startswith("<") else f"{label} = {text}"


def _interval(ci):
  if not ci or not all(math.isfinite(x) for x in ci):
    return "[n/a]"
  return f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def metric_label(level, metric):
  return f"{level}-level {METRIC_LABELS.get(metric, metric)}"


def sentence(row):
  """One plain sentence for one comparison, e.g.

  "NASRL vs VGG19: subject-level AUROC +0.01 [-0.05, 0.07], adjusted p = 0.71 (Nadeau-Bengio
  corrected t-test over outer folds, 5 folds): no significant difference at this budget."
  """
  head = f"{row['a']} vs {row['b']}: {metric_label(row['level'], row['metric'])}"
  if not row["estimable"]:
    diff = (f" (difference of the means {row['diff']:+.2f})"
            if isinstance(row.get("diff"), float) and math.isfinite(row["diff"]) else "")
    return f"{head}: not estimable ({row['reason']}){diff}."
  how = TEST_LABELS[row["test"]]
  if row["test"] == TEST_T:
    how = f"{how}, {row['k']} folds"
  if row.get("exploratory"):
    return (f"{head} {row['diff']:+.2f} {_interval(row['ci95'])}, "
            f"{p_clause('unadjusted p', row['p'])} ({how}): exploratory.")
  head = (f"{head} {row['diff']:+.2f} {_interval(row['ci95'])}, "
          f"{p_clause('adjusted p', row['p_holm'])} ({how})")
  if row["significant"]:
    higher = row["a"] if row["diff"] > 0 else row["b"]
    if row["metric"] == "brier":
      higher = row["b"] if row["diff"] > 0 else row["a"]
      return (f"{head}: {higher} has the lower (better) Brier score, significant after Holm "
              f"adjustment over the {row['family']} primary comparisons.")
    return (f"{head}: {higher} is higher, significant after Holm adjustment over the "
            f"{row['family']} primary comparisons.")
  if row["p"] < ALPHA:
    return (f"{head}: not significant after Holm adjustment over the {row['family']} primary "
            f"comparisons ({p_clause('unadjusted p', row['p'])}); no difference can be claimed.")
  return f"{head}: no significant difference at this budget."


def one_class_sentence(entry):
  """'' or a sentence when some test trainings called every test image one class at 0.5."""
  counts = {"fatty": 0, "normal": 0}
  for f in entry.get("folds") or []:
    image = (f.get("metrics") or {}).get("image") or {}
    sens, spec = image.get("sensitivity"), image.get("specificity")
    if sens is None or spec is None or not (math.isfinite(sens) and math.isfinite(spec)):
      continue
    if sens == 1.0 and spec == 0.0:
      counts["fatty"] += 1
    elif sens == 0.0 and spec == 1.0:
      counts["normal"] += 1
  n = len(entry.get("folds") or [])
  parts = [f"{k} in {v} of {n} test trainings" for k, v in counts.items() if v]
  if not parts:
    return ""
  return (f"{entry['name']} called every test image " + " and ".join(parts) +
          " at threshold 0.5: its probabilities are not calibrated at this budget, so Table 1's "
          "sensitivity and specificity say little; read its AUROC and the clinical metrics at "
          "the validation threshold.")


def covers_text(covers):
  return ", ".join(c.replace("_", " ") for c in covers or []) or "n/a"


def learned_sentence(entry, level="subject"):
  """Whether a model learned: AUROC interval above chance and no near-constant training."""
  auroc = (entry if level == "image" else entry["subject"])["auroc"]
  name, mean = entry["name"], auroc.get("mean")
  if mean is None or not math.isfinite(mean):
    return f"{name}: AUROC undefined (no test part held both classes)."
  what = f"{level}-level AUROC {mean:.2f}"
  degenerate = entry.get("degenerate_trainings") or 0
  n = entry.get("trainings") or len(entry.get("folds") or [])
  near = (f"{degenerate} of its {n} test trainings {'is' if degenerate == 1 else 'are'} "
          f"near-constant (see Degenerate trainings)")
  if not auroc.get("estimable"):
    return (f"{name}: {what}, interval not estimable ({auroc.get('reason')}); whether it learned "
            "cannot be said" + (f", and {near}." if degenerate else "."))
  low, high = auroc["ci95"]
  text = f"{what} {_interval((low, high))} (covers {covers_text(auroc.get('ci_covers'))})"
  if low > CHANCE_AUROC and not degenerate:
    return (f"{name} learned: {text}, above chance ({CHANCE_AUROC}), and none of its {n} test "
            "trainings is near-constant.")
  if low > CHANCE_AUROC:
    return f"{name} did not clearly learn: {text} is above chance, but {near}."
  if high < CHANCE_AUROC:
    return (f"{name} is below chance: {text}, under {CHANCE_AUROC} (its scores rank the classes "
            "backwards: check the label coding).")
  return (f"{name} did not clearly learn: {text} includes chance ({CHANCE_AUROC})"
          + (f"; {near}." if degenerate else "."))
