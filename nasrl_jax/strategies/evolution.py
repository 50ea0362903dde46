"""Regularized (ageing) evolution, Real et al. 2019.

A population of the last `population` valid children; each child is a copy of the best of
`tournament` members drawn at random, with one decision changed to another value; the oldest member
leaves when a new one arrives. Until the population is full, children are uniform samples.
"""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from nasrl_jax import space as space_lib
from nasrl_jax.strategies import base


class EvolutionState(NamedTuple):
  actions: jax.Array  # int32[P, T] members (slot order: a ring buffer, oldest overwritten).
  rewards: jax.Array  # float32[P]
  count: jax.Array  # int32: valid children inserted so far (slot of the next = count % P).


@dataclasses.dataclass(frozen=True)
class Params:
  population: int  # Members kept (the newest valid children).
  tournament: int  # Members drawn per child; the best of them is mutated.


class Evolution:
  """Regularized evolution: tournament selection, one mutation, ageing."""

  name = "evolution"

  @staticmethod
  def params_from_config(config) -> Params:
    return Params(int(config.evolution.population), int(config.evolution.tournament))

  def __init__(self, space: space_lib.SearchSpace, params: Params, children_per_step: int):
    if params.population < 2 or not 1 <= params.tournament <= params.population:
      raise ValueError(f"evolution: population={params.population} must be >= 2 and "
                       f"tournament={params.tournament} in [1, population]")
    self.m, self.p, self.s = int(children_per_step), params.population, params.tournament
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
    random = base.uniform(k_rand, self.choices, self.m)
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
    mean, n = base.mean_valid(rewards, valid)
    filled = jnp.minimum(state.count, self.p)
    live = jnp.arange(self.p) < filled
    pop_mean = jnp.sum(jnp.where(live, state.rewards, 0.0)) / jnp.maximum(filled, 1)
    return state, {"mean_reward": mean, "valid": n, "population_mean": pop_mean,
                   "population_size": filled}


ENTRY = base.Entry(Evolution, stream_id=3, model="Evolution")
