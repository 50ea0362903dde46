"""Tests of the benchmark helpers and a smoke run of each benchmark at toy size.

  python -m pytest -q tests/test_benchmarks.py      # about 30-60 s on a 2-core CPU
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import child_training  # pylint: disable=g-import-not-at-top
from benchmarks import common  # pylint: disable=g-import-not-at-top
from benchmarks import inference  # pylint: disable=g-import-not-at-top
from benchmarks import search_throughput  # pylint: disable=g-import-not-at-top
from benchmarks import summary  # pylint: disable=g-import-not-at-top
from nasrl_jax import space  # pylint: disable=g-import-not-at-top
from nasrl_jax.errors import UserInputError  # pylint: disable=g-import-not-at-top

# Five one-layer blocks: compiles in seconds, still a real child (BN, VGG head, five pools).
TOY = "1x64 | 1x64 | 1x64 | 1x64 | 1x64"


def test_parse_archs_names_strings_and_errors():
  archs = common.parse_archs("vgg19, largest," + TOY)
  assert archs["vgg19"] == space.VGG19
  assert set(archs["largest"].kernels) == {7} and set(archs["largest"].filters) == {512}
  assert archs[TOY].blocks == (1, 1, 1, 1, 1)
  with pytest.raises(UserInputError, match="unknown architecture 'resnet'"):
    common.parse_archs("vgg19,resnet")
  with pytest.raises(UserInputError, match="empty"):
    common.parse_archs(" , ")


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
    with open(p, encoding="utf-8") as f:
      assert json.load(f) == {"a": None, "b": 3}


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


def test_projection_arithmetic():
  rec = {"image_size": 32, "width": 0.125, "runs": {"search cold": {
      "num_train": 64, "epochs": 2,
      "children": [{"status": "ok", "compile_seconds": 4.0, "train_seconds": 2.0, "flops": 1e6},
                   {"status": "ok", "compile_seconds": 6.0, "train_seconds": 6.0, "flops": 3e6},
                   {"status": "memo", "compile_seconds": 0.0, "train_seconds": 0.0,
                    "flops": 3e6}]}}}
  p = summary.projection(rec, children=10, random_baseline=False)
  assert p["compile_seconds_per_child"] == 5.0
  assert p["effective_train_flops_per_s"] == pytest.approx(3 * 4e6 * 64 * 2 / 8.0)
  child = 3 * p["mean_uniform_forward_flops"] * 64 * 30 / p["effective_train_flops_per_s"]
  assert p["child_train_seconds"] == pytest.approx(child)
  total = 10 * (5 + child) + 3 * (5 + 10 * child)
  assert p["total_seconds"] == pytest.approx(total)
  p2 = summary.projection(rec, children=10, random_baseline=True)
  assert p2["total_seconds"] == pytest.approx(total + 10 * (5 + child))
  assert summary.status(0.5, 0.4, True, True) == "PASS"
  assert summary.status(0.3, 0.1, False, True) == "FAIL"
  assert summary.status(0.3, 0.1, False, False) == "n/a"
  assert not summary.paper_scale({"platform": "cpu", "size": 224, "width": 1.0})
  assert summary.paper_scale({"platform": "gpu", "image_size": 224, "width": 1.0})


def test_child_training_and_inference_smoke(tmp_path, capsys):
  child_training.main(["child_training.py", f"--archs={TOY}", "--steps=2", "--warmup=1",
                       "--peak_n=256", f"--results_dir={tmp_path}"])
  with open(tmp_path / "child_training.json", encoding="utf-8") as f:
    rec = json.load(f)
  row = rec["rows"][0]
  assert "error" not in row, row
  assert row["finite"] and row["compile_seconds"] > 0 and 0 < row["mfu"] < 2
  assert row["achieved_flops_per_s"] == pytest.approx(
      3 * row["forward_flops_per_image"] * 32 / row["step_seconds_median"])
  assert rec["platform"] == "cpu" and rec["command"].startswith("python child_training.py")
  assert "MFU %" in capsys.readouterr().out.strip().splitlines()[-3]  # The table is printed last.

  inference.main(["inference.py", f"--archs={TOY}", "--iters=3", "--batch=2",
                  f"--results_dir={tmp_path}"])
  with open(tmp_path / "inference.json", encoding="utf-8") as f:
    row = json.load(f)["rows"][0]
  assert row["fps"] == pytest.approx(1e3 / row["latency_ms_median"]) and row["throughput"] > 0


def test_search_data_random_has_the_cohort_shapes():
  args = search_throughput.parse_args(["--config=tiny", "--data=random"])
  config = search_throughput.make_config(args)
  data, split, num_train, num_eval, _ = search_throughput.make_data(config, "random")
  assert data.images.shape == (310, 32, 32, 1)
  assert num_train % config.train.batch_size == 0 and len(split.train_idx) == num_train
  assert split.num_train_real == search_throughput.TRAIN_EXAMPLES
  assert config.search.num_steps == 2 and config.search.children_per_step == 2
