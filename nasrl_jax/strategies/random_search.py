"""Random search: uniform sampling of every decision, the baseline a NAS method must beat."""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from nasrl_jax import space as space_lib
from nasrl_jax.strategies import base


class RandomState(NamedTuple):
  step: jax.Array  # int32: asks answered (kept so every strategy has a checkpointable state).


@dataclasses.dataclass(frozen=True)
class Params:
  """Random search has no hyperparameters."""


class Random:
  """Uniform sampling of every decision."""

  name = "random"

  @staticmethod
  def params_from_config(config) -> Params:
    del config
    return Params()

  def __init__(self, space: space_lib.SearchSpace, params: Params, children_per_step: int):
    del params
    self.m = int(children_per_step)
    self.choices = jnp.asarray(space.choices_per_decision, jnp.int32)

  def init(self, key) -> RandomState:
    del key
    return RandomState(jnp.zeros((), jnp.int32))

  def ask(self, state: RandomState, key) -> jax.Array:
    del state
    return base.uniform(key, self.choices, self.m)

  def tell(self, state: RandomState, actions, rewards, valid):
    del actions
    mean, n = base.mean_valid(rewards, valid)
    return RandomState(state.step + 1), {"mean_reward": mean, "valid": n}


ENTRY = base.Entry(Random, stream_id=2, model="RandomSearch")
