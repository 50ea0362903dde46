"""report.md and table1.csv: the report as a clinical researcher reads it.

This module owns the wording and layout of the results; `markdown_clinical` holds the clinical
sections (validation-threshold metrics, probability quality, degenerate trainings),
`markdown_search` the search sections and `text` the number formatting. It reads only the
JSON-safe report object (what report.json holds: NaN already None), so report.md never says
anything report.json does not. The order follows a reader's questions: what protocol and which
cohort, did the models learn and does the pre-specified primary comparison show a difference
(plain sentences), the data and its flow, Table 1 in the paper's layout, what the intervals
cover, the clinical metrics at the validation threshold, calibration, degenerate trainings, then
the detail a reviewer checks.
"""

import csv
import io

from nasrl_jax.report import markdown_clinical
from nasrl_jax.report import markdown_search
from nasrl_jax.report import statistics
from nasrl_jax.report.text import (METRIC_TITLES, ci_text, code, fmt, finite, flops_text,
                                   int_text, not_estimable_notes, stat_text, table, value_ci)

METRICS = ("accuracy", "sensitivity", "specificity", "auroc")

# The paper's Table 1 (Lin et al.; 10-fold CV, 224x224, RTX 2080Ti, TensorFlow 2.11). Shown beside
# ours for reference only, labelled as the paper's; AUROC and FLOPs were not reported.
PAPER_TABLE1 = {
    "VGG19": {"accuracy": (0.72, 0.06), "sensitivity": (0.69, 0.13),
              "specificity": (0.78, 0.19), "params": 139_577_282, "fps": 38.0},
    "NASRL": {"accuracy": (0.77, 0.07), "sensitivity": (0.76, 0.10),
              "specificity": (0.77, 0.08), "params": 31_164_674, "fps": 41.0},
}
PAPER_SOURCE = "paper (Lin et al., RTX 2080Ti)"

TABLE1_COLUMNS = (
    ("Model", "Accuracy", "Sensitivity", "Specificity", "AUROC", "Parameters", "FLOPs", "FPS")
    + tuple(f"{m}_{s}" for m in METRICS
            for s in ("mean", "std", "ci_low", "ci_high", "std_over_seeds"))
    + ("folds", "seeds", "trainings", "ci_covers"))

PLOT_CAPTIONS = {
    "search_rewards": "Search rewards per step (mean over outer folds and seeds; dots: children)",
    "roc": "ROC per outer fold (thin; each the mean of its test trainings) and their mean (thick)",
    "calibration": "Reliability per outer fold (thin) and their mean (thick); diagonal = perfect",
    "decision_curve": "Net benefit per outer fold (thin) and their mean (thick), with treat-all "
                      "and treat-none",
    "confusion": "Confusion matrices summed over outer folds and test trainings",
    "architectures": "Exported architectures",
    "winners": "Winners of every outer fold and seed",
}


# --------------------------------------------------------------------------- header


