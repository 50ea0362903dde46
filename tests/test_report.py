"""Tests for nasrl_jax.report: files, the report.json contract, the numbers against scikit-learn /
statsmodels recomputed here from the raw test predictions, what every interval covers and when it
is not estimable, the primary family, the wording, and refusal of bad input.

`fake_results.make_results` builds the pipeline's `results` dict (several test trainings per
model and fold). One full report (5 outer folds, with plots) is written once per module; the
other variants are rendered in memory without plots, on a smaller cohort.
"""

import copy
import csv
import html.parser
import importlib.util
import json
import math
import os

import numpy as np
from PIL import Image
import pytest
import scipy.stats
from sklearn import metrics as skm
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

import fake_results
from nasrl_jax import calibration
from nasrl_jax import metrics
from nasrl_jax import report
from nasrl_jax.errors import UserInputError
from nasrl_jax.report import aggregate
from nasrl_jax.report import intervals
from nasrl_jax.report import markdown
from nasrl_jax.report import markdown_search
from nasrl_jax.report import search_summary
from nasrl_jax.report import statistics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLOTS = {"search_rewards", "roc", "calibration", "decision_curve", "confusion", "architectures",
         "winners"}
# The module's full report: 5 outer folds (fold-level intervals), 2 search seeds, 2 trainings.
FULL = dict(outer_folds=5, seeds=(0, 1), test_seeds=2)
# A smaller cohort for the variants rendered in memory.
SMALL = dict(outer_folds=5, subjects=100, images=130, seeds=(0,), test_seeds=2)


def _strict_json(path):
  """Parses JSON refusing NaN/Infinity (invalid JSON that Python would otherwise accept)."""
  def refuse(name):
    raise ValueError(f"non-standard JSON constant {name}")
  with open(path, encoding="utf-8") as f:
    return json.load(f, parse_constant=refuse)


@pytest.fixture(scope="module")
def nested(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("report"))
  results = fake_results.make_results(**FULL)
  paths = report.write_report(results, workdir)
  with open(paths["report_md"], encoding="utf-8") as f:
    md = f.read()
  return results, workdir, paths, _strict_json(paths["report_json"]), md


def _views(model):
  """{(fold, replicate): (y_fatty, p_fatty, val threshold)} from a model's raw test predictions."""
  out = {}
  for f in model["folds"]:
    prob = np.asarray(f["test"]["prob"])
    out[f["fold"], aggregate.replicate(f)] = (np.asarray(f["test"]["label"]) > 0,
                                              1.0 - prob[:, 0], f["val_threshold"])
  return out


def _per_fold_mean(values):
  folds = sorted({f for f, _ in values})
  return {f: np.nanmean([v for (ff, _), v in values.items() if ff == f]) for f in folds}


def _n_ratio(model):
  rest = np.mean([f["n_train"] + f["n_val"] for f in model["folds"]])
  return np.mean([f["n_test"] for f in model["folds"]]) / rest


# --------------------------------------------------------------------------- files and contract


