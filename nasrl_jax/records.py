"""What a search records: evaluated children (`ChildResult`), history lines (`ChildRecord`), a
finished search (`SearchResult`), and the JSON-lines files they live in (appended as children
finish, a torn last line ignored on reading)."""

import dataclasses
import json
import logging
import os
from typing import Optional, Sequence

import numpy as np

from nasrl_jax import io_utils
from nasrl_jax import space as space_lib

OK, MEMO, FAILED, DOES_NOT_FIT = "ok", "memo", "failed", "does_not_fit"


@dataclasses.dataclass
class ChildResult:
  """An evaluated child, as an evaluator returns it (JSON-encodable but for `weights`)."""
  reward: Optional[float] = None  # The child's reward (mean over the reward splits).
  split_rewards: Sequence[float] = ()  # Reward of each split.
  metrics: dict = dataclasses.field(default_factory=dict)  # metric -> mean over splits.
  val_acc: Sequence[float] = ()  # Split 0's curves (TensorBoard, history).
  val_loss: Sequence[float] = ()
  train_loss: Sequence[float] = ()
  best_val_loss: float = float("nan")
  best_epoch: int = -1
  params: int = 0
  flops: int = 0
  compile_seconds: float = 0.0
  train_seconds: float = 0.0
  status: str = OK  # ok | failed | does_not_fit
  error: str = ""
  weights: object = None  # Split 0's kept (params, batch_stats); not written anywhere.


@dataclasses.dataclass
class ChildRecord:
  """One line of history.jsonl."""
  step: int
  child: int  # Index within the step.
  index: int  # Index within the search (step * m + child).
  strategy: str
  seed: int
  outer_fold: int
  architecture: space_lib.Architecture
  actions: list
  reward: float
  split_rewards: list
  metrics: dict
  best_val_loss: float
  best_epoch: int
  val_acc: list
  params: int
  flops: int
  compile_seconds: float
  train_seconds: float
  status: str  # ok | memo (trained earlier in this run on the same splits) | failed | does_not_fit
  error: str = ""

  @property
  def valid(self) -> bool:
    """Whether the reward says something about the architecture (tell()'s `valid`)."""
    return self.status in (OK, MEMO) and bool(np.isfinite(self.reward))

  def to_json(self) -> dict:
    d = dataclasses.asdict(self)
    d["architecture"] = str(self.architecture)
    d["kernels"] = list(self.architecture.kernels)
    d["filters"] = list(self.architecture.filters)
    return io_utils.to_json_safe(d)

  @classmethod
  def from_json(cls, d: dict) -> "ChildRecord":
    d = dict(d)
    arch = space_lib.Architecture.from_string(d.pop("architecture"))
    for k in ("reward", "best_val_loss"):
      d[k] = float("nan") if d.get(k) is None else float(d[k])
    d["split_rewards"] = [float("nan") if v is None else v for v in d.get("split_rewards", [])]
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(architecture=arch, **{k: v for k, v in d.items() if k in fields})


@dataclasses.dataclass
class SearchResult:
  history: list  # ChildRecord per child, in order.
  steps: list  # Per-step dicts: mean_reward, max_reward, best_so_far, strategy metrics.
  wall_seconds: float
  strategy: str
  seed: int = 0
  outer_fold: int = 0

  def best(self, top_k: int = 1) -> list:
    """Best valid records by reward, distinct architectures (ties: fewer parameters, earlier)."""
    seen, out = set(), []
    for r in sorted((r for r in self.history if r.valid),
                    key=lambda r: (-r.reward, r.params, r.index)):
      if r.architecture not in seen:
        seen.add(r.architecture)
        out.append(r)
    return out[:top_k]

  def summary(self) -> dict:
    """Cost and outcome figures for the report."""
    recs = self.history
    trained = [r for r in recs if r.status == OK]
    best = self.best(1)
    return {
        "fold": self.outer_fold, "seed": self.seed, "children": len(recs),
        "distinct": len({r.architecture for r in recs}),
        # Every distinct architecture this search trained or met: the report counts the
        # distinct architectures of a strategy over the whole run from these.
        "architectures": sorted({str(r.architecture) for r in recs}),
        "memo_hits": sum(r.status == MEMO for r in recs),
        "failed": sum(r.status == FAILED for r in recs),
        "does_not_fit": sum(r.status == DOES_NOT_FIT for r in recs),
        "wall_seconds": self.wall_seconds,
        "compile_seconds": float(sum(r.compile_seconds for r in trained)),
        "train_seconds": float(sum(r.train_seconds for r in trained)),
        "best_reward": best[0].reward if best else None,
        "best_architecture": str(best[0].architecture) if best else None,
        "per_step": self.steps,
        "rewards": [r.reward if r.valid else None for r in recs],
    }


# ---------------------------------------------------------------------------- JSON lines


def read_jsonl(path) -> list:
  """Reads a JSON-lines file, ignoring a torn last line (a crash mid-write)."""
  if not os.path.exists(path):
    return []
  with open(path, encoding="utf-8") as f:
    lines = f.read().split("\n")
  out = []
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


def append_jsonl(path, rows: list) -> None:
  """Appends complete lines with one write + fsync (a crash leaves at most one torn line)."""
  with open(path, "a", encoding="utf-8") as f:
    f.write("".join(json.dumps(r) + "\n" for r in rows))
    f.flush()
    os.fsync(f.fileno())


def rewrite_jsonl(path, rows: list) -> None:
  io_utils.atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


# ---------------------------------------------------------------------------- progress


def normalise(result) -> ChildResult:
  """An evaluator's float reward or ChildResult -> ChildResult."""
  if isinstance(result, ChildResult):
    return result
  r = float(result)
  ok = bool(np.isfinite(r))
  return ChildResult(reward=r, split_rewards=(r,), status=OK if ok else FAILED,
                     error="" if ok else "NonFiniteReward")
