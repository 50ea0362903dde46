"""The search loop: REINFORCE controller (or random search) over child architectures, with resume.

Per controller step (eq. (4) of the paper): sample m architectures from the controller (one
jitted, vmapped call), evaluate them (train each child on the search split; its reward is the best
validation accuracy), apply the REINFORCE update with the EMA baseline, then append one JSON line per
child to `workdir/history.jsonl`, one line per step to `workdir/steps.jsonl`, and checkpoint the
controller state (Orbax). `strategy = random` replaces the controller by uniform sampling with the
same budget and the same history format.

Evaluator protocol: any callable taking a list of Architecture and returning, per architecture,
either a float reward or a `ChildResult`. `ChildEvaluator` trains children on a split.

Resume: rerunning with the same workdir restores the controller from its latest good checkpoint,
reuses history lines of children already evaluated (also those of the interrupted step, so they are
not retrained), redoes the interrupted controller step and goes on. Sampling keys are
`fold_in(seed key, step)`, so a resumed run samples exactly what an uninterrupted run would.
"""

import concurrent.futures
import dataclasses
import json
import logging
import os
import sys
import time
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from nasrl_jax import child as child_lib
from nasrl_jax import controller as controller_lib
from nasrl_jax import logs
from nasrl_jax import reinforce
from nasrl_jax import space as space_lib
from nasrl_jax import train as train_lib
from nasrl_jax.errors import UserInputError


class SearchAborted(RuntimeError):
  """Too many children failed in a row."""


@dataclasses.dataclass
class ChildResult:
  """An evaluated child, as the evaluator returns it."""
  val_acc: Sequence[float] = ()  # Validation accuracy per epoch.
  val_loss: Sequence[float] = ()  # Validation loss per epoch (TensorBoard curves).
  train_loss: Sequence[float] = ()  # Training loss per epoch (TensorBoard curves).
  best_val_loss: float = float("nan")
  best_epoch: int = -1
  params: int = 0
  flops: int = 0
  compile_seconds: float = 0.0
  train_seconds: float = 0.0
  status: str = "ok"  # ok | failed
  error: str = ""  # Error class and message when failed.
  weights: object = None  # (params, batch_stats) at the best val loss; not written to history.
  reward: Optional[float] = None  # Set by evaluators that score directly (no reward transform).


@dataclasses.dataclass
class ChildRecord:
  """One line of history.jsonl."""
  step: int
  child: int  # Index within the step.
  index: int  # Global child index (step * m + child).
  strategy: str
  architecture: space_lib.Architecture
  actions: list
  reward: float
  best_val_acc: float
  best_val_loss: float
  best_epoch: int
  val_acc: list
  params: int
  flops: int
  compile_seconds: float
  train_seconds: float
  status: str  # ok | failed | memo (same architecture trained earlier: result reused)
  error: str = ""

  def to_json(self) -> dict:
    d = dataclasses.asdict(self)
    d["architecture"] = str(self.architecture)
    d["kernels"] = list(self.architecture.kernels)
    d["filters"] = list(self.architecture.filters)
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in d.items()}

  @classmethod
  def from_json(cls, d: dict) -> "ChildRecord":
    d = dict(d)
    arch = space_lib.Architecture.from_string(d.pop("architecture"))
    d.pop("kernels", None)
    d.pop("filters", None)
    for k in ("reward", "best_val_acc", "best_val_loss"):
      d[k] = float("nan") if d.get(k) is None else float(d[k])
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(architecture=arch, **{k: v for k, v in d.items() if k in fields})