def test_files_plots_and_the_html_page(nested):
  _, workdir, paths, _, md = nested
  for key in ("report_md", "report_html", "report_json", "table1_csv"):
    assert os.path.isfile(paths[key]) and os.path.dirname(paths[key]) == workdir
  assert set(paths["plots"]) == PLOTS
  assert not [f for _, _, files in os.walk(workdir) for f in files if f.endswith(".tmp")]
  for name, path in paths["plots"].items():
    assert f"(plots/{name}.png)" in md
    assert os.path.getsize(path) > 10_000  # A drawn figure, not an empty canvas.
    with Image.open(path) as im:
      assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 200
      assert len(im.convert("RGB").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 50

  class Page(html.parser.HTMLParser):
    def __init__(self):
      super().__init__()
      self.tables, self.images, self.remote = 0, [], []

    def handle_starttag(self, tag, attrs):
      attrs = dict(attrs)
      self.tables += tag == "table"
      if tag == "img":
        self.images.append(attrs.get("src", ""))
      for key in ("src", "href"):
        if (attrs.get(key) or "").startswith(("http:", "https:", "//")):
          self.remote.append(attrs[key])

  page = Page()
  page.feed(open(paths["report_html"], encoding="utf-8").read())
  # Every Markdown table (a header line followed by its "| --- |" rule) and every plot made it.
  assert page.tables == md.count("\n| --- |") and page.tables > 15
  assert len(page.images) == len(PLOTS)
  assert all(src.startswith("data:image/png;base64,") for src in page.images)
  assert not page.remote  # Self-contained: nothing fetched from the network.


def _shared_checker():
  for path in (os.path.join(ROOT, "..", "shared", "check_report.py"),
               os.path.join(ROOT, "shared", "check_report.py")):
    if os.path.isfile(path):
      spec = importlib.util.spec_from_file_location("check_report", path)
      module = importlib.util.module_from_spec(spec)
      spec.loader.exec_module(module)
      return module
  return None


def test_report_json_meets_the_contract(nested, tmp_path):
  results, workdir, _, rep, _ = nested
  assert [m["name"] for m in rep["models"]] == ["NASRL", "VGG19", "RandomSearch", "Evolution"]
  for key in ("versions", "compile", "compute", "protocol", "rescore", "outer_folds", "data",
              "cohort", "test_seeds"):
    assert rep[key] == json.loads(json.dumps(results[key]))  # Passed through unchanged.
  for m in rep["models"]:
    for name in ("accuracy", "auroc", "balanced_accuracy", "ppv", "npv", "brier"):
      for block in (m, m["subject"]):
        assert {"mean", "std", "ci95", "ci95_subjects_only", "ci_covers", "estimable",
                "reason"} <= set(block[name])
    for key in ("prevalence", "no_information_rate", "degenerate_trainings", "calibration",
                "sensitivity_by_grade"):
      assert key in m
    assert set(m["calibration"]) == {"intercept", "slope"}
  p = rep["primary"]
  assert (p["metric"], p["level"]) == ("auroc", "subject")
  assert [(c["a"], c["b"]) for c in p["comparisons"]] == [("NASRL", "VGG19"),
                                                          ("NASRL", "RandomSearch")]
  for c in p["comparisons"] + rep["comparisons"]:
    assert {"a", "b", "diff", "ci95", "p", "p_holm", "significant", "estimable", "reason",
            "test"} <= set(c)
  checker = _shared_checker()
  if checker is not None:  # The contract checker run on finished runs, when this checkout has it.
    run = tmp_path / "run"
    run.mkdir()
    for name in ("report.json", "report.md", "report.html"):
      (run / name).write_bytes(open(os.path.join(workdir, name), "rb").read())
    (run / "plots").mkdir()
    for name in ("calibration", "decision_curve"):
      (run / "plots" / f"{name}.png").write_bytes(
          open(os.path.join(workdir, "plots", f"{name}.png"), "rb").read())
    (run / "config.json").write_text(json.dumps({
        "data": {"balance": "none"}, "controller": {"reward_metric": "val_accuracy"},
        "eval": {"protocol": "nested", "test_seeds": 2, "primary": results["primary_spec"]},
        "search": {"reward_splits": 3, "rescore_top_k": 5, "rescore_seeds": 3,
                   "strategies": ["reinforce", "random", "evolution"]}}))
    (run / "search").mkdir()
    (run / "search" / "history.jsonl").write_text(json.dumps(
        {"strategy": "reinforce", "seed": 0, "outer_fold": 0, "step": 0, "architecture": "a",
         "reward": 0.5}) + "\n")
    for name in ("NASRL", "VGG19", "RandomSearch"):
      (run / "models" / name).mkdir(parents=True)
      for f in ("model.onnx", "model_card.md"):
        (run / "models" / name / f).write_text("x")
    assert checker.check(str(run)) == []


def test_metrics_match_sklearn_on_the_raw_predictions(nested):
  results, _, _, rep, _ = nested
  # Two models are enough to check the wiring (scikit-learn costs ~15 ms a call).
  for m, src in list(zip(rep["models"], aggregate.sorted_models(results["models"])))[:2]:
    values = {}
    for key, (y, p, t) in _views(src).items():
      pred, at_val = (p >= 0.5).astype(int), (p >= t).astype(int)
      values[key] = {"accuracy": skm.accuracy_score(y, pred), "auroc": skm.roc_auc_score(y, p),
                     "sensitivity": skm.recall_score(y, pred),
                     "specificity": skm.recall_score(y, pred, pos_label=0),
                     "balanced_accuracy": skm.balanced_accuracy_score(y, at_val),
                     "ppv": skm.precision_score(y, at_val, zero_division=np.nan),
                     "npv": skm.precision_score(1 - y, 1 - at_val, zero_division=np.nan),
                     "brier": skm.brier_score_loss(y, p)}
    for met in values[next(iter(values))]:
      per_fold = _per_fold_mean({k: v[met] for k, v in values.items()})
      assert [r["value"] for r in m[met]["per_fold"]] == pytest.approx(list(per_fold.values()))
      assert m[met]["mean"] == pytest.approx(np.mean(list(per_fold.values())))
      assert m[met]["std"] == pytest.approx(np.std(list(per_fold.values()), ddof=1))
    prevalence = np.mean([np.mean(y) for (f, r), (y, _, _) in _views(src).items()
                          if r == aggregate.replicate(src["folds"][0])])
    assert m["prevalence"]["mean"] == pytest.approx(prevalence)
    assert m["no_information_rate"]["mean"] == pytest.approx(max(prevalence, 1 - prevalence),
                                                             abs=0.05)


def test_fold_level_interval_is_the_corrected_t_of_the_fold_means(nested):
  """>= 5 outer folds: mean +- t_{k-1} sqrt((1/k + n_test/(n - n_test)) var(fold values))."""
  results, _, _, rep, _ = nested
  src = next(m for m in results["models"] if m["name"] == "NASRL")
  m = rep["models"][0]
  values = np.array([r["value"] for r in m["auroc"]["per_fold"]])
  k = values.size
  half = scipy.stats.t.ppf(0.975, k - 1) * math.sqrt((1 / k + _n_ratio(src)) * values.var(ddof=1))
  assert m["auroc"]["ci95"] == pytest.approx([values.mean() - half, values.mean() + half])
  assert m["auroc"]["ci_covers"] == ["subjects", "training_seeds", "outer_folds", "searches"]
  assert rep["models"][1]["auroc"]["ci_covers"] == ["subjects", "training_seeds", "outer_folds"]
  low, high = m["auroc"]["ci95_subjects_only"]
  assert low <= m["auroc"]["mean"] <= high


def test_primary_family_alone_carries_holm_and_the_verdict(nested):
  results, _, _, rep, md = nested
  p = rep["primary"]
  comps = p["comparisons"]
  assert all(c["estimable"] for c in comps) and p["family"] == 2
  np.testing.assert_allclose([c["p_holm"] for c in comps],
                             multipletests([c["p"] for c in comps], method="holm")[1])
  src = {m["name"]: m for m in results["models"]}
  subj = {}
  for name in ("NASRL", "VGG19"):
    values = {}
    for f in src[name]["folds"]:
      y, prob = np.asarray(f["test"]["label"]), np.asarray(f["test"]["prob"])[:, 1]
      _, ys, ps = metrics.subject_level(np.asarray(f["test"]["subject_id"]), y, prob)
      values[f["fold"], aggregate.replicate(f)] = skm.roc_auc_score(ys, ps)
    subj[name] = _per_fold_mean(values)
  diffs = [subj["NASRL"][f] - subj["VGG19"][f] for f in sorted(subj["NASRL"])]
  k = len(diffs)
  se = math.sqrt((1 / k + _n_ratio(src["NASRL"])) * np.var(diffs, ddof=1))
  assert comps[0]["diff"] == pytest.approx(np.mean(diffs))
  assert comps[0]["p"] == pytest.approx(2 * scipy.stats.t.sf(abs(np.mean(diffs)) / se, k - 1))
  # Secondary: exploratory, no Holm, no verdict.
  assert rep["comparisons"] and all(c["exploratory"] and c["p_holm"] is None and
                                    c["significant"] is None for c in rep["comparisons"])
  assert not any(" is higher" in c["sentence"] for c in rep["comparisons"])
  short = md[md.index("## In short"):md.index("## Data")]
  for c in comps:
    assert c["sentence"] in short
  assert not any(c["sentence"] in short for c in rep["comparisons"])
  assert {c["test"] for c in rep["comparisons"]} == {statistics.TEST_T, statistics.TEST_BOOTSTRAP}


def test_markdown_reads_as_the_protocol_says(nested):
  _, _, _, rep, md = nested
  assert md.index("Protocol: nested") < md.index("## Table 1")  # The protocol comes first.
  assert "never seen by any search, re-scoring or selection" in md
  assert "with its own random stream" in md and "2 training seeds per chosen model" in md
  assert "OPTIMISTIC" not in md and "the evaluation cohort" in md and "`0123abc`" in md
  for m in rep["models"]:
    assert statistics.learned_sentence(m) in md
    assert markdown.stat_text(m["auroc"]) in md  # Table 1: "mean +- std [low, high]".
  assert "0.77 +- 0.07" in md and "139,577,282" in md and report.PAPER_SOURCE in md
  for heading in ("What the intervals cover", "Clinical metrics at the validation threshold",
                  "Probability quality", "Sensitivity by grade", "## Degenerate trainings",
                  "Table 1 per subject", "Per outer fold", "per search seed",
                  "### Primary (pre-specified)", "### Secondary (exploratory)",
                  "## Winners of every outer fold", "## Re-scoring", "## Search cost",
                  "distinct in the run", "NAS checklist", "device-hours"):
    assert heading in md
  assert "Per held-out machine" not in md and "Grade mode" not in md
  for name, a in rep["winner_agreement"].items():
    assert markdown_search.agreement_sentence(name, a) in md


def test_table1_csv_rows(nested):
  _, _, paths, rep, _ = nested
  with open(paths["table1_csv"], newline="", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  assert [r["Model"] for r in rows] == [m["name"] for m in rep["models"]]
  for row, m in zip(rows, rep["models"]):
    assert tuple(row) == report.TABLE1_COLUMNS
    assert row["AUROC"] == markdown.stat_text(m["auroc"])
    assert float(row["accuracy_mean"]) == pytest.approx(m["accuracy"]["mean"])
    assert float(row["auroc_ci_low"]) == pytest.approx(m["auroc"]["ci95"][0])
    assert int(row["Parameters"]) == m["params"] and int(row["folds"]) == 5
    assert int(row["trainings"]) == m["trainings"] and row["ci_covers"].startswith("subjects")
  assert [int(r["seeds"]) for r in rows] == [2, 0, 2, 2]  # VGG19 was not searched.


# --------------------------------------------------------------------------- intervals


def _disagreeing(results, name="NASRL"):
  """Training seed 1 of `name` predicts noise: its trainings disagree in every fold."""
  rng = np.random.default_rng(5)
  for f in next(m for m in results["models"] if m["name"] == name)["folds"]:
    if f["training_seed"] == 1:
      p = rng.uniform(0.2, 0.8, len(f["test"]["prob"]))
      f["test"]["prob"] = [[round(1 - x, 6), round(x, 6)] for x in p]
  return results


def test_below_five_folds_the_interval_covers_subjects_and_training_seeds():
  results = _disagreeing(fake_results.make_results(**{**SMALL, "outer_folds": 2}))
  rendered = report.render(results, plots=False)
  rep, rendered_md = rendered.report, rendered.markdown
  nasrl, vgg = rep["models"][0], rep["models"][1]
  a = nasrl["auroc"]
  assert a["estimable"] and a["ci_covers"] == ["subjects", "training_seeds"]
  assert "bootstrap of subjects and training seeds" in a["ci_method"]
  width = lambda ci: ci[1] - ci[0]
  # Seeds that disagree: the interval is wider than the subject bootstrap alone would give.
  assert width(a["ci95"]) > 1.3 * width(a["ci95_subjects_only"])
  assert width(vgg["auroc"]["ci95"]) < 1.3 * width(vgg["auroc"]["ci95_subjects_only"])
  # No fold-level test with 2 outer folds: the primary family is not estimable, with its reason.
  for c in rep["primary"]["comparisons"]:
    assert not c["estimable"] and c["ci95"] is None and c["p"] is None
    assert c["reason"] == "2 outer folds: a fold-level test needs at least 5"
    assert "not estimable (2 outer folds" in c["sentence"]
  primary_md = rendered_md[rendered_md.index("### Primary"):rendered_md.index("### Secondary")]
  rows = [l for l in primary_md.splitlines() if l.startswith("| NASRL vs")]
  assert len(rows) == 2 and all(l.endswith("| n/a (not tested) |") for l in rows), rows
  # Nothing printed outside a metric's range.
  for m in rep["models"]:
    for block in (m, m["subject"]):
      for name in ("accuracy", "sensitivity", "specificity", "auroc", "ppv", "npv", "brier"):
        ci = block[name]["ci95"]
        assert ci is None or 0.0 <= ci[0] <= ci[1] <= 1.0
  for c in rep["comparisons"]:
    assert c["ci95"] is None or -1.0 <= c["ci95"][0] <= c["ci95"][1] <= 1.0


def test_zero_variance_and_intervals_out_of_range_are_not_estimable():
  assert intervals.fold_interval([0.7] * 6, 0.2, (0, 1)) == {
      "ci95": None, "estimable": False, "reason": "zero variance over the outer folds"}
  out = intervals.fold_interval([0.99, 1.0, 0.9, 1.0, 0.97], 0.25, (0, 1))
  assert not out["estimable"] and "leave the metric's range [0, 1]" in out["reason"]
  assert intervals.fold_interval([0.7, 0.8, 0.75, 0.72], 0.2, (0, 1))["reason"].startswith(
      "defined in 4 outer folds")
  assert not intervals.bootstrap_interval([0.5, 0.5], 0.5)["estimable"]
  ok = intervals.bootstrap_interval([0.6, 0.8], 0.85)  # A skewed distribution missing the mean.
  assert ok["estimable"] and ok["ci95"] == [0.6, 0.85]
  # In a report: a model calling every image fatty has sensitivity 1 in every fold.
  results = fake_results.make_results(**SMALL)
  for f in results["models"][1]["folds"]:
    f["test"]["prob"] = [[0.1, 0.9]] * len(f["test"]["prob"])
    f["val_threshold"] = 0.5
  rendered = report.render(results, plots=False)
  sens = rendered.report["models"][1]["sensitivity"]
  assert sens["mean"] == 1.0 and not sens["estimable"] and sens["ci95"] is None
  assert "zero variance" in sens["reason"]
  assert "1.00 +- 0.00 [not estimable]" in rendered.markdown
  assert "Not estimable (zero variance over the outer folds): VGG19 Sensitivity" in \
      rendered.markdown


def test_near_constant_trainings_are_degenerate_and_not_learned():
  results = fake_results.make_results(**SMALL)
  rng = np.random.default_rng(1)
  src = results["models"][0]
  for f in src["folds"][:3]:  # Three trainings squeezed into 0.51-0.55, keeping their ranking.
    p = np.asarray(f["test"]["prob"])[:, 1]
    q = 0.51 + 0.04 * (p - p.min()) / (p.max() - p.min() + 1e-9) + rng.uniform(0, 1e-4, p.size)
    f["test"]["prob"] = [[round(1 - x, 6), round(x, 6)] for x in q]
  rep = report.render(results, plots=False).report
  nasrl = rep["models"][0]
  assert nasrl["degenerate_trainings"] == 3
  assert all("interquartile range" in d["reason"] for d in nasrl["degenerate"])
  sentence = statistics.learned_sentence(nasrl)
  assert sentence.startswith("NASRL did not clearly learn") and "3 of its 10 test trainings" in \
      sentence
  assert rep["models"][1]["degenerate_trainings"] == 0


def test_calibration_and_sensitivity_by_grade_by_hand():
  results = fake_results.make_results(**SMALL)
  rep = report.render(results, plots=False).report
  src, m = results["models"][0], rep["models"][0]
  fold0 = src["folds"][0]
  y = np.asarray(fold0["test"]["label"])
  p = np.asarray(fold0["test"]["prob"])[:, 1]
  want = calibration.weighted_calibration(np.ones(y.size), y, p)
  got = next(f for f in m["folds"] if (f["fold"], f["training_seed"]) == (0, 0))["metrics"]
  assert got["image"]["calibration_slope"] == pytest.approx(want["calibration_slope"][0])
  cap = np.asarray(fold0["test"]["cap"])
  s1 = (y == 1) & (cap < 260)
  pred = p >= fold0["val_threshold"]
  assert got["image"]["sens_S1"] == pytest.approx(pred[s1].mean())
  assert set(m["sensitivity_by_grade"]) == {"S1", "S2-S3"}


# --------------------------------------------------------------------------- variants


def test_significant_primary_difference_and_a_model_that_did_not_learn():
  rendered = report.render(fake_results.make_results(skill={"VGG19": 0.0}, **SMALL), plots=False)
  c = rendered.report["primary"]["comparisons"][0]
  assert c["b"] == "VGG19" and c["significant"]
  assert "NASRL is higher, significant after Holm adjustment over the 2 primary comparisons" in \
      c["sentence"]
  vgg = next(m for m in rendered.report["models"] if m["name"] == "VGG19")
  sentence = statistics.learned_sentence(vgg)
  assert sentence.startswith("VGG19 did not clearly learn: subject-level AUROC")
  assert "includes chance (0.5)" in sentence and sentence in rendered.markdown


def test_sentence_wording_cases():
  row = {"a": "NASRL", "b": "RandomSearch", "metric": "auroc", "level": "subject",
         "test": statistics.TEST_T, "diff": 0.012, "ci95": [-0.05, 0.07], "p": 0.3,
         "p_holm": 0.71, "significant": False, "family": 2, "k": 5, "estimable": True}
  assert statistics.sentence(row) == (
      "NASRL vs RandomSearch: subject-level AUROC +0.01 [-0.05, 0.07], adjusted p = 0.71 "
      "(Nadeau-Bengio corrected t-test over outer folds, 5 folds): no significant difference at "
      "this budget.")
  row.update(p=0.02, p_holm=0.04 * 3)  # Below 0.05 only before the adjustment: still no claim.
  assert "not significant after Holm adjustment over the 2 primary comparisons (unadjusted p = " \
      "0.020)" in statistics.sentence(row)
  row.update(diff=-0.08, ci95=[-0.12, -0.04], p=0.0005, p_holm=0.003, significant=True)
  assert "RandomSearch is higher, significant" in statistics.sentence(row)
  row.update(exploratory=True)
  assert statistics.sentence(row).endswith("(Nadeau-Bengio corrected t-test over outer folds, 5 "
                                           "folds): exploratory.")
  row.update(estimable=False, reason="zero variance", diff=0.0)
  assert statistics.sentence(row) == ("NASRL vs RandomSearch: subject-level AUROC: not estimable "
                                      "(zero variance) (difference of the means +0.00).")


def test_paper_protocol_is_labelled_optimistic_with_the_search_fold_apart():
  results = fake_results.make_results(protocol="paper", **SMALL)
  rendered = report.render(results, plots=False)
  md, rep = rendered.markdown, rendered.report
  assert "Protocol: paper (OPTIMISTIC)" in md
  assert "The search's subjects sit in 4 of the 5 CV test folds" in md
  assert "never seen by any search, re-scoring or selection" not in md
  assert "## Held-out result on the search fold (fold 0)" in md
  assert rep["outer_folds"] == [] and {w["model"] for w in rep["winners"]} == {
      "NASRL", "RandomSearch", "Evolution"}
  src = next(m for m in results["models"] if m["name"] == "NASRL")
  rows = next(m for m in rep["models"] if m["name"] == "NASRL")["search_fold_test"]
  assert [(r["seed"], r["training_seed"]) for r in rows] == [(0, 0), (0, 1)]
  y, p, _ = _views(src)[0, (0, 1)]
  correct = int(np.sum((p >= 0.5) == y))
  assert rows[1]["accuracy"]["count"] == correct and rows[1]["accuracy"]["n"] == y.size
  assert rows[1]["accuracy"]["ci95"] == pytest.approx(
      list(proportion_confint(correct, y.size, method="wilson")))


def test_grade_mode_binary_view_and_four_grades():
  results = fake_results.make_results(label_mode="grade", **SMALL)
  rendered = report.render(results, plots=False)
  rep, md = rendered.report, rendered.markdown
  src = next(m for m in results["models"] if m["name"] == "NASRL")
  nasrl = next(m for m in rep["models"] if m["name"] == "NASRL")
  # Table 1 is the binary view: P(fatty) = 1 - P(S0), fatty = grade > 0.
  aurocs = _per_fold_mean({k: skm.roc_auc_score(y, p) for k, (y, p, _) in _views(src).items()})
  assert nasrl["auroc"]["mean"] == pytest.approx(np.mean(list(aurocs.values())))
  grade = {}
  for f in src["folds"]:
    y, prob = np.asarray(f["test"]["label"]), np.asarray(f["test"]["prob"])
    grade[f["fold"], aggregate.replicate(f)] = metrics.multiclass_metrics(y, prob)
  mc = nasrl["multiclass"]
  assert mc["accuracy"]["mean"] == pytest.approx(
      np.mean(list(_per_fold_mean({k: v["accuracy"] for k, v in grade.items()}).values())))
  assert set(mc["sensitivity"]) == {"S0", "S1", "S2", "S3"}
  assert mc["sensitivity"]["S3"]["mean"] == pytest.approx(np.nanmean(list(_per_fold_mean(
      {k: v["sensitivity"][3] for k, v in grade.items()}).values())))
  assert np.sum(mc["confusion"]) == sum(len(f["test"]["label"]) for f in src["folds"])
  assert "## Grade mode: four grades" in md and "Sensitivity S3" in md and "Macro AUROC" in md
  assert "binary view S0 vs S1-S3" in md


def test_device_groups_give_the_per_machine_table():
  results = fake_results.make_results(outer_groups="device", **{**SMALL, "outer_folds": 3})
  rendered = report.render(results, plots=False)
  md = rendered.markdown
  assert "## Per held-out machine" in md
  table = md[md.index("## Per held-out machine"):].split("\n\n")[2]
  assert [line.split(" | ")[0].strip("| ") for line in table.splitlines()[2:]] == list(
      fake_results.MACHINES)
  nasrl = next(m for m in rendered.report["models"] if m["name"] == "NASRL")
  per_fold = {r["fold"]: r["value"] for r in nasrl["accuracy"]["per_fold"]}
  for row in nasrl["per_group"]:
    assert row["accuracy"]["value"] == pytest.approx(per_fold[row["fold"]])
    assert row["accuracy"]["ci95"][0] <= row["accuracy"]["value"] <= row["accuracy"]["ci95"][1]


def test_one_class_fold_is_left_out_of_auroc_and_said_so():
  results = fake_results.make_results(**SMALL)
  for m in results["models"]:
    for f in m["folds"]:
      if f["fold"] == 0:
        f["test"]["label"] = [1] * len(f["test"]["label"])  # Every fold-0 subject fatty.
  rendered = report.render(results, plots=False)
  rep = json.loads(json.dumps(rendered.report, allow_nan=False))  # Would raise on NaN.
  nasrl = rep["models"][0]
  assert nasrl["auroc"]["n_nan"] == 1 and nasrl["auroc"]["n_folds"] == 4
  assert nasrl["auroc"]["per_fold"][0]["value"] is None
  assert math.isfinite(nasrl["auroc"]["mean"])
  assert not nasrl["auroc"]["estimable"]  # 4 folds with a value: no fold-level interval.
  assert "(4 of 5 folds)" in rendered.markdown
  c = rep["primary"]["comparisons"][0]
  assert c["k"] == 4 and not c["estimable"]


def test_primary_spec_with_two_models_and_bad_specs():
  results = fake_results.make_results(models=("VGG19", "NASRL"), **SMALL)
  results["primary_spec"] = ["NASRL vs VGG19", "image.accuracy"]
  rep = report.render(results, plots=False).report
  assert rep["primary"]["metric"] == "accuracy" and rep["primary"]["level"] == "image"
  assert [c["b"] for c in rep["primary"]["comparisons"]] == ["VGG19"]
  assert {(c["level"], c["metric"]) for c in rep["comparisons"]} >= {("image", "auroc")}
  from nasrl_jax.report import primary  # pylint: disable=g-import-not-at-top
  for bad, message in ((("NASRL vs VGG19",), "exactly one metric"),
                       (("NASRL vs VGG19", "auroc", "brier"), "exactly one metric"),
                       (("NASRL vs NASRL", "auroc"), "two different models"),
                       (("NASRL vs Nope", "auroc"), "unknown model"),
                       (("NASRL vs VGG19", "subject.f1"), "must be [image.|subject.]name")):
    with pytest.raises(UserInputError, match=message.replace("[", r"\[").replace("|", r"\|")
                       .replace(".", r"\.")):
      primary.parse(bad, ["NASRL", "RandomSearch"])


def test_winner_agreement_hand_case():
  rows = [{"architecture": "3x64 5x128", "kernels": [3, 5], "filters": [64, 128]},
          {"architecture": "3x64 5x128", "kernels": [3, 5], "filters": [64, 128]},
          {"architecture": "3x64 1x256"}]  # Parsed from the string.
  a = search_summary.agreement(rows)
  # Layer 1: kernels 3,3,3 and filters 64,64,64 agree fully; layer 2: 5,5,1 and 128,128,256.
  assert a["winners"] == 3 and a["distinct"] == 2 and a["modal_count"] == 2
  assert a["kernel_agreement"] == pytest.approx((1 + 2 / 3) / 2)
  assert a["filter_agreement"] == pytest.approx((1 + 2 / 3) / 2)
  assert "2 distinct architectures" in markdown_search.agreement_sentence("NASRL", a)
  assert a["kernel_chance"] is None  # No choice set given, no chance level.
  a = search_summary.agreement(rows, kernel_choices=4, filter_choices=4)
  # 3 winners choosing uniformly among 4: the modal count is 1 (prob 3/8), 2 (9/16) or 3 (1/16),
  # so the expected modal share is (3/8 * 1 + 9/16 * 2 + 1/16 * 3) / 3 = 0.5625.
  assert a["kernel_chance"] == pytest.approx(0.5625, abs=0.01)
  assert "uniform random choices would give 56 %" in markdown_search.agreement_sentence("NASRL", a)
  one = search_summary.agreement(rows[:2])
  assert "found one architecture" in markdown_search.agreement_sentence("NASRL", one)


def test_search_cost_counts_distinct_architectures_per_run():
  search = {"strategies": {"random": {"model": "RandomSearch", "runs": [
      {"children": 4, "distinct": 3, "architectures": ["a", "b", "c"]},
      {"children": 4, "distinct": 2, "architectures": ["a", "d"]}]}}}
  row = search_summary.search_cost(search)[0]
  assert (row["children"], row["distinct"], row["distinct_in_run"]) == (8, 5, 4)


def test_does_not_mutate_results():
  results = fake_results.make_results(**SMALL)
  before = copy.deepcopy(results)
  report.render(results, plots=False)
  assert results == before


def _model(r, i=0):
  return r["models"][i]


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r.pop("models"), "results['models']"),
    (lambda r: r.update(protocol="optimistic"), "results['protocol']"),
    (lambda r: r.update(label_mode="grades"), "results['label_mode']"),
    (lambda r: r["models"].append(copy.deepcopy(_model(r))), "appears twice"),
    (lambda r: _model(r)["folds"][2]["test"].pop("prob"), "['folds'][2]['test']: missing 'prob'"),
    (lambda r: _model(r)["folds"][2]["test"]["prob"][5].append(0.0),
     "['prob'][5]: expected 2 probabilities"),
    (lambda r: _model(r)["folds"][1]["test"]["prob"].__setitem__(0, [float("nan"), 1.0]),
     "['prob'][0]: expected finite probabilities"),
    (lambda r: _model(r)["folds"][1]["test"]["label"].__setitem__(3, 2),
     "['label'][3]: expected an integer label in 0..1"),
    (lambda r: _model(r)["folds"][1]["test"]["cap"].pop(), "one CAP (dB/m) or None per test"),
    (lambda r: _model(r)["folds"][0].pop("n_train"), "'n_train' must be a positive int"),
    (lambda r: _model(r)["folds"][0].update(training_seed="a"), "'training_seed' must be an int"),
    (lambda r: _model(r)["folds"][3].update(fold=0, training_seed=0),
     "fold 0 search seed 0 training seed 0 appears twice"),
    (lambda r: _model(r)["folds"][2]["test"]["subject_id"].__setitem__(
        0, _model(r)["folds"][0]["test"]["subject_id"][0]),
     "is in the test parts of folds 0 and 1"),
    (lambda r: r["outer_folds"][0]["winners"]["NASRL"][0].pop("params"), "missing 'params'"),
    (lambda r: r.update(outer_folds=[]), "results['outer_folds']: expected a non-empty list"),
    (lambda r: r["rescore"]["NASRL"][0].pop("mean"), "results['rescore']['NASRL'][0]"),
    (lambda r: r.update(class_names=["S0", "S1", "S2", "S3"]), "binary label mode needs 2"),
    (lambda r: r.update(primary_spec=["NASRL vs VGG19"]), "config.eval.primary"),
])
def test_bad_results_raise_before_writing(tmp_path, mutate, message):
  results = fake_results.make_results(**SMALL)
  mutate(results)
  with pytest.raises(UserInputError) as err:
    report.write_report(results, str(tmp_path))
  assert message in str(err.value)
  assert not os.listdir(tmp_path)


