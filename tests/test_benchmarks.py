"""Tests of the benchmark helpers and a smoke run of every benchmark at toy size.

  python -m pytest -q tests/test_benchmarks.py

Toy size: the 5-layer test space (`blocks=(1,1,1,1,1)`, the tiny config), 32 px, width 1/32 in
the dry run, one or two epochs. child_training, search_throughput, vmap_cv, inference and summary
run through `DRY_RUN=1 benchmarks/gpu_check.sh` (the lent-GPU script's CPU mode: one test checks
the script and every stage's JSON), reward_noise through its two subprocess workers,
controller_toy and balance_modes in this process. Assertions are on output fields, never on
timing. Most of the time is cold compiles of toy children (a few seconds each on 2 cores).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import balance_modes  # pylint: disable=g-import-not-at-top
from benchmarks import child_training  # pylint: disable=g-import-not-at-top
from benchmarks import common  # pylint: disable=g-import-not-at-top
from benchmarks import controller_toy  # pylint: disable=g-import-not-at-top
from benchmarks import host_overheads  # pylint: disable=g-import-not-at-top
from benchmarks import inference  # pylint: disable=g-import-not-at-top
from benchmarks import reward_fidelity  # pylint: disable=g-import-not-at-top
from benchmarks import reward_noise  # pylint: disable=g-import-not-at-top
from benchmarks import search_throughput  # pylint: disable=g-import-not-at-top
from benchmarks import summary  # pylint: disable=g-import-not-at-top
from benchmarks import vmap_cv  # pylint: disable=g-import-not-at-top
from nasrl_jax import space  # pylint: disable=g-import-not-at-top
from nasrl_jax.errors import UserInputError  # pylint: disable=g-import-not-at-top

# Five one-layer blocks: compiles in seconds, still a real child (BN, head, five pools).
TOY = "1x64 | 1x64 | 1x64 | 1x64 | 1x64"
NOISE_FLAGS = ["--config=tiny", "--archs=vgg19", "--seeds=2", "--splits=1,2",
               "--float_devices=4"]


def _json(path):
  with open(path, encoding="utf-8") as f:
    return json.load(f)


# ------------------------------------------------------------------------------ helpers


def test_parse_archs_names_strings_and_errors():
  archs = common.parse_archs("vgg19, largest," + TOY)
  assert archs["vgg19"] == space.VGG19
  assert set(archs["largest"].kernels) == {7} and set(archs["largest"].filters) == {512}
  assert archs[TOY].blocks == (1, 1, 1, 1, 1)
  with pytest.raises(UserInputError, match="unknown architecture 'resnet'"):
    common.parse_archs("vgg19,resnet")
  with pytest.raises(UserInputError, match="empty"):
    common.parse_archs(" , ")


def test_space_archs_follow_the_space():
  sp = space.SearchSpace(blocks=(1, 1, 1, 1, 1))
  archs = common.space_archs("vgg19,sampled,sampled2,smallest", sp, seed=0)
  assert archs["vgg19"] == sp.vgg19 and archs["vgg19"].num_layers == 5
  assert archs["sampled"] != archs["sampled2"]
  assert archs["sampled"] == common.space_archs("sampled", sp, seed=0)["sampled"]  # Deterministic.
  assert set(archs["smallest"].filters) == {64} and set(archs["smallest"].kernels) == {1}
  with pytest.raises(UserInputError, match="blocks"):
    common.space_archs(str(space.VGG19), sp)
  with pytest.raises(UserInputError, match="unknown architecture"):
    common.space_archs("found", sp)


def test_found_example_is_like_the_papers_winner():
  from nasrl_jax import child
  n = child.count_params(common.FOUND_EXAMPLE)
  assert 30e6 < n < 33e6  # The paper's winner: 31,164,674.
  assert common.FOUND_EXAMPLE.filters[-1] == 64


def test_bad_flags_stop_with_one_line():
  with pytest.raises(UserInputError, match="--size=50"):
    child_training.parse_args(["--size=50"])
  with pytest.raises(UserInputError, match="--dtype='float16'"):
    inference.parse_args(["--dtype=float16"])
  with pytest.raises(UserInputError, match="--name"):
    child_training.parse_args(["--name=../x"])
  with pytest.raises(UserInputError, match="--data='disk'"):
    search_throughput.parse_args(["--data=disk"])
  with pytest.raises(UserInputError, match="--strategy='bayes'"):
    search_throughput.parse_args(["--strategy=bayes"])
  with pytest.raises(UserInputError, match="--config='huge'"):
    vmap_cv.parse_args(["--config=huge"])
  with pytest.raises(UserInputError, match="--chunks='2,x'"):
    vmap_cv.parse_args(["--chunks=2,x"])
  with pytest.raises(UserInputError, match="--forms='vmap,pmap'"):
    vmap_cv.parse_args(["--forms=vmap,pmap"])
  with pytest.raises(UserInputError, match="r=4 needs 4 inner parts"):
    reward_noise.parse_args(["--config=tiny", "--splits=1,4"])
  with pytest.raises(UserInputError, match="--seeds=1"):
    reward_noise.parse_args(["--seeds=1"])
  with pytest.raises(UserInputError, match="--float_devices=1"):
    reward_noise.parse_args(["--float_devices=1"])
  with pytest.raises(UserInputError, match="--modes='none,flip'"):
    balance_modes.parse_args(["--modes=none,flip"])
  with pytest.raises(UserInputError, match="unknown architecture 'resnet'"):
    balance_modes.parse_args(["--arch=resnet"])
  with pytest.raises(UserInputError, match="--lrs"):
    controller_toy.parse_args(["--lrs=fast"])
  with pytest.raises(UserInputError, match="--strategies"):
    controller_toy.parse_args(["--strategies=reinforce,grid"])
  with pytest.raises(UserInputError, match="--baseline_decays"):
    controller_toy.parse_args(["--baseline_decays=1.5"])
  with pytest.raises(UserInputError, match="--workdir"):
    inference.found_architecture("/nonexistent/run")


def test_table_and_fmt():
  text = common.table([["vgg19", common.fmt(1234.5, ".4g")], ["x", common.fmt(None)]],
                      ["arch", "img/s"])
  lines = text.splitlines()
  assert lines[0].split() == ["arch", "img/s"]
  assert lines[2].endswith("1234") and lines[3].endswith("-")
  assert len({len(l) for l in lines}) == 1  # Aligned.
  assert common.fmt(float("nan")) == "-"


def test_write_results_also_to_out_and_nan_is_null(tmp_path, monkeypatch):
  out = tmp_path / "out"
  monkeypatch.setenv("OUT", str(out))
  paths = common.write_results("x", {"a": float("nan"), "b": np.int64(3)}, str(tmp_path / "res"))
  assert len(paths) == 2
  for p in paths:
    assert _json(p) == {"a": None, "b": 3}


def test_matmul_peak_is_flops_over_median_time():
  peak = common.matmul_peak("float32", n=128, iters=3)
  assert peak["flops_per_s"] == pytest.approx(2 * 128 ** 3 / peak["median_s"])
  assert peak["flops_per_s"] > 1e6
  assert common.nominal_peak("NVIDIA H100 80GB HBM3", "bfloat16") == 989e12
  assert common.nominal_peak("NVIDIA H100 PCIe", "bfloat16") == 756e12
  assert common.nominal_peak("cpu", "float32") is None


def test_persistent_cache_hits_are_counted(tmp_path):
  # Fresh processes sharing a cache dir, as search_throughput's cold and warm runs do.
  code = f"""
