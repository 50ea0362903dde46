"""Search strategies as pure ask/tell objects (the evosax pattern): REINFORCE, random, evolution.

Every strategy is a stateless object with
  init(key) -> state
  ask(state, key) -> actions int32[m, T]        (T = 2 decisions per conv layer, `space.py`)
  tell(state, actions, rewards, valid) -> (state, metrics)
where `state` is a pytree of arrays, `valid` marks children whose training succeeded (failed
children carry no information about their architecture and are left out of every update), and
all three functions are jittable: a whole search on a cheap landscape is one `lax.scan`
(tests/test_strategies.py). The search loop (`search.py`) and the child training never look inside
a state.

  reinforce  the paper's LSTM controller (controller.py) with REINFORCE and an EMA baseline
             (reinforce.py, eq. (4)).
  random     uniform sampling of every decision: the baseline a NAS method must beat.
  evolution  regularized (ageing) evolution, Real et al. 2019: a population of the last
             `population` valid children; each child is a copy of the best of `tournament`
             members drawn at random, with one decision changed to another value; the oldest
             member leaves when a new one arrives. Until the population is full, children are
             uniform samples.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nasrl_jax import controller as controller_lib
from nasrl_jax import reinforce
from nasrl_jax import space as space_lib

NAMES = ("reinforce", "random", "evolution")
# The model name each strategy's winner gets in the report.
MODEL_NAMES = {"reinforce": "NASRL", "random": "RandomSearch", "evolution": "Evolution"}


def _uniform(key, choices: jax.Array, m: int) -> jax.Array:
  """int32[m, T]: decision t uniform in [0, choices[t])."""
  u = jax.random.uniform(key, (m, choices.shape[0]))
  return jnp.minimum((u * choices).astype(jnp.int32), choices - 1)


class RandomState(NamedTuple):
  step: jax.Array  # int32: asks answered (kept so every strategy has a checkpointable state).


class Random:
  """Uniform sampling of every decision."""

  name = "random"

  def __init__(self, space: space_lib.SearchSpace, children_per_step: int):
    self.m = int(children_per_step)
    self.choices = jnp.asarray(space.choices_per_decision, jnp.int32)

  def init(self, key) -> RandomState:
    del key
    return RandomState(jnp.zeros((), jnp.int32))

  def ask(self, state: RandomState, key) -> jax.Array:
    del state
    return _uniform(key, self.choices, self.m)

  def tell(self, state: RandomState, actions, rewards, valid):
    del actions
    n = jnp.sum(valid)
    mean = jnp.sum(jnp.where(valid, rewards, 0.0)) / jnp.maximum(n, 1)
    return RandomState(state.step + 1), {"mean_reward": mean, "valid": n}


class Reinforce:
  """The LSTM controller trained by REINFORCE with an EMA baseline (the paper)."""

  name = "reinforce"

  def __init__(self, space: space_lib.SearchSpace, ctrl_cfg, children_per_step: int):
    self.m = int(children_per_step)
    self.space, self.cfg = space, ctrl_cfg
    # The graph definition is static; parameters are made in `init` from the key. Shapes only
    # here (an eager init cost ~4 s of op-by-op compiles per process).
    self.graphdef, _, self.rest = controller_lib.abstract(ctrl_cfg, space)
    self.optimizer = reinforce.make_optimizer(ctrl_cfg)
    log_prob = controller_lib.make_log_prob(self.graphdef, self.rest, ctrl_cfg)
    self._update = reinforce.make_update(log_prob, self.optimizer, ctrl_cfg)
    self._sample = controller_lib.make_sampler(self.graphdef, self.rest, space.num_decisions,
                                               ctrl_cfg)

  def init(self, key) -> reinforce.ControllerState:
    _, params, _ = controller_lib.init(self.cfg, self.space, key)
    return reinforce.init_state(params, self.optimizer)

  def ask(self, state: reinforce.ControllerState, key) -> jax.Array:
    actions, _, _ = self._sample(state.params, jax.random.split(key, self.m))
    return actions

  def tell(self, state, actions, rewards, valid):
    return self._update(state, actions, rewards, valid)


class EvolutionState(NamedTuple):
  actions: jax.Array  # int32[P, T] members (slot order: a ring buffer, oldest overwritten).
  rewards: jax.Array  # float32[P]
  count: jax.Array  # int32: valid children inserted so far (slot of the next = count % P).


class Evolution:
  """Regularized evolution (Real et al. 2019): tournament selection, one mutation, ageing."""

  name = "evolution"

  def __init__(self, space: space_lib.SearchSpace, population: int, tournament: int,
               children_per_step: int):
    if population < 2 or not 1 <= tournament <= population:
      raise ValueError(f"evolution: population={population} must be >= 2 and tournament="
                       f"{tournament} in [1, population]")
    self.m, self.p, self.s = int(children_per_step), int(population), int(tournament)
    self.choices = jnp.asarray(space.choices_per_decision, jnp.int32)
    self.t = int(self.choices.shape[0])

  def init(self, key) -> EvolutionState:
    del key
    return EvolutionState(jnp.zeros((self.p, self.t), jnp.int32),
                          jnp.full((self.p,), -jnp.inf, jnp.float32), jnp.zeros((), jnp.int32))

  def _child(self, state: EvolutionState, key):
    """One tournament-selected, mutated copy."""
    k_tour, k_pos, k_val = jax.random.split(key, 3)
    filled = jnp.minimum(state.count, self.p)
    # Tournament: `s` members drawn uniformly (with replacement) from the filled slots.
    members = jax.random.randint(k_tour, (self.s,), 0, jnp.maximum(filled, 1))
    parent = state.actions[members[jnp.argmax(state.rewards[members])]]
    # Mutation: one decision moves to a different value of its own range.
    pos = jax.random.randint(k_pos, (), 0, self.t)
    n = self.choices[pos]
    shift = jax.random.randint(k_val, (), 1, jnp.maximum(n, 2))
    return parent.at[pos].set((parent[pos] + shift) % n)

  def ask(self, state: EvolutionState, key) -> jax.Array:
    k_rand, k_mut = jax.random.split(key)
    random = _uniform(k_rand, self.choices, self.m)
    mutated = jax.vmap(lambda k: self._child(state, k))(jax.random.split(k_mut, self.m))
    return jnp.where(state.count >= self.p, mutated, random)

  def tell(self, state: EvolutionState, actions, rewards, valid):
    """Inserts the valid children in order; each replaces the oldest member once full."""
    def insert(st, x):
      a, r, ok = x
      slot = st.count % self.p
      new = EvolutionState(st.actions.at[slot].set(a), st.rewards.at[slot].set(r), st.count + 1)
      return jax.tree.map(lambda n_, o: jnp.where(ok, n_, o), new, st), None

    state, _ = jax.lax.scan(insert, state, (actions, rewards.astype(jnp.float32),
                                            valid.astype(bool)))
    n = jnp.sum(valid)
    mean = jnp.sum(jnp.where(valid, rewards, 0.0)) / jnp.maximum(n, 1)
    filled = jnp.minimum(state.count, self.p)
    live = jnp.arange(self.p) < filled
    pop_mean = jnp.sum(jnp.where(live, state.rewards, 0.0)) / jnp.maximum(filled, 1)
    return state, {"mean_reward": mean, "valid": n, "population_mean": pop_mean,
                   "population_size": filled}


def make(name: str, config, space: space_lib.SearchSpace, children_per_step=None):
  """The strategy `name` configured from `config` (controller, evolution, search fields)."""
  m = int(children_per_step or config.search.children_per_step)
  if name == "reinforce":
    return Reinforce(space, config.controller, m)
  if name == "random":
    return Random(space, m)
  if name == "evolution":
    return Evolution(space, int(config.evolution.population), int(config.evolution.tournament),
                     m)
  raise ValueError(f"strategy {name!r}: use one of {', '.join(NAMES)}")


_JITTED = {}


def jitted(name: str, config, space: space_lib.SearchSpace):
  """(init, ask, tell) of a configured strategy under jax.jit, made once per process.

  Every search of a run (outer folds x seeds) reuses them, so a strategy compiles once. `init`
  runs eagerly: it runs once per search, and compiling it (the controller's initialisers) cost
  more than running it op by op.
  """
  key = (name, space, int(config.search.children_per_step), config.controller.to_json(),
         config.evolution.to_json())
  if key not in _JITTED:
    s = make(name, config, space)
    _JITTED[key] = (s.init, jax.jit(s.ask), jax.jit(s.tell))
  return _JITTED[key]


def scan_search(strategy, reward_fn, key, num_steps: int):
  """A whole search as one `lax.scan`: ask -> reward_fn(actions) -> tell, `num_steps` times.

  For cheap, jittable reward functions (toy landscapes in tests and benchmarks).

  Returns:
    (final state, actions int32[num_steps, m, T], rewards float32[num_steps, m]).
  """
  k_init, k_ask = jax.random.split(key)

  def body(state, step):
    actions = strategy.ask(state, jax.random.fold_in(k_ask, step))
    rewards = reward_fn(actions)
    state, _ = strategy.tell(state, actions, rewards, jnp.ones(rewards.shape, bool))
    return state, (actions, rewards)

  state, (actions, rewards) = jax.lax.scan(body, strategy.init(k_init), jnp.arange(num_steps))
  return state, actions, rewards


def to_host(state: Any):
  """A state as host numpy arrays (for Orbax: process-local jax.Arrays are refused there)."""
  return jax.tree.map(np.asarray, jax.device_get(state))
