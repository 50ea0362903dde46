"""Choosing a search's winner: one strategy's search on a fold's reward splits, re-scoring of its
top children with fresh seeds (`search/rescore/<fold>.jsonl`, resumable) and the choice by the
best re-scored mean (the search maximum is biased upwards: the winner's curse)."""

import logging
import os
import time

import numpy as np

from nasrl_jax import io_utils
from nasrl_jax import reinforce
from nasrl_jax import rng as rng_lib
from nasrl_jax import search as search_lib
from nasrl_jax import space as space_lib
from nasrl_jax.run_context import Run


def search_dir(run: Run, strategy: str, seed: int, outer: int) -> str:
  where = "final" if outer == rng_lib.FINAL_FOLD else f"outer{outer}"
  return os.path.join(run.workdir, "search", strategy, f"seed{seed}", where)


def search_fold(run: Run, fold, outer: int, seed: int, strategy: str, on_child=None):
  """One strategy's search on a fold's reward splits (resumable)."""
  splits, keys = run.reward_splits(fold, outer, seed, rng_lib.SEARCH_REPLICA)
  local = search_lib.ChildEvaluator(
      run.factory, run.data, splits, keys, config=run.config, devices=run.devices,
      keep_weights=on_child is not None, tag={"phase": "search", "outer": outer, "seed": seed},
      fit_check=run.fit_check)
  evaluator = (search_lib.DistributedEvaluator(local, f"{strategy}-{seed}-{outer}")
               if run.distribute_children else local)
  t0 = time.time()
  try:
    res = search_lib.run_search(
        run.config, evaluator, search_dir(run, strategy, seed, outer), strategy=strategy,
        seed=seed, outer_fold=outer, memo=run.memo, memo_context=(outer, seed),
        on_record=run.on_record, on_child=on_child, write=run.writer or run.fold_local,
        process_local=run.fold_local)
  finally:
    local.close()
  logging.info("search %s seed %d fold %s: %d children in %.0fs, best reward %s", strategy, seed,
               outer, len(res.history), time.time() - t0,
               f"{res.best(1)[0].reward:.4f}" if res.best(1) else "n/a")
  return res


class RescoreLedger:
  """search/rescore/<fold>.jsonl: re-scored candidates by (fold, seed, architecture), resumable.

  One file per outer fold, written by the process that runs that fold.
  """

  def __init__(self, workdir: str, write: bool):
    self.folder = os.path.join(workdir, "search", "rescore")
    self.write = write
    os.makedirs(self.folder, exist_ok=True)
    self.rows = {}
    for name in sorted(os.listdir(self.folder)):
      if name.endswith(".jsonl"):
        for r in search_lib.read_jsonl(os.path.join(self.folder, name)):
          self.rows[(r["fold"], r["seed"], r["architecture"])] = r

  def path(self, outer: int) -> str:
    return os.path.join(self.folder, "final.jsonl" if outer == rng_lib.FINAL_FOLD
                        else f"outer{outer}.jsonl")

  def get(self, outer, seed, arch):
    return self.rows.get((outer, seed, str(arch)))

  def put(self, row):
    self.rows[(row["fold"], row["seed"], row["architecture"])] = row
    if self.write:
      search_lib.append_jsonl(self.path(row["fold"]), [row])


def rescore(run: Run, ledger: RescoreLedger, fold, outer: int, seed: int, records) -> list:
  """Retrains each candidate with `rescore_seeds` other seeds on the same reward splits.

  A candidate's score per seed is its mean reward over the r splits; candidates are ranked by the
  mean over seeds. Only fresh runs count: the search reward itself was maximised over children,
  so it is biased upwards and stays out of the mean.

  Returns:
    [{"fold", "seed", "architecture", "search_reward", "mean", "std", "n", "scores", "params"}]
  """
  q = int(run.config.search.rescore_seeds)
  out = []
  for rec in records:
    row = ledger.get(outer, seed, rec.architecture)
    if row is None:
      splits, keys = [], []
      for replica in range(1, q + 1):
        s, k = run.reward_splits(fold, outer, seed, replica)
        splits += s
        keys += k
      fns = run.factory(rec.architecture)
      results = fns.train_many(keys, run.data, splits,
                               tag={"phase": "rescore", "outer": outer, "seed": seed})
      r = len(splits) // q
      scores = []
      for i in range(q):
        chunk = results[i * r:(i + 1) * r]
        if all(x.finite for x in chunk):
          vals = [reinforce.split_reward(x, rec.params, run.config, run.num_classes)["reward"]
                  for x in chunk]
          scores.append(float(np.mean(vals)))
        else:
          scores.append(float("nan"))
      finite = [s for s in scores if np.isfinite(s)]
      row = {"fold": outer, "seed": seed, "architecture": str(rec.architecture),
             "strategy": rec.strategy, "search_reward": rec.reward, "params": rec.params,
             "flops": rec.flops, "scores": scores,
             "mean": float(np.mean(finite)) if finite else None,
             "std": float(np.std(finite, ddof=1)) if len(finite) > 1 else None,
             "n": len(finite)}
      row = io_utils.to_json_safe(row)
      ledger.put(row)
    out.append(dict(row, strategy=rec.strategy))
  return out


def choose_winner(records, rescored) -> tuple:
  """(architecture, winning row): best re-scored mean (ties: fewer parameters, higher search
  reward); without re-scoring, the best search reward."""
  if rescored:
    usable = [r for r in rescored if r.get("mean") is not None]
    if usable:
      best = sorted(usable, key=lambda r: (-r["mean"], r["params"], -r["search_reward"]))[0]
      return space_lib.Architecture.from_string(best["architecture"]), best
  best = records[0]
  return best.architecture, {"architecture": str(best.architecture), "search_reward": best.reward,
                             "params": best.params, "mean": None, "std": None, "n": 0}
