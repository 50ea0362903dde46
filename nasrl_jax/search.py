"""One search: a short ask -> evaluate -> tell loop over a strategy, and the `Ledger` that keeps it.

`run_search(config, evaluator, workdir)` runs (or resumes) one strategy (the `strategies`
registry: reinforce, random, evolution) for `config.search.num_steps` steps of
`children_per_step` children. The evaluator is any callable taking a list of Architecture and
returning, per architecture, a float reward or a `ChildResult` (`records.py`); `ChildEvaluator`
(`evaluators.py`) trains each child on the search's reward splits with `train.py`.

The `Ledger` owns everything around the loop: `history.jsonl` (one line per child, appended as it
finishes, optionally also to the run's merged ledger), `steps.jsonl` (one line per step), the
memo (an architecture trained before on the same splits is not retrained), resume, the
strategy-state checkpoints (Orbax, after every step), TensorBoard logs, the progress line and
failure accounting.

Resume: sampling keys are `rng.ask_key(search key, step)` with the search key from (seed,
strategy, outer fold), so a resumed search samples exactly what an uninterrupted one would: the
ledger restores the strategy state of the latest good checkpoint, reuses the history lines of children already
evaluated (also those of the interrupted step) and redoes the interrupted step.
"""

import dataclasses
import logging
import os
import sys
import time
from typing import Callable, Optional

import jax
import numpy as np

from nasrl_jax import io_utils
from nasrl_jax import rng as rng_lib
from nasrl_jax import space as space_lib
from nasrl_jax import strategies as strategies_lib
from nasrl_jax.errors import UserInputError
# Records and evaluators are part of the search's API (search.ChildRecord, search.ChildEvaluator).
from nasrl_jax.evaluators import ChildEvaluator, DistributedEvaluator  # pylint: disable=unused-import
from nasrl_jax.records import (DOES_NOT_FIT, FAILED, MEMO, OK, ChildRecord,  # pylint: disable=unused-import
                               ChildResult, SearchResult, append_jsonl, normalise, read_jsonl,
                               rewrite_jsonl)



class SearchAborted(RuntimeError):
  """Too many children failed in a row."""


class Progress:
  """A tqdm bar on a terminal, plain periodic log lines otherwise; the best reward is monotone."""

  def __init__(self, total, desc, every_s):
    import tqdm  # pylint: disable=g-import-not-at-top  (kept out of the search's import time)
    self.tty = sys.stderr.isatty()
    self.bar = tqdm.tqdm(total=total, desc=desc, disable=not self.tty, dynamic_ncols=True)
    self.total, self.desc, self.every_s = total, desc, every_s
    self.t0, self.last, self.n = time.time(), 0.0, 0
    self.best = -np.inf

  def update(self, n, reward):
    self.n += n
    if reward is not None and np.isfinite(reward):
      self.best = max(self.best, reward)
    shown = self.best if np.isfinite(self.best) else float("nan")
    self.bar.update(n)
    self.bar.set_postfix(best=f"{shown:.4f}")
    now = time.time()
    if not self.tty and (now - self.last >= self.every_s or self.n == self.total):
      self.last = now
      el = now - self.t0
      eta = el / max(self.n, 1) * (self.total - self.n)
      logging.info("%s: %d/%d children, best reward so far %.4f, %.0fs elapsed, ETA %.0fs",
                   self.desc, self.n, self.total, shown, el, eta)

  def close(self):
    self.bar.close()


# ---------------------------------------------------------------------------- the ledger


def _merged_order(row):
  """The order an uninterrupted run appends children in: outer fold (the final search last),
  seed, strategy (in the strategy registry's order), child index."""
  fold = row.get("outer_fold", 0)
  name = row.get("strategy", "")
  names = strategies_lib.names()
  rank = names.index(name) if name in names else len(names)
  return (fold < 0, fold, row.get("seed", 0), rank, row.get("index", 0))


class MergedLedger:
  """The run's merged W/search/history.jsonl: every child of every search, one writer.

  Rebuilt at start from the searches' own histories (so a resumed run continues it without
  duplicates), then appended line by line as children finish.
  """

  def __init__(self, path: str, search_root: str, write: bool):
    self.path, self.write = path, write
    if write:
      rows = []
      for folder, _, files in sorted(os.walk(search_root)):
        if "history.jsonl" in files and os.path.join(folder, "history.jsonl") != path:
          rows += read_jsonl(os.path.join(folder, "history.jsonl"))
      rows.sort(key=_merged_order)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      rewrite_jsonl(path, rows)

  def append(self, rec: "ChildRecord") -> None:
    if self.write:
      append_jsonl(self.path, [rec.to_json()])


