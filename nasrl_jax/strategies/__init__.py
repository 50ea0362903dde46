"""Search strategies: pure ask/tell objects behind one interface (`base.py`), and their registry.

  reinforce  NASRL: the paper's LSTM controller with REINFORCE and an EMA baseline.
  random     uniform sampling of every decision: the baseline a NAS method must beat.
  evolution  regularized (ageing) evolution (Real et al. 2019).

`REGISTRY` maps a strategy's config name (`config.search.strategies`) to its `base.Entry`: class,
stream id and the report's model name. Adding a strategy: one file (a class with
`params_from_config`, `init`, `ask`, `tell`, and an `ENTRY`) and one line below; everything else
(config validation, search keys, the report's model names) reads the registry.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nasrl_jax import space as space_lib
from nasrl_jax.strategies import base
from nasrl_jax.strategies import evolution
from nasrl_jax.strategies import random_search
from nasrl_jax.strategies import reinforce

REGISTRY = {
    "reinforce": reinforce.ENTRY,
    "random": random_search.ENTRY,
    "evolution": evolution.ENTRY,
}


def names() -> tuple:
  """The registered strategies, in registry order."""
  return tuple(REGISTRY)


def entry(name: str) -> base.Entry:
  if name not in REGISTRY:
    raise ValueError(f"strategy {name!r}: use one of {', '.join(REGISTRY)}")
  return REGISTRY[name]


def model_name(name: str) -> str:
  """The report's name of a strategy's winner ("NASRL" for reinforce)."""
  return entry(name).model


def model_names() -> tuple:
  return tuple(e.model for e in REGISTRY.values())


def make(name: str, config, space: space_lib.SearchSpace, children_per_step=None):
  """The strategy `name` with its hyperparameters from `config`."""
  return entry(name).make(config, space, int(children_per_step or
                                             config.search.children_per_step))


_JITTED = {}


def jitted(name: str, config, space: space_lib.SearchSpace):
  """(init, ask, tell) of a configured strategy under jax.jit, made once per process.

  Every search of a run (outer folds x seeds) reuses them, so a strategy compiles once. `init`
  runs eagerly: it runs once per search, and compiling it (the controller's initialisers) cost
  more than running it op by op.
  """
  e = entry(name)
  key = (name, e, space, int(config.search.children_per_step), e.cls.params_from_config(config))
  if key not in _JITTED:
    s = make(name, config, space)
    _JITTED[key] = (s.init, jax.jit(s.ask), jax.jit(s.tell))
  return _JITTED[key]


def scan_search(strategy, reward_fn, key, num_steps: int, with_key: bool = False):
  """A whole search as one `lax.scan`: ask -> reward_fn(actions) -> tell, `num_steps` times.

  For cheap, jittable reward functions (toy landscapes in tests and benchmarks). With `with_key`
  the reward is `reward_fn(actions, key)` with a fresh key per step (a noisy toy reward: the
  training noise of a real child's reward).

  Returns:
    (final state, actions int32[num_steps, m, T], rewards float32[num_steps, m]).
  """
  k_init, k_ask = jax.random.split(key)
  # The reward noise's stream (with_key only), folded from the key so that k_init/k_ask, and with
  # them every noiseless toy search, stay as they were.
  k_reward = jax.random.fold_in(key, num_steps)

  def body(state, step):
    actions = strategy.ask(state, jax.random.fold_in(k_ask, step))
    if with_key:
      rewards = reward_fn(actions, jax.random.fold_in(k_reward, step))
    else:
      rewards = reward_fn(actions)
    state, _ = strategy.tell(state, actions, rewards, jnp.ones(rewards.shape, bool))
    return state, (actions, rewards)

  state, (actions, rewards) = jax.lax.scan(body, strategy.init(k_init), jnp.arange(num_steps))
  return state, actions, rewards


def to_host(state: Any):
  """A state as host numpy arrays (for Orbax: process-local jax.Arrays are refused there)."""
  return jax.tree.map(np.asarray, jax.device_get(state))
