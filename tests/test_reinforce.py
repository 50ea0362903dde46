"""REINFORCE (eq. (4)) against numbers worked out by hand, and a learning check on a toy landscape."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nasrl_jax import controller, reinforce
from nasrl_jax.space import SearchSpace


def _toy_log_prob(params, actions):
  """Two independent 2-way decisions with logits params['theta'][t]."""
  logp = jax.nn.log_softmax(params["theta"])  # [2, 2]
  lp = logp[0, actions[:, 0]] + logp[1, actions[:, 1]]
  p = jnp.exp(logp)
  ent = -jnp.sum(p * logp)
  return lp, jnp.full(actions.shape[0], ent)


THETA = jnp.array([[0.0, np.log(3.0)], [np.log(2.0), 0.0]])  # p0 = [1/4, 3/4], p1 = [2/3, 1/3]
ACTIONS = jnp.array([[1, 0], [0, 1]])
REWARDS = jnp.array([1.0, 0.0])


def test_loss_and_gradient_equal_hand_computed_values():
  b = jnp.float32(0.25)  # advantages 0.75, -0.25
  loss, aux = reinforce.reinforce_loss({"theta": THETA}, _toy_log_prob, ACTIONS, REWARDS, b, 0.0)
  # log p(a1) = ln(3/4) + ln(2/3) = ln(1/2); log p(a2) = ln(1/4) + ln(1/3) = ln(1/12).
  expected = -(0.75 * np.log(1 / 2) + (-0.25) * np.log(1 / 12)) / 2
  np.testing.assert_allclose(float(loss), expected, rtol=1e-6)
  np.testing.assert_allclose(aux["advantage"], [0.75, -0.25])
  grad = jax.grad(lambda p: reinforce.reinforce_loss(p, _toy_log_prob, ACTIONS, REWARDS, b,
                                                     0.0)[0])({"theta": THETA})["theta"]
  # d log softmax / d theta_t = onehot(a_t) - p_t; grad = -(1/m) sum_k A_k (onehot - p).
  np.testing.assert_allclose(grad, [[0.1875, -0.1875], [-5 / 24, 5 / 24]], rtol=1e-5, atol=1e-7)


def test_advantage_is_not_differentiated_through_baseline():
  g = jax.grad(lambda b: reinforce.reinforce_loss({"theta": THETA}, _toy_log_prob, ACTIONS,
                                                  REWARDS, b, 0.0)[0])(jnp.float32(0.3))
  assert float(g) == 0.0


def test_entropy_bonus():
  l0, _ = reinforce.reinforce_loss({"theta": THETA}, _toy_log_prob, ACTIONS, REWARDS, 0.25, 0.0)
  l1, _ = reinforce.reinforce_loss({"theta": THETA}, _toy_log_prob, ACTIONS, REWARDS, 0.25, 0.1)
  h = -(0.25 * np.log(0.25) + 0.75 * np.log(0.75)) - (2 / 3 * np.log(2 / 3) + 1 / 3 * np.log(1 / 3))
  np.testing.assert_allclose(float(l0 - l1), 0.1 * h, rtol=1e-5)


def test_update_step_and_ema_baseline(config_factory):
  c = config_factory().controller
  c.baseline_decay = 0.8
  c.entropy_weight = 0.0
  opt = optax.sgd(1.0)
  update = reinforce.make_update(_toy_log_prob, opt, c)
  state = reinforce.init_state({"theta": THETA}, opt)
  # Step 0: b starts at the batch mean (0.5) -> advantages +-0.5; then b <- 0.8 b + 0.2 mean.
  state, m = update(state, ACTIONS, REWARDS)
  np.testing.assert_allclose(float(m["baseline_used"]), 0.5)
  np.testing.assert_allclose(float(state.baseline), 0.8 * 0.5 + 0.2 * 0.5)
  # SGD lr 1: theta <- theta - grad, grad = -(1/2) sum_k A_k (onehot - p).
  p0, p1 = np.array([0.25, 0.75]), np.array([2 / 3, 1 / 3])
  g0 = -(0.5 * (np.array([0, 1]) - p0) - 0.5 * (np.array([1, 0]) - p0)) / 2
  g1 = -(0.5 * (np.array([1, 0]) - p1) - 0.5 * (np.array([0, 1]) - p1)) / 2
  np.testing.assert_allclose(state.params["theta"], np.asarray(THETA) - np.stack([g0, g1]),
                             rtol=1e-5)
  # Step 1: the baseline used is the EMA (0.5), then updated with the new mean reward 1.0.
  state, m = update(state, ACTIONS, jnp.array([1.0, 1.0]))
  np.testing.assert_allclose(float(m["baseline_used"]), 0.5)
  np.testing.assert_allclose(float(state.baseline), 0.8 * 0.5 + 0.2 * 1.0)
  assert int(state.step) == 2


def _result(acc, loss, probs=None, labels=(0, 1, 1, 0)):
  """A TrainResult-like record with per-epoch curves (reinforce reads only these fields)."""
  import types
  n = len(acc)
  probs = np.tile(np.array([[0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.6, 0.4]]), (n, 1, 1)) \
      if probs is None else probs
  return types.SimpleNamespace(val_acc=np.asarray(acc), val_loss=np.asarray(loss),
                               val_probs=probs, val_labels=np.asarray(labels),
                               best_epoch=int(np.argmin(loss)), best_val_loss=float(min(loss)))


def test_reward_metrics_and_transforms(config_factory):
  c = config_factory()
  acc = [0.9, 0.5, 0.6, 0.7, 0.65, 0.6]
  loss = [0.9, 0.8, 0.4, 0.5, 0.6, 0.7]  # Kept weights: epoch 2.
  res = _result(acc, loss)
  c.controller.reward = "best"
  c.controller.reward_metric = "val_accuracy"
  assert reinforce.split_reward(res, 10, c, 2)["reward"] == pytest.approx(0.9)  # The paper.
  c.controller.reward_metric = "val_nll"
  assert reinforce.split_reward(res, 10, c, 2)["reward"] == pytest.approx(-0.4)
  c.controller.reward_metric = "val_auroc"
  assert reinforce.split_reward(res, 10, c, 2)["reward"] == pytest.approx(1.0)  # Separates.
  c.controller.reward_metric = "val_accuracy"
  c.controller.reward = "cubed_last5"
  assert reinforce.split_reward(res, 10, c, 2)["reward"] == pytest.approx(0.7 ** 3)
  c.controller.reward = "params_aware"
  c.controller.params_target = 1000
  c.controller.params_weight = -0.07
  assert reinforce.split_reward(res, 2000, c, 2)["reward"] == pytest.approx(0.9 * 2 ** -0.07)
  c.controller.reward = "nope"
  with pytest.raises(ValueError, match="controller.reward"):
    reinforce.split_reward(res, 10, c, 2)
  from nasrl_jax.errors import UserInputError
  c.controller.reward = "cubed_last5"
  c.controller.reward_metric = "val_nll"
  with pytest.raises(UserInputError, match="val_nll"):
    reinforce.check_reward_config(c.controller)


def test_failed_children_carry_no_advantage_even_with_nan_rewards(config_factory):
  c = config_factory().controller
  c.entropy_weight = 0.0
  opt = optax.sgd(1.0)
  update = reinforce.make_update(_toy_log_prob, opt, c)
  state = reinforce.init_state({"theta": THETA}, opt)
  actions = jnp.array([[1, 0], [0, 1], [1, 1]])
  new, m = update(state, actions, jnp.array([1.0, 0.0, jnp.nan]), jnp.array([True, True, False]))
  assert np.all(np.isfinite(np.asarray(new.params["theta"])))
  np.testing.assert_allclose(float(m["baseline_used"]), 0.5)  # Mean of the valid rewards only.
  ref, _ = update(state, actions[:2], jnp.array([1.0, 0.0]))
  # Same direction as the two valid children alone; 1/m counts all three sampled children.
  np.testing.assert_allclose((np.asarray(new.params["theta"]) - np.asarray(THETA)) * 3,
                             (np.asarray(ref.params["theta"]) - np.asarray(THETA)) * 2, rtol=1e-5)


def test_controller_learns_a_toy_landscape(config_factory):
  """Reward = agreement with a fixed target architecture: the mean reward rises clearly."""
  c = config_factory()
  sp = SearchSpace()
  g, p, r = controller.init(c.controller, sp, jax.random.key(0))
  sampler = controller.make_sampler(g, r, sp.num_decisions, c.controller)
  opt = reinforce.make_optimizer(c.controller)
  update = reinforce.make_update(controller.make_log_prob(g, r, c.controller), opt, c.controller)
  state = reinforce.init_state(p, opt)
  target = sp.encode(sp.sample(jax.random.key(42)))
  means = []
  for step in range(50):  # 400 samples.
    a, _, _ = sampler(state.params, jax.random.split(jax.random.fold_in(jax.random.key(1), step), 8))
    rewards = (np.asarray(a) == target).mean(1)
    state, _ = update(state, a, jnp.asarray(rewards, jnp.float32))
    means.append(rewards.mean())
  first, last = np.mean(means[:10]), np.mean(means[-10:])
  assert first < 0.32  # Uniform policy: 1/4 agreement on average.
  assert last > first + 0.08, (first, last)
