"""The controller: an LSTM policy over architectures (Zoph & Le 2016), in Flax NNX.

For each conv layer the controller makes two decisions, kernel size then filters. At decision t the
stacked LSTM reads the embedding of the previous action (a learned start vector at t = 0), a softmax
head for the decision's type (kernel or filters) gives the logits, an action is sampled, and its
embedding is the next input. Sampling one architecture is a `lax.scan` over the decisions; a batch
is `jax.vmap` over PRNG keys. `log_prob_and_entropy` replays given actions (teacher forcing) with the
same scan, for the REINFORCE gradient.

Functional boundary: `init(config, space, key) -> (graphdef, params)`; every other function takes
the graphdef (static) and params (a pytree) and is pure.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nasrl_jax import space as space_lib

_NEG = -1e9  # Logit of an action that does not exist for this decision type.


def _uniform_init(scale):
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -scale, scale)
  return init


class Controller(nnx.Module):
  """Stacked LSTM with one embedding table and one softmax head per decision type."""

  def __init__(self, num_choices: tuple, lstm_layers: int, hidden: int, init_scale: float,
               *, rngs: nnx.Rngs):
    init = _uniform_init(init_scale)
    self.num_choices = tuple(int(n) for n in num_choices)  # Per decision type (kernel, filters).
    vocab = max(self.num_choices)
    self.start = nnx.Param(init(rngs.params(), (hidden,)))
    self.embed = nnx.Param(init(rngs.params(), (len(num_choices), vocab, hidden)))
    self.heads_w = nnx.Param(init(rngs.params(), (len(num_choices), hidden, vocab)))
    self.heads_b = nnx.Param(init(rngs.params(), (len(num_choices), vocab)))
    self.cells = nnx.List([
        nnx.LSTMCell(hidden, hidden, kernel_init=init, recurrent_kernel_init=init,
                     bias_init=init, rngs=rngs) for _ in range(lstm_layers)])
    self.hidden = hidden
    self.mask = nnx.Variable(jnp.asarray(action_mask(self.num_choices)))  # Not a Param: not trained.

  def initial_carry(self):
    z = jnp.zeros((self.hidden,))
    return tuple((z, z) for _ in self.cells)

  def step(self, carry, x, decision_type, temperature, tanh_constant):
    """One decision: LSTM step on input x, then masked logits of the decision type's head."""
    new_carry = []
    h = x
    for cell, c in zip(self.cells, carry):
      c, h = cell(c, h)
      new_carry.append(c)
    logits = h @ self.heads_w[decision_type] + self.heads_b[decision_type]
    logits = logits / temperature
    if tanh_constant > 0:
      logits = tanh_constant * jnp.tanh(logits)
    return tuple(new_carry), logits + self.mask[decision_type]


def init(ctrl_cfg, space: space_lib.SearchSpace, key: jax.Array):
  """Builds the controller; returns (graphdef, params, rest) (rest holds the action mask)."""
  model = Controller((len(space.kernels), len(space.filters)), int(ctrl_cfg.lstm_layers),
                     int(ctrl_cfg.hidden_size), float(ctrl_cfg.init_scale),
                     rngs=nnx.Rngs(params=key))
  return nnx.split(model, nnx.Param, ...)


def action_mask(num_choices) -> np.ndarray:
  """float32[types, max choices]: 0 for the actions a decision type has, _NEG for the others."""
  mask = np.full((len(num_choices), max(num_choices)), _NEG, np.float32)
  for t, n in enumerate(num_choices):
    mask[t, :n] = 0.0
  return mask


def abstract(ctrl_cfg, space: space_lib.SearchSpace):
  """(graphdef, abstract params, rest) without running any initialiser (`nnx.eval_shape`);
  `rest` (the action mask) is concrete."""
  num_choices = (len(space.kernels), len(space.filters))
  model = nnx.eval_shape(lambda: Controller(num_choices, int(ctrl_cfg.lstm_layers),
                                            int(ctrl_cfg.hidden_size), float(ctrl_cfg.init_scale),
                                            rngs=nnx.Rngs(params=jax.random.key(0))))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  rest = jax.tree.map(lambda _: jnp.asarray(action_mask(num_choices)), rest)
  return graphdef, params, rest


def _scan_decisions(graphdef, params, rest, num_decisions, temperature, tanh_constant,
                    choose):
  """Runs the LSTM over `num_decisions` decisions; `choose(t, logits) -> action` picks each one.

  Returns (actions int32[T], log_probs float32[T], entropies float32[T]).
  """
  model = nnx.merge(graphdef, params, rest)
  num_types = len(model.num_choices)

  def body(state, t):
    carry, x = state
    dtype = t % num_types
    carry, logits = model.step(carry, x, dtype, temperature, tanh_constant)
    action = choose(t, logits)
    logp_all = jax.nn.log_softmax(logits)
    logp = logp_all[action]
    p = jnp.exp(logp_all)
    entropy = -jnp.sum(jnp.where(p > 0, p * logp_all, 0.0))
    x_next = model.embed[dtype, action]
    return (carry, x_next), (action, logp, entropy)

  _, (actions, logps, ents) = jax.lax.scan(
      body, (model.initial_carry(), model.start[...]), jnp.arange(num_decisions))
  return actions.astype(jnp.int32), logps, ents


def sample_one(graphdef, params, rest, key, *, num_decisions, temperature=1.0, tanh_constant=0.0):
  """Samples one architecture's actions. Returns (actions[T], log_prob sum, entropy sum)."""
  keys = jax.random.split(key, num_decisions)
  choose = lambda t, logits: jax.random.categorical(keys[t], logits)
  actions, logps, ents = _scan_decisions(graphdef, params, rest, num_decisions, temperature,
                                         tanh_constant, choose)
  return actions, logps.sum(), ents.sum()


def log_prob_and_entropy(graphdef, params, rest, actions, *, temperature=1.0, tanh_constant=0.0):
  """Teacher forcing: sum over decisions of log p(a_t | a_<t) and of the policy entropy."""
  choose = lambda t, logits: actions[t]
  _, logps, ents = _scan_decisions(graphdef, params, rest, actions.shape[0], temperature,
                                   tanh_constant, choose)
  return logps.sum(), ents.sum()


def make_sampler(graphdef, rest, num_decisions, ctrl_cfg):
  """jit(vmap(sample_one)) over keys: `sampler(params, keys[m]) -> (actions[m,T], logp[m], ent[m])`.

  Compiled once per batch size.
  """
  fn = functools.partial(sample_one, graphdef, num_decisions=num_decisions,
                         temperature=float(ctrl_cfg.temperature),
                         tanh_constant=float(ctrl_cfg.tanh_constant))
  return jax.jit(jax.vmap(lambda params, key: fn(params, rest, key), in_axes=(None, 0)))


def make_log_prob(graphdef, rest, ctrl_cfg):
  """vmap of `log_prob_and_entropy` over a batch of action sequences (not jitted: used in a loss)."""
  fn = functools.partial(log_prob_and_entropy, graphdef, temperature=float(ctrl_cfg.temperature),
                         tanh_constant=float(ctrl_cfg.tanh_constant))
  return jax.vmap(lambda params, actions: fn(params, rest, actions), in_axes=(None, 0))