@dataclasses.dataclass
class SearchResult:
  history: list  # ChildRecord per child, in order.
  steps: list  # Per-step dicts: mean_reward, baseline, entropy, best_so_far, ...
  wall_seconds: float
  strategy: str

  def best(self, top_k: int = 1) -> list:
    """Best records by reward (ties: fewer parameters, then earlier), unique architectures."""
    seen, out = set(), []
    ok = [r for r in self.history if r.status != "failed" and np.isfinite(r.reward)]
    for r in sorted(ok, key=lambda r: (-r.reward, r.params, r.index)):
      if r.architecture not in seen:
        seen.add(r.architecture)
        out.append(r)
    return out[:top_k]

  def summary(self) -> dict:
    """Cost figures for the report."""
    recs = self.history
    compile_s = float(sum(r.compile_seconds for r in recs if r.status == "ok"))
    train_s = float(sum(r.train_seconds for r in recs if r.status == "ok"))
    best = self.best(1)
    return {
        "children": len(recs), "steps": len(self.steps), "wall_seconds": self.wall_seconds,
        "compile_seconds": compile_s, "train_seconds": train_s,
        "compile_share": compile_s / self.wall_seconds if self.wall_seconds > 0 else None,
        "memo_hits": sum(r.status == "memo" for r in recs),
        "failed": sum(r.status == "failed" for r in recs),
        "best": ({"architecture": str(best[0].architecture), "reward": best[0].reward,
                  "params": best[0].params} if best else None),
        "per_step": self.steps,
        "rewards": [r.reward for r in recs],
    }


# ---------------------------------------------------------------------------- history files


def read_jsonl(path) -> list:
  """Reads a JSON-lines file, ignoring a torn last line (a crash mid-write)."""
  if not os.path.exists(path):
    return []
  out = []
  with open(path, encoding="utf-8") as f:
    lines = f.read().split("\n")
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      out.append(json.loads(line))
    except json.JSONDecodeError:
      if i >= len(lines) - 2:  # Only the last line may be torn.
        logging.warning("ignoring a torn last line of %s", path)
        break
      raise
  return out


def _rewrite_jsonl(path, rows: list) -> None:
  """Atomically rewrites a JSON-lines file (used once at resume to drop a torn line)."""
  from nasrl_jax import io_utils
  io_utils.atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def _append_jsonl(path, rows: list) -> None:
  """Appends complete lines with one write + fsync (a crash leaves at most one torn line)."""
  with open(path, "a", encoding="utf-8") as f:
    f.write("".join(json.dumps(r) + "\n" for r in rows))
    f.flush()
    os.fsync(f.fileno())


# ---------------------------------------------------------------------------- progress


class _Progress:
  """tqdm bar on a terminal; plain periodic log lines otherwise."""

  def __init__(self, total, desc, every_s):
    self.tty = sys.stderr.isatty()
    self.bar = tqdm.tqdm(total=total, desc=desc, disable=not self.tty, dynamic_ncols=True)
    self.total, self.desc, self.every_s = total, desc, every_s
    self.t0 = time.time()
    self.last = 0.0
    self.n = 0

  def update(self, n, best):
    self.n += n
    self.bar.update(n)
    self.bar.set_postfix(best=f"{best:.4f}")
    now = time.time()
    if not self.tty and (now - self.last >= self.every_s or self.n == self.total):
      self.last = now
      el = now - self.t0
      eta = el / max(self.n, 1) * (self.total - self.n)
      logging.info("%s: %d/%d children, best reward %.4f, %.0fs elapsed, ETA %.0fs",
                   self.desc, self.n, self.total, best, el, eta)

  def close(self):
    self.bar.close()


# ---------------------------------------------------------------------------- the loop


def _normalise(result) -> ChildResult:
  """An evaluator's float reward or ChildResult -> ChildResult."""
  if isinstance(result, ChildResult):
    return result
  r = float(result)
  return ChildResult(val_acc=(r,), reward=r, status="ok" if np.isfinite(r) else "failed",
                     error="" if np.isfinite(r) else "NonFiniteReward")


