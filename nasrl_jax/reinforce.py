"""REINFORCE with an exponential-moving-average baseline (eq. (4) of the paper), and reward transforms.

Eq. (4):  grad J = (1/m) sum_k sum_t grad log P(a_t | a_(t-1):1; theta) (R_k - b)
The loss minimised here is its negative, with `stop_gradient` on the advantage (R_k - b), minus an
optional entropy bonus. The baseline b is an EMA of past mean rewards, updated *after* the gradient
step so the advantage of a batch never contains its own rewards (except on the very first step,
where b is initialised to the first batch's mean reward rather than 0, so the first update does not
push up every sampled architecture alike).

Failed children (non-finite training, out of memory, does not fit) carry no information about the
architecture's quality: they get zero advantage (out of the gradient) and stay out of the baseline's
mean, so a hardware limit never steers the controller. They still count in the budget (m in the
1/m of eq. (4) is the number of children sampled).
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


def reinforce_loss(params, log_prob_fn, actions, rewards, baseline, entropy_weight, valid=None):
  """Negative of eq. (4)'s objective for a batch of m sampled architectures.

  Args:
    params: controller parameters.
    log_prob_fn: (params, actions[m, T]) -> (log_prob[m], entropy[m]) summed over decisions.
    actions: int32[m, T] sampled actions.
    rewards: float32[m] rewards R_k.
    baseline: float32 scalar b.
    entropy_weight: weight of the mean entropy bonus (subtracted from the loss).
    valid: optional bool[m]; children marked False (failed) get zero advantage.

  Returns:
    (loss, aux) with aux = dict(log_prob, entropy, advantage).
  """
  chex.assert_rank(actions, 2)
  chex.assert_shape(rewards, (actions.shape[0],))
  chex.assert_rank(baseline, 0)
  log_prob, entropy = log_prob_fn(params, actions)
  advantage = rewards - baseline
  if valid is not None:
    chex.assert_shape(valid, (actions.shape[0],))
    advantage = jnp.where(valid, advantage, 0.0)  # where, not *: a failed reward may be NaN.
  advantage = jax.lax.stop_gradient(advantage)
  loss = -jnp.mean(log_prob * advantage) - entropy_weight * jnp.mean(entropy)
  return loss, {"log_prob": log_prob, "entropy": entropy, "advantage": advantage}


def make_update(log_prob_fn, optimizer, ctrl_cfg):
  """Returns the jitted `update(state, actions, rewards) -> (state, metrics)`."""
  decay = float(ctrl_cfg.baseline_decay)
  entropy_weight = float(ctrl_cfg.entropy_weight)

  def update(state: ControllerState, actions, rewards, valid=None):
    """One REINFORCE step; `valid` (bool[m], default all) masks failed children out."""
    rewards = rewards.astype(jnp.float32)
    valid = jnp.ones(rewards.shape, bool) if valid is None else valid.astype(bool)
    n_valid = jnp.sum(valid)
    mean_r = jnp.sum(jnp.where(valid, rewards, 0.0)) / jnp.maximum(n_valid, 1)
    # The baseline starts at the first batch (with a valid child) and only moves with valid ones.
    started = state.step > 0
    baseline = jnp.where(started, state.baseline, mean_r)
    (loss, aux), grads = jax.value_and_grad(reinforce_loss, has_aux=True)(
        state.params, log_prob_fn, actions, rewards, baseline, entropy_weight, valid)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    any_valid = n_valid > 0
    new_baseline = jnp.where(any_valid, decay * baseline + (1.0 - decay) * mean_r,
                             state.baseline)  # After the gradient step.
    # `step` counts updates that saw a valid child: the baseline's initialisation waits for one.
    new_state = ControllerState(params, opt_state, new_baseline,
                                state.step + any_valid.astype(jnp.int32))
    metrics = {"loss": loss, "baseline_used": baseline, "baseline": new_baseline,
               "mean_reward": mean_r, "entropy": jnp.mean(aux["entropy"]),
               "grad_norm": optax.tree.norm(grads), "valid": n_valid}
    return new_state, metrics

  return jax.jit(update)


# ------------------------------------------------------------------ rewards

METRICS = ("val_accuracy", "val_auroc", "val_nll")
TRANSFORMS = ("best", "best_val_acc", "cubed_last5", "params_aware")  # best_val_acc = best (paper).


def metric_curve(result, metric: str, num_classes: int) -> np.ndarray:
  """One reward metric per epoch of a training run (`train.TrainResult`).

  val_accuracy: validation accuracy; val_auroc: AUROC of the epoch's validation probabilities
  (macro one-vs-rest in grade mode); val_nll: minus the validation NLL (higher is better).
  """
  if metric == "val_accuracy":
    return np.asarray(result.val_acc, np.float64)
  if metric == "val_nll":
    return -np.asarray(result.val_loss, np.float64)
  if metric == "val_auroc":
    from nasrl_jax import metrics  # pylint: disable=g-import-not-at-top
    return np.asarray([metrics.auroc(result.val_labels, p, num_classes)
                       for p in result.val_probs])
  raise ValueError(f"config.controller.reward_metric={metric!r}: use one of {', '.join(METRICS)}")


def metric_value(result, metric: str, num_classes: int) -> float:
  """A run's score on a metric under the paper's weights rule.

  val_accuracy is the best epoch's accuracy (the paper's reward); val_auroc and val_nll are the
  values of the kept weights (the epoch of the lowest validation loss), so they describe the
  network the run returns.
  """
  curve = metric_curve(result, metric, num_classes)
  if metric == "val_accuracy":
    return float(np.max(curve))
  best = result.best_epoch if result.best_epoch >= 0 else int(np.argmin(result.val_loss))
  return float(curve[best])


def split_reward(result, params: int, config, num_classes: int) -> dict:
  """The controller's reward for one child on one reward split, plus every metric's value.

  `config.controller.reward_metric` picks the metric; `config.controller.reward` transforms it:
    best          the metric's value (above): the paper's best validation accuracy by default;
    cubed_last5   (max over the last 5 epochs) ** 3 (Zoph & Le; accuracy or AUROC);
    params_aware  value * (params / params_target) ** params_weight (MnasNet-style; a negative
                  weight rewards smaller networks; accuracy or AUROC).

  Returns:
    {"reward", "val_accuracy", "val_auroc", "val_nll"}; NaN where undefined (one-class part).
  """
  ctrl = config.controller
  metric, kind = ctrl.reward_metric, ctrl.reward
  values = {m: (metric_value(result, m, num_classes) if m != "val_auroc" or metric == m
                or num_classes == 2 else float("nan")) for m in METRICS}
  if kind in ("best", "best_val_acc"):
    reward = values[metric]
  elif kind == "cubed_last5":
    reward = float(np.max(metric_curve(result, metric, num_classes)[-5:]) ** 3)
  elif kind == "params_aware":
    reward = values[metric] * (params / float(ctrl.params_target)) ** float(ctrl.params_weight)
  else:
    raise ValueError(f"config.controller.reward={kind!r}: use one of {', '.join(TRANSFORMS)}")
  return dict(values, reward=float(reward))


def check_reward_config(ctrl_cfg) -> None:
  """Refuses reward settings that do not combine (before any training)."""
  from nasrl_jax.errors import UserInputError  # pylint: disable=g-import-not-at-top
  if ctrl_cfg.reward_metric not in METRICS:
    raise UserInputError(f"config.controller.reward_metric={ctrl_cfg.reward_metric!r}: use one "
                         f"of {', '.join(METRICS)}")
  if ctrl_cfg.reward not in TRANSFORMS:
    raise UserInputError(f"config.controller.reward={ctrl_cfg.reward!r}: use one of "
                         f"{', '.join(TRANSFORMS)}")
  if ctrl_cfg.reward in ("cubed_last5", "params_aware") and ctrl_cfg.reward_metric == "val_nll":
    raise UserInputError(f"config.controller.reward={ctrl_cfg.reward!r} needs a metric in [0, 1] "
                         "(val_accuracy or val_auroc), not val_nll")
