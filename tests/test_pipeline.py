"""End to end: launch.py on the tiny config, resume, and refusal of bad configs."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import compile_cache_flag

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _launch(workdir, *flags, cache_dir):
  cmd = [sys.executable, os.path.join(ROOT, "launch.py"),
         "--config=" + os.path.join(ROOT, "configs/fatty_liver.py:tiny"), f"--workdir={workdir}",
         f"--config.data.cache_dir={cache_dir}", compile_cache_flag(), *flags]
  return subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  base = tmp_path_factory.mktemp("pipeline")
  w = base / "w"
  p = _launch(w, cache_dir=base / "cache")
  assert p.returncode == 0, p.stderr[-3000:]
  return base, w


def test_outputs_and_report(tiny_run):
  _, w = tiny_run
  for f in ("report.md", "report.json", "table1.csv", "folds.json", "config.json",
            "search/history.jsonl", "random_search/history.jsonl"):
    assert (w / f).exists(), f
  for plot in ("search_rewards.png", "roc.png", "confusion.png", "architectures.png"):
    assert (w / "plots" / plot).stat().st_size > 5000
  rep = json.loads((w / "report.json").read_text())
  names = [m["name"] for m in rep["models"]]
  assert set(names) == {"NASRL", "VGG19", "RandomSearch"}
  cfg = json.loads((w / "config.json").read_text())
  for m in rep["models"]:
    assert len(m["folds"]) == cfg["data"]["num_folds"] == 3
    for k in ("accuracy", "sensitivity", "specificity", "auroc"):
      assert set(m[k]) >= {"mean", "std"}
    assert m["params"] > 0 and m["fps"] > 0
  vgg = next(m for m in rep["models"] if m["name"] == "VGG19")
  assert vgg["architecture"].startswith("3x64 3x64 | 3x128")
  hist = [json.loads(l) for l in (w / "search/history.jsonl").read_text().splitlines()]
  assert len(hist) == cfg["search"]["num_steps"] * cfg["search"]["children_per_step"]
  assert "python" in (w / "report.md").read_text()
  for name in names:
    assert (w / "models" / name).is_dir()


def test_search_never_saw_a_test_index(tiny_run):
  """folds.json: parts disjoint by subject, tests partition the images; the search used fold f."""
  _, w = tiny_run
  folds = json.loads((w / "folds.json").read_text())
  sid = folds["subject_id"]
  tests = sorted(i for f in folds["folds"] for i in f["test"])
  assert tests == list(range(len(sid)))
  for f in folds["folds"]:
    parts = [set(sid[i] for i in f[p]) for p in ("train", "val", "test")]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
  rep = json.loads((w / "report.json").read_text())
  f = folds["folds"][rep["data"]["search_fold"]]
  saw = rep["data"]["search_saw"]
  assert saw["train_images"] == len(f["train"]) and saw["val_images"] == len(f["val"])


def test_rerun_resumes_without_retraining(tiny_run):
  base, w = tiny_run
  before = (w / "search/history.jsonl").read_text()
  cv_before = {p: p.stat().st_mtime_ns for p in (w / "cv").rglob("fold_*.json")}
  p = _launch(w, cache_dir=base / "cache")
  assert p.returncode == 0, p.stderr[-3000:]
  assert (w / "search/history.jsonl").read_text() == before
  assert {p: p.stat().st_mtime_ns for p in (w / "cv").rglob("fold_*.json")} == cv_before


def test_incompatible_resume_is_refused(tiny_run):
  base, w = tiny_run
  p = _launch(w, "--config.seed=3", "--config.train.epochs=5", cache_dir=base / "cache")
  assert p.returncode == 2
  err = p.stderr.strip().splitlines()[-1]
  assert "seed" in err and "train.epochs" in err and "Traceback" not in p.stderr


def test_bad_config_is_one_clear_line(tmp_path):
  p = _launch(tmp_path / "w", "--config.data.source=pacs", cache_dir=tmp_path / "c")
  assert p.returncode == 2
  assert p.stderr.strip().splitlines()[-1].startswith("error: config.data.source='pacs'")
  assert "Traceback" not in p.stderr
  assert not (tmp_path / "w" / "config.json").exists()


def test_exported_model_reproduces_the_search_fold_test_result(tiny_run):
  """models/NASRL loads from its checkpoint alone and scores fold f's test part as reported."""
  import jax
  import ml_collections
  import numpy as np
  from nasrl_jax import child, data, pipeline
  _, w = tiny_run
  cfg = ml_collections.ConfigDict(json.loads((w / "config.json").read_text()))
  ds = data.load(cfg.data)
  folds = json.loads((w / "folds.json").read_text())
  rep = json.loads((w / "report.json").read_text())
  f = rep["data"]["search_fold"]
  test = np.asarray(folds["folds"][f]["test"])
  for m in rep["models"]:
    arch, spec, g, params, stats, meta = pipeline.load_exported(w / "models" / m["name"])
    assert str(arch) == m["architecture"]
    assert meta["preprocessing"]["image_size"] == cfg.data.image_size
    assert 0.0 <= meta["threshold"] <= 1.0 and "validation" in meta["threshold_source"]
    logits, _ = child.apply(g, params, stats, ds.images[test], train=False)
    pred = np.asarray(jax.numpy.argmax(logits, -1))
    acc = float(np.mean(pred == ds.label[test]))
    assert acc == pytest.approx(m["search_fold_test"]["image"]["accuracy"], abs=1e-6)


def test_manifest_source_runs_the_same_pipeline(tmp_path):
  """data.source=manifest on simulator images written to disk as PNGs + CSV, end to end."""
  import csv
  from PIL import Image
  from nasrl_jax.data import synthetic
  from tests.conftest import load_config
  cfg = load_config("tiny").data.synthetic
  sim = synthetic.simulate(cfg)
  root = tmp_path / "study"
  root.mkdir()
  with open(root / "manifest.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["path", "subject_id", "cap", "device"])
    for i, img in enumerate(sim["images"]):
      Image.fromarray(img).save(root / f"img{i:03d}.png")
      w.writerow([f"img{i:03d}.png", sim["subject_id"][i], f"{sim['cap'][i]:.1f}", sim["device"][i]])
  w = tmp_path / "w"
  cmd = [sys.executable, os.path.join(ROOT, "launch.py"),
         "--config=" + os.path.join(ROOT, "configs/fatty_liver.py:tiny,manifest"),
         f"--config.data.manifest={root / 'manifest.csv'}", f"--workdir={w}",
         "--config.eval.models=('NASRL', 'VGG19')", "--config.search.random_search=False",
         compile_cache_flag()]
  p = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
  assert p.returncode == 0, p.stderr[-3000:]
  rep = json.loads((w / "report.json").read_text())
  assert [m["name"] for m in rep["models"]] == ["NASRL", "VGG19"]
  assert rep["data"]["images"] == len(sim["images"])
  assert rep["data"]["subjects"] == len(set(sim["subject_id"]))