import sys; sys.path.insert(0, {ROOT!r})
import jax, numpy as np
from benchmarks import common
common.enable_compile_cache({str(tmp_path)!r})
counter, phases = common.CacheCounter(), common.CompilePhases()
jax.jit(lambda x: x * 2 + 1).lower(np.ones(3, np.float32)).compile()
print(counter.hits, counter.misses, phases.seconds["backend"] > 0)
"""
  runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split() for _ in range(2)]
  assert runs == [["0", "1", "True"], ["1", "0", "True"]]  # The backend phase times the lookup.


def test_compile_phases_are_split_by_child_program():
  import jax
  phases = common.CompilePhases()

  def named(name):
    def f(x):
      return x * 3 - 1
    f.__name__ = name
    return f

  jax.jit(named("nasrl_child_step_0abc")).lower(np.ones(4, np.float32)).compile()
  jax.jit(named("unrelated")).lower(np.ones(5, np.float32)).compile()
  by = phases.reset_programs()
  total = phases.reset()
  phases.close()
  assert by["step"]["trace"] > 0 and by["step"]["backend"] > 0
  assert by["eval"] == {"trace": 0.0, "lower": 0.0, "backend": 0.0}
  assert total["backend"] > by["step"]["backend"]  # The unrelated function counts in the total.
  assert phases.reset_programs()["step"]["backend"] == 0.0  # Reset.


def test_kfold_and_cohort_splits_are_padded_and_disjoint():
  c = common.get_config("tiny")
  _, labels = common.random_cohort(32, num_images=50)
  splits, keys, sizes = common.kfold_splits(c, labels, 4)
  assert len(splits) == len(keys) == 4
  vals = [set(s.eval_idx[s.eval_w > 0].tolist()) for s in splits]
  assert set().union(*vals) == set(range(50)) and sum(map(len, vals)) == 50  # A partition.
  for s, v in zip(splits, vals):
    assert len(s.train_idx) == sizes.num_train and sizes.num_train % c.train.batch_size == 0
    assert not set(s.train_idx.tolist()) & v  # Validation rows never train.
    assert s.num_train_real == 50 - len(v)
  assert splits[0].class_weight.tolist() != [1.0, 1.0]  # The tiny config's loss_weight mode.
  splits, _, sizes = common.cohort_splits(c, common.random_cohort(32)[1], 2)
  assert [s.num_train_real for s in splits] == [common.TRAIN_EXAMPLES] * 2
  assert [s.num_eval_real for s in splits] == [common.EVAL_EXAMPLES] * 2
  with pytest.raises(UserInputError, match="--folds=1"):
    common.kfold_splits(c, labels, 1)


def test_projection_arithmetic():
  rec = {"image_size": 32, "width": 0.125, "runs": {"search cold": {
      "num_train": 64, "epochs": 2, "reward_splits": 2,
      "children": [{"status": "ok", "compile_seconds": 4.0, "train_seconds": 2.0, "flops": 1e6},
                   {"status": "ok", "compile_seconds": 6.0, "train_seconds": 6.0, "flops": 3e6},
                   {"status": "memo", "compile_seconds": 0.0, "train_seconds": 0.0,
                    "flops": 3e6}]}}}
  p = summary.projection(rec, children=10, random_baseline=False)
  assert p["compile_seconds_per_child"] == 5.0
  assert p["effective_train_flops_per_s"] == pytest.approx(3 * 4e6 * 64 * 2 * 2 / 8.0)
  child = 3 * p["mean_uniform_forward_flops"] * 64 * 30 * 2 / p["effective_train_flops_per_s"]
  assert p["child_train_seconds"] == pytest.approx(child)
  total = 10 * (5 + child) + 3 * (5 + 10 * child / 2)
  assert p["total_seconds"] == pytest.approx(total)
  p2 = summary.projection(rec, children=10, random_baseline=True)
  assert p2["total_seconds"] == pytest.approx(total + 10 * (5 + child))
  assert summary.status(0.5, 0.4, True, True) == "PASS"
  assert summary.status(0.3, 0.1, False, True) == "FAIL"
  assert summary.status(0.3, 0.1, False, False) == "n/a"
  assert not summary.paper_scale({"platform": "cpu", "size": 224, "width": 1.0})
  assert summary.paper_scale({"platform": "gpu", "image_size": 224, "width": 1.0})


def test_reward_noise_statistics_by_hand():
  # 2 architectures x 3 seeds x 2 splits of one metric; reward(r) = mean of the first r splits.
  v = [[[0.5, 0.7], [0.6, 0.6], [0.7, 0.5]],
       [[0.8, 0.8], [0.8, 1.0], [0.8, 0.6]]]
  base = {"values": {m: v for m in reward_noise.METRICS}}
  moved = [[[x + 0.01 for x in s] for s in a] for a in v]
  moved[1][2][0] = 0.9  # One perturbed reward on split 0.
  rows = reward_noise.analyse(base, {"values": {m: moved for m in reward_noise.METRICS}}, (1, 2))
  r1 = next(r for r in rows if r["metric"] == "val_accuracy" and r["r"] == 1)
  # r=1: arch 0 rewards 0.5, 0.6, 0.7 (sd 0.1); arch 1: 0.8 x 3 (sd 0): pooled sqrt(0.01/2).
  assert r1["within_sd_per_arch"] == pytest.approx([0.1, 0.0])
  assert r1["within_sd"] == pytest.approx(np.sqrt(0.005))
  assert r1["between_sd"] == pytest.approx(np.std([0.6, 0.8], ddof=1))
  assert r1["between_over_within"] == pytest.approx(r1["between_sd"] / r1["within_sd"])
  assert r1["float_max_move"] == pytest.approx(0.1)  # 0.8 -> 0.9.
  assert r1["float_max_move_seed_mean"] == pytest.approx((0.01 + 0.01 + 0.1) / 3)
  r2 = next(r for r in rows if r["metric"] == "val_accuracy" and r["r"] == 2)
  # r=2: every arch-0 reward is 0.6 (no seed noise); arch 1: 0.8, 0.9, 0.7.
  assert r2["within_sd_per_arch"] == pytest.approx([0.0, 0.1])
  assert r2["arch_mean"] == pytest.approx([0.6, 0.8])
  assert r2["float_max_move"] == pytest.approx(0.055)  # (0.9 + 0.61) / 2 - (0.8 + 0.6) / 2.
  nan = reward_noise.analyse({"values": {m: [[[np.nan, None]], [[0.5, 0.5]]]
                                         for m in reward_noise.METRICS}}, None, (1,))
  assert nan[0]["within_sd"] is None and nan[0]["between_over_within"] is None


def test_balance_modes_row_plan():
  a = balance_modes.parse_args(["--modes=none,rot90", "--augment=loss_weight"])
  assert balance_modes.row_plan(a) == [("none", ()), ("rot90", ()),
                                       ("loss_weight", ("hflip", "gain"))]
  assert balance_modes.row_plan(balance_modes.parse_args(["--augment=none"]))[-1] == ("rot90", ())


# ------------------------------------------------------------------------------ smoke runs


def test_kendall_tau_and_its_children_bootstrap_by_hand():
  # Rewards rank 5 children exactly as their tested AUROCs: tau = 1, every resample 1 (or NaN
  # when a resample draws one child only, left out).
  r, a = [0.1, 0.2, 0.3, 0.4, 0.5], [0.6, 0.62, 0.7, 0.71, 0.8]
  out = reward_fidelity.kendall(r, a, n_boot=500)
  assert out["tau"] == pytest.approx(1.0) and out["tau_ci95"] == pytest.approx([1.0, 1.0])
  # One discordant pair of 10: tau = (9 - 1) / 10 = 0.8; reversed ranks give -1.
  assert reward_fidelity.kendall(r, [0.6, 0.62, 0.71, 0.7, 0.8])["tau"] == pytest.approx(0.8)
  assert reward_fidelity.kendall(r, a[::-1], n_boot=200)["tau"] == pytest.approx(-1.0)
  # A failed child (NaN reward) ranks lowest; a failed test counts as chance (0.5).
  out = reward_fidelity.kendall([float("nan"), 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, float("nan")])
  assert out["tau"] == pytest.approx(scipy_tau([-0.8, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.5]))
  low, high = reward_fidelity.kendall(r, [0.7, 0.6, 0.8, 0.62, 0.71], n_boot=2000)["tau_ci95"]
  assert -1.0 <= low < high <= 1.0


def scipy_tau(x, y):
  import scipy.stats  # pylint: disable=g-import-not-at-top
  return scipy.stats.kendalltau(x, y)[0]


@pytest.mark.slow(cpu_s=15)
def test_reward_fidelity_smoke(tmp_path, capsys, tiny_data_cache):
  rec = reward_fidelity.main([
      "reward_fidelity.py", "--config=" + os.path.join(ROOT, "configs/fatty_liver.py:tiny"),
      "--children=3", "--folds=2", "--test_seeds=1", "--name=fid", f"--results_dir={tmp_path}",
      f"--workdir={tmp_path / 'w'}", f"--config.data.cache_dir={tiny_data_cache}",
      "--config.train.min_epochs=1"])
  assert rec["cohort_seed"] == 1 and rec["recipe"] == "--config.train.min_epochs=1"
  assert rec["children"] == 3 and [r["name"] for r in rec["rows"]] == [
      "VGG19", "child0", "child1", "child2"]
  for r in rec["rows"]:
    assert [f["fold"] for f in r["folds"]] == [0, 1]
    for f in r["folds"]:
      assert f["reward"] is None or f["reward"] < 0  # val_nll rewards: minus an NLL.
      assert len(f["test_aurocs"]) == 1 and len(f["degenerate"]) == 1
  for k in ("tau", "tau_ci95", "children_auroc_mean", "auroc_spread", "near_constant_share",
            "vgg19_auroc", "seconds", "command"):
    assert k in rec
  assert -1.0 <= rec["tau"] <= 1.0 and 0.0 <= rec["near_constant_share"] <= 1.0
  assert _json(tmp_path / "fid.json")["tau"] == pytest.approx(rec["tau"])
  assert "tau" in capsys.readouterr().out.strip().splitlines()[-3]
  with pytest.raises(SystemExit) as e:
    reward_fidelity.main(["reward_fidelity.py", "--children=2"])
  assert e.value.code == 2


@pytest.mark.slow(cpu_s=22)
def test_controller_toy_smoke(tmp_path, capsys):
  rec = controller_toy.main(["controller_toy.py", "--samples=32", "--seeds=1", "--children=8",
                             "--lrs=4e-3", "--window=8", f"--results_dir={tmp_path}"])
  assert [r["strategy"] for r in rec["rows"]] == ["reinforce lr 0.004 (default)", "evolution",
                                                  "random"]
  for r in rec["rows"]:
    assert 0.0 <= r["first"] <= 1.0 and 0.0 <= r["last"] <= 1.0
    assert r["best"] >= max(r["first"], r["last"]) - 1e-6  # A window mean never beats the best.
    assert r["best"] * 32 == pytest.approx(round(r["best"] * 32))  # k of 32 decisions agree.
  assert _json(tmp_path / "controller_toy.json")["rows"] == common.json_safe(rec["rows"])
  assert "last 8" in capsys.readouterr().out.strip().splitlines()[-5]  # The table is last.

  # A REINFORCE grid over entropy and baseline decay: one row per cell (planned here; each cell
  # is one more compile of the scanned search, so one cell runs below).
  grid = controller_toy.plan(controller_toy.parse_args([
      "--lrs=4e-3", "--entropy_weights=0,0.01", "--baseline_decays=0.5,0.9",
      "--strategies=reinforce"]), common.get_config("paper"))
  assert [(n, o) for _, n, o in grid] == [
      ("reinforce", {"learning_rate": 4e-3, "entropy_weight": e, "baseline_decay": d})
      for e in (0.0, 0.01) for d in (0.5, 0.9)]
  assert grid[1][0] == "reinforce lr 0.004 entropy 0 decay 0.9 (default)"
  # The reward on another scale (val_nll's), one cell of that grid: the config's entropy and
  # decay, so the search is the first call's program (the reward's scale is an argument of it).
  rec = controller_toy.main(["controller_toy.py", "--samples=32", "--seeds=1", "--children=8",
                             "--lrs=4e-3", "--entropy_weights=1e-3", "--baseline_decays=0.8",
                             "--reward_scale=0.5", "--reward_offset=-1", "--strategies=reinforce",
                             "--window=8", f"--results_dir={tmp_path}", "--name=scaled"])
  assert [r["strategy"] for r in rec["rows"]] == [
      "reinforce lr 0.004 entropy 0.001 decay 0.8 (default)"]
  assert [(r["entropy_weight"], r["baseline_decay"]) for r in rec["rows"]] == [(0.001, 0.8)]
  for r in rec["rows"]:  # -1 + 0.5 x (k of 32 decisions agree).
    assert -1.0 <= r["best"] <= -0.5 and (r["best"] + 1) * 64 == pytest.approx(
        round((r["best"] + 1) * 64))
  noisy = controller_toy.main(["controller_toy.py", "--samples=32", "--seeds=1", "--children=8",
                               "--strategies=random", "--noise_sd=0.1", "--window=8",
                               f"--results_dir={tmp_path}", "--name=noisy"])["rows"][0]
  assert noisy["best"] * 32 != pytest.approx(round(noisy["best"] * 32), abs=1e-3)  # Noise added.


def test_balance_modes_smoke(tmp_path, capsys):
  rec = balance_modes.main(["balance_modes.py", "--config=tiny", "--folds=1", "--epochs=1",
                            "--modes=none,loss_weight", "--augment=none", "--compile_cache=keep",
                            f"--data_cache={tmp_path / 'data'}", f"--workdir={tmp_path / 'w'}",
                            f"--results_dir={tmp_path}"])
  rows = rec["rows"]
  assert [r["balance"] for r in rows] == ["none", "loss_weight"]
  for r in rows:
    assert "error" not in r, r
    assert len(r["folds"]) == 1 and r["folds"][0]["n_test"] > 0
    for k in ("accuracy", "sensitivity", "specificity"):
      assert 0.0 <= r[k] <= 1.0
    assert r["auroc"] is None or 0.0 <= r["auroc"] <= 1.0
  # The same folds for both modes: the test parts are the pipeline's outer folds.
  assert rows[0]["folds"][0]["n_test"] == rows[1]["folds"][0]["n_test"]
  assert rec["outer_folds"] == 2 and rec["folds_run"] == 1
  assert _json(tmp_path / "balance_modes.json")["rows"][1]["balance"] == "loss_weight"
  assert "specificity" in capsys.readouterr().out.strip().splitlines()[-4]


@pytest.mark.slow(cpu_s=14)
def test_reward_noise_smoke(tmp_path, capsys):
  rec = reward_noise.main(["reward_noise.py", "--config=tiny", "--archs=vgg19", "--seeds=2",
                           "--splits=1,2", "--float_devices=4", f"--data_cache={tmp_path / 'd'}",
                           f"--results_dir={tmp_path}"])
  assert {k: v["device_count"] for k, v in rec["runs"].items()} == {"devices=1": 1,
                                                                     "devices=4": 4}
  assert rec["names"] == ["vgg19"] and rec["splits"] == [1, 2] and rec["seeds"] == 2
  assert [(r["metric"], r["r"]) for r in rec["rows"]] == [
      (m, r) for m in reward_noise.METRICS for r in (1, 2)]
  for r in rec["rows"]:
    assert r["within_sd"] is None or r["within_sd"] >= 0
    assert r["between_over_within"] is None  # One architecture: no spread between them.
    assert r["float_max_move"] >= r["float_mean_move"] >= 0
  assert _json(tmp_path / "reward_noise.json")["rows"] == common.json_safe(rec["rows"])
  assert "max move (seed mean)" in capsys.readouterr().out


@pytest.mark.slow(cpu_s=19)
def test_host_overheads_smoke(tmp_path, capsys):
  rec = host_overheads.main(["host_overheads.py", "--config=tiny", "--children=2", "--calls=5",
                             f"--results_dir={tmp_path}"])
  assert [r["strategy"] for r in rec["strategies"]] == list(host_overheads.strategies.names())
  for r in rec["strategies"]:
    assert all(r[k] > 0 for k in ("init_s", "ask_s_default", "ask_s_level0", "tell_s_default",
                                  "tell_s_level0"))
  assert [("init_s_uniform_draw" in r) for r in rec["strategies"]] == [
      n == "reinforce" for n in host_overheads.strategies.names()]
  p = rec["pytree"]
  assert p["leaves"] > 10 and p["ms_nnx_state"] > 0 and p["ms_plain_dict"] > 0
  assert [r["mode"] for r in rec["compile"]] == ["one after the other", "two at a time"]
  assert all(r["children"] == 2 and r["wall_s"] > 0 and r["process_cpu_s"] > 0
             for r in rec["compile"])
  assert _json(tmp_path / "host_overheads.json")["pytree"] == common.json_safe(p)
  assert "process CPU s" in capsys.readouterr().out.strip().splitlines()[-4]
  with pytest.raises(UserInputError, match="--children=1"):
    host_overheads.parse_args(["--children=1"])


@pytest.mark.slow(cpu_s=69)
def test_gpu_check_dry_run_covers_every_stage(tmp_path):
  out = tmp_path / "gpu"
  env = dict(os.environ, DRY_RUN="1", OUT=str(out), PYTHON=sys.executable)
  # The script sets them per stage (its inference stage compiles under XLA's defaults).
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu_check.sh")], env=env,
                        cwd=ROOT, capture_output=True, text=True, check=False)
  text = proc.stdout + proc.stderr
  assert proc.returncode == 0, text[-3000:]
  assert "stage exit codes: " in text and "timed out" not in text, text[-3000:]
  codes = text.split("stage exit codes:")[1].splitlines()[0].rstrip(")").split()
  assert sorted(codes) == sorted(f"{s}=0" for s in ("child_training_bf16", "child_training_f32",
                                                    "search_throughput", "vmap_cv",
                                                    "inference", "paper_recipe")), codes

  for name, dtype in (("child_training_bf16", "bfloat16"), ("child_training_f32", "float32")):
    rec = _json(out / f"{name}.json")
    row = rec["rows"][0]
    assert "error" not in row, row
    assert rec["dtype"] == dtype and rec["platform"] == "cpu" and row["architecture"] == TOY
    assert row["finite"] and 0 < row["mfu"] < 2 and row["compile_seconds"] > 0
    assert row["achieved_flops_per_s"] == pytest.approx(
        3 * row["forward_flops_per_image"] * row["batch"] / row["step_seconds_median"])
    assert row["compile_step_seconds"] > 0 and row["compile_eval_seconds"] > 0
    assert row["steps_per_epoch"] == rec["num_train"] // row["batch"]

  rec = _json(out / "search_throughput.json")
  cold = rec["rows"][0]
  assert cold["run"] == "search cold" and cold["children"] == 2 and cold["failed"] == 0
  assert cold["compiles"] == cold["distinct_programs"] == 2 * cold["trained"]  # Once each.
  assert cold["again"]["compiles"] == 0 and cold["again"]["trained"] == 2  # Cached trainers.
  kids = rec["runs"]["search cold"]["children"]
  # Rewards are the config's metric: val_nll (minus an NLL, <= 0) by default, else in [0, 1].
  assert all(c["status"] == "ok" and np.isfinite(c["reward"]) and -50 < c["reward"] <= 1
             for c in kids)
  assert rec["reward_splits"] == 2 and rec["runs"]["search cold"]["reward_splits"] == 2

  rec = _json(out / "vmap_cv.json")
  rows = {r["form"]: r for r in rec["rows"]}
  assert set(rows) == {"sequential", "vmap 2", "unrolled 2"} and rec["folds"] == 2
  assert all("error" not in r and r["finite"] for r in rows.values())
  assert rows["sequential"]["max_abs_val_loss_diff"] == 0.0
  assert rows["vmap 2"]["max_abs_val_loss_diff"] < 0.05  # Same trainings, other rounding.
  # The unrolled batch runs the same single-split step twice in one program: the same numbers.
  assert rows["unrolled 2"]["max_abs_val_loss_diff"] < 1e-5
  assert len(rows["vmap 2"]["val_loss"]) == 2 and len(rows["vmap 2"]["val_loss"][0]) == 1
  assert rows["vmap 2"]["speedup"] == pytest.approx(
      rows["sequential"]["train_seconds"] / rows["vmap 2"]["train_seconds"])

  row = _json(out / "inference.json")["rows"][0]
  assert row["fps"] == pytest.approx(1e3 / row["latency_ms_median"]) and row["throughput"] > 0

  row = _json(out / "recipes_paper_recipe.json")["rows"][0]  # Does the paper recipe learn?
  assert row["model"] == "VGG19" and len(row["subject_auroc_folds"]) == 2
  assert isinstance(row["learned"], bool) and row["degenerate"] in (0, 1, 2)

  text = (out / "summary.log").read_text()
  assert "cached trainers, search cold" in text and "FAIL" not in text
  assert "vmap CV vgg19" in text and "child MFU" in text and "FPS b=1" in text
