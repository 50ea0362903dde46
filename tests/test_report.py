"""Tests for nasrl_jax.report: files, JSON schema and numbers, CSV rows, markdown, plots."""

import copy
import csv
import json
import math
import os

import numpy as np
from PIL import Image
import pytest
import scipy.stats

from nasrl_jax import metrics
from nasrl_jax import report
from nasrl_jax.errors import UserInputError

NUM_FOLDS = 10
COMMAND = "python launch.py --config=configs/fatty_liver.py:quick --workdir=W"


def _fake_part(rng, n, skill):
  """One test part's metrics with a consistent confusion matrix and a ROC curve."""
  pos = int(rng.integers(n // 3, 2 * n // 3))
  neg = n - pos
  tp = int(rng.binomial(pos, skill))
  tn = int(rng.binomial(neg, skill - 0.05))
  fpr = np.sort(np.concatenate([[0.0], rng.uniform(0, 1, 8), [1.0]]))
  tpr = np.sort(np.clip(fpr + rng.uniform(0, 0.4, fpr.size), 0, 1))
  tpr[0], tpr[-1] = 0.0, 1.0
  return {"accuracy": (tp + tn) / n, "sensitivity": tp / pos, "specificity": tn / neg,
          "auroc": float(rng.uniform(0.6, 0.95)),
          "confusion": [[tn, neg - tn], [pos - tp, tp]], "n": n,
          "roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist()}}


def _fake_model(rng, name, skill, params):
  kernels = rng.choice([1, 3, 5, 7], 16).tolist()
  filters = rng.choice([64, 128, 256, 512], 16).tolist()
  folds = [{"fold": f, "image": _fake_part(rng, 31, skill), "subject": _fake_part(rng, 24, skill),
            "best_epoch": int(rng.integers(1, 30)), "train_seconds": 3.2, "compile_seconds": 2.1}
           for f in range(NUM_FOLDS)]
  return {"name": name, "architecture": " ".join(f"{k}x{f}" for k, f in zip(kernels, filters)),
          "kernels": kernels, "filters": filters, "blocks": [2, 2, 4, 4, 4], "params": params,
          "flops": 1.2e10, "fps": 41.0, "throughput": 900.0, "throughput_batch": 64,
          "folds": folds,
          "search_fold_test": {"image": _fake_part(rng, 31, skill),
                               "subject": _fake_part(rng, 24, skill)}}


def _fake_strategy(rng, with_baseline):
  steps, per = 4, 4
  rewards = rng.uniform(0.5, 0.9, steps * per).tolist()
  per_step, best = [], 0.0
  for s in range(steps):
    chunk = rewards[s * per:(s + 1) * per]
    best = max(best, max(chunk))
    per_step.append({"step": s, "mean_reward": float(np.mean(chunk)),
                     "baseline": 0.6 + 0.02 * s if with_baseline else None,
                     "best_so_far": best, "entropy": 40.0 - s if with_baseline else None})
  return {"children": steps * per, "steps": steps, "wall_seconds": 40.0, "compile_seconds": 12.0,
          "train_seconds": 25.0, "memo_hits": 1, "failed": 0,
          "best": {"architecture": "3x64 3x64", "reward": best, "params": 123},
          "per_step": per_step, "rewards": rewards}


def fake_results(seed=0, names=("NASRL", "VGG19", "RandomSearch")):
  rng = np.random.default_rng(seed)
  skill = {"NASRL": 0.8, "VGG19": 0.7, "RandomSearch": 0.75}
  params = {"NASRL": 31_164_674, "VGG19": 139_577_282, "RandomSearch": 50_000_000}
  return {
      "command": COMMAND, "config_variant": "quick", "date": "2026-11-25T19:00:00Z",
      "device": "cpu (2 cores)",
      "data": {"name": "synthetic", "images": 310, "subjects": 242, "image_shape": [32, 32, 1],
               "labels": {"0": 96, "1": 214}, "devices": {"LOGIQ_S8": 100, "Aplio300": 210},
               "num_folds": NUM_FOLDS, "search_fold": 0,
               "search_saw": {"train_images": 250, "val_images": 30, "train_subjects": 195,
                              "val_subjects": 24, "test_images_never_seen": 30}},
      "models": [_fake_model(rng, n, skill[n], params[n]) for n in names],
      "search": {"reinforce": _fake_strategy(rng, True), "random": _fake_strategy(rng, False),
                 "seeds": [{"seed": 0, "best_reward": 0.8, "best_architecture": "a"},
                           {"seed": 1, "best_reward": 0.78, "best_architecture": "b"}],
                 "devices": 1, "processes": 1},
  }


def _strict_json(path):
  """Parses JSON refusing NaN/Infinity (invalid JSON that Python would otherwise accept)."""
  def refuse(name):
    raise ValueError(f"non-standard JSON constant {name}")
  with open(path, encoding="utf-8") as f:
    return json.load(f, parse_constant=refuse)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("report"))
  results = fake_results()
  return results, workdir, report.write_report(results, workdir)


def test_files_exist(written):
  _, workdir, paths = written
  for key in ("report_md", "report_json", "table1_csv"):
    assert os.path.isfile(paths[key]) and os.path.dirname(paths[key]) == workdir
  assert set(paths["plots"]) == {"search_rewards", "roc", "confusion", "architectures"}
  # No temp files from the atomic writes are left behind.
  leftovers = [f for _, _, files in os.walk(workdir) for f in files if f.endswith(".tmp")]
  assert not leftovers


def test_json_schema_and_aggregates_match_numpy(written):
  results, _, paths = written
  rep = _strict_json(paths["report_json"])
  assert {"models", "search", "data", "comparisons", "command", "date", "device"} <= set(rep)
  assert rep["command"] == COMMAND
  assert [m["name"] for m in rep["models"]] == ["NASRL", "VGG19", "RandomSearch"]
  src = {m["name"]: m for m in results["models"]}
  for m in rep["models"]:
    assert {"name", "architecture", "params", "flops", "fps", "accuracy", "sensitivity",
            "specificity", "auroc", "folds", "subject", "search_fold_test"} <= set(m)
    assert m["params"] == src[m["name"]]["params"]
    assert len(m["folds"]) == NUM_FOLDS
    for level, agg in (("image", m), ("subject", m["subject"])):
      for name in report.METRICS:
        values = [f[level][name] for f in src[m["name"]]["folds"]]
        expected = metrics.mean_std(values)
        assert agg[name]["mean"] == pytest.approx(np.mean(values), abs=1e-12)
        assert agg[name]["std"] == pytest.approx(np.std(values, ddof=1), abs=1e-12)  # Sample std.
        assert agg[name]["std"] == pytest.approx(expected["std"], abs=1e-12)


def test_comparisons_are_paired_wilcoxon(written):
  results, _, paths = written
  rep = _strict_json(paths["report_json"])
  pairs = {(c["a"], c["b"], c["metric"]) for c in rep["comparisons"]}
  assert pairs == {("NASRL", "VGG19", "accuracy"), ("NASRL", "VGG19", "auroc"),
                   ("NASRL", "RandomSearch", "accuracy"), ("NASRL", "RandomSearch", "auroc")}
  src = {m["name"]: m for m in results["models"]}
  c = next(c for c in rep["comparisons"] if c["b"] == "VGG19" and c["metric"] == "accuracy")
  a = [f["image"]["accuracy"] for f in src["NASRL"]["folds"]]
  b = [f["image"]["accuracy"] for f in src["VGG19"]["folds"]]
  expected = scipy.stats.wilcoxon(a, b).pvalue
  assert c["n"] == NUM_FOLDS
  assert 0.0 < c["p_value"] < 1.0
  assert c["p_value"] == pytest.approx(expected)
  assert c["mean_diff"] == pytest.approx(np.mean(a) - np.mean(b))


def test_table1_csv_rows(written):
  _, _, paths = written
  with open(paths["table1_csv"], newline="", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  assert [r["Model"] for r in rows] == ["NASRL", "VGG19", "RandomSearch"]
  rep = _strict_json(paths["report_json"])
  for row, m in zip(rows, rep["models"]):
    assert tuple(row) == report.TABLE1_COLUMNS
    assert row["Accuracy"] == f"{m['accuracy']['mean']:.2f} +- {m['accuracy']['std']:.2f}"
    assert float(row["accuracy_mean"]) == pytest.approx(m["accuracy"]["mean"])
    assert float(row["specificity_std"]) == pytest.approx(m["specificity"]["std"])
    assert int(row["Parameters"]) == m["params"]
    assert float(row["FPS"]) == pytest.approx(41.0)
    assert int(row["folds"]) == NUM_FOLDS


def test_markdown_contents(written):
  _, _, paths = written
  with open(paths["report_md"], encoding="utf-8") as f:
    md = f.read()
  rep = _strict_json(paths["report_json"])
  assert COMMAND in md
  for c in rep["comparisons"]:
    assert report._p_text(c["p_value"]) in md
  assert "0.77 +- 0.07" in md and "139,577,282" in md  # The paper's reference rows.
  assert report.PAPER_SOURCE in md
  assert "never seen" in md and "optimistic" in md  # The integrity statement.
  assert "Per subject" in md and "Search cost" in md and "search seed" in md
  for name in ("search_rewards", "roc", "confusion", "architectures"):
    assert f"(plots/{name}.png)" in md


def test_plots_are_valid_pngs(written):
  _, _, paths = written
  for path in paths["plots"].values():
    assert os.path.getsize(path) > 10_000  # A drawn figure, not an empty canvas.
    with Image.open(path) as im:
      im.verify()
    with Image.open(path) as im:
      assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 200
      # More than a blank page: many distinct colours.
      assert len(im.convert("RGB").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 50


def test_two_models_only(tmp_path):
  results = fake_results(seed=1, names=("VGG19", "NASRL"))
  del results["search"]["random"]
  paths = report.write_report(results, str(tmp_path))
  rep = _strict_json(paths["report_json"])
  assert [m["name"] for m in rep["models"]] == ["NASRL", "VGG19"]
  assert {c["b"] for c in rep["comparisons"]} == {"VGG19"}
  with open(paths["table1_csv"], encoding="utf-8") as f:
    assert len(f.read().strip().splitlines()) == 3
  for path in paths["plots"].values():
    with Image.open(path) as im:
      assert im.format == "PNG"


def test_nan_auroc_written_as_null(tmp_path):
  results = fake_results(seed=2)
  nasrl = results["models"][0]
  nasrl["folds"][3]["image"]["auroc"] = float("nan")  # One-class test part.
  nasrl["folds"][3]["image"]["roc"] = {"fpr": [], "tpr": []}
  nasrl["search_fold_test"]["subject"]["auroc"] = float("nan")
  paths = report.write_report(results, str(tmp_path))
  rep = _strict_json(paths["report_json"])  # Would raise on NaN.
  m = rep["models"][0]
  assert m["folds"][3]["image"]["auroc"] is None
  assert m["search_fold_test"]["subject"]["auroc"] is None
  # metrics.mean_std leaves the undefined fold out and says so; the table says over how many.
  assert math.isfinite(m["auroc"]["mean"]) and m["auroc"]["n_nan"] == 1
  with open(paths["report_md"], encoding="utf-8") as f:
    assert f"{report._pm(m['auroc'])} (9 folds)" in f.read()
  # The NaN fold is dropped from the paired AUROC test, not the whole test.
  c = next(c for c in rep["comparisons"] if c["b"] == "VGG19" and c["metric"] == "auroc")
  assert c["n"] == NUM_FOLDS - 1 and c["p_value"] is not None


def test_does_not_mutate_results(tmp_path):
  results = fake_results(seed=3)
  before = copy.deepcopy(results)
  report.write_report(results, str(tmp_path))
  assert results == before


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r.pop("models"), "results['models']"),
    (lambda r: r["models"][1]["folds"][2]["image"].pop("sensitivity"), "'sensitivity'"),
    (lambda r: r["models"][0]["folds"][0].pop("subject"), "'subject'"),
    (lambda r: r["models"].append(copy.deepcopy(r["models"][0])), "appears twice"),
])
def test_bad_results_raise_before_writing(tmp_path, mutate, message):
  results = fake_results(seed=4)
  mutate(results)
  with pytest.raises(UserInputError, match=message.replace("[", r"\[").replace("]", r"\]")):
    report.write_report(results, str(tmp_path))
  assert not os.listdir(tmp_path)
