"""REINFORCE with an exponential-moving-average baseline (eq. (4) of the paper), and reward transforms.

Eq. (4):  grad J = (1/m) sum_k sum_t grad log P(a_t | a_(t-1):1; theta) (R_k - b)
The loss minimised here is its negative, with `stop_gradient` on the advantage (R_k - b), minus an
optional entropy bonus. The baseline b is an EMA of past mean rewards, updated *after* the gradient
step so the advantage of a batch never contains its own rewards (except on the very first step,
where b is initialised to the first batch's mean reward rather than 0, so the first update does not
push up every sampled architecture alike).
"""

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax


class ControllerState(NamedTuple):
  """Everything that changes during the search (a pytree)."""
  params: dict
  opt_state: optax.OptState
  baseline: jax.Array  # float32 scalar.
  step: jax.Array  # int32 scalar: number of updates applied.


def make_optimizer(ctrl_cfg) -> optax.GradientTransformation:
  """Adam at ctrl_cfg.learning_rate, with optional global-norm clipping."""
  parts = []
  if ctrl_cfg.max_grad_norm > 0:
    parts.append(optax.clip_by_global_norm(float(ctrl_cfg.max_grad_norm)))
  parts.append(optax.adam(float(ctrl_cfg.learning_rate)))
  return optax.chain(*parts)


def init_state(params, optimizer) -> ControllerState:
  return ControllerState(params, optimizer.init(params), jnp.zeros((), jnp.float32),
                         jnp.zeros((), jnp.int32))


def reinforce_loss(params, log_prob_fn, actions, rewards, baseline, entropy_weight):
  """Negative of eq. (4)'s objective for a batch of m sampled architectures.

  Args:
    params: controller parameters.
    log_prob_fn: (params, actions[m, T]) -> (log_prob[m], entropy[m]) summed over decisions.
    actions: int32[m, T] sampled actions.
    rewards: float32[m] rewards R_k.
    baseline: float32 scalar b.
    entropy_weight: weight of the mean entropy bonus (subtracted from the loss).

  Returns:
    (loss, aux) with aux = dict(log_prob, entropy, advantage).
  """
  chex.assert_rank(actions, 2)
  chex.assert_shape(rewards, (actions.shape[0],))
  chex.assert_rank(baseline, 0)
  log_prob, entropy = log_prob_fn(params, actions)
  advantage = jax.lax.stop_gradient(rewards - baseline)
  loss = -jnp.mean(log_prob * advantage) - entropy_weight * jnp.mean(entropy)
  return loss, {"log_prob": log_prob, "entropy": entropy, "advantage": advantage}


def make_update(log_prob_fn, optimizer, ctrl_cfg):
  """Returns the jitted `update(state, actions, rewards) -> (state, metrics)`."""
  decay = float(ctrl_cfg.baseline_decay)
  entropy_weight = float(ctrl_cfg.entropy_weight)

  @jax.jit
  def update(state: ControllerState, actions, rewards):
    rewards = rewards.astype(jnp.float32)
    mean_r = jnp.mean(rewards)
    baseline = jnp.where(state.step == 0, mean_r, state.baseline)
    (loss, aux), grads = jax.value_and_grad(reinforce_loss, has_aux=True)(
        state.params, log_prob_fn, actions, rewards, baseline, entropy_weight)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_baseline = decay * baseline + (1.0 - decay) * mean_r  # After the gradient step.
    new_state = ControllerState(params, opt_state, new_baseline, state.step + 1)
    metrics = {"loss": loss, "baseline_used": baseline, "baseline": new_baseline,
               "mean_reward": mean_r, "entropy": jnp.mean(aux["entropy"]),
               "grad_norm": optax.tree.norm(grads)}
    return new_state, metrics

  return update


# ------------------------------------------------------------------ reward transforms


def transform_reward(val_acc_per_epoch, params: int, ctrl_cfg) -> float:
  """The controller's reward for one trained child.

  Args:
    val_acc_per_epoch: validation accuracy after each epoch.
    params: the child's parameter count (for the params-aware reward).
    ctrl_cfg: `config.controller` (reward, params_target, params_weight).

  Returns:
    best_val_acc   max over epochs (the paper);
    cubed_last5    (max over the last 5 epochs) ** 3 (Zoph & Le);
    params_aware   best_val_acc * (params / params_target) ** params_weight (MnasNet-style; a
                   negative weight rewards smaller networks).
  """
  acc = np.asarray(val_acc_per_epoch, np.float64)
  if acc.size == 0 or not np.all(np.isfinite(acc)):
    raise ValueError("reward needs finite validation accuracies")
  kind = ctrl_cfg.reward
  if kind == "best_val_acc":
    return float(acc.max())
  if kind == "cubed_last5":
    return float(acc[-5:].max() ** 3)
  if kind == "params_aware":
    return float(acc.max() * (params / float(ctrl_cfg.params_target)) ** float(ctrl_cfg.params_weight))
  raise ValueError(f"config.controller.reward={kind!r}: use best_val_acc, cubed_last5 or params_aware")