def test_one_class_predictions_at_half_get_a_sentence():
  def fold(sens, spec):
    return {"metrics": {"image": {"sensitivity": sens, "specificity": spec}}}
  entry = {"name": "NASRL", "folds": [fold(1.0, 0.0), fold(0.8, 0.4), fold(0.0, 1.0)]}
  sentence = statistics.one_class_sentence(entry)
  assert sentence.startswith("NASRL called every test image fatty in 1 of 3 test trainings and "
                             "normal in 1 of 3 test trainings at threshold 0.5")
  assert "clinical metrics at the validation threshold" in sentence
  entry["folds"] = [fold(0.8, 0.4), fold(float("nan"), 1.0)]  # One-class test part: no claim.
  assert statistics.one_class_sentence(entry) == ""


def test_a_plot_is_drawn_once_to_the_bytes_savefig_would_write(monkeypatch):
  """plots._png prints through the canvas: one draw of a constrained-layout figure (savefig
  draws it twice), and the same PNG bytes as savefig at the same dpi."""
  import io  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  from nasrl_jax.report import plots  # pylint: disable=g-import-not-at-top

  def figure():
    fig = Figure(figsize=(4, 3), layout="constrained")
    ax = fig.add_subplot()
    ax.plot([0, 0.5, 1], [0, 0.8, 1], label="model")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC")
    ax.legend()
    return fig

  draws = []
  original = Figure.draw
  monkeypatch.setattr(Figure, "draw", lambda self, r: (draws.append(1), original(self, r))[1])
  ours = plots._png(figure())  # pylint: disable=protected-access
  assert len(draws) == 1
  buf = io.BytesIO()
  figure().savefig(buf, format="png", dpi=plots.DPI)
  assert ours == buf.getvalue()