def run_search(config, evaluator: Callable, workdir: str, *, strategy: Optional[str] = None,
               seed: Optional[int] = None, on_child: Optional[Callable] = None,
               write: Optional[bool] = None) -> SearchResult:
  """Runs (or resumes) a search; see the module docstring.

  Args:
    config: the experiment ConfigDict (uses space, controller, search, seed, log_every_s).
    evaluator: list[Architecture] -> list[float | ChildResult].
    workdir: folder for history.jsonl, steps.jsonl and controller checkpoints.
    strategy: overrides config.search.strategy (reinforce | random).
    seed: overrides config.seed.
    on_child: optional callback(record, child_result) after each evaluated child (e.g. to
      checkpoint the weights of the top-k children).
    write: whether this process writes history/steps files (default: process 0 only; every
      process takes part in the Orbax checkpoint, which coordinates its own writes).

  Returns:
    SearchResult with the history of every child.
  """
  from nasrl_jax import checkpoint as ckpt_lib
  strategy = strategy or config.search.strategy
  if strategy not in ("reinforce", "random"):
    raise UserInputError(f"config.search.strategy={strategy!r}: use reinforce or random")
  seed = int(config.seed if seed is None else seed)
  sp = space_lib.SearchSpace.from_config(config.space)
  m, num_steps = int(config.search.children_per_step), int(config.search.num_steps)
  if m < 1 or num_steps < 1:
    raise UserInputError("config.search.children_per_step and num_steps must be >= 1")
  write = jax.process_index() == 0 if write is None else write
  os.makedirs(workdir, exist_ok=True)
  hist_path = os.path.join(workdir, "history.jsonl")
  steps_path = os.path.join(workdir, "steps.jsonl")
  t_start = time.time()

  # Previous progress (resume).
  old = [ChildRecord.from_json(d) for d in read_jsonl(hist_path)]
  old_steps = read_jsonl(steps_path)
  if write:
    _rewrite_jsonl(hist_path, [r.to_json() for r in old])  # Drops a torn line, if any.
  done = {(r.step, r.child): r for r in old}
  memo = {}
  for r in old:
    if r.status in ("ok", "memo"):
      memo.setdefault(r.architecture, r)

  key = jax.random.key(seed)
  ctrl_key, sample_key = jax.random.split(key)
  ckpt = None
  start_step = 0
  if strategy == "reinforce":
    graphdef, params, rest = controller_lib.init(config.controller, sp, ctrl_key)
    sampler = controller_lib.make_sampler(graphdef, rest, sp.num_decisions, config.controller)
    log_prob_fn = controller_lib.make_log_prob(graphdef, rest, config.controller)
    optimizer = reinforce.make_optimizer(config.controller)
    update = reinforce.make_update(log_prob_fn, optimizer, config.controller)
    state = reinforce.init_state(params, optimizer)
    ckpt = ckpt_lib.ControllerCheckpointer(os.path.join(workdir, "controller"), max_to_keep=3)
    restored = ckpt.restore(state)
    if restored is not None:
      start_step, state, _ = restored
      state = reinforce.ControllerState(*state)
      logging.info("resuming the controller after step %d", start_step - 1)
  else:
    start_step = len(old_steps)
  steps = old_steps[:start_step]
  if write:  # A step row written before a crash that preceded its checkpoint is redone.
    _rewrite_jsonl(steps_path, steps)
  history = [r for r in old if r.step < start_step]
  best_so_far = max([r.reward for r in history if np.isfinite(r.reward)], default=-np.inf)
  failures_in_row = 0
  for r in history:
    failures_in_row = failures_in_row + 1 if r.status == "failed" else 0

  parallelism = max(1, int(getattr(evaluator, "parallelism", 1)))
  # TensorBoard event files (no TensorFlow needed) + metrics.jsonl: controller per step, and
  # each newly trained child's curves as its own run.
  tb = logs.MetricWriter(os.path.join(workdir, "tb")) if write else None
  progress = _Progress(num_steps * m, f"search[{strategy}]", float(config.log_every_s))
  progress.update(len(history), best_so_far if history else 0.0)
  try:
    for step in range(start_step, num_steps):
      skey = jax.random.fold_in(sample_key, step)
      if strategy == "reinforce":
        actions, _, _ = sampler(state.params, jax.random.split(skey, m))
        actions = np.asarray(jax.device_get(actions))
      else:
        actions = np.stack([sp.sample_actions(k) for k in jax.random.split(skey, m)])
      archs = [sp.decode(a) for a in actions]

      # Plan the step: reuse children already evaluated (this step before a crash) or trained
      # before (the memo, also for a repeat within this step); evaluate the rest in chunks of
      # `parallelism` (one child per device/process), compiling the next chunk ahead of time.
      pending = []
      for k, arch in enumerate(archs):
        prev = done.get((step, k))
        if (prev is None or prev.architecture != arch) and not (
            config.search.memo and (arch in memo or arch in pending)):
          pending.append(arch)
      chunks = [pending[i:i + parallelism] for i in range(0, len(pending), parallelism)]
      results = {}  # Position in `pending` -> ChildResult.
      next_chunk = 0

      def evaluate_chunk():
        nonlocal next_chunk
        chunk = chunks[next_chunk]
        if next_chunk + 1 < len(chunks) and hasattr(evaluator, "prefetch"):
          evaluator.prefetch(chunks[next_chunk + 1])
        out = evaluator(chunk)
        for j, res in enumerate(out):
          results[next_chunk * parallelism + j] = _normalise(res)
        next_chunk += 1

      records = []
      pos = 0  # Next position in `pending`.
      for k, arch in enumerate(archs):
        prev = done.get((step, k))
        if prev is not None and prev.architecture == arch:
          rec = prev
        elif config.search.memo and arch in memo:
          rec = dataclasses.replace(
              memo[arch], step=step, child=k, index=step * m + k, strategy=strategy,
              actions=list(map(int, actions[k])), compile_seconds=0.0, train_seconds=0.0,
              status="memo", error="")
        else:
          if pos < len(pending) and pending[pos] == arch:
            while pos not in results:
              evaluate_chunk()
            res = results.pop(pos)
            pos += 1
          else:  # A repeat whose first occurrence failed: evaluate it again, alone.
            res = _normalise(evaluator([arch])[0])
          if res.status != "ok":
            reward = float(config.search.failed_reward)
          elif res.reward is not None:
            reward = res.reward
          else:
            reward = reinforce.transform_reward(res.val_acc, res.params, config.controller)
          rec = ChildRecord(
              step=step, child=k, index=step * m + k, strategy=strategy, architecture=arch,
              actions=list(map(int, actions[k])), reward=float(reward),
              best_val_acc=float(max(res.val_acc)) if len(res.val_acc) else float("nan"),
              best_val_loss=float(res.best_val_loss), best_epoch=int(res.best_epoch),
              val_acc=[float(v) for v in res.val_acc], params=int(res.params),
              flops=int(res.flops), compile_seconds=float(res.compile_seconds),
              train_seconds=float(res.train_seconds), status=res.status, error=res.error)
          if rec.status == "ok":
            memo.setdefault(arch, rec)
          if on_child is not None:
            on_child(rec, res)
          if tb is not None and rec.status == "ok" and len(res.val_loss):
            logs.write_child_curves(tb, rec.index, res.val_acc, res.val_loss, res.train_loss)
          res.weights = None  # Free device memory early.
        if write and (step, k) not in done:
          _append_jsonl(hist_path, [rec.to_json()])
        records.append(rec)
        progress.update(1, max(best_so_far, rec.reward))
        if rec.status == "failed":
          failures_in_row += 1
          logging.warning("child %d (%s) failed: %s", rec.index, rec.architecture, rec.error)
          if failures_in_row > int(config.search.max_failures_in_row):
            raise SearchAborted(
                f"{failures_in_row} children failed in a row (config.search.max_failures_in_row="
                f"{config.search.max_failures_in_row}); last error: {rec.error}")
        else:
          failures_in_row = 0
      rewards = np.asarray([r.reward for r in records], np.float32)
      history.extend(records)
      best_so_far = max(best_so_far, float(rewards.max()))
      row = {"step": step, "mean_reward": float(rewards.mean()), "max_reward": float(rewards.max()),
             "best_so_far": best_so_far, "baseline": None, "entropy": None, "loss": None}
      if strategy == "reinforce":
        state, metrics = update(state, jnp.asarray(actions), jnp.asarray(rewards))
        metrics = jax.device_get(metrics)
        row.update(baseline=float(metrics["baseline"]), baseline_used=float(metrics["baseline_used"]),
                   entropy=float(metrics["entropy"]), loss=float(metrics["loss"]))
      # The step row goes first, the checkpoint last: a crash in between redoes the step (its
      # children come from the history) and the resume rewrites steps.jsonl up to the checkpoint.
      if write:
        _append_jsonl(steps_path, [row])
        tb.scalars(step, {f"controller/{k}": v for k, v in row.items()
                          if k != "step" and v is not None})
      if strategy == "reinforce":
        # Host numpy copies: Orbax refuses process-local jax.Arrays in a multi-process run, and
        # every process holds the same controller state anyway.
        ckpt.save(step + 1, jax.device_get(state), {"history_len": len(history), "step": step})
        ckpt.wait()
      steps.append(row)
  finally:
    progress.close()
    if ckpt is not None:
      ckpt.close()
    if tb is not None:
      tb.close()
  return SearchResult(history, steps, time.time() - t_start, strategy)