def protocol_section(report):
  data = report.get("data") or {}
  k = data.get("outer_folds", "k")
  groups = data.get("outer_groups", "subject")
  split = {"subject": "by subject, label-stratified", "device": "by ultrasound machine, leaving "
           "one machine out", "site": "by site, leaving one site out"}.get(groups, groups)
  search = report.get("search") or {}
  seeds = report.get("seeds") or []
  n_train = report.get("test_seeds", "n")
  rescore = (f"re-scored its top {search.get('rescore_top_k', 'k')} children over "
             f"{search.get('rescore_seeds', 'several')} more seeds")
  if report["protocol"] == "nested":
    lines = [
        f"**Protocol: nested cross-validation** ({k} outer folds, split {split}; "
        f"{len(seeds)} search seed(s): {', '.join(str(s) for s in seeds)}; {n_train} training "
        f"seeds per chosen model).",
        "",
        f"For each outer fold, every search strategy ran on that fold's non-test subjects only, "
        f"with its own random stream (the searches of different folds are independent; reward = "
        f"mean over {data.get('reward_splits', 'r')} inner splits), {rescore}, and chose its "
        f"winner there; the winner was then trained {n_train} times (training seeds independent "
        f"of the search seed) on the fold's train part and tested on its test part. VGG19 went "
        f"through the same outer folds, {n_train} trainings each. **Each outer fold's test "
        f"subjects were never seen by any search, re-scoring or selection; Table 1 estimates what "
        f"running this NAS procedure on a new cohort gives.**"]
  else:
    f = data.get("search_fold", "f")
    lines = [
        f"**Protocol: paper (OPTIMISTIC)** ({k}-fold cross-validation split {split}; one search "
        f"per seed on fold {f}; {len(seeds)} seed(s); {n_train} training seeds per model).",
        "",
        f"Each strategy searched once per seed on fold {f}'s train and validation parts, "
        f"{rescore}, and its winner was then cross-validated on all {k} folds. **The search's "
        f"subjects sit in {k - 1 if isinstance(k, int) else 'k-1'} of the {k} CV test folds**, "
        f"so Table 1 is optimistic for the searched models. VGG19 was fixed in advance and "
        f"carries no such bias. The clean estimate for the searched models is fold {f}'s "
        f"untouched test part, reported separately below with Wilson intervals; use "
        f"`--config.eval.protocol=nested` for a result that can be published as an estimate."]
  boot = report.get("bootstrap") or {}
  score = report.get("fold_score") or "the mean of its test trainings"
  resamples = boot.get("resamples", "n/a")
  lines += ["", f"A fold's value of any metric is {score}. Every \"mean +- std [95 % CI]\": mean "
            f"and sample std over outer folds; {interval_rule(report)} Bootstrap: {resamples} "
            f"resamples, seed "
            f"{boot.get('seed', 'n/a')} (from the run's root key). Table 1 thresholds P(fatty) at "
            "0.5 (the paper's); the clinical metrics use each training's validation threshold."]
  return lines


def interval_rule(report):
  k = (report.get("data") or {}).get("outer_folds")
  if isinstance(k, int) and k >= 5:
    return ("the CI is the Nadeau-Bengio corrected t-interval of the per-fold values "
            "(n_test / (n - n_test) correction): it covers test subjects, training seeds, each "
            "fold's own search and the outer folds.")
  return (f"with {k} outer folds no fold-level interval or test is estimable (it needs 5); the CI "
          "is a bootstrap of test subjects and test trainings within each outer fold: it covers "
          "those, not the variation between searches or folds.")


def cohort_line(report):
  c = report.get("cohort") or {}
  if c.get("source") == "synthetic":
    tuned = c.get("tuned_on_it")
    use = ("**a tuning cohort: recipes and budgets were chosen on it, so these numbers are not an "
           "independent evaluation**" if tuned else
           f"the evaluation cohort (recipes and budgets were chosen on tuning cohort(s) "
           f"{', '.join(str(s) for s in c.get('tuning_cohorts') or []) or 'n/a'} only)")
    return f"Cohort: synthetic simulator seed {c.get('seed')}: {use}."
  return (f"Cohort: your data ({c.get('source', 'n/a')}); whether any choice was tuned on it is "
          "not recorded by the run.")


def summary_section(report):
  lines = ["## In short", ""]
  if report["protocol"] == "paper":
    lines += ["Protocol paper: the numbers below are optimistic for the searched models (see "
              "above); the search fold's untouched test part gives the clean estimate.", ""]
  level = (report.get("primary") or {}).get("level", "subject")
  lines += [f"- {statistics.learned_sentence(m, level)}" for m in report["models"]]
  lines += [f"- {s}" for s in (statistics.one_class_sentence(m) for m in report["models"]) if s]
  p = report.get("primary") or {}
  comps = p.get("comparisons") or []
  pairs = ", ".join(f"{c['a']} vs {c['b']}" for c in comps) or "none"
  lines += ["", f"**Primary endpoint** (pre-specified in `config.eval.primary`): "
            f"{statistics.metric_label(p.get('level', 'subject'), p.get('metric', 'auroc'))}, "
            f"{pairs}; Holm's adjustment over these {len(comps)} comparisons only, significant "
            f"when the adjusted p < {statistics.ALPHA}:", ""]
  lines += [f"- {c['sentence']}" for c in comps]
  lines += ["", "Every other comparison (under Comparisons) is exploratory and supports no claim."]
  if report.get("label_mode") == "grade":
    lines += ["", "Grade mode: Table 1 and the comparisons use the binary view S0 vs S1-S3 "
              "(P(fatty) = 1 - P(S0)); the four-grade metrics follow in their own section."]
  return lines + [""]


