import jax
import jax.numpy as jnp
import numpy as np

from nasrl_jax import controller
from nasrl_jax.space import SearchSpace


def _setup(config_factory, space=None, **ctrl):
  c = config_factory()
  for k, v in ctrl.items():
    c.controller[k] = v
  sp = space or SearchSpace()
  g, p, r = controller.init(c.controller, sp, jax.random.key(0))
  return c, sp, g, p, r


def test_sampling_is_deterministic_per_key(config_factory):
  c, sp, g, p, r = _setup(config_factory)
  sampler = controller.make_sampler(g, r, sp.num_decisions, c.controller)
  keys = jax.random.split(jax.random.key(1), 6)
  a1, lp1, e1 = sampler(p, keys)
  a2, lp2, e2 = sampler(p, keys)
  assert a1.shape == (6, 32) and a1.dtype == jnp.int32
  np.testing.assert_array_equal(a1, a2)
  np.testing.assert_array_equal(lp1, lp2)
  a3, _, _ = sampler(p, jax.random.split(jax.random.key(2), 6))
  assert not np.array_equal(a1, a3)
  # Each row decodes to an architecture; different keys in a batch give different samples.
  archs = [sp.decode(a) for a in np.asarray(a1)]
  assert len(set(archs)) == 6


def test_log_prob_by_teacher_forcing_matches_sampling(config_factory):
  c, sp, g, p, r = _setup(config_factory)
  sampler = controller.make_sampler(g, r, sp.num_decisions, c.controller)
  actions, logp, ent = sampler(p, jax.random.split(jax.random.key(3), 5))
  lp2, ent2 = controller.make_log_prob(g, r, c.controller)(p, actions)
  np.testing.assert_allclose(lp2, logp, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(ent2, ent, rtol=1e-5, atol=1e-5)
  # Uniform +-0.08 init: the policy is close to uniform over 4 choices per decision.
  np.testing.assert_allclose(np.asarray(logp), 32 * np.log(0.25), atol=1.5)
  assert abs(float(ent[0]) - 32 * np.log(4)) < 0.05


def test_log_prob_equals_product_of_step_probabilities(config_factory):
  """log p(actions) equals the sum of per-decision log-softmax values recomputed by hand."""
  c, sp, g, p, r = _setup(config_factory, init_scale=0.5)
  actions = jnp.asarray(SearchSpace().encode(SearchSpace().sample(jax.random.key(5))))
  lp, _ = controller.log_prob_and_entropy(g, p, r, actions)
  from flax import nnx
  model = nnx.merge(g, p, r)
  carry, x, total = model.initial_carry(), model.start[...], 0.0
  for t in range(32):
    carry, logits = model.step(carry, x, t % 2, 1.0, 0.0)
    probs = np.exp(np.asarray(logits[:4]) - np.max(np.asarray(logits[:4])))
    probs /= probs.sum()
    total += np.log(probs[int(actions[t])])
    x = model.embed[t % 2, int(actions[t])]
  np.testing.assert_allclose(float(lp), total, rtol=1e-5)


def test_unequal_choice_counts_never_sample_invalid_actions(config_factory):
  sp = SearchSpace(kernels=(1, 3, 5), filters=(8, 16, 32, 64, 128), blocks=(1, 1))
  c, sp, g, p, r = _setup(config_factory, space=sp, init_scale=2.0)
  sampler = controller.make_sampler(g, r, sp.num_decisions, c.controller)
  a, _, _ = sampler(p, jax.random.split(jax.random.key(0), 400))
  a = np.asarray(a)
  assert a[:, 0::2].max() == 2 and a[:, 1::2].max() == 4
  assert set(a[:, 1::2].ravel()) == {0, 1, 2, 3, 4}


def test_temperature_and_tanh_constant_flatten_the_policy(config_factory):
  c, sp, g, p, r = _setup(config_factory, init_scale=1.0)
  c_hot, *_ = _setup(config_factory, init_scale=1.0, temperature=5.0)
  c_tanh, *_ = _setup(config_factory, init_scale=1.0, tanh_constant=0.5)
  keys = jax.random.split(jax.random.key(0), 16)
  ent = lambda cfg: float(jnp.mean(controller.make_sampler(g, r, 32, cfg.controller)(p, keys)[2]))
  base = ent(c)
  assert ent(c_hot) > base
  assert ent(c_tanh) > base
