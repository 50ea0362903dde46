import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from nasrl_jax import search
from nasrl_jax.space import SearchSpace
from tests import search_worker

HERE = os.path.dirname(os.path.abspath(__file__))


def _history(workdir):
  return [json.loads(l) for l in open(os.path.join(workdir, "history.jsonl"))]


def _key(rows):
  return [(r["step"], r["child"], r["architecture"], r["reward"], r["status"]) for r in rows]


def test_reinforce_search_writes_history_and_steps(tmp_path):
  c = search_worker.toy_config()
  res = search.run_search(c, search_worker.make_evaluator(), str(tmp_path))
  assert len(res.history) == 15 and len(res.steps) == 5
  rows = _history(tmp_path)
  assert len(rows) == 15
  assert [r["index"] for r in rows] == list(range(15))
  for r in rows:
    assert set(r) >= {"step", "architecture", "reward", "best_val_loss", "params", "flops",
                      "compile_seconds", "train_seconds", "status"}
  steps = [json.loads(l) for l in open(tmp_path / "steps.jsonl")]
  assert steps[0]["baseline_used"] == pytest.approx(steps[0]["mean_reward"], rel=1e-6)
  assert all(s["entropy"] > 0 for s in steps)
  assert os.path.isdir(tmp_path / "controller")
  from tensorboard.backend.event_processing import event_accumulator
  acc = event_accumulator.EventAccumulator(str(tmp_path / "tb"))
  acc.Reload()
  means = [e.value for e in acc.Scalars("controller/mean_reward")]
  assert means == pytest.approx([s["mean_reward"] for s in steps])
  best = res.best(1)[0]
  assert best.reward == max(r.reward for r in res.history)


def test_random_strategy_same_format_and_deterministic(tmp_path):
  c = search_worker.toy_config()
  a = search.run_search(c, search_worker.make_evaluator(), str(tmp_path / "a"), strategy="random")
  search.run_search(c, search_worker.make_evaluator(), str(tmp_path / "b"), strategy="random")
  assert _key(_history(tmp_path / "a")) == _key(_history(tmp_path / "b"))
  assert all(r["strategy"] == "random" for r in _history(tmp_path / "a"))
  assert a.steps[0]["baseline"] is None
  assert not os.path.exists(tmp_path / "a" / "controller")
  assert len({r.architecture for r in a.history}) == 15


def test_resume_after_interruption_is_identical_in_process(tmp_path):
  c = search_worker.toy_config()
  full = search.run_search(c, search_worker.make_evaluator(), str(tmp_path / "full"))

  class Interrupt(BaseException):
    pass

  calls = {"n": 0}
  base = search_worker.make_evaluator()

  def flaky(archs):
    calls["n"] += 1
    if calls["n"] == 8:  # Mid-way through step 2.
      raise Interrupt()
    return base(archs)

  with pytest.raises(Interrupt):
    search.run_search(c, flaky, str(tmp_path / "cut"))
  assert len(_history(tmp_path / "cut")) == 7
  resumed = search.run_search(c, search_worker.make_evaluator(), str(tmp_path / "cut"))
  assert _key(_history(tmp_path / "cut")) == _key(_history(tmp_path / "full"))
  assert [r.reward for r in resumed.history] == [r.reward for r in full.history]


@pytest.mark.parametrize("kill_points", [(7, 0, 5)])
def test_sigkill_and_resume_gives_the_uninterrupted_history(tmp_path, kill_points):
  """Kills a search subprocess (SIGKILL) at several points, resumes, compares with a clean run."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  ref = tmp_path / "ref"
  subprocess.run([sys.executable, os.path.join(HERE, "search_worker.py"), str(ref), "-1"],
                 check=True, timeout=300, env=env)
  cut = tmp_path / "cut"
  for k in kill_points:
    p = subprocess.run([sys.executable, os.path.join(HERE, "search_worker.py"), str(cut), str(k)],
                       timeout=300, env=env, capture_output=True)
    assert p.returncode == -9, p.stderr.decode()[-2000:]
  p = subprocess.run([sys.executable, os.path.join(HERE, "search_worker.py"), str(cut), "-1"],
                     timeout=300, env=env, capture_output=True)
  assert p.returncode == 0, p.stderr.decode()[-2000:]
  assert _key(_history(cut)) == _key(_history(ref))
  steps = lambda d: [(s["step"], s["mean_reward"], s["baseline"]) for s in
                     map(json.loads, open(d / "steps.jsonl"))]
  assert steps(cut) == steps(ref)


def test_failed_children_get_the_failed_reward_and_too_many_abort(tmp_path):
  c = search_worker.toy_config()
  c.search.failed_reward = -1.0
  c.search.max_failures_in_row = 4
  n = {"i": 0}

  def sometimes_nan(archs):
    n["i"] += 1
    return [float("nan") if n["i"] % 3 == 0 else 0.5 for _ in archs]

  res = search.run_search(c, sometimes_nan, str(tmp_path / "a"))
  failed = [r for r in res.history if r.status == "failed"]
  assert len(failed) == 5 and all(r.reward == -1.0 for r in failed)

  def always_fails(archs):
    return [search.ChildResult(status="failed", error="XlaRuntimeError: RESOURCE_EXHAUSTED")
            for _ in archs]

  with pytest.raises(search.SearchAborted, match="5 children failed in a row"):
    search.run_search(c, always_fails, str(tmp_path / "b"))
  rows = _history(tmp_path / "b")
  assert len(rows) == 5 and rows[0]["error"].startswith("XlaRuntimeError")


def test_memo_does_not_retrain_a_known_architecture(tmp_path):
  c = search_worker.toy_config()
  c.space.kernels = (1, 3)
  c.space.filters = (8,)
  c.space.blocks = (1,)
  c.search.memo = True
  seen = []

  def ev(archs):
    seen.extend(archs)
    return [float(a.kernels[0]) / 3 for a in archs]

  res = search.run_search(c, ev, str(tmp_path))
  assert len(seen) == len(set(seen)) == 2  # Only two architectures exist.
  memo = [r for r in res.history if r.status == "memo"]
  assert len(memo) == 13
  assert all(r.reward == float(r.architecture.kernels[0]) / 3 for r in res.history)


def test_child_evaluator_isolates_failures(config_factory):
  from nasrl_jax import train
  c = config_factory("quick")
  c.space.blocks = (1, 1, 1, 1, 1)
  x = np.zeros((40, 32, 32, 1), np.uint8)
  y = np.arange(40) % 2
  data = train.DeviceData.from_numpy(x, y)
  split = train.make_split(np.arange(30), np.zeros(30), np.arange(30, 40), 32, 64)
  ev = search.ChildEvaluator(c, data, split, (32, 32, 1), 2, 32, 64)

  def boom(arch, device=None):
    raise MemoryError("RESOURCE_EXHAUSTED: out of memory")

  ev.trainer = boom
  arch = SearchSpace(blocks=(1, 1, 1, 1, 1)).sample(jax.random.key(0))
  (res,) = ev([arch])
  assert res.status == "failed" and res.error.startswith("MemoryError")
  assert res.params > 0
