"""Tests for nasrl_jax.report: files, the report.json contract, the numbers against scikit-learn /
statsmodels recomputed here from the raw test predictions, the wording, and refusal of bad input.

`fake_results.make_results` builds the pipeline's `results` dict. One full report (nested, with
plots) is written once per module; the other variants are rendered in memory without plots, on a
smaller cohort, to keep the file fast.
"""

import copy
import csv
import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
from sklearn import metrics as skm
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

import fake_results
from nasrl_jax import metrics
from nasrl_jax import report
from nasrl_jax.errors import UserInputError
from nasrl_jax.report import aggregate
from nasrl_jax.report import markdown
from nasrl_jax.report import statistics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLOTS = {"search_rewards", "roc", "confusion", "architectures", "winners"}
# A smaller cohort for the variants rendered in memory.
SMALL = dict(outer_folds=5, subjects=100, images=130, seeds=(0, 1))


def _strict_json(path):
  """Parses JSON refusing NaN/Infinity (invalid JSON that Python would otherwise accept)."""
  def refuse(name):
    raise ValueError(f"non-standard JSON constant {name}")
  with open(path, encoding="utf-8") as f:
    return json.load(f, parse_constant=refuse)


@pytest.fixture(scope="module")
def nested(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("report"))
  results = fake_results.make_results()
  paths = report.write_report(results, workdir)
  with open(paths["report_md"], encoding="utf-8") as f:
    md = f.read()
  return results, workdir, paths, _strict_json(paths["report_json"]), md


def _fold_view(model):
  """{(fold, seed): (y_fatty, p_fatty)} from a model's raw test predictions."""
  out = {}
  for f in model["folds"]:
    prob = np.asarray(f["test"]["prob"])
    out[f["fold"], f["seed"]] = (np.asarray(f["test"]["label"]) > 0, 1.0 - prob[:, 0])
  return out


def _per_fold_mean(values):
  folds = sorted({f for f, _ in values})
  return {f: np.mean([v for (ff, _), v in values.items() if ff == f]) for f in folds}


# --------------------------------------------------------------------------- files and contract


