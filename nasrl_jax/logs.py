"""Metric logs without TensorFlow: TensorBoard event files plus JSON lines.

This module owns how training and search curves are written for people to watch:

* TensorBoard event files through tensorboardX's `SummaryWriter` (pure Python + protobuf; it never
  imports TensorFlow), readable by `tensorboard --logdir=...` and by
  `tensorboard.backend.event_processing.event_accumulator.EventAccumulator`. Each writer gets a
  unique `filename_suffix` (time in ns, process id, a counter): tensorboardX names files by the
  second, so two writers opened in one folder in the same second would otherwise write the same
  file. `SummaryWriter.flush()` flushes the file but not the queue its background thread has not
  written yet (tensorboardX 2.6.5: after 3 values and `flush()`, a reader missed the latest ones in
  30 of 30 trials); only `close()` drains it. So `flush` here closes the run's writer, and the
  next value opens a new event file: a run is a series of files, which TensorBoard reads in name
  order.
* the same values as JSON lines in `<logdir>/metrics.jsonl`, one object per `scalars` call:
  `{"step": 3, "time": 1717171717.2, "reward/mean": 0.71, ...}` (plus `"run"` for sub-runs, NaN and
  infinities as null), which `pandas.read_json(path, lines=True)` reads directly.

A writer has one main run (its `logdir`) and any number of sub-runs (sub-folders, e.g.
`children/child_0003`): TensorBoard shows each sub-run as its own line on charts with the same tag,
so the learning curves of all children overlay on one `val/accuracy` chart. The JSON lines of every
run go to the one `metrics.jsonl` of the writer, tagged with `"run"`.

Typical use (the search loop and child training):

  writer = MetricWriter(os.path.join(workdir, "search", "tb"))
  writer.scalars(step, {"reward/mean": r, "reward/baseline": b, "policy/entropy": h,
                        "reward/best_so_far": best})
  write_child_curves(writer, child_index, val_acc, val_loss, train_loss)
  writer.close()

Files are appended to, never rewritten: a resumed run adds new event files next to the old ones
(TensorBoard merges them) and more lines to `metrics.jsonl`.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import time
from typing import TYPE_CHECKING, Mapping, Optional, Sequence

import numpy as np

if TYPE_CHECKING:
  from tensorboardX import SummaryWriter

JSONL_NAME = "metrics.jsonl"
CHILD_RUN_FORMAT = "children/child_{index:04d}"  # Sub-run of one child's training curves.
_RESERVED_KEYS = ("step", "time", "run")  # Keys of a JSON line that are not metric names.
_RUN_NAME = re.compile(r"[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*")
_FILE_NUMBER = itertools.count()  # Event files opened by this process: part of their names.


def _unique_suffix() -> str:
  """`.<time ns>.<pid>.<n>`: unique per file, and increasing in name order within one process."""
  return f".{time.time_ns()}.{os.getpid()}.{next(_FILE_NUMBER)}"


def _check_run(run: str) -> str:
  """A sub-run name must be a relative folder path of plain characters, without '..'."""
  if not isinstance(run, str) or not _RUN_NAME.fullmatch(run) or ".." in run.split("/"):
    raise ValueError(f"run name {run!r}: use a relative folder path of letters, digits, "
                     "'_', '-', '.' and '/' (no '..')")
  return run


def _to_float(name: str, value) -> float:
  """Python/numpy/JAX scalars (or size-1 arrays) -> float; anything else is a caller bug."""
  try:
    arr = np.asarray(value)
  except Exception:  # pylint: disable=broad-except
    arr = None
  if arr is None or arr.size != 1 or arr.dtype.kind not in "biuf":
    raise TypeError(f"metric {name!r}: expected a real scalar, got {type(value).__name__} "
                    f"{getattr(value, 'shape', '')}".rstrip())
  return float(arr.reshape(()))


class MetricWriter:
  """Writes scalar metrics to TensorBoard event files and to `metrics.jsonl` in `logdir`.

  Not thread-safe: call it from one thread (the search loop / training loop).
  """

  def __init__(self, logdir: str | os.PathLike):
    """Opens (creating if needed) the log folder; event files appear with the first values.

    Args:
      logdir: folder of the main run; sub-runs are sub-folders of it.
    """
    self._logdir = os.path.abspath(os.fspath(logdir))
    os.makedirs(self._logdir, exist_ok=True)
    self._writers: dict[str, SummaryWriter] = {}
    # Line-buffered append: every record reaches the OS as soon as it is written, and a resumed
    # run continues the same file.
    self._jsonl = open(os.path.join(self._logdir, JSONL_NAME), "a", encoding="utf-8",
                       buffering=1)
    self._closed = False

  @property
  def logdir(self) -> str:
    return self._logdir

  def _event_writer(self, run: str) -> SummaryWriter:
    writer = self._writers.get(run)
    if writer is None:
      folder = os.path.join(self._logdir, run) if run else self._logdir
      # Imported here: `import nasrl_jax.search` (which imports this module) stays free of
      # tensorboardX until something is logged.
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      # flush_secs: the background thread's own periodic flush; `flush` below is what readers
      # can rely on.
      writer = SummaryWriter(logdir=folder, filename_suffix=_unique_suffix(), flush_secs=10)
      self._writers[run] = writer
    return writer

  def _drain(self, run: str) -> None:
    """Closes a run's SummaryWriter: the only call that writes everything queued (see above)."""
    writer = self._writers.pop(run, None)
    if writer is not None:
      writer.close()

  def scalars(self, step: int, values: Mapping[str, float], *, run: Optional[str] = None,
              flush: bool = True) -> None:
    """Writes one step's scalar values.

    Args:
      step: the x axis (controller step, epoch, ...), an int >= 0.
      values: metric name -> real scalar (Python, numpy or JAX). Names may contain '/' to group
        charts in TensorBoard ('reward/mean'); NaN goes to TensorBoard as NaN, to JSON as null.
      run: sub-run (sub-folder) to write to, e.g. 'children/child_0003'; None = the main run.
      flush: write the values out now (readers see them at once; the run's next value starts a
        new event file). False keeps them queued until `flush`, `close_run` or `close`.

    Raises:
      ValueError: a negative step, a reserved or empty metric name, or a bad run name.
      TypeError: a value that is not a real scalar.
      RuntimeError: the writer is closed.
    """
    if self._closed:
      raise RuntimeError(f"MetricWriter({self._logdir}) is closed")
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
      raise ValueError(f"step must be an int >= 0, got {step!r}")
    step = int(step)
    run = "" if run is None else _check_run(run)
    floats = {}
    for name, value in values.items():
      if not isinstance(name, str) or not name or name in _RESERVED_KEYS:
        raise ValueError(f"metric name {name!r}: must be a non-empty string other than "
                         f"{', '.join(_RESERVED_KEYS)}")
      floats[name] = _to_float(name, value)
    wall_time = time.time()
    writer = self._event_writer(run)
    for name, value in floats.items():
      writer.add_scalar(name, value, global_step=step, walltime=wall_time)
    record = {"step": step, "time": round(wall_time, 3)}
    if run:
      record["run"] = run
    record.update({k: (v if math.isfinite(v) else None) for k, v in floats.items()})
    self._jsonl.write(json.dumps(record, allow_nan=False) + "\n")
    if flush:
      self._drain(run)

  def flush(self) -> None:
    """Writes everything so far: readers see every value passed to `scalars` before the call."""
    for run in list(self._writers):
      self._drain(run)
    self._jsonl.flush()

  def close_run(self, run: str) -> None:
    """Closes a sub-run's event file (frees its thread and file; a later write opens a new file)."""
    self._drain(_check_run(run))

  def close(self) -> None:
    """Writes and closes every event file and the JSON lines; idempotent."""
    if self._closed:
      return
    for run in list(self._writers):
      self._drain(run)
    self._jsonl.close()
    self._closed = True

  def __enter__(self) -> MetricWriter:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def write_child_curves(writer: MetricWriter, child_index: int, val_acc: Sequence[float],
                       val_loss: Sequence[float], train_loss: Optional[Sequence[float]] = None,
                       ) -> str:
  """Writes one child's per-epoch curves as its own TensorBoard run.

  The run is `children/child_0003` (for child 3) under the writer's logdir, with tags
  `val/accuracy`, `val/loss` and `train/loss` at steps 1..epochs, so all children's curves overlay
  on three charts; the same values go to the writer's `metrics.jsonl` with `"run"` set. The run's
  event file is closed afterwards (searches train hundreds of children).

  Args:
    writer: the search's MetricWriter.
    child_index: the child's index in the search (>= 0).
    val_acc: validation accuracy per epoch.
    val_loss: validation loss per epoch (same length).
    train_loss: mean training loss per epoch (same length), or None if not recorded.

  Returns:
    The run name.

  Raises:
    ValueError: a negative index or curves of different lengths.
  """
  if isinstance(child_index, bool) or not isinstance(child_index, (int, np.integer)) or \
      child_index < 0:
    raise ValueError(f"child_index must be an int >= 0, got {child_index!r}")
  curves = {"val/accuracy": np.asarray(val_acc, np.float64).ravel(),
            "val/loss": np.asarray(val_loss, np.float64).ravel()}
  if train_loss is not None:
    curves["train/loss"] = np.asarray(train_loss, np.float64).ravel()
  lengths = {k: v.size for k, v in curves.items()}
  if len(set(lengths.values())) != 1:
    raise ValueError(f"child {child_index}: curves must have one value per epoch each; got "
                     f"lengths {lengths}")
  run = CHILD_RUN_FORMAT.format(index=int(child_index))
  epochs = next(iter(lengths.values()))
  for epoch in range(epochs):
    writer.scalars(epoch + 1, {k: v[epoch] for k, v in curves.items()}, run=run, flush=False)
  writer.close_run(run)  # Closing flushes the run's events.
  writer.flush()
  return run
