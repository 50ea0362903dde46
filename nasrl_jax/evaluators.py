"""Evaluators: the callables a search hands its children to.

`ChildEvaluator` trains each child on the search's reward splits with the run's trainer factory
(its reward: the mean over the splits); `DistributedEvaluator` spreads a call's children over the
processes of a `jax.distributed` run. Any callable list[Architecture] -> list[float | ChildResult]
is an evaluator (`search.run_search`'s contract).
"""

import concurrent.futures
import dataclasses
import logging
import os
from typing import Sequence

import jax
import numpy as np

from nasrl_jax.errors import UserInputError
from nasrl_jax.records import DOES_NOT_FIT, FAILED, OK, ChildResult, normalise


class DistributedEvaluator:
  """Splits each call's children over the processes of a `jax.distributed` run.

  Process p trains the children i with i % num_processes == p (with its local evaluator), then
  every result is all-gathered (`multihost_utils.process_allgather` of the JSON-encoded results,
  exact), so every process sees the same rewards, applies the same update and holds the same
  history as a single-process run. Weights stay on the process that trained them.
  """

  def __init__(self, local, name: str = "children"):
    self.local, self.name, self.calls = local, name, 0
    self.pid, self.n = jax.process_index(), jax.process_count()
    self.parallelism = self.n * max(1, int(getattr(local, "parallelism", 1)))

  def _mine(self, archs):
    return [a for i, a in enumerate(archs) if i % self.n == self.pid]

  def prefetch(self, archs):
    if hasattr(self.local, "prefetch"):
      self.local.prefetch(self._mine(archs))

  def __call__(self, archs):
    from nasrl_jax import multihost  # pylint: disable=g-import-not-at-top
    mine = self._mine(archs)
    local = [normalise(r) for r in (self.local(mine) if mine else [])]
    self.calls += 1
    # Through the coordination service: a process whose children took longer may arrive much
    # later than its peers (JAX's CPU collectives give it 30 s).
    parts = multihost.allgather_json(
        [dataclasses.asdict(dataclasses.replace(r, weights=None)) for r in local],
        f"{self.name}-{self.calls}")
    out = []
    for i in range(len(archs)):
      p, j = i % self.n, i // self.n
      if p == self.pid:
        out.append(local[j])
        continue
      d = dict(parts[p][j])
      for k in ("reward", "best_val_loss"):
        d[k] = float("nan") if d.get(k) is None else d[k]
      out.append(ChildResult(**d))
    return out


