"""The protocols: how searches, winner re-scoring and test trainings combine into an estimate.

nested (default)  for every outer fold i (subject-grouped, label-stratified; or one machine/site per
                  fold): every strategy and search seed searches on fold i's non-test subjects
                  only (its r reward splits are subject-disjoint inner splits), its top
                  `rescore_top_k` distinct children are retrained with `rescore_seeds` other seeds
                  on the same splits, the best re-scored mean wins, and the winner (and VGG19) is
                  trained on fold i's train part (its validation part picks the weights) and
                  tested once on fold i's test part. No test subject of fold i ever reaches a
                  search, re-scoring, memo lookup or winner selection of fold i. Table 1 then
                  estimates what running this NAS procedure on a new cohort gives.
paper             the paper's layout: one search per seed on fold `config.search.fold`, and k-fold
                  CV of its winner. The search's subjects sit in the other folds' test parts, so
                  the CV estimate of the searched models is optimistic (the report says so); the
                  search fold's own test part is the one clean line.
final_search      optional, after either: one search on all subjects to export the model a user
                  deploys; its reward never appears in the estimate.

Every search training draws its own stream `rng.train_key(seed, outer fold, split, replica)`, every
test training `rng.training_key(outer fold, training seed)` (independent of the search seed); every
architecture's programs are compiled once per run (`train.PROGRAMS`) and shared by all of this.
Work is resumable at every level: searches through their ledgers, re-scoring through
`search/rescore/`, test trainings through `cv/<model>/fold<i>[_seed<s>]_train<t>.json`.
"""

import dataclasses
import logging
import os
import statistics
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from nasrl_jax import child as child_lib
from nasrl_jax import io_utils
from nasrl_jax import metrics as metrics_lib
from nasrl_jax import reinforce
from nasrl_jax import rng as rng_lib
from nasrl_jax import search as search_lib
from nasrl_jax import space as space_lib
from nasrl_jax import strategies as strategies_lib
from nasrl_jax import train as train_lib
from nasrl_jax.data import balance
from nasrl_jax.data import folds as folds_lib
from nasrl_jax.errors import UserInputError

BALANCE_MODES = ("none", "loss_weight", "upright_sample", "repeat", "rot90")
VGG19_NAME = "VGG19"


# ------------------------------------------------------------------------------ splits


def balanced_rows(train_idx, labels, data_cfg, rng: np.random.Generator):
  """(rows, quarter turns) of a training part under `config.data.balance`.

  none / loss_weight / upright_sample: the upright training images once each (the class weights
  or the sampling probabilities live in the split); repeat: minority copies, unrotated; rot90:
  minority copies turned by 90/180/270 degrees (the paper; orientation then tells the class).
  """
  mode = data_cfg.balance
  train_idx = np.asarray(train_idx, np.int64)
  if mode in ("none", "loss_weight", "upright_sample"):
    return train_idx.astype(np.int32), np.zeros(train_idx.size, np.int32)
  if mode not in ("repeat", "rot90"):
    raise UserInputError(f"config.data.balance={mode!r}: use one of {', '.join(BALANCE_MODES)}")
  idx, rot = balance.balance_indices(train_idx, labels, rng)
  return idx, (rot if mode == "rot90" else np.zeros_like(rot))