class Memo:
  """Results of architectures already trained on a given set of splits (run-wide).

  Keyed by (outer fold, seed, reward-splits signature, architecture): a reward trained on one outer
  fold's subjects contains another fold's test subjects, so rewards never cross outer folds.
  """

  def __init__(self):
    self._d = {}

  def get(self, context, arch):
    return self._d.get((context, arch))

  def put(self, context, arch, rec):
    self._d.setdefault((context, arch), rec)

  def __len__(self):
    return len(self._d)


class Ledger:
  """History, steps, memo, resume, checkpoints, TensorBoard and progress of one search."""

  def __init__(self, config, workdir: str, strategy: str, seed: int, outer_fold: int, *,
               memo: Optional[Memo] = None, memo_context=None, write: bool = True,
               on_record: Optional[Callable] = None, on_child: Optional[Callable] = None,
               process_local: bool = False):
    self.config, self.workdir, self.strategy = config, workdir, strategy
    self.seed, self.outer_fold, self.write = int(seed), int(outer_fold), write
    self.m = int(config.search.children_per_step)
    self.num_steps = int(config.search.num_steps)
    self.memo = memo if memo is not None else Memo()
    self.memo_context = (self.outer_fold, self.seed) if memo_context is None else memo_context
    self.use_memo = bool(config.search.memo)
    self.on_record, self.on_child = on_record, on_child
    self.process_local = process_local
    os.makedirs(workdir, exist_ok=True)
    self.hist_path = os.path.join(workdir, "history.jsonl")
    self.steps_path = os.path.join(workdir, "steps.jsonl")
    self.t_start = time.time()
    self.history, self.steps = [], []
    self.done = {}
    self.failures_in_row = 0
    self.tb = self.progress = self.ckpt = None

  # ------------------------------------------------------------------ resume

  def open(self, template_state):
    """Reads earlier progress; returns (strategy state, first step to run)."""
    from nasrl_jax import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
    old = [ChildRecord.from_json(d) for d in read_jsonl(self.hist_path)]
    old_steps = read_jsonl(self.steps_path)
    self.done = {(r.step, r.child): r for r in old}
    for r in old:
      if r.status in (OK, MEMO):
        self.memo.put(self.memo_context, r.architecture, r)
    self.ckpt = ckpt_lib.ControllerCheckpointer(os.path.join(self.workdir, "strategy"),
                                                max_to_keep=3, process_local=self.process_local)
    state, start = template_state, 0
    restored = self.ckpt.restore(strategies_lib.to_host(template_state))
    if restored is not None:
      start, state, _ = restored
      state = jax.tree.map(lambda t, x: np.asarray(x, t.dtype), template_state, state)
      logging.info("%s: resuming after step %d", self.workdir, start - 1)
    self.history = [r for r in old if r.step < start]
    self.steps = old_steps[:start]
    if self.write:  # Drops a torn line, and step rows written after the last checkpoint.
      rewrite_jsonl(self.hist_path, [r.to_json() for r in old])
      rewrite_jsonl(self.steps_path, self.steps)
    for r in self.history:
      self.failures_in_row = self.failures_in_row + 1 if not r.valid else 0
    if self.write:
      from nasrl_jax import logs  # pylint: disable=g-import-not-at-top  (tensorboardX is heavy)
      self.tb = logs.MetricWriter(os.path.join(self.workdir, "tb"))
    self.progress = Progress(self.num_steps * self.m,
                             f"search[{self.strategy} seed {self.seed} fold {self.outer_fold}]",
                             float(self.config.log_every_s))
    best = max([r.reward for r in self.history if r.valid], default=None)
    self.progress.update(len(self.history), best)
    return state, start

  # ------------------------------------------------------------------ one step

  def evaluate_step(self, step: int, actions: np.ndarray, archs: list, evaluator) -> list:
    """Records of this step's children: reused (resume, memo) or evaluated now.

    Children to evaluate go to the evaluator in chunks of its `parallelism` (one per device or
    process), the next chunk compiling ahead of time; each child's line is written as soon as it
    is known, so an interruption loses at most the chunk in flight.
    """
    pending = []  # Architectures to evaluate, in order, without repeats.
    for k, arch in enumerate(archs):
      if self._reusable(step, k, arch) is None and arch not in pending:
        pending.append(arch)
    parallelism = max(1, int(getattr(evaluator, "parallelism", 1)))
    chunks = [pending[i:i + parallelism] for i in range(0, len(pending), parallelism)]
    results, next_chunk = {}, 0

    def evaluate_next():
      nonlocal next_chunk
      chunk = chunks[next_chunk]
      if next_chunk + 1 < len(chunks) and hasattr(evaluator, "prefetch"):
        evaluator.prefetch(chunks[next_chunk + 1])
      for arch, res in zip(chunk, evaluator(chunk)):
        results[arch] = normalise(res)
      next_chunk += 1

    records = []
    for k, arch in enumerate(archs):
      rec = self._reusable(step, k, arch)
      if rec is None:
        while arch not in results and next_chunk < len(chunks):
          evaluate_next()
        res = results.pop(arch, None)
        if res is None:  # A repeat within this step whose first occurrence failed.
          res = normalise(evaluator([arch])[0])
        rec = self._record(step, k, arch, actions[k], res)
      elif rec.step != step or rec.child != k:  # A memo hit: this child's own line.
        rec = dataclasses.replace(rec, step=step, child=k, index=step * self.m + k,
                                  strategy=self.strategy, seed=self.seed,
                                  outer_fold=self.outer_fold, actions=list(map(int, actions[k])),
                                  compile_seconds=0.0, train_seconds=0.0, status=MEMO, error="")
      if (step, k) not in self.done:
        self._write_child(rec)
      self._account(rec)
      records.append(rec)
    return records

  def _reusable(self, step, k, arch):
    prev = self.done.get((step, k))
    if prev is not None and prev.architecture == arch:
      return prev
    if self.use_memo:
      return self.memo.get(self.memo_context, arch)
    return None

  def _record(self, step, k, arch, actions, res: ChildResult) -> ChildRecord:
    ok = res.status == OK and res.reward is not None and np.isfinite(res.reward)
    reward = float(res.reward) if ok else float(self.config.search.failed_reward)
    status = res.status if res.status != OK or ok else FAILED
    rec = ChildRecord(
        step=step, child=k, index=step * self.m + k, strategy=self.strategy, seed=self.seed,
        outer_fold=self.outer_fold, architecture=arch, actions=list(map(int, actions)),
        reward=reward, split_rewards=[float(v) for v in res.split_rewards],
        metrics=dict(res.metrics), best_val_loss=float(res.best_val_loss),
        best_epoch=int(res.best_epoch), val_acc=[float(v) for v in res.val_acc],
        params=int(res.params), flops=int(res.flops),
        compile_seconds=float(res.compile_seconds), train_seconds=float(res.train_seconds),
        status=status, error=res.error or ("" if ok else "NonFiniteReward"))
    if rec.status == OK:
      self.memo.put(self.memo_context, arch, rec)
      if self.on_child is not None:
        self.on_child(rec, res)
      if self.tb is not None and len(res.val_loss):
        from nasrl_jax import logs  # pylint: disable=g-import-not-at-top
        logs.write_child_curves(self.tb, rec.index, res.val_acc, res.val_loss, res.train_loss)
    res.weights = None  # Free device memory early.
    return rec

  def _write_child(self, rec):
    if self.write:
      append_jsonl(self.hist_path, [rec.to_json()])
    if self.on_record is not None:
      self.on_record(rec)

  def _account(self, rec):
    self.progress.update(1, rec.reward if rec.valid else None)
    if rec.valid:
      self.failures_in_row = 0
      return
    self.failures_in_row += 1
    logging.warning("child %d (%s) %s: %s", rec.index, rec.architecture, rec.status, rec.error)
    limit = int(self.config.search.max_failures_in_row)
    if rec.status == FAILED and self.failures_in_row > limit:
      raise SearchAborted(
          f"{self.failures_in_row} children failed in a row (config.search.max_failures_in_row="
          f"{limit}); last error: {rec.error}")

  def end_step(self, step: int, records: list, metrics: dict, state) -> None:
    """Appends the step row, then checkpoints the strategy state (a crash in between redoes the
    step: its children come from the history, and resume trims steps.jsonl to the checkpoint)."""
    self.history.extend(records)
    valid = [r.reward for r in records if r.valid]
    best = max([r.reward for r in self.history if r.valid], default=float("nan"))
    row = {"step": step, "mean_reward": float(np.mean(valid)) if valid else None,
           "max_reward": float(np.max(valid)) if valid else None, "best_so_far": best,
           "valid": len(valid)}
    row.update({k: float(np.asarray(v)) for k, v in metrics.items()
                if k not in row and np.asarray(v).size == 1})
    row = io_utils.to_json_safe(row)
    if self.write:
      append_jsonl(self.steps_path, [row])
      self.tb.scalars(step, {f"{self.strategy}/{k}": v for k, v in row.items()
                             if k != "step" and v is not None})
    # Host numpy copies: Orbax refuses process-local jax.Arrays in a multi-process run, and every
    # process holds the same strategy state anyway.
    self.ckpt.save(step + 1, strategies_lib.to_host(state),
                   {"history_len": len(self.history), "step": step})
    self.ckpt.wait()
    self.steps.append(row)

  def close(self):
    for part in (self.progress, self.ckpt, self.tb):
      if part is not None:
        part.close()

  def result(self) -> SearchResult:
    return SearchResult(self.history, self.steps, time.time() - self.t_start, self.strategy,
                        self.seed, self.outer_fold)


