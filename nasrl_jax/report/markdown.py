"""report.md and table1.csv: the report as a clinical researcher reads it.

This module owns the wording and layout. It reads only the JSON-safe report object (what
report.json holds: NaN already None), so report.md never says anything report.json does not. The
order follows a reader's questions: what protocol (first, in plain words), did the models learn
and do they differ (plain sentences), Table 1 in the paper's layout with every number as
"mean +- std [95 % CI]" and the paper's published rows beside it, then the detail a reviewer
checks: per subject, the validation operating point, per fold, per seed, per machine, grade mode,
the comparisons table, the search fold (paper protocol), winners and their agreement, re-scoring,
architectures, search cost, compute and the NAS checklist.
"""

import csv
import io
import math
import numbers

from nasrl_jax.report import statistics

METRICS = ("accuracy", "sensitivity", "specificity", "auroc")
METRIC_TITLES = {"accuracy": "Accuracy", "sensitivity": "Sensitivity",
                 "specificity": "Specificity", "auroc": "AUROC"}
# Decimals of every metric shown (the paper's Table 1 uses 2).
DIGITS = 2

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
    + ("folds", "seeds"))

PLOT_CAPTIONS = {
    "search_rewards": "Search rewards per step (mean over outer folds and seeds; dots: children)",
    "roc": "ROC of pooled out-of-fold predictions (legend: pooled AUROC with its subject-bootstrap "
           "95 % CI)",
    "confusion": "Confusion matrices summed over outer folds and seeds",
    "architectures": "Exported architectures",
    "winners": "Winners of every outer fold and seed",
}
STRATEGY_LABELS = {"reinforce": "REINFORCE controller", "random": "random search",
                   "evolution": "regularized evolution"}


# --------------------------------------------------------------------------- formatting


def _finite(x):
  return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def fmt(x, digits=DIGITS):
  return f"{x:.{digits}f}" if _finite(x) else "n/a"


def ci_text(ci, digits=DIGITS):
  if not ci or not all(_finite(v) for v in ci):
    return "[n/a]"
  return f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def stat_text(stat, digits=DIGITS):
  """{"mean", "std", "ci95", ...} -> "0.77 +- 0.07 [0.71, 0.82]" (+ the folds used, if not all)."""
  if not stat or not _finite(stat.get("mean")):
    return "n/a"
  text = f"{stat['mean']:.{digits}f} +- {fmt(stat.get('std'), digits)} {ci_text(stat.get('ci95'))}"
  if stat.get("n_nan"):
    text += f" ({stat['n_folds']} of {stat['n_folds'] + stat['n_nan']} folds)"
  return text


def value_ci(v):
  """{"value", "ci95"} -> "0.81 [0.75, 0.86]"."""
  if not v or not _finite(v.get("value")):
    return "n/a"
  return f"{v['value']:.{DIGITS}f} {ci_text(v.get('ci95'))}"


def int_text(x):
  return f"{int(x):,}" if _finite(x) else "n/a"


def flops_text(x):
  if not _finite(x):
    return "n/a"
  for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
    if abs(x) >= scale:
      return f"{x / scale:.2f} {unit}"
  return f"{x:.0f}"


def seconds_text(x):
  return f"{x:,.0f}" if _finite(x) else "n/a"


def share_text(x):
  return f"{100 * x:.0f} %" if _finite(x) else "n/a"


def table(header, rows):
  lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
  for row in rows:
    lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |")
  return "\n".join(lines)


def details(summary, body):
  """A collapsed block (GitHub renders <details>): long tables a reviewer opens on demand."""
  return ["<details><summary>" + summary + "</summary>", "", *body, "", "</details>", ""]


def _code(text):
  return f"`{text}`" if text else "n/a"


# --------------------------------------------------------------------------- sections


