"""End to end: the tiny config through the nested protocol, leakage, resume, refusals, grade mode."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import compile_cache_flag, hooked_trainings, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "pipeline_worker.py")
MODELS = {"NASRL", "VGG19", "RandomSearch", "Evolution"}
# Report fields that measure the machine rather than the experiment (exempt from equality).
MACHINE = {"date", "wall_seconds", "compile_seconds", "compile_share", "fps", "latency_ms_median",
           "latency_ms_p90", "throughput", "train_seconds", "device_hours", "compile", "compute",
           "command", "seconds",
           "git_commit"}  # Provenance: a commit made while the suite runs must not fail it.


def _report(workdir):
  with open(os.path.join(workdir, "report.json"), encoding="utf-8") as f:
    return json.load(f)


def _strip(obj):
  """The report without machine measurements, floats rounded (for run-to-run comparison)."""
  if isinstance(obj, dict):
    return {k: _strip(v) for k, v in obj.items() if k not in MACHINE and not k.endswith("seconds")}
  if isinstance(obj, list):
    return [_strip(v) for v in obj]
  if isinstance(obj, float):
    return round(obj, 5)
  return obj


@pytest.mark.slow(cpu_s=64)
def test_outputs_follow_the_contract(tiny_run):
  w = tiny_run.workdir
  for f in ("report.md", "report.html", "report.json", "table1.csv", "folds.json", "config.json",
            "search/history.jsonl", "search/rescore/outer0.jsonl", "plots/calibration.png",
            "plots/decision_curve.png"):
    assert (w / f).exists(), f
  rep = _report(w)
  assert rep["protocol"] == "nested"
  assert {m["name"] for m in rep["models"]} == MODELS
  n = tiny_run.config.eval.test_seeds
  for m in rep["models"]:
    for f in ("model.onnx", "model_card.md", "predict_onnx.py"):
      assert (w / "models" / m["name"] / f).is_file(), (m["name"], f)
    for k in ("accuracy", "sensitivity", "specificity", "auroc"):
      assert m[k]["ci95"] is None or m[k]["ci95"][0] <= m[k]["mean"] <= m[k]["ci95"][1]
      assert m[k]["ci95"] is not None or m[k]["reason"]
    assert len(m["folds"]) == 2 * n  # 2 outer folds x 1 search seed x n training seeds.
    assert sorted((f["fold"], f["training_seed"]) for f in m["folds"]) == [
        (i, t) for i in range(2) for t in range(n)]
  assert len(rep["outer_folds"]) == 2
  for f in rep["outer_folds"]:
    assert set(f["winners"]) == MODELS - {"VGG19"}
    assert all({"seed", "architecture", "params"} <= set(w_) for ws in f["winners"].values()
               for w_ in ws)
  assert rep["rescore"] and all({"fold", "seed", "architecture", "search_reward", "mean", "std"}
                                <= set(r) for rows in rep["rescore"].values() for r in rows)
  assert rep["primary"]["comparisons"] and all(
      {"a", "b", "metric", "diff", "ci95", "p", "p_holm", "test", "estimable", "reason"} <= set(c)
      for c in rep["primary"]["comparisons"] + rep["comparisons"])
  assert rep["cohort"] == {"source": "synthetic", "seed": 0, "tuned_on_it": False,
                           "tuning_cohorts": [1]}
  assert rep["versions"]["git_commit"] is None or len(rep["versions"]["git_commit"]) >= 40
  for k in ("python", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy"):
    assert rep["versions"][k]
  rows = [json.loads(l) for l in (w / "search/history.jsonl").read_text().splitlines()]
  cfg = json.loads((w / "config.json").read_text())
  per_search = cfg["search"]["num_steps"] * cfg["search"]["children_per_step"]
  assert len(rows) == 2 * 3 * per_search  # outer folds x strategies x children.
  assert all({"strategy", "seed", "outer_fold", "step", "architecture", "reward"} <= set(r)
             for r in rows)
  assert {r["strategy"] for r in rows} == {"reinforce", "random", "evolution"}
  for s in ("reinforce", "random", "evolution"):
    assert (w / "search" / s / "seed0" / "outer1" / "history.jsonl").exists()
  assert "nested" in (w / "report.md").read_text()


def test_searches_of_different_outer_folds_draw_different_architectures(tiny_run):
  """Each (outer fold, strategy, seed) search has its own stream: same slots, other samples."""
  rows = [json.loads(l) for l in (tiny_run.workdir / "search/history.jsonl").read_text()
          .splitlines()]
  for strategy in ("reinforce", "random", "evolution"):
    by_fold = [[r["architecture"] for r in rows if r["strategy"] == strategy and
                r["outer_fold"] == f] for f in (0, 1)]
    assert len(by_fold[0]) == len(by_fold[1]) > 0
    assert all(a != b for a, b in zip(*by_fold)), strategy
  rep = _report(tiny_run.workdir)
  cost = {r["strategy"]: r for r in rep["search_cost"]}
  for strategy in ("reinforce", "random", "evolution"):
    archs = {r["architecture"] for r in rows if r["strategy"] == strategy}
    assert cost[strategy]["distinct_in_run"] == len(archs)


def test_each_program_compiles_once(tiny_run):
  comp = tiny_run.results["compile"]
  assert comp["compiles"] <= comp["distinct_programs"] <= 2 * comp["distinct_architectures"]
  assert not comp["recompiled_programs"]


def test_no_test_subject_of_a_fold_reaches_its_search_rescoring_or_selection(tiny_run):
  """Every training call was hooked: searches and re-scoring of fold i never touch fold i's test
  images (nor their subjects); the test training sees its test part only as `test_idx`."""
  _, _, folds = __import__("nasrl_jax.data.folds", fromlist=["x"]).read_folds(
      tiny_run.workdir / "folds.json")
  sid = np.asarray(json.loads((tiny_run.workdir / "folds.json").read_text())["subject_id"])
  phases = {c["tag"]["phase"] for c in tiny_run.calls}
  assert phases == {"search", "rescore", "final"}
  for c in tiny_run.calls:
    fold = folds[c["tag"]["outer"]]
    test = set(fold["test"].tolist())
    test_subjects = set(sid[list(test)])
    assert not c["used"] & test
    assert not {sid[i] for i in c["used"]} & test_subjects
    if c["tag"]["phase"] == "final":
      assert c["test"] == test
      assert c["val"] == set(fold["val"].tolist())
    else:
      assert c["test"] is None
  # The memo is keyed by outer fold: no reward of fold 0 was reused in fold 1.
  rows = [json.loads(l) for l in (tiny_run.workdir / "search/history.jsonl").read_text()
          .splitlines()]
  first = {}
  for r in rows:
    if r["status"] == "ok":
      first.setdefault((r["architecture"], r["outer_fold"]), r)
  for r in rows:
    if r["status"] == "memo":
      assert (r["architecture"], r["outer_fold"]) in first


def test_exported_model_reproduces_its_test_predictions(tiny_run):
  import jax
  import ml_collections
  from nasrl_jax import child, data, export
  w = tiny_run.workdir
  cfg = ml_collections.ConfigDict(json.loads((w / "config.json").read_text()))
  ds = data.load(cfg.data)
  rep = _report(w)
  _, _, folds = __import__("nasrl_jax.data.folds", fromlist=["x"]).read_folds(w / "folds.json")
  for m in rep["models"]:
    model = export.load(w / "models" / m["name"])
    assert str(model.arch) == m["architecture"]
    meta = model.metadata
    assert meta["source"] == "best_validation_outer_fold"
    fold_result = next(f for f in m["folds"] if f["fold"] == meta["fold"] and
                       f["seed"] == meta["seed"] and
                       f["training_seed"] == meta["training_seed"])
    test = folds[meta["fold"]]["test"]
    logits, _ = child.apply(model.graphdef, model.params, model.batch_stats, ds.images[test],
                            train=False)
    probs = np.asarray(jax.nn.softmax(logits))
    np.testing.assert_allclose(probs, np.asarray(fold_result["test"]["prob"]), atol=2e-5)
    assert 0.0 <= model.threshold <= 1.0


def test_rerun_resumes_without_training(tiny_run, tmp_path):
  import shutil
  from nasrl_jax import io_utils, pipeline
  w = tmp_path / "w"
  shutil.copytree(tiny_run.workdir, w)  # The shared run stays as it is for the other tests.
  before = (w / "search/history.jsonl").read_text()
  calls = []
  with hooked_trainings(lambda *a: calls.append(a)):
    res = pipeline.run(tiny_run.config, str(w))
  assert not calls
  assert (w / "search/history.jsonl").read_text() == before
  assert _strip(io_utils.to_json_safe(res["models"])) == _strip(tiny_run.results["models"])


class _Interrupt(BaseException):
  """Stops an in-process run at a training (BaseException: nothing in the pipeline catches it)."""


def _stop_at(phase, n):
  seen = {"n": 0}

  def hook(arch, splits, test_idx, tag):
    del arch, splits, test_idx
    if (tag or {}).get("phase") == phase:
      if seen["n"] == n:
        raise _Interrupt(f"{phase}:{n}")
      seen["n"] += 1

  return hook


@pytest.mark.slow(cpu_s=35)
def test_interrupted_killed_and_resumed_run_gives_the_same_report(
    tiny_run, tmp_path):
  """One process-level SIGKILL (mid re-scoring, in a subprocess: torn files, nothing flushed) and
  two in-process interruptions (mid-search, mid test training); every resume continues from the
  files, and the finished run's report equals the uninterrupted session run's."""
  from nasrl_jax import pipeline
  w = tmp_path / "w"
  c = load_config("tiny")
  c.data.cache_dir = tiny_run.data_cache
  with hooked_trainings(_stop_at("search", 3)), pytest.raises(_Interrupt):
    pipeline.run(c, str(w))
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  p = subprocess.run([sys.executable, WORKER, str(w), tiny_run.data_cache, "--kill=rescore:1"],
                     env=env, capture_output=True, text=True, timeout=600)
  assert p.returncode == -9, p.stderr[-2000:]
  with hooked_trainings(_stop_at("final", 2)), pytest.raises(_Interrupt):
    pipeline.run(c, str(w))
  pipeline.run(c, str(w))
  assert _strip(_report(w)) == _strip(_report(tiny_run.workdir))


def test_incompatible_resume_and_old_workdirs_are_refused(tiny_run, tmp_path):
  from nasrl_jax import pipeline
  from nasrl_jax.errors import UserInputError
  c = tiny_run.config.copy_and_resolve_references()
  c.seed = 3
  c.train.epochs = 5
  with pytest.raises(UserInputError, match="seed.*train.epochs"):
    pipeline.run(c, str(tiny_run.workdir))
  c = tiny_run.config.copy_and_resolve_references()
  c.eval.primary = ("NASRL vs Evolution", "subject.auroc")  # Not a harmless field.
  with pytest.raises(UserInputError, match="eval.primary"):
    pipeline.run(c, str(tiny_run.workdir))
  old = tmp_path / "old"
  old.mkdir()
  (old / "config.json").write_text(json.dumps({"seed": 0}))
  with pytest.raises(UserInputError, match="earlier nasrl_jax layout"):
    pipeline.run(tiny_run.config, str(old))

  # A config.json written before a field was added (run_config.ADDED_FIELDS) meant its old value.
  from nasrl_jax import run_config  # pylint: disable=g-import-not-at-top
  before = tmp_path / "before"
  before.mkdir()
  saved = json.loads((tiny_run.workdir / "config.json").read_text())
  del saved["train"]["cpu_fusion_emitters"]
  (before / "config.json").write_text(json.dumps(saved))
  (before / "run.json").write_text((tiny_run.workdir / "run.json").read_text())
  c = tiny_run.config.copy_and_resolve_references()
  assert c.train.cpu_fusion_emitters is False  # The tiny config's value, not the old default.
  with pytest.raises(UserInputError, match=r"train.cpu_fusion_emitters \(True -> False\)"):
    run_config.check_resume(c, str(before))
  c.train.cpu_fusion_emitters = True
  run_config.check_resume(c, str(before))  # The same experiment: no error.


def test_bad_config_is_one_clear_line(tmp_path):
  cmd = [sys.executable, os.path.join(ROOT, "launch.py"),
         "--config=" + os.path.join(ROOT, "configs/fatty_liver.py:tiny"),
         f"--workdir={tmp_path / 'w'}", "--config.data.source=pacs", compile_cache_flag()]
  p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert p.returncode == 2
  assert p.stderr.strip().splitlines()[-1].startswith("error: config.data.source='pacs'")
  assert "Traceback" not in p.stderr
  assert not (tmp_path / "w" / "config.json").exists()


@pytest.mark.slow(cpu_s=19)
def test_grade_mode_runs_end_to_end(tiny_data_cache, tmp_path):
  from nasrl_jax import pipeline
  c = load_config("tiny")
  c.data.cache_dir = tiny_data_cache
  c.data.label_mode = "grade"
  c.search.strategies = ("random",)  # Grade mode is about labels and metrics: one strategy,
  c.search.rescore_top_k = 0  # no re-scoring, one training per model and fold.
  c.eval.test_seeds = 1
  c.eval.primary = ("RandomSearch vs VGG19", "subject.auroc")
  res = pipeline.run(c, str(tmp_path / "w"))
  rep = _report(tmp_path / "w")
  assert rep["label_mode"] == "grade"
  assert {m["name"] for m in rep["models"]} == {"VGG19", "RandomSearch"}
  probs = np.asarray(res["models"][0]["folds"][0]["test"]["prob"])
  assert probs.shape[1] == 4
  text = (tmp_path / "w" / "report.md").read_text()
  assert "S0 vs S1-S3" in text or "binary view" in text


@pytest.mark.slow(cpu_s=32)
def test_final_search_exports_deployable_models_and_leaves_the_estimate(tiny_run, tmp_path):
  """Turned on after the run: one search on all subjects; Table 1 and its CIs do not change."""
  import shutil
  from nasrl_jax import export, pipeline
  w = tmp_path / "w"
  shutil.copytree(tiny_run.workdir, w)
  c = tiny_run.config.copy_and_resolve_references()
  c.eval.final_search = True
  res = pipeline.run(c, str(w))
  assert set(res["final_search"]) == MODELS
  for m in res["models"]:
    meta = export.load(w / "models" / m["name"]).metadata
    assert meta["source"] == "final_search" and meta["fold"] == -1
  keep = lambda rep: _strip({k: rep[k] for k in ("models", "primary", "comparisons",
                                                 "outer_folds")})
  before, after = keep(_report(tiny_run.workdir)), keep(_report(w))
  for m in before["models"] + after["models"]:
    for k in ("architecture", "kernels", "filters", "params", "flops", "exported"):
      m.pop(k, None)  # The exported model changed (that is the point); nothing else.
  assert before == after
  rows = [json.loads(l) for l in (w / "search/history.jsonl").read_text().splitlines()]
  assert {r["outer_fold"] for r in rows} == {0, 1, -1}