def test_files_and_plots(nested):
  _, workdir, paths, _, md = nested
  for key in ("report_md", "report_json", "table1_csv"):
    assert os.path.isfile(paths[key]) and os.path.dirname(paths[key]) == workdir
  assert set(paths["plots"]) == PLOTS
  assert not [f for _, _, files in os.walk(workdir) for f in files if f.endswith(".tmp")]
  for name, path in paths["plots"].items():
    assert f"(plots/{name}.png)" in md
    assert os.path.getsize(path) > 10_000  # A drawn figure, not an empty canvas.
    with Image.open(path) as im:
      im.verify()
    with Image.open(path) as im:
      assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 200
      assert len(im.convert("RGB").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 50


def _contract_problems(rep):
  """The report part of ../shared/check_report.py, restated so this test runs anywhere."""
  problems = []
  if rep.get("protocol") not in ("nested", "paper"):
    problems.append("protocol")
  for m in rep["models"]:
    for k in ("name", "architecture", "params", "flops", "fps", "folds"):
      if k not in m:
        problems.append(f"{m.get('name')}.{k}")
    for met in aggregate.METRICS:
      v = m[met]
      ci = v.get("ci95")
      if not (isinstance(ci, list) and len(ci) == 2 and all(isinstance(x, float) for x in ci)
              and ci[0] <= v["mean"] <= ci[1] and isinstance(v.get("std"), float)):
        problems.append(f"{m['name']}.{met} = {v}")
  for c in rep["comparisons"] or [{}]:
    missing = {"a", "b", "metric", "diff", "ci95", "p", "p_holm", "test"} - set(c)
    if missing:
      problems.append(f"comparison missing {missing}")
  if rep["protocol"] == "nested":
    for f in rep["outer_folds"]:
      for name, ws in f["winners"].items():
        if not ({"seed", "architecture", "params"} <= set(ws[0])):
          problems.append(f"outer fold {f['fold']} winners[{name}]")
  for name, rows in rep["rescore"].items():
    if not all({"fold", "seed", "architecture", "search_reward", "mean", "std"} <= set(r)
               for r in rows):
      problems.append(f"rescore[{name}]")
  for k in ("python", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy"):
    if not rep["versions"].get(k):
      problems.append(f"versions.{k}")
  for k in ("compiles", "cache_hits", "distinct_architectures", "distinct_programs"):
    if not isinstance(rep["compile"].get(k), int):
      problems.append(f"compile.{k}")
  return problems


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
  assert _contract_problems(rep) == []
  assert [m["name"] for m in rep["models"]] == ["NASRL", "VGG19", "RandomSearch", "Evolution"]
  for key in ("versions", "compile", "compute", "protocol", "rescore", "outer_folds", "data"):
    assert rep[key] == json.loads(json.dumps(results[key]))  # Passed through unchanged.
  for m, src in zip(rep["models"], aggregate.sorted_models(results["models"])):
    assert m["architecture"] == src["architecture"] and m["params"] == src["params"]
    assert [f["test"] for f in m["folds"]] == [f["test"] for f in src["folds"]]  # Kept whole.
  checker = _shared_checker()
  if checker is not None:  # The contract checker run on finished runs, when this checkout has it.
    run = tmp_path / "run"
    run.mkdir()
    for name in ("report.json", "report.md"):
      (run / name).write_bytes(open(os.path.join(workdir, name), "rb").read())
    (run / "config.json").write_text(json.dumps({
        "data": {"balance": "none"}, "eval": {"protocol": "nested"},
        "controller": {"reward_metric": "val_accuracy"},
        "search": {"reward_splits": 3, "rescore_top_k": 5, "rescore_seeds": 3,
                   "strategies": ["reinforce", "random", "evolution"]}}))
    (run / "search").mkdir()
    (run / "search" / "history.jsonl").write_text(json.dumps(
        {"strategy": "reinforce", "seed": 0, "outer_fold": 0, "step": 0, "architecture": "a",
         "reward": 0.5}) + "\n")
    for name in ("NASRL", "VGG19", "RandomSearch"):
      (run / "models" / name).mkdir(parents=True)
    assert checker.check(str(run)) == []


def test_metrics_match_sklearn_on_the_raw_predictions(nested):
  results, _, _, rep, _ = nested
  # Two models are enough to check the wiring (scikit-learn costs ~15 ms a call).
  for m, src in list(zip(rep["models"], aggregate.sorted_models(results["models"])))[:2]:
    view = _fold_view(src)
    values = {}
    for key, (y, p) in view.items():
      pred = (p >= 0.5).astype(int)
      values[key] = {"accuracy": skm.accuracy_score(y, pred),
                     "sensitivity": skm.recall_score(y, pred),
                     "specificity": skm.recall_score(y, pred, pos_label=0),
                     "auroc": skm.roc_auc_score(y, p)}
    for met in aggregate.METRICS:
      per_fold = _per_fold_mean({k: v[met] for k, v in values.items()})
      assert [r["value"] for r in m[met]["per_fold"]] == pytest.approx(list(per_fold.values()))
      assert m[met]["mean"] == pytest.approx(np.mean(list(per_fold.values())))
      assert m[met]["std"] == pytest.approx(np.std(list(per_fold.values()), ddof=1))
      per_seed = [np.mean([v[met] for (f, s), v in values.items() if s == seed])
                  for seed in results["seeds"]]
      assert m[met]["std_over_seeds"] == pytest.approx(np.std(per_seed, ddof=1))
      low, high = m[met]["ci95"]
      assert low <= m[met]["mean"] <= high and high - low > 0
    fold0 = next(f for f in m["folds"] if f["fold"] == 0 and f["seed"] == 0)
    assert fold0["metrics"]["image"]["auroc"] == pytest.approx(values[0, 0]["auroc"])
    y, p = view[0, 0]
    assert fold0["metrics"]["image"]["confusion"] == skm.confusion_matrix(y, p >= 0.5).tolist()
    pooled = np.mean([skm.roc_auc_score(np.concatenate([view[f, s][0] for f in range(10)]),
                                        np.concatenate([view[f, s][1] for f in range(10)]))
                      for s in results["seeds"]])
    assert m["auroc_pooled"]["value"] == pytest.approx(pooled)


def test_ci_is_the_fold_stratified_subject_bootstrap(nested):
  results, _, _, rep, _ = nested
  src = next(m for m in results["models"] if m["name"] == "VGG19")
  folds = {}
  for f in src["folds"]:
    y, p = _fold_view({"folds": [f]})[f["fold"], f["seed"]]
    folds.setdefault(f["fold"], {})[f["seed"]] = {"subject": np.asarray(f["test"]["subject_id"]),
                                                  "label": y.astype(int), "score": p}
  boot = metrics.fold_bootstrap(
      folds, lambda w, part: {"auroc": metrics.weighted_auroc(w, part["label"], part["score"])},
      seed=aggregate.BOOTSTRAP_SEED)
  got = next(m for m in rep["models"] if m["name"] == "VGG19")["auroc"]["ci95"]
  assert got == pytest.approx(boot["ci"]["auroc"].tolist())
  assert rep["bootstrap"]["resamples"] >= 1000


def test_comparisons_are_corrected_t_tests_bootstrap_and_holm(nested):
  results, _, _, rep, _ = nested
  comps = rep["comparisons"]
  assert {(c["a"], c["b"], c["metric"], c["test"]) for c in comps} == {
      ("NASRL", b, met, test) for b in ("VGG19", "RandomSearch", "Evolution")
      for met, test in (("accuracy", statistics.TEST_T), ("auroc", statistics.TEST_T),
                        ("auroc", statistics.TEST_BOOTSTRAP))}
  np.testing.assert_allclose([c["p_holm"] for c in comps],
                             multipletests([c["p"] for c in comps], method="holm")[1])
  src = {m["name"]: m for m in results["models"]}
  c = next(c for c in comps if c["b"] == "VGG19" and c["metric"] == "accuracy")
  acc = {}
  for name in ("NASRL", "VGG19"):
    acc[name] = _per_fold_mean({k: np.mean((p >= 0.5) == y)
                                for k, (y, p) in _fold_view(src[name]).items()})
  diffs = [acc["NASRL"][f] - acc["VGG19"][f] for f in range(10)]
  folds = src["NASRL"]["folds"] + src["VGG19"]["folds"]
  want = metrics.corrected_ttest(diffs, np.mean([f["n_train"] for f in folds]),
                                 np.mean([f["n_test"] for f in folds]))
  assert c["diff"] == pytest.approx(want["diff"]) and c["p"] == pytest.approx(want["p"])
  assert c["ci95"] == pytest.approx(want["ci95"]) and c["k"] == 10 and c["df"] == 9
  b = next(c for c in comps if c["b"] == "VGG19" and c["test"] == statistics.TEST_BOOTSTRAP)
  by_name = {m["name"]: m for m in rep["models"]}
  assert b["diff"] == pytest.approx(by_name["NASRL"]["auroc_pooled"]["value"]
                                    - by_name["VGG19"]["auroc_pooled"]["value"])
  assert b["ci95"][0] <= b["diff"] <= b["ci95"][1]
  assert 1 / (rep["bootstrap"]["resamples"] + 1) <= b["p"] <= 1


def test_markdown_reads_as_the_protocol_says(nested):
  _, _, _, rep, md = nested
  assert md.index("Protocol: nested") < md.index("## Table 1")  # The protocol comes first.
  assert "never seen by any search, re-scoring or selection" in md
  assert "running this NAS procedure on a new cohort" in md
  assert "OPTIMISTIC" not in md
  for c in rep["comparisons"]:
    assert c["sentence"] in md
    if not c["significant"]:
      assert "no significant difference" in c["sentence"] or "no difference can be claimed" in \
          c["sentence"]
      assert " is higher" not in c["sentence"]
  for m in rep["models"]:
    assert statistics.learned_sentence(m) in md
    assert markdown.stat_text(m["auroc"]) in md  # Table 1: "mean +- std [low, high]".
  assert "0.77 +- 0.07" in md and "139,577,282" in md and report.PAPER_SOURCE in md
  for heading in ("Per subject", "At the validation threshold", "Per outer fold",
                  "per search seed", "## Comparisons", "## Winners of every outer fold",
                  "## Re-scoring", "## Search cost", "NAS checklist", "device-hours"):
    assert heading in md
  assert "Per held-out machine" not in md and "Grade mode" not in md
  for name, a in rep["winner_agreement"].items():
    assert markdown.agreement_sentence(name, a) in md
  for key in ("python", "jax", "orbax-checkpoint"):
    assert f"{key} {rep['versions'][key]}" in md


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
    assert float(row["specificity_std_over_seeds"]) == pytest.approx(
        m["specificity"]["std_over_seeds"])
    assert int(row["Parameters"]) == m["params"] and int(row["folds"]) == 10
    assert int(row["seeds"]) == 3


# --------------------------------------------------------------------------- variants


def test_significant_difference_and_a_model_that_did_not_learn():
  rendered = report.render(fake_results.make_results(skill={"VGG19": 0.0}, **SMALL), plots=False)
  comps = [c for c in rendered.report["comparisons"] if c["b"] == "VGG19"]
  assert all(c["significant"] for c in comps)
  assert all("NASRL is higher, significant after Holm adjustment" in c["sentence"] for c in comps)
  vgg = next(m for m in rendered.report["models"] if m["name"] == "VGG19")
  sentence = statistics.learned_sentence(vgg)
  assert sentence.startswith("VGG19 did not clearly learn: AUROC")
  assert "includes chance (0.5)" in sentence and sentence in rendered.markdown


def test_sentence_wording_cases():
  row = {"a": "NASRL", "b": "RandomSearch", "metric": "auroc", "test": statistics.TEST_BOOTSTRAP,
         "diff": 0.012, "ci95": [-0.05, 0.07], "p": 0.3, "p_holm": 0.71, "significant": False,
         "family": 6}
  assert statistics.sentence(row) == (
      "NASRL vs RandomSearch: AUROC +0.01 [-0.05, 0.07], adjusted p = 0.71 (paired subject "
      "bootstrap of pooled out-of-fold predictions): no significant difference at this budget.")
  row.update(p=0.02, p_holm=0.12)  # Below 0.05 only before the adjustment: still no claim.
  assert "not significant after Holm adjustment over 6 comparisons (unadjusted p = 0.020)" in \
      statistics.sentence(row)
  row.update(diff=-0.08, ci95=[-0.12, -0.04], p=0.0005, p_holm=0.003, significant=True)
  assert "RandomSearch is higher, significant" in statistics.sentence(row)
  assert "adjusted p = 0.003" in statistics.sentence(row)


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
  nasrl = next(m for m in rep["models"] if m["name"] == "NASRL")
  rows = nasrl["search_fold_test"]
  assert [r["seed"] for r in rows] == [0, 1]
  y, p = _fold_view(src)[0, 1]
  correct = int(np.sum((p >= 0.5) == y))
  assert rows[1]["accuracy"]["count"] == correct and rows[1]["accuracy"]["n"] == y.size
  assert rows[1]["accuracy"]["ci95"] == pytest.approx(
      list(proportion_confint(correct, y.size, method="wilson")))
  assert _contract_problems(rep) == []


def test_grade_mode_binary_view_and_four_grades():
  results = fake_results.make_results(label_mode="grade", **SMALL)
  rendered = report.render(results, plots=False)
  rep, md = rendered.report, rendered.markdown
  src = next(m for m in results["models"] if m["name"] == "NASRL")
  nasrl = next(m for m in rep["models"] if m["name"] == "NASRL")
  # Table 1 is the binary view: P(fatty) = 1 - P(S0), fatty = grade > 0.
  aurocs = _per_fold_mean({k: skm.roc_auc_score(y, p) for k, (y, p) in _fold_view(src).items()})
  assert nasrl["auroc"]["mean"] == pytest.approx(np.mean(list(aurocs.values())))
  grade = {}
  for f in src["folds"]:
    y, prob = np.asarray(f["test"]["label"]), np.asarray(f["test"]["prob"])
    grade[f["fold"], f["seed"]] = metrics.multiclass_metrics(y, prob)
    assert grade[f["fold"], f["seed"]]["accuracy"] == pytest.approx(
        skm.accuracy_score(y, prob.argmax(axis=1)))
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
  assert math.isfinite(nasrl["auroc"]["mean"]) and _contract_problems(rep) == []
  assert "(4 of 5 folds)" in rendered.markdown
  c = next(c for c in rep["comparisons"] if c["b"] == "VGG19" and c["test"] == statistics.TEST_T
           and c["metric"] == "auroc")
  assert c["k"] == 4 and c["p"] is not None


def test_two_models_give_a_family_of_three():
  results = fake_results.make_results(models=("VGG19", "NASRL"), **SMALL)
  rep = report.render(results, plots=False).report
  assert [m["name"] for m in rep["models"]] == ["NASRL", "VGG19"]
  assert [c["b"] for c in rep["comparisons"]] == ["VGG19"] * 3
  assert all(c["family"] == 3 for c in rep["comparisons"])


def test_winner_agreement_hand_case():
  rows = [{"architecture": "3x64 5x128", "kernels": [3, 5], "filters": [64, 128]},
          {"architecture": "3x64 5x128", "kernels": [3, 5], "filters": [64, 128]},
          {"architecture": "3x64 1x256"}]  # Parsed from the string.
  a = aggregate.agreement(rows)
  # Layer 1: kernels 3,3,3 and filters 64,64,64 agree fully; layer 2: 5,5,1 and 128,128,256.
  assert a["winners"] == 3 and a["distinct"] == 2 and a["modal_count"] == 2
  assert a["kernel_agreement"] == pytest.approx((1 + 2 / 3) / 2)
  assert a["filter_agreement"] == pytest.approx((1 + 2 / 3) / 2)
  assert "2 distinct architectures" in markdown.agreement_sentence("NASRL", a)
  assert a["kernel_chance"] is None  # No choice set given, no chance level.
  a = aggregate.agreement(rows, kernel_choices=4, filter_choices=4)
  # 3 winners choosing uniformly among 4: the modal count is 1 (prob 3/8), 2 (9/16) or 3 (1/16),
  # so the expected modal share is (3/8 * 1 + 9/16 * 2 + 1/16 * 3) / 3 = 0.5625.
  assert a["kernel_chance"] == pytest.approx(0.5625, abs=0.01)
  assert "uniform random choices would give 56 %" in markdown.agreement_sentence("NASRL", a)
  one = aggregate.agreement(rows[:2])
  assert "found one architecture" in markdown.agreement_sentence("NASRL", one)


def test_does_not_mutate_results():
  results = fake_results.make_results(**SMALL)
  before = copy.deepcopy(results)
  report.render(results, plots=False)
  assert results == before


def test_importing_the_report_does_not_import_matplotlib():
  code = "import sys, nasrl_jax.report; print('matplotlib' in sys.modules)"
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       check=True)
  assert out.stdout.strip() == "False"


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
    (lambda r: _model(r)["folds"][1]["test"]["prob"].__setitem__(0, [2.0, -1.0]),
     "['prob'][0]: expected finite probabilities"),
    (lambda r: _model(r)["folds"][1]["test"]["label"].__setitem__(3, 2),
     "['label'][3]: expected an integer label in 0..1"),
    (lambda r: _model(r)["folds"][0].pop("n_train"), "'n_train' must be a positive int"),
    (lambda r: _model(r)["folds"][3].update(fold=0), "fold 0 seed 1 appears twice"),
    (lambda r: _model(r)["folds"][2]["test"]["subject_id"].__setitem__(
        0, _model(r)["folds"][0]["test"]["subject_id"][0]),
     "is in the test parts of folds 0 and 1"),
    (lambda r: r["outer_folds"][0]["winners"]["NASRL"][0].pop("params"), "missing 'params'"),
    (lambda r: r.update(outer_folds=[]), "results['outer_folds']: expected a non-empty list"),
    (lambda r: r["rescore"]["NASRL"][0].pop("mean"), "results['rescore']['NASRL'][0]"),
    (lambda r: r.update(class_names=["S0", "S1", "S2", "S3"]), "binary label mode needs 2"),
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
  assert "validation-threshold table" in sentence
  entry["folds"] = [fold(0.8, 0.4), fold(float("nan"), 1.0)]  # One-class test part: no claim.
  assert statistics.one_class_sentence(entry) == ""
  rendered = report.render(fake_results.make_results(**SMALL), plots=False)
  sentences = [statistics.one_class_sentence(m) for m in rendered.report["models"]]
  assert all(s in rendered.markdown for s in sentences if s)
  assert rendered.markdown.count("called every test image") == sum(bool(s) for s in sentences)
  one = copy.deepcopy(rendered.report)  # Force one model's test trainings to all-fatty.
  for f in one["models"][0]["folds"]:
    f["metrics"]["image"].update(sensitivity=1.0, specificity=0.0)
  lines = markdown.summary_section(one)
  assert f"- {statistics.one_class_sentence(one['models'][0])}" in lines