# --------------------------------------------------------------------------- data


def data_section(report):
  data, names = report.get("data") or {}, report.get("class_names") or []
  shape = data.get("image_shape")
  lines = ["## Data", "", f"- {cohort_line(report)}",
           f"- Source: {data.get('name') or 'n/a'}; images: {data.get('images', 'n/a')}, "
           f"subjects: {data.get('subjects', 'n/a')}, image shape: "
           f"{'x'.join(str(s) for s in shape) if shape else 'n/a'}"]
  labels = data.get("labels") or {}
  if labels:
    named = {str(i): n for i, n in enumerate(names)}
    lines.append("- Images per label: " +
                 ", ".join(f"{named.get(str(k), k)}: {v}" for k, v in labels.items()))
  devices = data.get("devices") or {}
  if devices:
    lines.append("- Images per machine: " +
                 ", ".join(f"{k or 'unknown'}: {v}" for k, v in devices.items()))
  lines.append(f"- Outer folds: {data.get('outer_folds', 'n/a')} by "
               f"{data.get('outer_groups', 'subject')}; reward splits: "
               f"{data.get('reward_splits', 'n/a')}; inner parts: {data.get('inner_parts', 'n/a')}")
  flow = report.get("flow") or []
  if flow:
    part = lambda r: f"{r['subjects']} / {r['images']} ({r['fatty_images']} fatty)"
    lines += ["", "Flow (subjects / images per part; the search saw train and validation parts "
              "only):", "",
              table(["outer fold", "held out", "train", "validation", "test", "excluded images"],
                    [[r["fold"], r.get("group") or "", part(r["train"]), part(r["val"]),
                      part(r["test"]), r.get("excluded", 0)] for r in flow])]
  return lines + [""]


# --------------------------------------------------------------------------- results


def table1_section(report):
  models = report["models"]
  k = (report.get("data") or {}).get("outer_folds") or models[0].get("n_folds")
  view = " (binary view S0 vs S1-S3)" if report.get("label_mode") == "grade" else ""
  lines = ["## Table 1: cross-validation, image level" + view, "",
           f"mean +- std over {k} outer folds [95 % CI; see \"What the intervals cover\"], "
           f"threshold 0.5. Rows marked *{PAPER_SOURCE}* are the paper's published numbers "
           f"(224x224 images, TensorFlow), for reference only. Parameters, FLOPs and FPS (batch-1 "
           f"inference on this run's device) are the exported model's"
           + (" (one training of one outer fold's winner: the metrics estimate the search "
              "procedure, whose winners may differ between folds; see Winners)."
              if report["protocol"] == "nested" else ".")
           + (" **Protocol paper: optimistic for the searched models.**"
              if report["protocol"] == "paper" else ""), ""]
  rows, notes = [], []
  for m in models:
    rows.append([f"**{m['name']}**", "this run"] + [stat_text(m[n]) for n in METRICS] +
                [int_text(m.get("params")), flops_text(m.get("flops")), fmt(m.get("fps"), 1)])
    notes += [(f"{m['name']} {METRIC_TITLES[n]}", m[n]) for n in METRICS]
    paper = PAPER_TABLE1.get(m["name"])
    if paper:
      rows.append([f"*{m['name']}*", f"*{PAPER_SOURCE}*"] +
                  [f"*{paper[n][0]:.2f} +- {paper[n][1]:.2f}*" if n in paper else "n/a"
                   for n in METRICS] + [f"*{paper['params']:,}*", "n/a", f"*{paper['fps']:.0f}*"])
  lines.append(table(["Model", "Source", "Accuracy", "Sensitivity", "Specificity", "AUROC",
                      "Parameters", "FLOPs", "FPS"], rows))
  lines += [""] + not_estimable_notes(notes)
  lines += ["", "Machine-readable: [table1.csv](table1.csv), [report.json](report.json).", ""]
  return lines