def protocol_section(report):
  data = report.get("data") or {}
  k = data.get("outer_folds", "k")
  groups = data.get("outer_groups", "subject")
  split = {"subject": "by subject, label-stratified", "device": "by ultrasound machine, leaving "
           "one machine out", "site": "by site, leaving one site out"}.get(groups, groups)
  search = report.get("search") or {}
  seeds = report.get("seeds") or []
  rescore = (f"re-scored its top {search.get('rescore_top_k', 'k')} children over "
             f"{search.get('rescore_seeds', 'several')} more seeds")
  if report["protocol"] == "nested":
    lines = [
        f"**Protocol: nested cross-validation** ({k} outer folds, split {split}; "
        f"{len(seeds)} search seed(s): {', '.join(str(s) for s in seeds)}).",
        "",
        f"For each outer fold, every search strategy ran on that fold's non-test subjects only "
        f"(reward = mean over {data.get('reward_splits', 'r')} inner splits), {rescore}, and chose "
        f"its winner there; the winner was then trained on the fold's train part and tested once "
        f"on its test part. VGG19 went through the same outer folds. **Each outer fold's test "
        f"subjects were never seen by any search, re-scoring or selection; Table 1 estimates what "
        f"running this NAS procedure on a new cohort gives.**"]
  else:
    f = data.get("search_fold", "f")
    lines = [
        f"**Protocol: paper (OPTIMISTIC)** ({k}-fold cross-validation split {split}; one search "
        f"per seed on fold {f}; {len(seeds)} seed(s)).",
        "",
        f"Each strategy searched once per seed on fold {f}'s train and validation parts, "
        f"{rescore}, and its winner was then cross-validated on all {k} folds. **The search's "
        f"subjects sit in {_minus_one(k)} of the {k} CV test folds** (every subject outside fold "
        f"{f}'s test part was seen by the search), so Table 1 is optimistic for the searched "
        f"models: their architecture was chosen on data that contains those test parts. VGG19 "
        f"was fixed in "
        f"advance and carries no such bias. The clean estimate for the searched models is fold "
        f"{f}'s untouched test part, reported separately below with Wilson intervals; use "
        f"`--config.eval.protocol=nested` for a result that can be published as an estimate."]
  boot = report.get("bootstrap") or {}
  lines += ["", f"Every \"mean +- std [95 % CI]\": mean and sample std over outer folds (a fold's "
            f"value is the mean over its seeds); the CI is a subject bootstrap "
            f"({boot.get('resamples', 'n/a')} resamples, seed {boot.get('seed', 'n/a')}): "
            f"subjects are resampled with replacement within each outer fold's test part, every "
            f"image of a drawn subject coming along. Table 1 thresholds P(fatty) at 0.5."]
  return lines


def _minus_one(k):
  return k - 1 if isinstance(k, int) else "k-1"


def summary_section(report):
  lines = ["## In short", ""]
  if report["protocol"] == "paper":
    lines += ["Protocol paper: the numbers below are optimistic for the searched models (see "
              "above); the search fold's untouched test part gives the clean estimate.", ""]
  lines += [f"- {statistics.learned_sentence(m)}" for m in report["models"]]
  one_class = [statistics.one_class_sentence(m) for m in report["models"]]
  lines += [f"- {s}" for s in one_class if s]
  comps = report.get("comparisons") or []
  if comps:
    lines += ["", "Comparisons (Holm-adjusted over the whole table; a difference is called "
              f"significant only when its adjusted p < {statistics.ALPHA}):", ""]
    lines += [f"- {c['sentence']}" for c in comps]
  else:
    lines += ["", "No comparison: NASRL and at least one other model are needed."]
  if report.get("label_mode") == "grade":
    lines += ["", "Grade mode: Table 1 and the comparisons use the binary view S0 vs S1-S3 "
              "(P(fatty) = 1 - P(S0)); the four-grade metrics follow in their own section."]
  return lines + [""]


def data_section(data, class_names):
  shape = data.get("image_shape")
  lines = [f"- Source: {data.get('name') or 'n/a'}; images: {data.get('images', 'n/a')}, "
           f"subjects: {data.get('subjects', 'n/a')}, image shape: "
           f"{'x'.join(str(s) for s in shape) if shape else 'n/a'}"]
  labels = data.get("labels") or {}
  if labels:
    names = {str(i): n for i, n in enumerate(class_names)}
    lines.append("- Images per label: " +
                 ", ".join(f"{names.get(str(k), k)}: {v}" for k, v in labels.items()))
  devices = data.get("devices") or {}
  if devices:
    lines.append("- Images per machine: " +
                 ", ".join(f"{k or 'unknown'}: {v}" for k, v in devices.items()))
  lines.append(f"- Outer folds: {data.get('outer_folds', 'n/a')} by "
               f"{data.get('outer_groups', 'subject')}; reward splits: "
               f"{data.get('reward_splits', 'n/a')}; inner parts: {data.get('inner_parts', 'n/a')}")
  return lines


