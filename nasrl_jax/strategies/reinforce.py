"""NASRL: the paper's LSTM controller (controller.py) trained by REINFORCE with an exponential
moving-average baseline (nasrl_jax/reinforce.py, eq. (4) of the paper)."""

import dataclasses

import jax

from nasrl_jax import controller as controller_lib
from nasrl_jax import reinforce
from nasrl_jax import space as space_lib
from nasrl_jax.strategies import base


@dataclasses.dataclass(frozen=True)
class Params:
  """The controller's and REINFORCE's hyperparameters (`config.controller`, documented there)."""
  lstm_layers: int
  hidden_size: int
  init_scale: float
  temperature: float
  tanh_constant: float
  learning_rate: float
  baseline_decay: float
  entropy_weight: float
  max_grad_norm: float


class Reinforce:
  """The LSTM controller trained by REINFORCE with an EMA baseline (the paper)."""

  name = "reinforce"

  @staticmethod
  def params_from_config(config) -> Params:
    return Params(**{f.name: f.type(config.controller[f.name])
                     for f in dataclasses.fields(Params)})

  def __init__(self, space: space_lib.SearchSpace, params: Params, children_per_step: int):
    self.m = int(children_per_step)
    self.space, self.cfg = space, params
    # The graph definition is static; parameters are made in `init` from the key. Shapes only
    # here (an eager init cost ~4 s of op-by-op compiles per process).
    self.graphdef, _, self.rest = controller_lib.abstract(params, space)
    self.optimizer = reinforce.make_optimizer(params)
    log_prob = controller_lib.make_log_prob(self.graphdef, self.rest, params)
    self._update = reinforce.make_update(log_prob, self.optimizer, params)
    self._sample = controller_lib.make_sampler(self.graphdef, self.rest, space.num_decisions,
                                               params)

  def init(self, key) -> reinforce.ControllerState:
    _, params, _ = controller_lib.init(self.cfg, self.space, key)
    return reinforce.init_state(params, self.optimizer)

  def ask(self, state: reinforce.ControllerState, key) -> jax.Array:
    actions, _, _ = self._sample(state.params, jax.random.split(key, self.m))
    return actions

  def tell(self, state, actions, rewards, valid):
    return self._update(state, actions, rewards, valid)


ENTRY = base.Entry(Reinforce, stream_id=1, model="NASRL")