# ---------------------------------------------------------------------------- the loop


def run_search(config, evaluator: Callable, workdir: str, *, strategy: Optional[str] = None,
               seed: Optional[int] = None, outer_fold: int = 0, memo: Optional[Memo] = None,
               memo_context=None, on_record: Optional[Callable] = None,
               on_child: Optional[Callable] = None, write: Optional[bool] = None,
               process_local: bool = False) -> SearchResult:
  """Runs (or resumes) one search; see the module docstring.

  Args:
    config: the experiment ConfigDict (space, controller, evolution, search, seed, log_every_s).
    evaluator: list[Architecture] -> list[float | ChildResult].
    workdir: this search's folder (history.jsonl, steps.jsonl, strategy checkpoints, tb/).
    strategy: reinforce | random | evolution (default config.search.strategy).
    seed: the search seed (default the first of config.search.seeds); with config.seed and the
      outer fold it fixes the sampling keys (`rng.search_key`).
    outer_fold: part of the search key (every outer fold searches independently); recorded in
      every history line; part of the memo context.
    memo: a run-wide Memo shared by searches on the same splits (default: this search's own).
    memo_context: what the memo is keyed by besides the architecture (default (fold, seed)).
    on_record: callback(ChildRecord) after each child's line (the run's merged ledger).
    on_child: callback(ChildRecord, ChildResult) for each newly trained child, while its weights
      are still there (top-k checkpointing).
    write: whether this process writes files (default: process 0; every process takes part in
      the Orbax checkpoint, which coordinates its own writes).
    process_local: this process runs the search alone (multi-process runs spread outer folds
      over processes): it writes every file and checkpoints without the other processes.

  Returns:
    SearchResult with the history of every child.
  """
  name = strategy or config.search.strategy
  if name not in strategies_lib.names():
    raise UserInputError(f"config.search.strategy={name!r}: use one of "
                         f"{', '.join(strategies_lib.names())}")
  if int(config.search.children_per_step) < 1 or int(config.search.num_steps) < 1:
    raise UserInputError("config.search.children_per_step and num_steps must be >= 1")
  seed = int(config.search.seeds[0] if seed is None else seed)
  space = space_lib.SearchSpace.from_config(config.space)
  init, ask, tell = strategies_lib.jitted(name, config, space)
  key = rng_lib.search_key(rng_lib.root_key(config.seed), seed,
                           strategies_lib.entry(name).stream_id, outer_fold)
  ledger = Ledger(config, workdir, name, seed, outer_fold, memo=memo, memo_context=memo_context,
                  write=jax.process_index() == 0 if write is None else write,
                  on_record=on_record, on_child=on_child, process_local=process_local)
  try:
    state, start = ledger.open(init(rng_lib.strategy_init_key(key)))
    for step in range(start, ledger.num_steps):
      actions = np.asarray(jax.device_get(ask(state, rng_lib.ask_key(key, step))))
      records = ledger.evaluate_step(step, actions, [space.decode(a) for a in actions], evaluator)
      rewards = np.asarray([r.reward if r.valid else 0.0 for r in records], np.float32)
      valid = np.asarray([r.valid for r in records])
      state, metrics = tell(state, actions, rewards, valid)
      ledger.end_step(step, records, jax.device_get(metrics), state)
  finally:
    ledger.close()
  return ledger.result()