@dataclasses.dataclass
class Run:
  """What every stage of a run shares: built once by the pipeline."""
  config: Any
  workdir: str
  dataset: Any
  folds: list
  final_fold: Optional[dict]
  data: train_lib.DeviceData
  sizes: train_lib.Sizes
  spec: child_lib.ChildSpec
  factory: train_lib.TrainerFactory
  root: Any  # The run's root key.
  devices: list
  writer: bool  # This process writes files (process 0).
  memo: search_lib.Memo = dataclasses.field(default_factory=search_lib.Memo)
  on_record: Optional[Callable] = None  # Merged-ledger append.
  fit_check: Optional[Callable] = None  # Memory pre-flight of a child.
  distribute_children: bool = False  # Multi-process search of one fold (paper protocol).
  fold_local: bool = False  # Multi-process nested run: this process owns the folds it runs.

  @property
  def labels(self) -> np.ndarray:
    return np.asarray(self.dataset.label)

  @property
  def num_classes(self) -> int:
    return int(self.config.model.num_classes)

  @property
  def val_parts(self) -> int:
    return int(self.config.data.val_parts)

  def split(self, train_idx, val_idx, key) -> train_lib.Split:
    """A padded split; balancing copies and padding rows from the run key's own streams."""
    c = self.config.data
    idx, rot = balanced_rows(train_idx, self.labels, c,
                             rng_lib.host_rng(rng_lib.purpose(key, rng_lib.Purpose.BALANCE)))
    return train_lib.make_split(
        idx, rot, val_idx, self.sizes, labels=self.labels, num_classes=self.num_classes,
        class_weighted=c.balance == "loss_weight", balanced_sampling=c.balance == "upright_sample",
        rng=rng_lib.host_rng(rng_lib.purpose(key, rng_lib.Purpose.PADDING)))

  def reward_splits(self, fold, outer: int, seed: int, replica: int):
    """(splits, keys) of the r reward splits of a fold for one replica."""
    splits, keys = [], []
    for j in range(int(self.config.search.reward_splits)):
      train_idx, val_idx = folds_lib.split_indices(fold, j, self.val_parts)
      key = rng_lib.train_key(self.root, seed=seed, outer=outer, split=j, replica=replica)
      splits.append(self.split(train_idx, val_idx, key))
      keys.append(key)
    return splits, keys


def padded_sizes(config, folds, final_fold, labels) -> train_lib.Sizes:
  """The largest training part (after balancing copies) and validation part of the run, padded.

  Every inner split any stage trains on counts, so every architecture compiles once. Test parts
  are scored in chunks of the validation size (`train.py`), so they do not pad every epoch's
  validation pass.
  """
  b, eb = int(config.train.batch_size), int(config.train.eval_batch_size)
  r = max(1, int(config.search.reward_splits))
  vp = int(config.data.val_parts)
  n_train, n_eval = 0, 0
  for fold in list(folds) + ([final_fold] if final_fold is not None else []):
    for j in range(min(r, folds_lib.max_splits(fold, vp))):
      tr, va = folds_lib.split_indices(fold, j, vp)
      rows, _ = balanced_rows(tr, labels, config.data, np.random.default_rng(0))
      n_train, n_eval = max(n_train, rows.size), max(n_eval, va.size)
  if config.train.max_train_examples:
    n_train = max(n_train, int(config.train.max_train_examples))
  return train_lib.Sizes(train_lib.pad_to(n_train, b), train_lib.pad_to(n_eval, eb))


# ------------------------------------------------------------------------------ searches


def _search_dir(run: Run, strategy: str, seed: int, outer: int) -> str:
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
        run.config, evaluator, _search_dir(run, strategy, seed, outer), strategy=strategy,
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


# ------------------------------------------------------------------------------ test trainings


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


# ------------------------------------------------------------------------------ the protocols


@dataclasses.dataclass
class Outcome:
  """What the protocols hand the pipeline (plain Python, report schema)."""
  models: dict = dataclasses.field(default_factory=dict)  # name -> [fold results]
  winners: dict = dataclasses.field(default_factory=dict)  # outer -> name -> [winner rows]
  rescore: dict = dataclasses.field(default_factory=dict)  # name -> [rows]
  searches: dict = dataclasses.field(default_factory=dict)  # strategy -> [summaries]
  final_search: Optional[dict] = None  # name -> {"architecture", "seed", ...}
  export: Optional[Callable] = None  # export(name, arch, result, train_result, source)

  def to_json(self) -> dict:
    """What a process hands the others in a multi-process run (plain JSON)."""
    return io_utils.to_json_safe({"models": self.models, "winners": self.winners,
                                  "rescore": self.rescore, "searches": self.searches})

  def merge(self, parts: list) -> None:
    """Adds other processes' `to_json` parts (fold order restored)."""
    for part in parts:
      for name, rows in part["models"].items():
        self.models.setdefault(name, []).extend(rows)
      for fold, winners in part["winners"].items():
        self.winners.setdefault(int(fold), {}).update(winners)
      for name, rows in part["rescore"].items():
        self.rescore.setdefault(name, []).extend(rows)
      for strategy, rows in part["searches"].items():
        self.searches.setdefault(strategy, []).extend(rows)
    for rows in self.models.values():
      rows.sort(key=result_order)
    for rows in list(self.rescore.values()) + list(self.searches.values()):
      rows.sort(key=lambda r: (r["fold"], r["seed"]))


