"""The comparisons table and the plain sentences that state its results.

This module owns the paired comparisons of NASRL with every other model present (VGG19,
RandomSearch, Evolution, ...): accuracy and AUROC by the Nadeau-Bengio corrected resampled t-test
on per-outer-fold differences (a fold's value is the mean over its seeds; n_test / n_train from
the folds' sizes), AUROC also by the paired subject bootstrap of pooled out-of-fold predictions,
and Holm's adjustment over every comparison in the table. It also words the results: one sentence
per comparison, and one "did the model learn" sentence per model (AUROC against chance). A
difference is called significant only when its Holm-adjusted p is below ALPHA, and is never called
a win otherwise.
"""

import math

import numpy as np

from nasrl_jax import metrics

# The model every other model is compared with.
REFERENCE = "NASRL"
# Per-fold metrics tested with the corrected t-test (the binary view in grade mode).
T_TEST_METRICS = ("accuracy", "auroc")
# Family-wise significance level for the Holm-adjusted p-values.
ALPHA = 0.05
# p-values below this are printed as "< 0.001".
P_FLOOR = 0.001
# The AUROC of a classifier that learned nothing.
CHANCE_AUROC = 0.5
TEST_T = "nadeau_bengio_corrected_t"
TEST_BOOTSTRAP = "paired_subject_bootstrap"
TEST_LABELS = {TEST_T: "Nadeau-Bengio corrected t-test",
               TEST_BOOTSTRAP: "paired subject bootstrap of pooled out-of-fold predictions"}
METRIC_LABELS = {"accuracy": "accuracy", "auroc": "AUROC", "sensitivity": "sensitivity",
                 "specificity": "specificity"}


def _per_fold(entry, metric):
  return {row["fold"]: row["value"] for row in entry[metric]["per_fold"]}


def _fold_sizes(data_a, data_b, folds):
  """Mean n_train and n_test over the compared folds of both models."""
  sizes = [data_a.sizes[f] for f in folds] + [data_b.sizes[f] for f in folds]
  return float(np.mean([s[0] for s in sizes])), float(np.mean([s[1] for s in sizes]))


def t_test_row(a, b, metric, summary):
  """One corrected t-test comparison: per-fold differences A - B over the folds both have."""
  entries = {m["name"]: m for m in summary.models}
  va, vb = _per_fold(entries[a], metric), _per_fold(entries[b], metric)
  folds = sorted(f for f in set(va) & set(vb) if math.isfinite(va[f]) and math.isfinite(vb[f]))
  row = {"a": a, "b": b, "metric": metric, "test": TEST_T, "level": "image",
         "folds": folds, "differences": [va[f] - vb[f] for f in folds]}
  if not folds:
    row.update(diff=math.nan, ci95=[math.nan, math.nan], p=math.nan, k=0,
               note="no fold with a value for both models")
    return row
  n_train, n_test = _fold_sizes(summary.data[a], summary.data[b], folds)
  test = metrics.corrected_ttest(row["differences"], n_train, n_test)
  row.update({k: test[k] for k in ("diff", "ci95", "p", "t", "df", "k", "se", "n_train", "n_test",
                                   "note")})
  return row


def bootstrap_row(a, b, summary):
  """The paired subject bootstrap of the pooled AUROC difference A - B."""
  pa, pb = summary.pooled[a], summary.pooled[b]
  diff = metrics.bootstrap_difference(pa["estimate"]["auroc"], pb["estimate"]["auroc"],
                                      pa["replicates"]["auroc"], pb["replicates"]["auroc"])
  return {"a": a, "b": b, "metric": "auroc", "test": TEST_BOOTSTRAP, "level": "image, pooled",
          "estimate_a": pa["estimate"]["auroc"], "estimate_b": pb["estimate"]["auroc"], **diff}


