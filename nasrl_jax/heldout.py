"""Test trainings of a chosen model on an outer fold: trained on the fold's train part (its
validation part keeps the weights and sets the threshold), tested once on its test part, with a
training stream `rng.training_key(outer fold, training seed)` independent of the search seed.
Resumable through `cv/<model>/fold<i>[_seed<s>]_train<t>.json`; the exported model is the test
training with the best validation score (`best_by_validation`), never chosen by test data."""

import os
from typing import Optional

import numpy as np

from nasrl_jax import child as child_lib
from nasrl_jax import io_utils
from nasrl_jax import metrics as metrics_lib
from nasrl_jax import reinforce
from nasrl_jax import rng as rng_lib
from nasrl_jax import train as train_lib
from nasrl_jax.run_context import Run


def final_training(run: Run, fold, outer: int, arch, *, training_seed: int,
                   search_seed: Optional[int] = None, test: bool = True):
  """Trains `arch` on the fold's train part (its val part keeps the weights), tests once.

  The training's stream is `rng.training_key(outer, training_seed)`: it does not depend on the
  search seed that chose `arch` (recorded as `seed`; None for VGG19, which no search chose).

  Returns:
    (fold result dict, train.TrainResult).
  """
  train_idx, val_idx = fold["train"], fold["val"]
  key = rng_lib.training_key(run.root, outer=outer, training_seed=training_seed)
  split = run.split(train_idx, val_idx, key)
  test_idx = np.asarray(fold["test"], np.int64) if test and len(fold["test"]) else None
  fns = run.factory(arch)
  res = fns.train(key, run.data, split, test_idx=test_idx,
                  tag={"phase": "final", "outer": outer, "seed": search_seed,
                       "training_seed": training_seed})
  if not res.finite:
    raise train_lib.ChildTrainingError(f"non-finite loss while training {arch} on fold {outer}")
  sid = np.asarray(run.dataset.subject_id)
  labels = run.labels
  best = res.best_epoch if res.best_epoch >= 0 else int(np.argmin(res.val_loss))
  pv = res.val_probs[best]
  result = {
      "fold": int(outer), "seed": None if search_seed is None else int(search_seed),
      "training_seed": int(training_seed), "group": fold.get("group", ""),
      "architecture": str(arch), "params": child_lib.count_params_for(arch, run.spec),
      "flops": child_lib.count_flops(arch, run.spec),
      "n_train": int(len(train_idx)), "n_val": int(len(val_idx)),
      "n_test": int(0 if test_idx is None else len(test_idx)),
      "val_threshold": metrics_lib.youden_threshold(res.val_labels > 0, 1.0 - pv[:, 0]),
      "val_score": reinforce.metric_value(res, run.config.controller.reward_metric,
                                          run.num_classes),
      "best_epoch": int(res.best_epoch), "best_val_loss": float(res.best_val_loss),
      "train_seconds": float(res.train_seconds),
  }
  if test_idx is not None:
    cap = np.asarray(run.dataset.cap, np.float64)[test_idx]
    result["test"] = {"subject_id": [str(s) for s in sid[test_idx]],
                      "label": [int(v) for v in labels[test_idx]],
                      "prob": np.round(res.test_probs.astype(np.float64), 6).tolist(),
                      "cap": [float(c) if np.isfinite(c) else None for c in cap]}
  return io_utils.to_json_safe(result), res


def quick_scores(result) -> tuple:
  """(accuracy, AUROC) of a fold result's test part, binary view (for log lines)."""
  t = result.get("test")
  if not t:
    return float("nan"), float("nan")
  y = np.asarray(t["label"]) > 0
  p = 1.0 - np.asarray(t["prob"])[:, 0]
  acc = float(np.mean((p >= 0.5) == y))
  return acc, metrics_lib.auroc(y.astype(int), np.stack([1 - p, p], 1), 2)


class TestLedger:
  """cv/<model>/fold<i>[_seed<s>]_train<t>.json: finished test trainings (resume)."""

  def __init__(self, workdir: str, write: bool):
    self.root = os.path.join(workdir, "cv")
    self.write = write

  def path(self, name, outer, seed, training_seed):
    searched = "" if seed is None else f"_seed{seed}"
    return os.path.join(self.root, name, f"fold{outer}{searched}_train{training_seed}.json")

  def get(self, name, outer, seed, training_seed, arch):
    p = self.path(name, outer, seed, training_seed)
    if os.path.exists(p):
      r = io_utils.read_json(p)
      if r.get("architecture") == str(arch):
        return r
    return None

  def put(self, name, result):
    if self.write:
      io_utils.atomic_write_json(
          self.path(name, result["fold"], result["seed"], result["training_seed"]), result)


def result_order(result) -> tuple:
  """Sort key of test results: outer fold, search seed (None, VGG19's, first), training seed."""
  seed = result.get("seed")
  return (result["fold"], -1 if seed is None else seed, result.get("training_seed", 0))


def best_by_validation(results):
  """The test training with the best validation score (ties: the lowest fold, search seed, then
  training seed): the model `models/<name>` exports when there is no final search. Never chosen
  by test data."""
  key = lambda r: (-(r["val_score"] if r.get("val_score") is not None else -np.inf),
                   result_order(r))
  return min(results, key=key) if results else None


def retrain_for_export(run: Run, result: dict, arch):
  """Re-runs a finished test training (same key: same weights) to export its model."""
  fold = run.folds[result["fold"]]
  return final_training(run, fold, result["fold"], arch,
                        training_seed=result.get("training_seed", 0),
                        search_seed=result.get("seed"))