def result_order(result) -> tuple:
  """Sort key of test results: outer fold, search seed (None, VGG19's, first), training seed."""
  seed = result.get("seed")
  return (result["fold"], -1 if seed is None else seed, result.get("training_seed", 0))


def _strategies(config):
  names = tuple(config.search.strategies)
  unknown = sorted(set(names) - set(strategies_lib.names()))
  if unknown or not names:
    raise UserInputError(f"config.search.strategies={names!r}: choose from "
                         f"{', '.join(strategies_lib.names())}")
  return names


def test_seeds(config) -> int:
  """`config.eval.test_seeds`: test trainings per chosen model, outer fold and search seed."""
  n = config.eval.test_seeds
  if isinstance(n, bool) or not isinstance(n, int) or n < 1:
    raise UserInputError(f"config.eval.test_seeds={n!r}: must be an integer >= 1")
  return n


def _seeds(config):
  seeds = [int(s) for s in config.search.seeds]
  if not seeds or len(set(seeds)) != len(seeds):
    raise UserInputError(f"config.search.seeds={tuple(config.search.seeds)!r}: give distinct "
                         "integer seeds")
  return seeds


def _search_winners(run: Run, fold, outer: int, seed: int, rescore_ledger, outcome: Outcome,
                    store_factory=None) -> dict:
  """Every strategy's search, re-scoring and winner on one fold for one seed: {name: (arch, row)}."""
  config = run.config
  top_k = int(config.search.rescore_top_k)
  winners = {}
  for strategy in _strategies(config):
    name = strategies_lib.model_name(strategy)
    on_child, store = (store_factory(strategy, seed, outer) if store_factory else (None, None))
    try:
      res = search_fold(run, fold, outer, seed, strategy, on_child=on_child)
    finally:
      if store is not None:
        store.close()
    summary = res.summary()
    outcome.searches.setdefault(strategy, []).append(summary)
    candidates = res.best(max(top_k, 1))
    if not candidates:
      logging.warning("%s seed %d fold %s: every child failed; no winner", strategy, seed, outer)
      continue
    rows = []
    if top_k > 0 and int(config.search.rescore_seeds) > 0:
      rows = rescore(run, rescore_ledger, fold, outer, seed, candidates[:top_k])
    arch, row = choose_winner(candidates, rows)
    for r in rows:
      outcome.rescore.setdefault(name, []).append(
          {k: r.get(k) for k in ("fold", "seed", "architecture", "search_reward", "mean", "std",
                                 "n", "params")} | {"chosen": r["architecture"] == str(arch)})
    winners[name] = (arch, row)
    rescored = "n/a" if row.get("mean") is None else f"{row['mean']:.4f}" + (
        f" +- {row['std']:.4f}" if row.get("std") is not None else "")
    logging.info("  winner %s seed %d fold %s: %s (search %.4f, re-scored %s)", name, seed, outer,
                 arch, row["search_reward"], rescored)
  return winners


def _test_model(run: Run, tests: TestLedger, fold, outer: int, name: str, arch,
                search_seed: Optional[int], outcome: Outcome, done: dict) -> None:
  """The `eval.test_seeds` test trainings of one model on one fold (resumable).

  `done` maps (architecture, training seed) to a result already trained on this fold: the same
  architecture under another name or search seed has the same key, hence the same training.
  """
  for t in range(test_seeds(run.config)):
    result = tests.get(name, outer, search_seed, t, arch)
    train_res = None
    if result is None:
      if (str(arch), t) in done:
        result = dict(done[str(arch), t], seed=search_seed)
      else:
        result, train_res = final_training(run, fold, outer, arch, training_seed=t,
                                           search_seed=search_seed)
      tests.put(name, result)
    done.setdefault((str(arch), t), result)
    acc, auc = quick_scores(result)
    logging.info("  test %s fold %s seed %s training %d: accuracy %.3f, AUROC %.3f", name, outer,
                 search_seed, t, acc, auc)
    outcome.models.setdefault(name, []).append(result)
    _consider_export(outcome, name, arch, result, train_res, "best_validation_outer_fold")