def compare(summary):
  """The comparisons table: REFERENCE vs every other model, Holm-adjusted over the whole table.

  Args:
    summary: the aggregate.Summary.

  Returns:
    list of {"a", "b", "metric", "diff", "ci95", "p", "p_holm", "test", "significant",
    "sentence", ...}; empty when REFERENCE is absent or alone.
  """
  names = [m["name"] for m in summary.models]
  if REFERENCE not in names:
    return []
  rows = []
  for b in names:
    if b == REFERENCE:
      continue
    rows += [t_test_row(REFERENCE, b, metric, summary) for metric in T_TEST_METRICS]
    rows.append(bootstrap_row(REFERENCE, b, summary))
  adjusted = metrics.holm([r["p"] for r in rows])
  finite = int(np.isfinite([r["p"] for r in rows]).sum())
  for row, p_holm in zip(rows, adjusted):
    row["p_holm"] = float(p_holm)
    row["family"] = finite
    row["significant"] = bool(math.isfinite(p_holm) and p_holm < ALPHA)
    row["sentence"] = sentence(row)
  return rows


# --------------------------------------------------------------------------- wording


def p_text(p):
  """0.71, 0.043, 0.004, '< 0.001'; 'n/a' when undefined.

  Below P_FLOOR a p-value is only "< P_FLOOR" (a 2,000-resample bootstrap cannot resolve less, and
  nobody should read more into a t tail); below ALPHA it keeps three decimals so that values near
  the threshold are not rounded across it.
  """
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
  low, high = ci
  if not (math.isfinite(low) and math.isfinite(high)):
    return "[n/a]"
  return f"[{low:.2f}, {high:.2f}]"


def sentence(row):
  """One plain sentence for one comparison, e.g.

  "NASRL vs RandomSearch: AUROC +0.01 [-0.05, 0.07], adjusted p = 0.71 (paired subject bootstrap
  of pooled out-of-fold predictions): no significant difference at this budget."
  """
  metric = METRIC_LABELS.get(row["metric"], row["metric"])
  head = f"{row['a']} vs {row['b']}: {metric}"
  if not math.isfinite(row.get("diff", math.nan)) or not math.isfinite(row.get("p", math.nan)):
    return f"{head}: no test was possible ({row.get('note') or 'no usable folds'})."
  how = TEST_LABELS[row["test"]]
  if row["test"] == TEST_T:
    how = f"{how} over {row['k']} outer folds"
  head = (f"{head} {row['diff']:+.2f} {_interval(row['ci95'])}, "
          f"{p_clause('adjusted p', row['p_holm'])} ({how})")
  if row["significant"]:
    higher = row["a"] if row["diff"] > 0 else row["b"]
    verdict = (f"{higher} is higher, significant after Holm adjustment over {row['family']} "
               "comparisons")
  elif row["p"] < ALPHA:
    verdict = (f"not significant after Holm adjustment over {row['family']} comparisons "
               f"({p_clause('unadjusted p', row['p'])}); no difference can be claimed at this "
               "budget")
  else:
    verdict = "no significant difference at this budget"
  return f"{head}: {verdict}."


def one_class_sentence(entry):
  """'' or a sentence when some test trainings called every test image one class at 0.5.

  Short trainings can rank the classes (AUROC above chance) while every P(fatty) sits on one side
  of 0.5; Table 1's sensitivity 1 / specificity 0 then says nothing about the ranking.
  """
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
          "sensitivity and specificity say little; its AUROC and the validation-threshold table "
          "are the figures to read.")


def learned_sentence(entry):
  """Whether a model learned: its mean AUROC over outer folds against chance, with the CI."""
  auroc = entry["auroc"]
  mean, (low, high) = auroc["mean"], auroc["ci95"]
  name = entry["name"]
  if not all(math.isfinite(x) for x in (mean, low, high)):
    return f"{name}: AUROC undefined (no test part held both classes)."
  text = f"AUROC {mean:.2f} {_interval((low, high))}"
  if low > CHANCE_AUROC:
    return f"{name} learned: {text}, above chance ({CHANCE_AUROC})."
  if high < CHANCE_AUROC:
    return (f"{name} is below chance: {text}, under {CHANCE_AUROC} (its scores rank the classes "
            "backwards: check the label coding).")
  return f"{name} did not clearly learn: {text} includes chance ({CHANCE_AUROC})."
