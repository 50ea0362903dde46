"""The protocols: how searches, winner re-scoring and test trainings combine into an estimate.

nested (default)  for every outer fold i (subject-grouped, label-stratified; or one machine/site per
                  fold): every strategy and search seed searches on fold i's non-test subjects
                  only (its r reward splits are subject-disjoint inner splits), its top
                  `rescore_top_k` distinct children are retrained with `rescore_seeds` other seeds
                  on the same splits, the best re-scored mean wins, and the winner (and VGG19) is
                  trained `eval.test_seeds` times on fold i's train part (its validation part
                  picks the weights) and tested on fold i's test part. No test subject of fold i ever reaches a
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

The stages live in their own modules: `run_context` (the shared `Run`), `selection` (a search,
re-scoring, the winner), `heldout` (test trainings), `speed` (inference speed); this module
composes them into the protocols.
"""

import dataclasses
import logging
import time
from typing import Callable, Optional


from nasrl_jax import child as child_lib
from nasrl_jax import io_utils
from nasrl_jax import rng as rng_lib
from nasrl_jax import space as space_lib
from nasrl_jax import strategies as strategies_lib
from nasrl_jax.errors import UserInputError
# The stages' own modules; their names are part of evaluate's API (evaluate.Run, ...).
from nasrl_jax.heldout import (TestLedger, best_by_validation, final_training,  # pylint: disable=unused-import
                               quick_scores, result_order, retrain_for_export)
from nasrl_jax.run_context import BALANCE_MODES, Run, balanced_rows, padded_sizes  # pylint: disable=unused-import
from nasrl_jax.selection import (RescoreLedger, choose_winner, rescore, search_dir,  # pylint: disable=unused-import
                                 search_fold)
from nasrl_jax.speed import describe_device, inference_speed  # pylint: disable=unused-import

VGG19_NAME = "VGG19"


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