class ChildEvaluator:
  """Trains each child on the search's reward splits; its reward is the mean over the splits.

  A child whose training is non-finite on any split fails as a whole; one that raises (out of
  memory, ...) fails with the error class; one whose estimated memory exceeds the device's
  (`preflight.fits`) is `does_not_fit` without training. The search goes on either way.

  Scale-out: with several local devices, the children passed in one call train concurrently, one
  per device (a thread each; the dataset is copied to every device once). `prefetch(archs)`
  compiles upcoming children in a background thread while the current ones train
  (`config.search.aot_compile`: on | off | auto = on when the host has more than 4 cores).
  """

  def __init__(self, trainer_factory, data, splits: Sequence, keys: Sequence, *, config,
               devices=None, keep_weights: bool = False, tag=None, fit_check=None):
    """Args:
      trainer_factory: arch -> train.TrainFns (the run's `make_train_fn` with its settings).
      data: train.DeviceData on the first device.
      splits, keys: the reward splits and one training key per split.
      config: the experiment config (controller.reward_metric / reward, search.aot_compile).
      devices: local devices training children concurrently (default: data's device).
      keep_weights: return split 0's kept weights (top-k checkpointing).
      tag: passed to every training call (what it is for; read by the tests' leakage checks).
      fit_check: optional (arch, fns, device) -> (reason or '', fns) (memory pre-flight,
        `preflight.make_fit_check`).
    """
    from nasrl_jax import child as child_lib  # pylint: disable=g-import-not-at-top
    from nasrl_jax import reinforce  # pylint: disable=g-import-not-at-top
    self._child, self._reinforce = child_lib, reinforce
    self.factory, self.splits, self.keys = trainer_factory, list(splits), list(keys)
    self.config, self.keep_weights, self.tag, self.fit_check = config, keep_weights, tag, fit_check
    home = data.device
    self.devices = list(devices) if devices else [home]
    self.data = {d: (data if d == home else data.to(d)) for d in self.devices}
    self.parallelism = len(self.devices)
    aot = config.search.aot_compile
    if aot not in ("on", "off", "auto"):
      raise UserInputError(f"config.search.aot_compile={aot!r}: use on, off or auto")
    self.aot = aot == "on" or (aot == "auto" and (os.cpu_count() or 1) > 4)
    self._pool = concurrent.futures.ThreadPoolExecutor(max(2, len(self.devices)))
    self._prefetched = {}

  def prefetch(self, archs) -> None:
    """Starts compiling these children's programs in the background (in evaluation order)."""
    if not self.aot:
      return
    for i, arch in enumerate(archs):
      dev = self.devices[i % len(self.devices)]
      if (arch, dev) not in self._prefetched:
        self._prefetched[(arch, dev)] = self._pool.submit(
            lambda a, d: self.factory(a).programs(d), arch, dev)

  def evaluate_one(self, arch, device=None) -> ChildResult:
    device = device or self.devices[0]
    spec = self.factory.spec
    params = self._child.count_params_for(arch, spec)
    flops = self._child.count_flops(arch, spec)
    try:
      fns = self.factory(arch)
      future = self._prefetched.pop((arch, device), None)
      programs = future.result() if future is not None else fns.programs(device)
      if self.fit_check is not None:
        why, fns = self.fit_check(arch, fns, device)
        if why:
          return ChildResult(params=params, flops=flops, status=DOES_NOT_FIT, error=why,
                             compile_seconds=programs.compile_seconds)
      results = fns.train_many(self.keys, self.data[device], self.splits, tag=self.tag)
    except Exception as e:  # pylint: disable=broad-except  (fault isolation, see docstring)
      logging.warning("child %s failed: %s: %s", arch, type(e).__name__, str(e)[:300])
      return ChildResult(params=params, flops=flops, status=FAILED,
                         error=f"{type(e).__name__}: {str(e)[:300]}")
    bad = [j for j, r in enumerate(results) if not r.finite]
    first = results[0]
    common = dict(val_acc=tuple(map(float, first.val_acc)),
                  val_loss=tuple(map(float, first.val_loss)),
                  train_loss=tuple(map(float, first.train_loss)),
                  best_val_loss=first.best_val_loss, best_epoch=first.best_epoch, params=params,
                  flops=flops, compile_seconds=programs.compile_seconds,
                  train_seconds=float(sum(r.train_seconds for r in results)))
    if bad:
      return ChildResult(status=FAILED, error=f"ChildTrainingError: non-finite loss on reward "
                         f"split(s) {bad}", **common)
    scores = [self._reinforce.split_reward(r, params, self.config, spec.num_classes)
              for r in results]
    rewards = [s["reward"] for s in scores]
    metrics = {k: float(np.nanmean([s[k] for s in scores])) if any(
        np.isfinite(s[k]) for s in scores) else float("nan") for k in scores[0] if k != "reward"}
    reward = float(np.mean(rewards))
    return ChildResult(reward=reward, split_rewards=tuple(rewards), metrics=metrics,
                       status=OK if np.isfinite(reward) else FAILED,
                       error="" if np.isfinite(reward) else "NonFiniteReward",
                       weights=(first.params, first.batch_stats) if self.keep_weights else None,
                       **common)

  def __call__(self, archs):
    """Evaluates up to `parallelism` children concurrently (child i on device i mod n)."""
    if len(self.devices) == 1 or len(archs) == 1:
      return [self.evaluate_one(a, self.devices[i % len(self.devices)])
              for i, a in enumerate(archs)]
    futures = [self._pool.submit(self.evaluate_one, a, self.devices[i % len(self.devices)])
               for i, a in enumerate(archs)]
    return [f.result() for f in futures]

  def close(self):
    self._pool.shutdown(wait=True, cancel_futures=True)