def table1_section(report):
  models = report["models"]
  k = (report.get("data") or {}).get("outer_folds") or models[0].get("n_folds")
  view = " (binary view S0 vs S1-S3)" if report.get("label_mode") == "grade" else ""
  lines = ["## Table 1: cross-validation, image level" + view, "",
           f"mean +- std over {k} outer folds [95 % CI, subject bootstrap]. Rows marked "
           f"*{PAPER_SOURCE}* are the paper's published numbers (224x224 images, TensorFlow), for "
           f"reference only, not results of this run. Parameters, FLOPs and FPS (batch-1 inference "
           f"on this run's device) are the exported model's"
           + (" (one of the outer folds' winners: the metrics estimate the search procedure, whose "
              "winners may differ between folds; see Winners)."
              if report["protocol"] == "nested" else ".")
           + (" **Protocol paper: optimistic for the searched models (see above).**"
              if report["protocol"] == "paper" else ""), ""]
  rows = []
  for m in models:
    rows.append([f"**{m['name']}**", "this run"] + [stat_text(m[n]) for n in METRICS] +
                [int_text(m.get("params")), flops_text(m.get("flops")), fmt(m.get("fps"), 1)])
    paper = PAPER_TABLE1.get(m["name"])
    if paper:
      rows.append([f"*{m['name']}*", f"*{PAPER_SOURCE}*"] +
                  [f"*{paper[n][0]:.2f} +- {paper[n][1]:.2f}*" if n in paper else "n/a"
                   for n in METRICS] + [f"*{paper['params']:,}*", "n/a", f"*{paper['fps']:.0f}*"])
  lines.append(table(["Model", "Source", "Accuracy", "Sensitivity", "Specificity", "AUROC",
                      "Parameters", "FLOPs", "FPS"], rows))
  extended = [f"{m['name']} {n}" for m in models for n in METRICS if m[n].get("ci_extended")]
  if extended:
    lines += ["", "The percentile interval of " + ", ".join(extended) + " did not contain the mean "
              "(a skewed bootstrap distribution); it was widened to reach it."]
  lines += ["", "Machine-readable: [table1.csv](table1.csv), [report.json](report.json).", ""]
  return lines


def subject_section(models):
  rows = [[m["name"]] + [stat_text(m["subject"][n]) for n in METRICS] for m in models]
  return ["### Per subject", "",
          "The same test parts scored per subject: a subject's P(fatty) is the mean over its "
          "images, its label the majority of its images' labels; subjects are what the bootstrap "
          "resamples.",
          "", table(["Model"] + [METRIC_TITLES[n] for n in METRICS], rows), ""]


def threshold_section(models):
  rows = []
  for m in models:
    thresholds = [f["metrics"]["at_val_threshold"]["threshold"] for f in m["folds"]]
    mean_t = sum(thresholds) / len(thresholds)
    rows.append([m["name"], fmt(mean_t)] +
                [stat_text(m["at_val_threshold"][n]) for n in ("accuracy", "sensitivity",
                                                               "specificity")])
  return ["### At the validation threshold", "",
          "The operating point an exported model uses: each fold's threshold on P(fatty) was "
          "chosen on that fold's validation part (Youden's J), never on its test part.", "",
          table(["Model", "mean threshold", "Accuracy", "Sensitivity", "Specificity"], rows), ""]


def per_fold_section(models):
  folds = sorted({row["fold"] for m in models for row in m["accuracy"]["per_fold"]})
  rows = []
  for m in models:
    for name in ("accuracy", "auroc"):
      values = {row["fold"]: row["value"] for row in m[name]["per_fold"]}
      rows.append([m["name"], METRIC_TITLES[name]] + [fmt(values.get(f)) for f in folds])
  return ["### Per outer fold (mean over seeds)", "",
          table(["Model", "metric"] + [f"fold {f}" for f in folds], rows), ""]


