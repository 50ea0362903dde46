"""The strategy interface and the registry entry every search strategy provides.

A strategy is a stateless object (the evosax pattern) built from the search space, its
hyperparameters (a frozen dataclass: `Params`, made from the config by `params_from_config`) and
the children per step:
  init(key) -> state
  ask(state, key) -> actions int32[m, T]        (T = 2 decisions per conv layer, `space.py`)
  tell(state, actions, rewards, valid) -> (state, metrics)
`state` is a pytree of arrays; `valid` marks children whose training succeeded (failed children
carry no information about their architecture and are left out of every update); all three are
jittable. The search loop and the child training never look inside a state.

An `Entry` is what the registry (`strategies/__init__.py`) holds for each strategy: its class, its
stream id (folded into every search key: append-only, since changing it changes every sample) and
the name its winner has in the report. A new strategy is one file defining a class and an
`ENTRY`, plus one line in the registry.
"""

import dataclasses
from typing import Any, Protocol

import jax
import jax.numpy as jnp


class Strategy(Protocol):
  """What the search loop calls (see the module docstring)."""
  name: str

  def init(self, key) -> Any: ...

  def ask(self, state, key) -> jax.Array: ...

  def tell(self, state, actions, rewards, valid) -> tuple: ...


@dataclasses.dataclass(frozen=True)
class Entry:
  """A registered strategy."""
  cls: Any  # The class: cls(space, params, children_per_step) -> Strategy.
  stream_id: int  # Folded into the search key (rng.search_key): never reuse or renumber.
  model: str  # The winner's model name in the report ("NASRL", "RandomSearch", ...).

  def make(self, config, space, children_per_step: int):
    return self.cls(space, self.cls.params_from_config(config), int(children_per_step))


def uniform(key, choices: jax.Array, m: int) -> jax.Array:
  """int32[m, T]: decision t uniform in [0, choices[t])."""
  u = jax.random.uniform(key, (m, choices.shape[0]))
  return jnp.minimum((u * choices).astype(jnp.int32), choices - 1)


def mean_valid(rewards, valid):
  """(mean reward of the valid children, their count): every strategy's basic tell metrics."""
  n = jnp.sum(valid)
  return jnp.sum(jnp.where(valid, rewards, 0.0)) / jnp.maximum(n, 1), n