def intervals_section(report):
  """Per model and metric: the full interval (and what it covers) beside the subjects-only one."""
  rows = []
  for m in report["models"]:
    for level, block in (("image", m), ("subject", m["subject"])):
      for n in ("accuracy", "auroc"):
        s = block[n]
        full = ci_text(s.get("ci95")) if s.get("estimable") else f"not estimable ({s['reason']})"
        rows.append([m["name"], f"{level} {METRIC_TITLES[n]}", fmt(s.get("mean")), full,
                     statistics.covers_text(s.get("ci_covers")),
                     ci_text(s.get("ci95_subjects_only")), fmt(s.get("sd_training_seeds"))])
  return ["### What the intervals cover", "", interval_rule(report).capitalize() + " The "
          "subjects-only interval holds every training's predictions fixed and resamples test "
          "subjects alone: the gap between the two is what training noise (and, with >= 5 folds, "
          "the searches) add. sd over training seeds: the mean over folds of the sd between a "
          "fold's test trainings.", "",
          table(["Model", "metric", "mean", "95 % CI", "covers", "subjects-only 95 % CI",
                 "sd over training seeds"], rows), ""]


def subject_section(models):
  rows = [[m["name"]] + [stat_text(m["subject"][n]) for n in METRICS] for m in models]
  return ["### Table 1 per subject", "",
          "The same test parts scored per subject: a subject's P(fatty) is the mean over its "
          "images, its label the majority of its images' labels; subjects are what the bootstrap "
          "resamples.", "", table(["Model"] + [METRIC_TITLES[n] for n in METRICS], rows), ""]


def per_fold_section(models):
  folds = sorted({row["fold"] for m in models for row in m["accuracy"]["per_fold"]})
  rows = []
  for m in models:
    for level, block in (("image", m), ("subject", m["subject"])):
      name = "auroc"
      values = {row["fold"]: row["value"] for row in block[name]["per_fold"]}
      rows.append([m["name"], f"{level} AUROC"] + [fmt(values.get(f)) for f in folds])
    values = {row["fold"]: row["value"] for row in m["accuracy"]["per_fold"]}
    rows.append([m["name"], "image accuracy"] + [fmt(values.get(f)) for f in folds])
  return ["### Per outer fold (mean over its test trainings)", "",
          table(["Model", "metric"] + [f"fold {f}" for f in folds], rows), ""]


def per_seed_section(report):
  models = [m for m in report["models"] if len(m.get("seeds") or []) > 1]
  if not models:
    return []
  seeds = sorted({row["seed"] for m in models for row in m["auroc"]["per_seed"]})
  rows = [[m["name"], METRIC_TITLES[n]] + [fmt({r["seed"]: r["value"] for r in m[n]["per_seed"]}
                                                .get(s)) for s in seeds] +
          [fmt(m[n].get("std_over_seeds"))] for m in models for n in METRICS]
  return ["### Mean over folds per search seed, and sd over search seeds", "",
          table(["Model", "metric"] + [f"seed {s}" for s in seeds] + ["sd over seeds"], rows), ""]