def _record_winners(run: Run, outcome: Outcome, fold_index: int, seed: int, winners: dict):
  for name, (arch, row) in winners.items():
    outcome.winners.setdefault(fold_index, {}).setdefault(name, []).append(
        {"seed": seed, "architecture": str(arch), "kernels": list(arch.kernels),
         "filters": list(arch.filters), "params": child_lib.count_params_for(arch, run.spec),
         "flops": child_lib.count_flops(arch, run.spec),
         "search_reward": row["search_reward"], "rescore_mean": row.get("mean"),
         "rescore_std": row.get("std")})


def _consider_export(outcome, name, arch, result, train_res, source):
  """Keeps the best-validation final training of each model; exports it when weights are here."""
  if best_by_validation(outcome.models[name]) is result and train_res is not None and (
      outcome.export is not None):
    outcome.export(name, arch, result, train_res, source)


def best_by_validation(results):
  """The test training with the best validation score (ties: the lowest fold, search seed, then
  training seed): the model `models/<name>` exports when there is no final search. Never chosen
  by test data."""
  key = lambda r: (-(r["val_score"] if r.get("val_score") is not None else -np.inf),
                   result_order(r))
  return min(results, key=key) if results else None


def run_nested(run: Run, folds_to_run=None, store_factory=None, export=None) -> Outcome:
  """The nested protocol over the outer folds `folds_to_run` (default all)."""
  outcome = Outcome(export=export)
  seeds = _seeds(run.config)
  rescore_ledger = RescoreLedger(run.workdir, run.writer or run.fold_local)
  tests = TestLedger(run.workdir, run.writer or run.fold_local)
  vgg19 = space_lib.SearchSpace.from_config(run.config.space).vgg19
  indices = range(len(run.folds)) if folds_to_run is None else folds_to_run
  for i in indices:
    fold = run.folds[i]
    t0 = time.time()
    logging.info("== outer fold %d/%d%s: %d test images", i + 1, len(run.folds),
                 f" (held out: {fold['group']})" if fold.get("group") else "", len(fold["test"]))
    done = {}
    _test_model(run, tests, fold, i, VGG19_NAME, vgg19, None, outcome, done)
    for seed in seeds:
      winners = _search_winners(run, fold, i, seed, rescore_ledger, outcome, store_factory)
      _record_winners(run, outcome, i, seed, winners)
      for name, (arch, _) in winners.items():
        _test_model(run, tests, fold, i, name, arch, seed, outcome, done)
    logging.info("== outer fold %d done in %.0fs", i + 1, time.time() - t0)
  return outcome


def run_paper(run: Run, store_factory=None, export=None, test_folds=None) -> Outcome:
  """The paper's protocol: searches on fold `config.search.fold`, k-fold CV of the winners.

  `test_folds`: the CV folds this process trains and tests (multi-process runs spread them);
  default all. The searches run on every process together (`run.distribute_children`).
  """
  config = run.config
  outcome = Outcome(export=export)
  f = int(config.search.fold)
  if not 0 <= f < len(run.folds):
    raise UserInputError(f"config.search.fold={f} is outside 0..{len(run.folds) - 1}")
  rescore_ledger = RescoreLedger(run.workdir, run.writer)
  tests = TestLedger(run.workdir, run.writer or test_folds is not None)
  vgg19 = space_lib.SearchSpace.from_config(config.space).vgg19
  winners = {}
  for seed in _seeds(config):
    winners[seed] = _search_winners(run, run.folds[f], f, seed, rescore_ledger, outcome,
                                    store_factory)
    _record_winners(run, outcome, f, seed, winners[seed])
  for k in (range(len(run.folds)) if test_folds is None else test_folds):
    done = {}
    _test_model(run, tests, run.folds[k], k, VGG19_NAME, vgg19, None, outcome, done)
    for seed, chosen in winners.items():
      for name, (arch, _) in chosen.items():
        _test_model(run, tests, run.folds[k], k, name, arch, seed, outcome, done)
  return outcome


