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
  assert os.path.isdir(tmp_path / "strategy")
  from tensorboard.backend.event_processing import event_accumulator
  acc = event_accumulator.EventAccumulator(str(tmp_path / "tb"))
  acc.Reload()
  means = [e.value for e in acc.Scalars("reinforce/mean_reward")]
  assert means == pytest.approx([s["mean_reward"] for s in steps])
  best = res.best(1)[0]
  assert best.reward == max(r.reward for r in res.history)


def test_random_strategy_same_format_and_deterministic(tmp_path):
  c = search_worker.toy_config()
  a = search.run_search(c, search_worker.make_evaluator(), str(tmp_path / "a"), strategy="random")
  search.run_search(c, search_worker.make_evaluator(), str(tmp_path / "b"), strategy="random")
  assert _key(_history(tmp_path / "a")) == _key(_history(tmp_path / "b"))
  assert all(r["strategy"] == "random" for r in _history(tmp_path / "a"))
  assert "baseline" not in a.steps[0]
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


@pytest.mark.slow(cpu_s=15)
def test_sigkill_mid_step_and_resume_gives_the_uninterrupted_history(tmp_path):
  """A search subprocess SIGKILLed mid-step (child 7 of 15: torn history line, checkpoint of
  step 1 only), resumed from its files, gives the uninterrupted history. The reference and the
  resume run in this process; interruptions at other points are covered in-process above."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  c = search_worker.toy_config()
  search.run_search(c, search_worker.make_evaluator(), str(tmp_path / "ref"))
  ref, cut = tmp_path / "ref", tmp_path / "cut"
  worker = os.path.join(HERE, "search_worker.py")
  p = subprocess.run([sys.executable, worker, str(cut), "7"], timeout=300, env=env,
                     capture_output=True)
  assert p.returncode == -9, p.stderr.decode()[-2000:]
  assert len(_history(cut)) == 7  # Killed inside step 2 (children 6-8).
  # The resume reads only what the killed process left on disk, so it runs here (a second
  # process cost ~8 CPU-s of imports and traces and proved nothing more).
  search.run_search(c, search_worker.make_evaluator(), str(cut))
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
  assert all(not r.valid for r in failed) and all(r.valid for r in res.history if r not in failed)
  # Failed children never steer the controller: the baseline follows the valid rewards only.
  assert all(s["valid"] == sum(r.valid for r in res.history if r.step == s["step"])
             for s in res.steps)

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


def test_evolution_search_runs_through_the_same_loop(tmp_path):
  c = search_worker.toy_config()
  c.evolution.population = 4
  c.evolution.tournament = 2
  res = search.run_search(c, search_worker.make_evaluator(), str(tmp_path), strategy="evolution")
  rows = _history(tmp_path)
  assert len(rows) == 15 and all(r["strategy"] == "evolution" for r in rows)
  # After the first 4 valid children, every child is one mutation away from an earlier child.
  acts = [np.asarray(r["actions"]) for r in rows]
  for i in range(6, 15):
    assert min((acts[i] != acts[j]).sum() for j in range(i)) <= 1
  assert res.steps[-1]["population_size"] == 4


def _evaluator(c, x, y, splits, keys, **kw):
  from nasrl_jax import child, train
  spec = child.ChildSpec.from_config(c, (32, 32, 1), 2)
  factory = train.TrainerFactory.from_config(c, spec, train.Sizes(32, 16), len(y))
  return search.ChildEvaluator(factory, train.DeviceData.from_numpy(x, y), splits, keys,
                               config=c, **kw)


def _toy_child_setup(config_factory):
  from nasrl_jax import rng, train
  c = config_factory("quick")
  c.space.blocks = (1, 1, 1, 1, 1)
  c.train.epochs = 1
  c.train.batch_size = 16
  c.train.eval_batch_size = 16
  c.data.balance = "none"
  c.model.batch_norm = True
  c.data.augment = ()
  c.train.cpu_opt_level, c.train.cpu_fusion_emitters = 0, False  # The tiny config's fast compiles.
  r = np.random.default_rng(0)
  y = (np.arange(48) % 2).astype(np.int32)
  x = (r.integers(0, 150, (48, 32, 32, 1)) + 60 * y[:, None, None, None]).astype(np.uint8)
  sizes = train.Sizes(32, 16)
  splits = [train.make_split(np.arange(32), np.zeros(32), np.arange(32, 48), sizes)] * 2
  keys = [rng.train_key(rng.root_key(0), seed=0, outer=0, split=j, replica=0) for j in range(2)]
  return c, x, y, splits, keys


def test_child_evaluator_isolates_failures(config_factory):
  c, x, y, splits, keys = _toy_child_setup(config_factory)
  ev = _evaluator(c, x, y, splits, keys)

  def boom(arch):
    raise MemoryError("RESOURCE_EXHAUSTED: out of memory")

  ev.factory = type("F", (), {"spec": ev.factory.spec, "__call__": lambda self, a: boom(a)})()
  arch = SearchSpace(blocks=(1, 1, 1, 1, 1)).sample(jax.random.key(0))
  (res,) = ev([arch])
  assert res.status == "failed" and res.error.startswith("MemoryError")
  assert res.params > 0


def test_a_child_non_finite_on_any_split_fails_as_a_whole(config_factory, monkeypatch):
  from nasrl_jax import train
  c, x, y, splits, keys = _toy_child_setup(config_factory)
  ev = _evaluator(c, x, y, splits, keys)
  arch = SearchSpace(blocks=(1, 1, 1, 1, 1)).sample(jax.random.key(0))
  (good,) = ev([arch])
  assert good.status == "ok" and len(good.split_rewards) == 2
  assert good.reward == pytest.approx(np.mean(good.split_rewards))
  real = train.TrainResult.finite
  calls = {"n": 0}

  def second_split_diverges(self):
    calls["n"] += 1
    return calls["n"] % 2 == 1 and real.fget(self)

  monkeypatch.setattr(train.TrainResult, "finite", property(second_split_diverges))
  (bad,) = ev([arch])
  assert bad.status == "failed" and "split(s) [1]" in bad.error and bad.reward is None


def test_progress_best_reward_is_monotone(tmp_path, caplog):
  import logging
  caplog.set_level(logging.INFO)
  c = search_worker.toy_config()
  c.log_every_s = 0.0
  rewards = iter([0.84, 0.77, 0.5, 0.9, 0.1, 0.2] * 3)
  search.run_search(c, lambda archs: [next(rewards) for _ in archs], str(tmp_path),
                    strategy="random")
  import re
  shown = [float(m) for m in re.findall(r"best reward so far ([0-9.]+)", caplog.text)]
  assert shown and shown == sorted(shown)