def group_section(report):
  models = [m for m in report["models"] if m.get("per_group")]
  if not models:
    return []
  kind = {"device": "machine", "site": "site"}.get(report["data"].get("outer_groups"), "group")
  groups = [(row["fold"], row["group"], row["images"]) for row in models[0]["per_group"]]
  header = [f"held-out {kind}", "test images"]
  for m in models:
    header += [f"{m['name']} accuracy", f"{m['name']} AUROC"]
  rows = []
  for fold, group, images in groups:
    row = [group, images]
    for m in models:
      r = {x["fold"]: x for x in m["per_group"]}.get(fold, {})
      row += [value_ci(r.get("accuracy")), value_ci(r.get("auroc"))]
    rows.append(row)
  return [f"## Per held-out {kind}", "",
          f"Each outer fold held out one {kind}: searches and training never saw its images. Value "
          f"= mean over test trainings [95 % CI, bootstrap of subjects and trainings within that "
          f"{kind}].", "", table(header, rows), ""]


def grade_section(report):
  models = [m for m in report["models"] if m.get("multiclass")]
  if not models:
    return []
  names = report.get("class_names") or []
  rows = [[m["name"], stat_text(m["multiclass"]["accuracy"])] +
          [stat_text(m["multiclass"]["sensitivity"].get(c)) for c in names] +
          [stat_text(m["multiclass"]["auroc_macro"])] for m in models]
  lines = ["## Grade mode: four grades", "",
           "Predicted grade = the most probable class. Sensitivity per grade = recall of that "
           "grade; macro AUROC = mean of the one-vs-rest AUROCs over the grades present in a test "
           "part.", "", table(["Model", "Accuracy"] + [f"Sensitivity {c}" for c in names] +
                              ["Macro AUROC"], rows), ""]
  for m in models:
    conf = m["multiclass"]["confusion"]
    lines += [f"{m['name']}, confusion summed over folds and trainings (rows true, columns "
              "predicted):", "", table(["true \\ predicted"] + names,
                                       [[names[i]] + list(r) for i, r in enumerate(conf)]), ""]
  return lines


def _verdict(c):
  """A primary comparison's verdict; one that could not be tested gets none, not "no"."""
  if not c.get("estimable"):
    return "n/a (not tested)"
  return "yes" if c.get("significant") else "no"


def _comparison_rows(comps, holm):
  rows = []
  for c in comps:
    p = statistics.p_text(c.get("p")) if c.get("estimable") else "not estimable"
    rows.append([f"{c['a']} vs {c['b']}", statistics.metric_label(c["level"], c["metric"]),
                 statistics.TEST_LABELS.get(c["test"], c["test"]),
                 f"{c['diff']:+.3f}" if finite(c.get("diff")) else "n/a",
                 ci_text(c.get("ci95"), 3) if c.get("estimable") else c.get("reason", ""), p] +
                ([statistics.p_text(c.get("p_holm")), _verdict(c)]
                 if holm else []))
  return rows


def comparisons_section(report):
  p = report.get("primary") or {}
  lines = ["## Comparisons", "", "### Primary (pre-specified)", "",
           "Per-outer-fold differences of "
           f"{statistics.metric_label(p.get('level'), p.get('metric'))}"
           f" by the Nadeau-Bengio corrected resampled t-test (df = k - 1; variance inflated by "
           f"n_test / (n - n_test) because the folds' training sets overlap); Holm over the "
           f"{p.get('family', 0)} estimable primary comparisons.", "",
           table(["comparison", "metric", "test", "diff A-B (mean over folds)",
                  "95 % CI / why not estimable", "p", "p (Holm)",
                  f"significant (adjusted p < {statistics.ALPHA})"],
                 _comparison_rows(p.get("comparisons") or [], True)), ""]
  comps = report.get("comparisons") or []
  if comps:
    lines += ["### Secondary (exploratory)", "",
              "NASRL against every other model; unadjusted p-values, no verdicts. The paired "
              "fold-wise bootstrap resamples test subjects (the same draws for both models) and "
              "each model's test trainings within every outer fold: it is conditional on these "
              "folds' searches and says nothing about a new search.", "",
              table(["comparison", "metric", "test", "diff A-B", "95 % CI / why not estimable",
                     "p (unadjusted)"], _comparison_rows(comps, False)), ""]
  return lines