# ---------------------------------------------------------------------------- child evaluator


class DistributedEvaluator:
  """Splits each call's children over the processes of a `jax.distributed` run.

  Process p trains the children i with i % num_processes == p (with its local evaluator, e.g. one
  per local device), then every result is all-gathered (`multihost_utils.process_allgather` of the
  JSON-encoded results, exact), so every process sees the same rewards, applies the same
  controller update and holds the same history as a single-process run. Weights stay on the
  process that trained them.
  """

  _BYTES = 32768  # Per encoded child result (three curves of a few hundred epochs fit).

  def __init__(self, local):
    self.local = local
    self.pid, self.n = jax.process_index(), jax.process_count()
    self.parallelism = self.n * max(1, int(getattr(local, "parallelism", 1)))

  def _mine(self, archs):
    return [a for i, a in enumerate(archs) if i % self.n == self.pid]

  def prefetch(self, archs):
    if hasattr(self.local, "prefetch"):
      self.local.prefetch(self._mine(archs))

  def __call__(self, archs):
    from jax.experimental import multihost_utils
    mine = self._mine(archs)
    local = [_normalise(r) for r in (self.local(mine) if mine else [])]
    per = -(-len(archs) // self.n)
    buf = np.zeros((per, self._BYTES), np.uint8)
    for j, res in enumerate(local):
      d = dataclasses.asdict(dataclasses.replace(res, weights=None))
      raw = json.dumps(d).encode()
      if len(raw) > self._BYTES:
        raise ValueError(f"encoded child result of {len(raw)} bytes exceeds {self._BYTES}")
      buf[j, :len(raw)] = np.frombuffer(raw, np.uint8)
    gathered = np.asarray(multihost_utils.process_allgather(buf))  # [n, per, bytes]
    out = []
    for i in range(len(archs)):
      p, j = i % self.n, i // self.n
      if p == self.pid:
        out.append(local[j])
        continue
      raw = gathered[p, j].tobytes().rstrip(b"\0")
      d = json.loads(raw)
      for k in ("val_acc", "val_loss", "train_loss"):
        d[k] = tuple(d[k])
      out.append(ChildResult(**d))
    return out



class ChildEvaluator:
  """Trains each child on one split (the search fold's train/val parts) and scores it.

  Scale-out: with several local devices, the children passed in one call train concurrently, one
  per device (a thread each; the dataset is copied to every device once). `prefetch(archs)`
  compiles upcoming children ahead of time in a background thread while the current ones train
  (`config.search.aot_compile`: on | off | auto = on when the host has more than 4 cores).

  Failures are isolated: a child whose loss is non-finite, that runs out of memory or that raises
  anything else comes back as a failed ChildResult with the error class; the search goes on.
  """

  def __init__(self, config, data: train_lib.DeviceData, split: train_lib.Split,
               input_shape, num_classes, num_train, num_eval, keep_weights=False, devices=None):
    self.config, self.split = config, split
    self.spec = child_lib.ChildSpec.from_config(config, input_shape, num_classes)
    self.num_train, self.num_eval = num_train, num_eval
    self.keep_weights = keep_weights
    self.seed = int(config.seed)  # Same init/order seed for every child: a fair comparison.
    home = next(iter(data.images.devices()))
    self.devices = list(devices) if devices else [home]
    self.data = {d: (data if d == home else data.to(d)) for d in self.devices}
    self.parallelism = len(self.devices)
    aot = config.search.aot_compile
    if aot not in ("on", "off", "auto"):
      raise UserInputError(f"config.search.aot_compile={aot!r}: use on, off or auto")
    self.aot = aot == "on" or (aot == "auto" and (os.cpu_count() or 1) > 4)
    self._pool = concurrent.futures.ThreadPoolExecutor(max(2, len(self.devices)))
    self._prefetched = {}  # (arch, device) -> Future of a compiled Trainer.

  def trainer(self, arch, device=None) -> train_lib.Trainer:
    device = device or self.devices[0]
    return train_lib.Trainer(arch, self.spec, self.config.train, self.num_train, self.num_eval,
                             self.data[device])

  def _compiled_trainer(self, arch, device):
    tr = self.trainer(arch, device)
    tr.compile()
    return tr

  def prefetch(self, archs) -> None:
    """Starts compiling these children (in the order they will be evaluated) in the background."""
    if not self.aot:
      return
    for i, arch in enumerate(archs):
      dev = self.devices[i % len(self.devices)]
      if (arch, dev) not in self._prefetched:
        self._prefetched[(arch, dev)] = self._pool.submit(self._compiled_trainer, arch, dev)

  def evaluate_one(self, arch, device=None) -> ChildResult:
    device = device or self.devices[0]
    params = child_lib.count_params_for(arch, self.spec)
    flops = child_lib.count_flops(arch, self.spec)
    try:
      future = self._prefetched.pop((arch, device), None)
      trainer = future.result() if future is not None else self.trainer(arch, device)
      res = trainer.fit(self.seed, self.split)
      compile_s = trainer.compile_seconds  # Also when compiled ahead of time in the background.
    except Exception as e:  # pylint: disable=broad-except  (fault isolation, see docstring)
      logging.warning("child %s failed: %s: %s", arch, type(e).__name__, str(e)[:300])
      return ChildResult(params=params, flops=flops, status="failed",
                         error=f"{type(e).__name__}: {str(e)[:300]}")
    return ChildResult(val_acc=tuple(float(v) for v in res.val_acc),
                       val_loss=tuple(float(v) for v in res.val_loss),
                       train_loss=tuple(float(v) for v in res.train_loss),
                       best_val_loss=res.best_val_loss, best_epoch=res.best_epoch, params=params,
                       flops=flops, compile_seconds=compile_s,
                       train_seconds=res.train_seconds,
                       weights=(res.params, res.batch_stats) if self.keep_weights else None)

  def __call__(self, archs):
    """Evaluates up to `parallelism` children concurrently (child i on device i mod n)."""
    if len(self.devices) == 1 or len(archs) == 1:
      return [self.evaluate_one(a, self.devices[i % len(self.devices)]) for i, a in enumerate(archs)]
    futures = [self._pool.submit(self.evaluate_one, a, self.devices[i % len(self.devices)])
               for i, a in enumerate(archs)]
    return [f.result() for f in futures]

  def close(self):
    self._pool.shutdown(wait=True, cancel_futures=True)