def per_seed_section(models):
  seeds = sorted({row["seed"] for m in models for row in m["accuracy"]["per_seed"]})
  rows = []
  for m in models:
    for name in METRICS:
      values = {row["seed"]: row["value"] for row in m[name]["per_seed"]}
      rows.append([m["name"], METRIC_TITLES[name]] + [fmt(values.get(s)) for s in seeds] +
                  [fmt(m[name].get("std_over_seeds"))])
  return ["### Mean over folds per search seed, and sd over seeds", "",
          "How much the result depends on the search seed (every strategy ran once per seed; VGG19 "
          "trained once per seed). With one seed the sd is n/a.", "",
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
      by_fold = {r["fold"]: r for r in m["per_group"]}
      r = by_fold.get(fold, {})
      row += [value_ci(r.get("accuracy")), value_ci(r.get("auroc"))]
    rows.append(row)
  return [f"## Per held-out {kind}", "",
          f"Each outer fold held out one {kind}: searches and training never saw its images. Value "
          f"= mean over seeds [95 % CI, subject bootstrap within that {kind}].", "",
          table(header, rows), ""]


def grade_section(report):
  models = [m for m in report["models"] if m.get("multiclass")]
  if not models:
    return []
  names = report.get("class_names") or []
  rows = []
  for m in models:
    mc = m["multiclass"]
    rows.append([m["name"], stat_text(mc["accuracy"])] +
                [stat_text(mc["sensitivity"].get(c)) for c in names] +
                [stat_text(mc["auroc_macro"])])
  lines = ["## Grade mode: four grades", "",
           "Predicted grade = the most probable class. Sensitivity per grade = recall of that "
           "grade; macro AUROC = mean of the one-vs-rest AUROCs over the grades present in a test "
           "part.",
           "", table(["Model", "Accuracy"] + [f"Sensitivity {c}" for c in names] +
                     ["Macro AUROC"], rows), ""]
  for m in models:
    conf = m["multiclass"]["confusion"]
    lines += [f"{m['name']}, confusion summed over folds and seeds (rows true, columns predicted):",
              "", table(["true \\ predicted"] + names,
                        [[names[i]] + list(r) for i, r in enumerate(conf)]), ""]
  return lines


def comparisons_section(report):
  comps = report.get("comparisons") or []
  lines = ["## Comparisons", ""]
  if not comps:
    return lines + ["No comparison: NASRL and at least one other model are needed.", ""]
  lines += [f"NASRL against every other model. Accuracy and AUROC per outer fold by the "
            f"Nadeau-Bengio corrected resampled t-test (variance inflated by n_test / n_train "
            f"because the folds' training sets overlap; df = k - 1), AUROC also by the paired "
            f"subject bootstrap of pooled out-of-fold predictions (same resampled subjects for "
            f"both models; two-sided p = 2 min(P(diff <= 0), P(diff >= 0)), floored at 1/(B+1)). "
            f"Holm's adjustment runs over all {len(comps)} rows.", ""]
  rows = [[f"{c['a']} vs {c['b']}", METRIC_TITLES.get(c["metric"], c["metric"]),
           statistics.TEST_LABELS.get(c["test"], c["test"]),
           f"{c['diff']:+.3f}" if _finite(c.get("diff")) else "n/a", ci_text(c.get("ci95"), 3),
           statistics.p_text(c.get("p")), statistics.p_text(c.get("p_holm")),
           "yes" if c.get("significant") else "no"] for c in comps]
  lines += [table(["comparison", "metric", "test", "diff A-B", "95 % CI", "p", "p (Holm)",
                   f"significant (adjusted p < {statistics.ALPHA})"], rows), ""]
  return lines


def search_fold_section(report):
  if report["protocol"] != "paper":
    return []
  f = (report.get("data") or {}).get("search_fold", "f")
  rows = []
  for m in report["models"]:
    for r in m.get("search_fold_test") or []:
      cells = [m["name"], r["seed"], f"{r['images']} ({r['subjects']} subjects)"]
      for name in ("accuracy", "sensitivity", "specificity"):
        v = r[name]
        cells.append(f"{fmt(v['value'])} ({v['count']}/{v['n']}) {ci_text(v['ci95'])}")
      cells.append(value_ci(r["auroc"]))
      rows.append(cells)
  return [f"## Held-out result on the search fold (fold {f})", "",
          f"Fold {f}'s test part was never seen by any search: the one clean estimate the paper "
          f"protocol gives for the searched models. Proportions with Wilson 95 % intervals (images "
          f"treated as independent: subjects with several images make these a little narrow); "
          f"AUROC with a subject-bootstrap interval.", "",
          table(["Model", "seed", "test images", "Accuracy", "Sensitivity", "Specificity", "AUROC"],
                rows), ""]


def agreement_sentence(name, a):
  if a["winners"] == 0:
    return f"{name}: no winners recorded."
  if a["distinct"] == 1:
    return f"{name}: the search found one architecture: all {a['winners']} winners are the same."
  text = (f"{name}: the search does not settle on one architecture: its {a['winners']} winners "
          f"are {a['distinct']} distinct architectures (the most common one won "
          f"{a['modal_count']} time(s))")
  if _finite(a.get("kernel_agreement")):
    text += (f"; per layer, on average {share_text(a['kernel_agreement'])} of the winners share "
             f"the most common kernel size and {share_text(a['filter_agreement'])} the most common "
             f"filter count")
    if _finite(a.get("kernel_chance")) and _finite(a.get("filter_chance")):
      text += (f" (uniform random choices would give {share_text(a['kernel_chance'])} and "
               f"{share_text(a['filter_chance'])})")
  return text + "."


def winners_section(report):
  agreement = report.get("winner_agreement") or {}
  winners = report.get("winners") or []
  if not winners:
    return ["## Winners", "", "No winners were recorded.", ""]
  title = ("## Winners of every outer fold" if report["protocol"] == "nested"
           else "## Winners of the search fold, per seed")
  lines = [title, ""]
  lines += [f"- {agreement_sentence(name, a)}" for name, a in agreement.items()]
  rows = [[name, a["winners"], a["distinct"],
           f"{share_text(a.get('kernel_agreement'))} (chance {share_text(a.get('kernel_chance'))})",
           f"{share_text(a.get('filter_agreement'))} (chance {share_text(a.get('filter_chance'))})"]
          for name, a in agreement.items()]
  lines += ["", table(["Model", "winners", "distinct", "kernel agreement", "filter agreement"],
                      rows), "",
            "Agreement: the share of winners with the most common choice at a layer, averaged over "
            "layers; chance: the same share if every winner chose uniformly among the values any "
            "winner took.", ""]
  body = [table(["fold", "group", "model", "seed", "architecture", "params", "FLOPs",
                 "search reward", "re-scored mean +- sd"],
                [[w.get("fold"), w.get("group") or "", w.get("model"), w.get("seed"),
                  _code(w.get("architecture")), int_text(w.get("params")),
                  flops_text(w.get("flops")), fmt(w.get("search_reward"), 3),
                  f"{fmt(w.get('rescore_mean'), 3)} +- {fmt(w.get('rescore_std'), 3)}"]
                 for w in winners])]
  return lines + details(f"All {len(winners)} winners (architecture, parameters, FLOPs)", body)


def rescore_section(report):
  summary = report.get("rescore_summary") or {}
  rescore = report.get("rescore") or {}
  if not summary:
    return []
  lines = ["## Re-scoring", "",
           "A search's best reward is the maximum of many noisy validation scores, so it "
           "overstates the winner (the winner's curse). Each strategy's top children were "
           "retrained with further seeds and ranked by their mean; \"optimism\" = search reward - "
           "re-scored mean of the chosen child.", ""]
  rows = [[name, s["searches"], s["candidates"], f"{s['changed']} of {s['searches']}",
           fmt(s.get("mean_search_reward"), 3), fmt(s.get("mean_rescore"), 3),
           fmt(s.get("mean_optimism"), 3)] for name, s in summary.items()]
  lines += [table(["Model", "searches", "candidates", "re-scoring changed the winner",
                   "search reward (winners)", "re-scored mean (winners)", "optimism"], rows), ""]
  body = [table(["model", "fold", "seed", "architecture", "search reward", "re-scored mean +- sd",
                 "n", "chosen"],
                [[name, r.get("fold"), r.get("seed"), _code(r.get("architecture")),
                  fmt(r.get("search_reward"), 3),
                  f"{fmt(r.get('mean'), 3)} +- {fmt(r.get('std'), 3)}",
                  r.get("n", "n/a"), "yes" if r.get("chosen") else ""]
                 for name, rows_ in rescore.items() for r in rows_])]
  return lines + details("Every re-scored candidate", body)


def architectures_section(models):
  rows = []
  for m in models:
    exported = m.get("exported") or {}
    source = exported.get("source", "n/a")
    if exported:
      source += f" (fold {exported.get('fold', 'n/a')}, seed {exported.get('seed', 'n/a')})"
    rows.append([m["name"], _code(m.get("architecture")), int_text(m.get("params")),
                 flops_text(m.get("flops")), fmt(m.get("fps"), 1),
                 fmt(m.get("latency_ms_median"), 1),
                 (f"{fmt(m.get('throughput'), 0)} (batch {m.get('throughput_batch')})"
                  if _finite(m.get("throughput")) else "n/a"), source])
  return ["## Exported models", "",
          "The models under `models/<name>/` that `predict` uses. Under the nested protocol, "
          "Table 1 estimates the search procedure (each outer fold may pick another architecture) "
          "and the exported model is the one named in \"exported from\".",
          "", table(["Model", "architecture", "Parameters", "FLOPs", "FPS (batch 1)",
                     "latency ms (median)", "images/s", "exported from"], rows), ""]


def search_section(report):
  search = report.get("search") or {}
  lines = ["## Search cost", ""]
  lines.append(f"- Reward: {search.get('reward_metric', 'n/a')} (transform "
               f"{search.get('reward_transform', 'n/a')}), mean over "
               f"{search.get('reward_splits', 'n/a')} inner splits; "
               f"{search.get('children_per_search', 'n/a')} children per search; top "
               f"{search.get('rescore_top_k', 'n/a')} re-scored over "
               f"{search.get('rescore_seeds', 'n/a')} seeds.")
  cost = report.get("search_cost") or []
  if cost:
    rows = [[STRATEGY_LABELS.get(r["strategy"], r["strategy"]), r.get("model") or "",
             r["runs"], int_text(r.get("children")), int_text(r.get("distinct")),
             int_text(r.get("memo_hits")), int_text(r.get("failed")),
             int_text(r.get("does_not_fit")), seconds_text(r.get("wall_seconds")),
             share_text(r.get("compile_share"))] for r in cost]
    lines += ["", table(["strategy", "model", "searches", "children", "distinct", "memo hits",
                         "failed", "does not fit", "wall s", "compile share"], rows)]
  else:
    lines += ["", "No search was recorded."]
  compute = report.get("compute") or {}
  comp = report.get("compile") or {}
  lines += ["",
            f"- Compute: {fmt(compute.get('device_hours'))} device-hours "
            f"({seconds_text(compute.get('wall_seconds'))} s wall), compile share "
            f"{share_text(compute.get('compile_share'))}, {compute.get('devices', 'n/a')} "
            f"device(s), {compute.get('processes', 'n/a')} process(es).",
            f"- Compiles: {comp.get('compiles', 'n/a')} (cache hits "
            f"{comp.get('cache_hits', 'n/a')}; distinct architectures "
            f"{comp.get('distinct_architectures', 'n/a')}, distinct programs "
            f"{comp.get('distinct_programs', 'n/a')}).", ""]
  return lines


def checklist_section(report):
  """The Lindauer & Hutter (2020) NAS best-practice checklist items this run can answer."""
  names = [m["name"] for m in report["models"]]
  cost = {r.get("model"): r for r in report.get("search_cost") or []}
  children = "; ".join(f"{name}: {int_text(r.get('children'))} children "
                       f"({int_text(r.get('distinct'))} distinct, "
                       f"{int_text(r.get('memo_hits'))} memo hits) over {r['runs']} searches"
                       for name, r in cost.items()) or "n/a"
  versions = report.get("versions") or {}
  compute = report.get("compute") or {}
  per_search = {r.get("children") / r["runs"] for r in cost.values()
                if r.get("children") is not None and r.get("runs")}
  budget = ("the same number of children per search for every strategy" if len(per_search) == 1
            else "children per search differ between strategies: compare with care"
            if per_search else "children per search not recorded")
  baselines = [n for n in names if n != "NASRL"]
  return [
      "## NAS checklist (Lindauer & Hutter 2020)", "",
      f"- Evaluation protocol: {report['protocol']}"
      + (" (optimistic, see the protocol)" if report["protocol"] == "paper" else
         " (test subjects never used by search, re-scoring or selection)") + ".",
      f"- Baselines: {', '.join(baselines) or 'none'} (VGG19: fixed architecture, same folds); "
      f"random search {'included' if 'RandomSearch' in names else 'missing'}; {budget}.",
      f"- Seeds: {', '.join(str(s) for s in report.get('seeds') or [])} (every strategy once per "
      f"seed).",
      f"- Children per strategy: {children}.",
      f"- Compute: {fmt(compute.get('device_hours'))} device-hours on "
      f"{report.get('device') or 'n/a'}.",
      "- Versions: " + (", ".join(f"{k} {v}" for k, v in versions.items()) or "n/a") + ".",
      f"- Command: `{report.get('command') or 'n/a'}` (config variant "
      f"`{report.get('config_variant') or 'default'}`, {report.get('date') or 'n/a'}).", ""]


def build(report, plot_names=()):
  """report.md text from the JSON-safe report object.

  Args:
    report: the report.json object.
    plot_names: the plots written under plots/ (keys of PLOT_CAPTIONS), embedded in that order.
  """
  models = report["models"]
  out = ["# NASRL early fatty-liver detection: report", ""]
  out += protocol_section(report) + [""]
  out += [f"Produced by `{report.get('command') or 'n/a'}` (config variant "
          f"`{report.get('config_variant') or 'default'}`, {report.get('date') or 'n/a'}) on "
          f"{report.get('device') or 'n/a'}.", ""]
  out += summary_section(report)
  out += ["## Data", ""] + data_section(report.get("data") or {},
                                        report.get("class_names") or []) + [""]
  out += table1_section(report)
  out += subject_section(models) + threshold_section(models)
  out += per_fold_section(models) + per_seed_section(models)
  out += group_section(report) + grade_section(report)
  out += comparisons_section(report) + search_fold_section(report)
  out += winners_section(report) + rescore_section(report)
  out += architectures_section(models) + search_section(report) + checklist_section(report)
  if report.get("final_search"):
    out += ["## Final search", "", "A last search on all subjects produced the exported models; "
            "its rewards appear in no estimate above.", "",
            table(["Model", "architecture", "seed", "search reward"],
                  [[name, _code(v.get("architecture")), v.get("seed", "n/a"),
                    fmt(v.get("search_reward"), 3)] for name, v in report["final_search"].items()]),
            ""]
  if plot_names:
    out += ["## Plots", ""]
    for name in plot_names:
      caption = PLOT_CAPTIONS.get(name, name)
      out += [f"### {caption}", "", f"![{caption}](plots/{name}.png)", ""]
  return "\n".join(out).rstrip() + "\n"


# --------------------------------------------------------------------------- table1.csv


def table1_csv(report):
  """table1.csv text: one row per model; display strings, then numeric columns.

  Columns (TABLE1_COLUMNS): Model, Accuracy, Sensitivity, Specificity, AUROC as
  "mean +- std [low, high]" (2 decimals), Parameters, FLOPs, FPS, then per metric
  <metric>_mean, _std, _ci_low, _ci_high, _std_over_seeds at full precision (empty when
  undefined), folds and seeds (counts).
  """
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator="\n")
  writer.writerow(TABLE1_COLUMNS)

  def num(x):
    return repr(float(x)) if _finite(x) else ""

  for m in report["models"]:
    row = [m["name"]] + [stat_text(m[n]) for n in METRICS]
    row += [int(m["params"]) if _finite(m.get("params")) else "",
            num(m.get("flops")), round(float(m["fps"]), 2) if _finite(m.get("fps")) else ""]
    for n in METRICS:
      ci = m[n].get("ci95") or [None, None]
      row += [num(m[n].get("mean")), num(m[n].get("std")), num(ci[0]), num(ci[1]),
              num(m[n].get("std_over_seeds"))]
    row += [m.get("n_folds"), len(m.get("seeds") or [])]
    writer.writerow(row)
  return buf.getvalue()