def run_final_search(run: Run, outcome: Outcome, export) -> dict:
  """One search per strategy on all subjects (first seed); exports its winners (no test part).

  Each exported model is the first training seed's training on all subjects' train part (its
  validation part keeps the weights and sets the threshold).
  """
  seed = _seeds(run.config)[0]
  fold = run.final_fold
  ledger = RescoreLedger(run.workdir, run.writer)
  scratch = Outcome()
  winners = _search_winners(run, fold, rng_lib.FINAL_FOLD, seed, ledger, scratch)
  out = {}
  sp = space_lib.SearchSpace.from_config(run.config.space)
  models = {VGG19_NAME: sp.vgg19}
  models.update({name: arch for name, (arch, _) in winners.items()})
  for name, arch in models.items():
    result, train_res = final_training(run, fold, rng_lib.FINAL_FOLD, arch, training_seed=0,
                                       search_seed=None if name == VGG19_NAME else seed,
                                       test=False)
    export(name, arch, result, train_res, "final_search")
    row = winners.get(name, (arch, {}))[1]
    out[name] = {"architecture": str(arch), "seed": seed, "search_reward": row.get("search_reward"),
                 "rescore_mean": row.get("mean"), "val_score": result["val_score"],
                 "val_threshold": result["val_threshold"]}
  outcome.final_search = out
  return out


def retrain_for_export(run: Run, result: dict, arch):
  """Re-runs a finished test training (same key: same weights) to export its model."""
  fold = run.folds[result["fold"]]
  return final_training(run, fold, result["fold"], arch,
                        training_seed=result.get("training_seed", 0),
                        search_seed=result.get("seed"))


# ------------------------------------------------------------------------------ inference speed


def inference_speed(arch, spec: child_lib.ChildSpec, weights=None, *, iters=100,
                    throughput_batch=64, seed=0) -> dict:
  """FPS at batch 1 (median latency of warm, jitted, synchronised calls) and large-batch throughput.

  Args:
    arch, spec: the model.
    weights: (params, batch_stats) on device, or None for freshly initialised weights (speed does
      not depend on the values).
    iters: timed batch-1 calls.
    throughput_batch: batch size of the throughput figure.

  Returns:
    {"fps": 1 / median latency, "latency_ms_median", "latency_ms_p90", "throughput",
     "throughput_batch", "device"}.
  """
  graphdef, _, _ = child_lib.abstract_state(arch, spec)
  if weights is None:
    _, params, stats = child_lib.init(arch, spec, seed)
    params, stats = jax.device_put((params, stats))
  else:
    params, stats = weights

  @jax.jit
  def predict(params, stats, x):
    logits, _ = child_lib.apply(graphdef, params, stats, x, train=False)
    return jax.nn.softmax(logits)

  def timed(batch, n):
    x = jnp.zeros((batch,) + tuple(spec.input_shape), jnp.uint8)
    predict(params, stats, x).block_until_ready()  # Compile + warm up.
    predict(params, stats, x).block_until_ready()
    out = []
    for _ in range(n):
      t0 = time.perf_counter()
      predict(params, stats, x).block_until_ready()
      out.append(time.perf_counter() - t0)
    return out

  lat = timed(1, max(int(iters), 3))
  big = timed(int(throughput_batch), max(3, int(iters) // 10))
  med = statistics.median(lat)
  return {"fps": 1.0 / med, "latency_ms_median": 1e3 * med,
          "latency_ms_p90": 1e3 * float(np.percentile(lat, 90)),
          "throughput": int(throughput_batch) / statistics.median(big),
          "throughput_batch": int(throughput_batch), "device": describe_device()}


def describe_device() -> str:
  """E.g. 'NVIDIA H100 80GB HBM3 (gpu)' or 'cpu (2 cores)'."""
  d = jax.devices()[0]
  if d.platform == "cpu":
    return f"cpu ({os.cpu_count()} cores)"
  return f"{getattr(d, 'device_kind', d.platform)} ({d.platform})"
