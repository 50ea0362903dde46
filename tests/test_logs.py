"""Tests for nasrl_jax.logs: event files read back with TensorBoard's own reader, JSON lines."""

import json
import math
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

from nasrl_jax import logs


def _read_events(folder):
  acc = event_accumulator.EventAccumulator(str(folder), size_guidance={"scalars": 0})
  acc.Reload()
  return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _read_jsonl(folder):
  with open(folder / logs.JSONL_NAME, encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def test_scalars_readable_by_tensorboard_and_json(tmp_path):
  with logs.MetricWriter(tmp_path / "tb") as w:
    w.scalars(0, {"reward/mean": 0.5, "reward/baseline": np.float32(0.25),
                  "entropy": jnp.array(2.0)})
    w.scalars(1, {"reward/mean": 0.75, "reward/baseline": 0.3125, "entropy": float("nan")})
    # Readable while the writer is still open (scalars flushes).
    assert _read_events(tmp_path / "tb")["reward/mean"] == [(0, 0.5), (1, 0.75)]
  events = _read_events(tmp_path / "tb")
  assert set(events) == {"reward/mean", "reward/baseline", "entropy"}
  assert events["reward/baseline"] == [(0, 0.25), (1, 0.3125)]
  assert events["entropy"][0] == (0, 2.0) and math.isnan(events["entropy"][1][1])
  lines = _read_jsonl(tmp_path / "tb")
  assert [{k: v for k, v in r.items() if k != "time"} for r in lines] == [
      {"step": 0, "reward/mean": 0.5, "reward/baseline": 0.25, "entropy": 2.0},
      {"step": 1, "reward/mean": 0.75, "reward/baseline": 0.3125, "entropy": None}]
  assert all(r["time"] > 1.6e9 for r in lines)
  assert "tensorflow" not in sys.modules  # tensorboardX and the reader work without TF.


def test_child_curves_are_separate_runs(tmp_path):
  w = logs.MetricWriter(tmp_path)
  run3 = logs.write_child_curves(w, 3, [0.5, 0.625, 0.75], [0.7, 0.6, 0.5], [0.69, 0.55, 0.4])
  run12 = logs.write_child_curves(w, 12, [0.25, 0.5], [0.9, 0.8])  # No train loss recorded.
  w.scalars(0, {"reward/mean": 0.7})
  w.close()
  w.close()  # Idempotent.
  assert (run3, run12) == ("children/child_0003", "children/child_0012")
  child3 = _read_events(tmp_path / run3)
  assert child3 == {"val/accuracy": [(1, 0.5), (2, 0.625), (3, 0.75)],
                    "val/loss": [(1, pytest.approx(0.7)), (2, pytest.approx(0.6)),
                                 (3, pytest.approx(0.5))],
                    "train/loss": [(1, pytest.approx(0.69)), (2, pytest.approx(0.55)),
                                   (3, pytest.approx(0.4))]}
  assert set(_read_events(tmp_path / run12)) == {"val/accuracy", "val/loss"}
  assert set(_read_events(tmp_path)) == {"reward/mean"}  # Children do not leak into the main run.
  lines = _read_jsonl(tmp_path)
  assert [(r.get("run"), r["step"]) for r in lines] == [
      (run3, 1), (run3, 2), (run3, 3), (run12, 1), (run12, 2), (None, 0)]
  assert lines[4]["val/accuracy"] == 0.5 and "train/loss" not in lines[4]


def test_resume_appends(tmp_path):
  with logs.MetricWriter(tmp_path) as w:
    w.scalars(0, {"a": 1.0})
  with logs.MetricWriter(tmp_path) as w:
    w.scalars(1, {"a": 2.0})
  assert _read_events(tmp_path)["a"] == [(0, 1.0), (1, 2.0)]
  assert [r["a"] for r in _read_jsonl(tmp_path)] == [1.0, 2.0]


@pytest.mark.parametrize("call, error, match", [
    (lambda w: w.scalars(-1, {"a": 1.0}), ValueError, "step must be an int >= 0"),
    (lambda w: w.scalars(1.5, {"a": 1.0}), ValueError, "step must be an int"),
    (lambda w: w.scalars(0, {"step": 1.0}), ValueError, "metric name 'step'"),
    (lambda w: w.scalars(0, {"a": np.ones(3)}), TypeError, "metric 'a': expected a real scalar"),
    (lambda w: w.scalars(0, {"a": "x"}), TypeError, "metric 'a'"),
    (lambda w: w.scalars(0, {"a": 1.0}, run="../escape"), ValueError, "run name"),
    (lambda w: logs.write_child_curves(w, 0, [0.1, 0.2], [0.3]), ValueError, "one value per epoch"),
    (lambda w: logs.write_child_curves(w, -2, [0.1], [0.3]), ValueError, "child_index"),
])
def test_bad_calls(tmp_path, call, error, match):
  with logs.MetricWriter(tmp_path) as w:
    with pytest.raises(error, match=match):
      call(w)
  assert not (tmp_path / logs.JSONL_NAME).read_text()  # Nothing half-written.


def test_closed_writer_refuses(tmp_path):
  w = logs.MetricWriter(tmp_path)
  w.close()
  with pytest.raises(RuntimeError, match="closed"):
    w.scalars(0, {"a": 1.0})


def test_flush_makes_queued_values_readable(tmp_path):
  # tensorboardX's SummaryWriter.flush() leaves its queue unwritten; MetricWriter.flush() must not.
  with logs.MetricWriter(tmp_path) as w:
    for step in range(5):
      w.scalars(step, {"a": float(step)}, flush=False)
    w.flush()
    assert _read_events(tmp_path)["a"] == [(s, float(s)) for s in range(5)]
    assert len(_read_jsonl(tmp_path)) == 5
    w.scalars(5, {"a": 5.0}, run="sub", flush=False)
    w.close_run("sub")
    assert _read_events(tmp_path / "sub") == {"a": [(5, 5.0)]}


def test_writers_in_one_folder_never_collide(tmp_path):
  # Opened in the same second (tensorboardX names files by the second): distinct files, all kept.
  a, b = logs.MetricWriter(tmp_path), logs.MetricWriter(tmp_path)
  a.scalars(0, {"x": 1.0})
  b.scalars(1, {"x": 2.0})
  a.close()
  b.close()
  files = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("events.out.tfevents"))
  assert len(files) == len(set(files)) >= 2
  assert sorted(_read_events(tmp_path)["x"]) == [(0, 1.0), (1, 2.0)]
