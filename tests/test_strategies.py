"""Tests of nasrl_jax.strategies: pure ask/tell, a whole search as one lax.scan, failed children."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasrl_jax import strategies
from nasrl_jax.space import SearchSpace

# A shallow test-only space (5 layers, 10 decisions): fast to compile, same strategies.
SPACE = SearchSpace(blocks=(1, 1, 1, 1, 1))


# The paper's space (32 decisions) for the learning check: in the shallow one, 1,000 uniform
# samples already come close to the best agreement, and nothing could beat them clearly.
FULL = SearchSpace()
TARGET = np.tile(np.array([3, 1, 0, 2], np.int32), 8)  # A hidden target architecture.


def _agreement(actions):
  """Toy landscape: the share of decisions agreeing with the target architecture."""
  return jnp.mean(actions == TARGET, axis=-1).astype(jnp.float32)


@pytest.fixture(scope="module")
def toy_runs():
  """1,000 children (125 steps x 8) per strategy and seed, each search one jitted lax.scan."""
  from tests.conftest import load_config
  c = load_config()
  c.evolution.population = 32
  c.evolution.tournament = 8
  out = {}
  for name in strategies.names():
    s = strategies.make(name, c, FULL, children_per_step=8)
    run = jax.jit(lambda k, s=s: strategies.scan_search(s, _agreement, k, 125))
    out[name] = [np.asarray(run(jax.random.key(seed))[2]).reshape(-1) for seed in range(3)]
  return out


@pytest.mark.slow(cpu_s=14)
def test_a_whole_search_is_one_scan_and_learning_strategies_beat_random(toy_runs):
  assert all(r.shape == (1000,) for runs in toy_runs.values() for r in runs)
  last = {name: np.mean([r[-200:].mean() for r in runs]) for name, runs in toy_runs.items()}
  best = {name: np.mean([r.max() for r in runs]) for name, runs in toy_runs.items()}
  assert 0.2 < last["random"] < 0.3  # Uniform: 1/4 agreement on average.
  for name in ("reinforce", "evolution"):
    assert last[name] > last["random"] + 0.1, last
    assert best[name] > best["random"], best


def test_random_samples_every_value_and_ignores_its_state(config_factory):
  s = strategies.make("random", config_factory(), SPACE, children_per_step=500)
  a = np.asarray(s.ask(s.init(jax.random.key(0)), jax.random.key(1)))
  assert a.shape == (500, SPACE.num_decisions)
  for t, n in enumerate(SPACE.choices_per_decision):
    assert set(a[:, t]) == set(range(n))


def test_evolution_mutates_one_decision_of_a_tournament_winner(config_factory):
  c = config_factory()
  c.evolution.population = 4
  c.evolution.tournament = 4  # With replacement: the winner is the best member drawn.
  s = strategies.make("evolution", c, SPACE, children_per_step=4)
  state = s.init(jax.random.key(0))
  first = s.ask(state, jax.random.key(1))  # Population empty: uniform samples.
  rewards = jnp.array([0.1, 0.9, 0.2, 0.3])
  state, m = s.tell(state, first, rewards, jnp.ones(4, bool))
  assert int(state.count) == 4 and int(m["population_size"]) == 4
  children = np.asarray(s.ask(state, jax.random.key(2)))
  parents = np.asarray(first)
  for child in children:
    diffs = (parents != child).sum(axis=1)
    assert diffs.min() == 1  # Exactly one decision changed from some member.


def test_evolution_ages_out_the_oldest_and_skips_failed_children(config_factory):
  c = config_factory()
  c.evolution.population = 3
  c.evolution.tournament = 2
  s = strategies.make("evolution", c, SPACE, children_per_step=2)
  state = s.init(jax.random.key(0))
  a = jnp.arange(2 * SPACE.num_decisions).reshape(2, -1) % 4
  state, _ = s.tell(state, a, jnp.array([0.5, 0.6]), jnp.array([True, True]))
  b = (a + 1) % 4
  state, _ = s.tell(state, b, jnp.array([0.7, jnp.nan]), jnp.array([True, False]))
  assert int(state.count) == 3  # The failed child is not a member.
  np.testing.assert_allclose(np.asarray(state.rewards), [0.5, 0.6, 0.7])
  c2 = (a + 2) % 4
  state, _ = s.tell(state, c2, jnp.array([0.1, 0.2]), jnp.array([True, True]))
  # Two new members replaced the two oldest (slots 0 and 1); the 0.7 member stays.
  np.testing.assert_allclose(np.asarray(state.rewards), [0.1, 0.2, 0.7])
  np.testing.assert_array_equal(np.asarray(state.actions[2]), np.asarray(b[0]))


@pytest.mark.slow(cpu_s=10)
def test_reinforce_failed_children_have_zero_advantage_and_leave_the_baseline(config_factory):
  c = config_factory()
  s = strategies.make("reinforce", c, SPACE, children_per_step=4)
  state = s.init(jax.random.key(0))
  actions = jax.jit(s.ask)(state, jax.random.key(1))
  rewards = jnp.array([0.8, 0.6, 0.0, 0.0])
  valid = jnp.array([True, True, False, False])
  tell = jax.jit(s.tell)  # One compile instead of the LSTM's ops dispatched one by one.
  after, m = tell(state, actions, rewards, valid)
  # Only the two valid children enter the baseline: first step, b = their mean.
  np.testing.assert_allclose(float(m["baseline_used"]), 0.7, rtol=1e-6)
  np.testing.assert_allclose(float(after.baseline), 0.7, rtol=1e-6)
  # The same update with the failed children removed altogether gives the same gradient step
  # (up to the 1/m of eq. (4), where m counts every sampled child): compare directions.
  c.controller.entropy_weight = 0.0
  s0 = strategies.make("reinforce", c, SPACE, children_per_step=4)
  g_mask = jax.jit(jax.grad(lambda p: _loss(s0, p, actions, rewards, valid, 0.7)))(state.params)
  g_two = jax.jit(jax.grad(lambda p: _loss(s0, p, actions[:2], rewards[:2], None, 0.7)))(
      state.params)
  for a, b in zip(jax.tree.leaves(g_mask), jax.tree.leaves(g_two)):
    np.testing.assert_allclose(np.asarray(a) * 4, np.asarray(b) * 2, rtol=1e-4, atol=1e-7)
  # A step where every child failed leaves the baseline where it was.
  after2, _ = tell(after, actions, rewards, jnp.zeros(4, bool))
  np.testing.assert_allclose(float(after2.baseline), float(after.baseline))


def _loss(s, params, actions, rewards, valid, baseline):
  from nasrl_jax import controller, reinforce
  log_prob = controller.make_log_prob(s.graphdef, s.rest, s.cfg)
  return reinforce.reinforce_loss(params, log_prob, actions, rewards, jnp.float32(baseline), 0.0,
                                  valid)[0]


def test_ask_is_deterministic_per_key_and_tell_is_pure(config_factory):
  c = config_factory()
  for name in strategies.names():
    init, ask, tell = strategies.jitted(name, c, SPACE)
    state = init(jax.random.key(0))
    a1 = np.asarray(ask(state, jax.random.key(5)))
    a2 = np.asarray(ask(state, jax.random.key(5)))
    np.testing.assert_array_equal(a1, a2)
    r = jnp.linspace(0, 1, a1.shape[0])
    s1, _ = tell(state, a1, r, jnp.ones(a1.shape[0], bool))
    s2, _ = tell(state, a1, r, jnp.ones(a1.shape[0], bool))
    for x, y in zip(jax.tree.leaves(s1), jax.tree.leaves(s2)):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# ---------------------------------------------------------------------------- a fourth strategy


class _Greedy:
  """A test-only strategy: asks one fixed architecture per step, shifted by the best reward's
  child. It exists to show that a new strategy is one class and one registry line."""

  name = "greedy"

  @staticmethod
  def params_from_config(config):
    del config
    return ()

  def __init__(self, space, params, children_per_step):
    del params
    self.m = children_per_step
    self.choices = jnp.asarray(space.choices_per_decision, jnp.int32)

  def init(self, key):
    del key
    return jnp.zeros((), jnp.int32)

  def ask(self, state, key):
    del key
    return (state + jnp.arange(self.m)[:, None]) % self.choices[None, :]

  def tell(self, state, actions, rewards, valid):
    del actions
    return state + jnp.argmax(jnp.where(valid, rewards, -jnp.inf)) + 1, {"mean_reward":
                                                                        rewards.mean()}


def test_a_fourth_strategy_is_one_class_and_one_registry_line(tmp_path, monkeypatch):
  from nasrl_jax import pipeline, search
  from nasrl_jax.strategies import base
  from tests.conftest import load_config
  monkeypatch.setitem(strategies.REGISTRY, "greedy", base.Entry(_Greedy, stream_id=4,
                                                               model="Greedy"))
  c = load_config("tiny")
  c.search.strategies = ("reinforce", "greedy")
  c.eval.primary = ("Greedy vs VGG19", "subject.auroc")
  pipeline.validate_config(c)  # The config, the primary family and the report know it.
  assert strategies.model_name("greedy") == "Greedy" and "greedy" in strategies.names()
  c.search.num_steps = 3
  calls = []

  def evaluator(archs):  # Any callable: list of Architecture -> rewards.
    calls.append([str(a) for a in archs])
    return [float(i) for i in range(len(archs))]

  res = search.run_search(c, evaluator, str(tmp_path / "s"), strategy="greedy", seed=0,
                          outer_fold=1)
  assert [r.strategy for r in res.history] == ["greedy"] * 6
  by_step = [[str(r.architecture) for r in res.history if r.step == s] for s in range(3)]
  assert by_step[1] != by_step[0]  # tell() moved the state.
  assert calls and all(a in sum(by_step, []) for c in calls for a in c)
  lines = (tmp_path / "s" / "history.jsonl").read_text().splitlines()
  assert len(lines) == 6
  monkeypatch.delitem(strategies.REGISTRY, "greedy")
  with pytest.raises(Exception, match="greedy"):
    pipeline.validate_config(c)