def search_fold_section(report):
  if report["protocol"] != "paper":
    return []
  f = (report.get("data") or {}).get("search_fold", "f")
  rows = []
  for m in report["models"]:
    for r in m.get("search_fold_test") or []:
      cells = [m["name"], "n/a" if r.get("seed") is None else r["seed"], r.get("training_seed"),
               f"{r['images']} ({r['subjects']} subjects)"]
      for name in ("accuracy", "sensitivity", "specificity"):
        v = r[name]
        cells.append(f"{fmt(v['value'])} ({v['count']}/{v['n']}) {ci_text(v['ci95'])}")
      cells.append(value_ci(r["auroc"]))
      rows.append(cells)
  return [f"## Held-out result on the search fold (fold {f})", "",
          f"Fold {f}'s test part was never seen by any search: the one clean estimate the paper "
          f"protocol gives for the searched models. Per test training; proportions with Wilson "
          f"95 % intervals (images treated as independent), AUROC with a subject-bootstrap "
          f"interval.", "",
          table(["Model", "search seed", "training seed", "test images", "Accuracy",
                 "Sensitivity", "Specificity", "AUROC"], rows), ""]


# --------------------------------------------------------------------------- the document


def build(report, plot_names=()):
  """report.md text from the JSON-safe report object (plot_names: the PNGs under plots/)."""
  models = report["models"]
  versions = report.get("versions") or {}
  out = ["# NASRL early fatty-liver detection: report", ""]
  out += protocol_section(report) + [""]
  out += [f"{cohort_line(report)} Produced by `{report.get('command') or 'n/a'}` (config variant "
          f"`{report.get('config_variant') or 'default'}`, {report.get('date') or 'n/a'}) on "
          f"{report.get('device') or 'n/a'}, code {code(versions.get('git_commit'))}.", ""]
  out += summary_section(report) + data_section(report)
  out += table1_section(report) + intervals_section(report)
  out += markdown_clinical.clinical_section(report) + markdown_clinical.degenerate_section(report)
  out += subject_section(models) + per_fold_section(models) + per_seed_section(report)
  out += group_section(report) + grade_section(report)
  out += comparisons_section(report) + search_fold_section(report)
  out += markdown_search.winners_section(report) + markdown_search.rescore_section(report)
  out += markdown_search.architectures_section(models) + markdown_search.search_section(report)
  out += markdown_search.checklist_section(report) + markdown_search.final_search_section(report)
  if plot_names:
    out += ["## Plots", ""]
    for name in plot_names:
      caption = PLOT_CAPTIONS.get(name, name)
      out += [f"### {caption}", "", f"![{caption}](plots/{name}.png)", ""]
  return "\n".join(out).rstrip() + "\n"


def table1_csv(report):
  """table1.csv text: one row per model; display strings, then numeric columns.

  Columns (TABLE1_COLUMNS): Model, Accuracy, Sensitivity, Specificity, AUROC as
  "mean +- std [low, high]" (2 decimals), Parameters, FLOPs, FPS, then per metric
  <metric>_mean, _std, _ci_low, _ci_high (empty when not estimable), _std_over_seeds at full
  precision, then folds, search seeds, test trainings and what the CIs cover.
  """
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator="\n")
  writer.writerow(TABLE1_COLUMNS)
  num = lambda x: repr(float(x)) if finite(x) else ""
  for m in report["models"]:
    row = [m["name"]] + [stat_text(m[n]) for n in METRICS]
    row += [int(m["params"]) if finite(m.get("params")) else "",
            num(m.get("flops")), round(float(m["fps"]), 2) if finite(m.get("fps")) else ""]
    for n in METRICS:
      ci = m[n].get("ci95") or [None, None]
      row += [num(m[n].get("mean")), num(m[n].get("std")), num(ci[0]), num(ci[1]),
              num(m[n].get("std_over_seeds"))]
    row += [m.get("n_folds"), len(m.get("seeds") or []), m.get("trainings"),
            " ".join(m["auroc"].get("ci_covers") or [])]
    writer.writerow(row)
  return buf.getvalue()
