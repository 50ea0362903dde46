"""Orbax checkpoints: the controller state, the search's children, and one-folder saves.

This module owns how nasrl_jax puts arrays on disk and reads them back. (Which arrays and which
metadata make an exported model is `export.py`'s business; it saves through `save_model` here.)

* `ControllerCheckpointer`: the controller state after every controller step (an Orbax
  `CheckpointManager`, asynchronous, keeping the newest `max_to_keep`). `restore(template)`
  returns the newest step that reads back intact. An unreadable step (truncated, deleted or
  altered files) is moved to `<directory>/_corrupt/`, named in one warning line, and the step
  before it is tried.
* `ModelStore`: the search's children keyed by child index, optionally only the `max_to_keep` best
  by score (Orbax's best-N retention).
* `save_model` / `load_model` / `load_meta`: one pytree plus a JSON dict in one folder (an Orbax
  `Checkpointer`), written atomically, replacing what is there. `update_meta` adds fields to the
  JSON dict afterwards (atomically, the arrays untouched).

Every folder holds Orbax items: the arrays (`state/` or `params/`, OCDBT), `meta/metadata` (the
caller's JSON, readable as is) and `checksums/metadata` (below). Nothing is pickled.

How the arrays go through Orbax, and what is added to it (per-leaf digests, naming the leaf that
differs, quiet failed restores, process-local saves), is `orbax_io.py`.
"""

from __future__ import annotations

import os
import time
from typing import Any, Mapping

from absl import logging
from etils import epath
import numpy as np
import orbax.checkpoint as ocp

from nasrl_jax import io_utils
from nasrl_jax.errors import UserInputError

from nasrl_jax import orbax_io
# StructureMismatch and CORRUPT_SUBDIR are re-exported: callers catch and name them here.
from nasrl_jax.orbax_io import CORRUPT_SUBDIR, META, PARAMS, STATE, StructureMismatch


# ----------------------------------------------------------------------- controller checkpoints


class ControllerCheckpointer(orbax_io.Managed):
  """Checkpoints the controller state after every controller step; resumes from the latest good one.

  Usage (the search loop)::

    with ControllerCheckpointer(workdir / "controller") as ckpt:
      restored = ckpt.restore(template_state)
      start = 0 if restored is None else restored[0] + 1
      ...
      ckpt.save(step, state, {"history_len": n, "config_hash": h})

  `state` is any pytree of jax/numpy arrays and Python scalars (optax namedtuples and typed PRNG
  keys included). Saves are asynchronous: `save` returns once the arrays are copied to host;
  `wait()` / `close()` block until they are on disk. Not thread-safe; one process per directory
  (every process of a multi-process run calls it: Orbax saves collectively).
  """

  def __init__(self, directory: str | os.PathLike, max_to_keep: int = 3, *,
               async_save: bool = True, process_local: bool = False):
    """Opens (creating if needed) a controller checkpoint directory.

    Args:
      directory: folder holding one sub-folder per saved step.
      max_to_keep: newest steps kept on disk (>= 1); older ones are deleted after each save.
      async_save: write in a background thread (`save` returns after the host copy).
      process_local: this process saves alone (a search only this process of a multi-process run
        runs, e.g. an outer fold assigned to it). Default: collective saves.
    """
    if isinstance(max_to_keep, bool) or not isinstance(max_to_keep, int) or max_to_keep < 1:
      raise ValueError(f"max_to_keep must be an int >= 1, got {max_to_keep!r}")
    self._dir = epath.Path(directory).absolute()
    self._process_local = process_local
    options = dict(max_to_keep=max_to_keep, enable_async_checkpointing=async_save,
                   # Leftover `<step>.orbax-checkpoint-tmp*` folders are saves a crash cut off.
                   cleanup_tmp_directories=True)
    if process_local:
      # Orbax refuses create=True with active_processes set: the folder is made here.
      self._dir.mkdir(parents=True, exist_ok=True)
      options.update(create=False, multiprocessing_options=orbax_io.multiprocessing_options(True),
                     async_options=orbax_io.async_options(True))
      self._mngr = ocp.CheckpointManager(self._dir,
                                         options=ocp.CheckpointManagerOptions(**options),
                                         handler_registry=orbax_io.handler_registry(STATE, True))
    else:
      self._mngr = ocp.CheckpointManager(self._dir, options=ocp.CheckpointManagerOptions(
          create=True, **options))

  @property
  def directory(self) -> epath.Path:
    return self._dir

  def save(self, step: int, state: Any, meta: Mapping[str, Any]) -> None:
    """Saves `state` and `meta` as step `step` (asynchronously when enabled).

    Args:
      step: controller step, larger than every step already in the directory.
      state: pytree of jax/numpy arrays and Python scalars.
      meta: small JSON-serializable dict (history length, config hash, ...); tuples come back
        as lists.

    Raises:
      ValueError: `step` is negative or not above the latest saved step (restore first).
      TypeError: `meta` is not JSON.
    """
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
      raise ValueError(f"step must be an int >= 0, got {step!r}")
    step = int(step)
    # Orbax refuses an existing step but saves a smaller one, which restore would then never pick.
    latest = self._mngr.latest_step()  # Includes a save still in flight.
    if latest is not None and step <= latest:
      raise ValueError(f"cannot save controller step {step} in {self._dir}: step {latest} "
                       "is already there (call restore() and continue after it)")
    args = orbax_io.save_args(STATE, state, meta, "controller checkpoint meta", self._process_local)
    if not self._mngr.save(step, args=args, force=True):  # force: no save-interval policy.
      raise RuntimeError(f"Orbax did not save controller step {step} in {self._dir}")

  def all_steps(self) -> list[int]:
    """Steps on disk, ascending (waits for saves in flight)."""
    self.wait()
    self._mngr.reload()
    return sorted(self._mngr.all_steps())

  def latest_step(self) -> int | None:
    """The newest step on disk (it may still fail to restore), or None if there is none."""
    steps = self.all_steps()
    return steps[-1] if steps else None

  def restore(self, template_state: Any) -> tuple[int, Any, dict] | None:
    """Restores the newest good step into the structure of `template_state`.

    Newer steps that cannot be read back intact are moved to `<directory>/_corrupt/` (so the
    caller can save those step numbers again), each named in one `logging.warning` line.

    Args:
      template_state: a pytree with the structure, shapes and dtypes of the saved state
        (concrete arrays or `jax.ShapeDtypeStruct`s); namedtuples such as optax's
        `ScaleByAdamState` come back as the same types, array leaves as `jax.Array`s.

    Returns:
      (step, state, meta) of the newest good step, or None when no step is readable.

    Raises:
      UserInputError: a readable step holds a state of another structure or shape (e.g. the
        controller config changed under the same workdir).
    """
    target = orbax_io.abstract(template_state)
    self.wait()
    self._mngr.reload()
    skipped, result = [], None
    for step in sorted(self._mngr.all_steps(), reverse=True):
      folder = self._dir / str(step)
      try:
        with orbax_io.quiet_restore_loop():
          try:
            restored = self._mngr.restore(step, args=orbax_io.restore_args(folder, STATE, target))
          except Exception as e:  # pylint: disable=broad-except
            mismatch = orbax_io.mismatch(folder / STATE, target, str(folder))
            if mismatch is not None:
              raise mismatch from None
            raise
        state, meta = orbax_io.check_restored(restored, STATE)
      except StructureMismatch as e:
        raise UserInputError(
            f"{e}: the saved controller state does not match this config; resume with the "
            "config that wrote it or use a new --workdir") from None
      except Exception as e:  # pylint: disable=broad-except
        # Corruption shows up as many exception types (tensorstore ValueError, JSON errors,
        # OSError, orbax_io.Corrupt): any failure to read a step means "try the one before".
        skipped.append((step, orbax_io.short(e)))
        continue
      result = (step, state, meta)
      break
    for step, why in skipped:
      moved = self._quarantine(step)
      then = (f"resuming from step {result[0]}" if result else
              "no earlier step is readable, starting over")
      logging.warning("Controller checkpoint step %d in %s is unreadable (%s); moved it to %s, "
                      "%s.", step, self._dir, why, moved, then)
    if skipped:
      self._mngr.reload()
    return result

  def _quarantine(self, step: int) -> epath.Path:
    """Moves an unreadable step folder aside: kept for inspection, invisible to Orbax."""
    root = self._dir / CORRUPT_SUBDIR
    root.mkdir(parents=True, exist_ok=True)
    dst = root / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
    n = 1
    while dst.exists():
      dst = root / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}-{n}"
      n += 1
    (self._dir / str(step)).rename(dst)
    return dst


# ----------------------------------------------------------------------------------- models


def save_model(directory: str | os.PathLike, tree: Any, meta: Mapping[str, Any], *,
               process_local: bool = False) -> None:
  """Writes one pytree of arrays and a JSON dict to `directory`, atomically, replacing it.

  Args:
    directory: the folder (e.g. `workdir/models/NASRL`); afterwards it holds `params/`,
      `meta/metadata` (the JSON, readable as is) and `checksums/metadata`.
    tree: nested dicts of jax/numpy arrays (device or host); int dict keys are stored as str.
    meta: JSON-serializable dict.
    process_local: save from this process alone in a multi-process run (default: collective).

  Raises:
    TypeError: meta is not JSON.
    ValueError: Orbax's refusal of a leaf type (one that is not an array or scalar).
  """
  args = orbax_io.save_args(PARAMS, tree, meta, "model metadata", process_local)
  path = epath.Path(directory).absolute()
  path.parent.mkdir(parents=True, exist_ok=True)
  with _checkpointer(process_local) as ckptr:
    ckptr.save(path, args=args, force=True)


def _checkpointer(process_local: bool) -> ocp.Checkpointer:
  mp = orbax_io.multiprocessing_options(process_local)
  handler = ocp.CompositeCheckpointHandler(
      composite_options=ocp.CompositeOptions(multiprocessing_options=mp,
                                             async_options=orbax_io.async_options(process_local)),
      handler_registry=orbax_io.handler_registry(PARAMS, process_local))
  return ocp.Checkpointer(handler, multiprocessing_options=mp)


def _check_folder(path: epath.Path) -> None:
  if not path.is_dir():
    raise UserInputError(f"{path}: no such model folder")
  missing = [item for item in (PARAMS, META) if not (path / item).is_dir()]
  if missing:
    # The usual slip is naming the parent (W/models instead of W/models/NASRL): say what is in it.
    inside = sorted(p.name for p in path.iterdir()
                    if (p / PARAMS).is_dir() and (p / META).is_dir())
    hint = f"; model folders inside it: {', '.join(inside)}" if inside else ""
    raise UserInputError(f"{path}: not a nasrl_jax model folder (no {' or '.join(missing)} "
                         f"item, as written by Orbax){hint}")


def load_meta(directory: str | os.PathLike) -> dict:
  """The JSON dict of a `save_model` folder, without reading any array.

  Raises:
    UserInputError: the folder is missing, not a model folder, or its JSON is unreadable.
  """
  path = epath.Path(directory).absolute()
  _check_folder(path)
  try:
    with _checkpointer(process_local=True) as ckptr:
      meta = ckptr.restore(path, args=ocp.args.Composite(**{META: ocp.args.JsonRestore()}))
  except Exception as e:  # pylint: disable=broad-except
    raise UserInputError(f"{path}: unreadable model metadata ({orbax_io.short(e)})") from None
  if not isinstance(meta[META], dict):
    raise UserInputError(f"{path}: model metadata is not a JSON object")
  return meta[META]


def update_meta(directory: str | os.PathLike, changes: Mapping[str, Any]) -> dict:
  """Merges `changes` into the JSON dict of a `save_model` folder; the arrays stay as they are.

  For records added after the save (the ONNX file's). The JSON file JsonSave wrote
  (`meta/metadata`) is replaced atomically (temp file + rename): readers see the old dict or the
  new one. Call it from one process.

  Returns:
    The new dict.

  Raises:
    UserInputError: as `load_meta`.
    TypeError: `changes` is not a dict of JSON values.
  """
  path = epath.Path(directory).absolute()
  meta = load_meta(path)
  meta.update(orbax_io.check_json(changes, "model metadata update"))
  io_utils.atomic_write_json(os.fspath(path / META / "metadata"), meta)
  return meta


def load_model(directory: str | os.PathLike, template: Any = None) -> tuple[Any, dict]:
  """Loads a `save_model` folder (or a `ModelStore` child).

  Args:
    directory: the folder.
    template: the tree to restore into (arrays or `jax.ShapeDtypeStruct`s): Orbax then checks
      every stored leaf's presence and shape and returns `jax.Array`s on the first local device.
      None restores whatever is stored (numpy arrays; int dict keys come back as str).

  Returns:
    (tree, meta), the arrays equal to those saved (checked against their checksums).

  Raises:
    StructureMismatch: (a UserInputError) the stored tree does not fit `template`.
    UserInputError: the folder is missing, not a model folder, unreadable or corrupt.
  """
  path = epath.Path(directory).absolute()
  _check_folder(path)
  target = None if template is None else orbax_io.abstract(template)
  try:
    with orbax_io.quiet_restore_loop():
      try:
        # A read needs no other process: process-local options, so that one process of a
        # multi-process run can load a model while the others do something else.
        with _checkpointer(process_local=True) as ckptr:
          restored = ckptr.restore(path, args=orbax_io.restore_args(path, PARAMS, target))
      except Exception as e:  # pylint: disable=broad-except
        mismatch = None if target is None else orbax_io.mismatch(path / PARAMS, target, str(path))
        if mismatch is not None:
          raise mismatch from None
        raise
    return orbax_io.check_restored(restored, PARAMS)
  except UserInputError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise UserInputError(f"{path}: model checkpoint is unreadable or corrupt "
                         f"({orbax_io.short(e)})") from None


class ModelStore(orbax_io.Managed):
  """Children's weights keyed by child index, optionally only the `max_to_keep` best by score.

  Each child's folder (`path(index)`) has the `save_model` layout. With `max_to_keep=k` every
  `save` needs a finite `score` (higher is better, e.g. the reward) and Orbax deletes all but the
  k best after each save (ties: the newer save stays); `would_keep(score)` lets the caller skip
  copying weights that would be dropped at once. Saving an index that exists replaces it (a
  resumed search retrains the children of an unfinished step).
  """

  def __init__(self, directory: str | os.PathLike, max_to_keep: int | None = None, *,
               async_save: bool = True, process_local: bool = False):
    """Opens (creating if needed) a children store.

    Args:
      directory: folder holding one sub-folder per child index.
      max_to_keep: keep only this many best-scoring children; None keeps all.
      async_save: write in a background thread (`save` returns after the host copy).
      process_local: this process saves alone (in a multi-process run, the store of the children
        this process trained; give each process its own directory). Default: collective saves.
    """
    if max_to_keep is not None and (isinstance(max_to_keep, bool) or
                                    not isinstance(max_to_keep, int) or max_to_keep < 1):
      raise ValueError(f"max_to_keep must be None or an int >= 1, got {max_to_keep!r}")
    self._dir = epath.Path(directory).absolute()
    self._max_to_keep = max_to_keep
    self._process_local = process_local
    # Orbax refuses create=True with active_processes set: the folder is made here.
    self._dir.mkdir(parents=True, exist_ok=True)
    options = dict(create=False, cleanup_tmp_directories=True,
                   enable_async_checkpointing=async_save,
                   multiprocessing_options=orbax_io.multiprocessing_options(process_local),
                   async_options=orbax_io.async_options(process_local))
    if max_to_keep is not None:
      options.update(max_to_keep=max_to_keep, best_fn=lambda m: m["score"], best_mode="max",
                     keep_checkpoints_without_metrics=False)
    self._mngr = ocp.CheckpointManager(self._dir, options=ocp.CheckpointManagerOptions(**options),
                                       handler_registry=orbax_io.handler_registry(PARAMS, process_local))

  @property
  def directory(self) -> epath.Path:
    return self._dir

  def path(self, index: int) -> epath.Path:
    """The folder of child `index` (for `load_model`, `export.load` or copying it)."""
    return self._dir / str(int(index))

  def save(self, index: int, params: Any, meta: Mapping[str, Any],
           score: float | None = None) -> None:
    """Saves child `index` (replacing an existing one), asynchronously when enabled.

    Args:
      index: the child's integer index (>= 0) in the search.
      params: nested dicts of arrays (see `save_model`).
      meta: JSON-serializable dict (architecture, reward, ...).
      score: the value ranked by `max_to_keep` (required then; finite).

    Raises:
      ValueError: bad index, or a missing/non-finite score when `max_to_keep` is set.
      TypeError: meta is not JSON.
    """
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
      raise ValueError(f"child index must be an int >= 0, got {index!r}")
    index = int(index)
    metrics = None
    if score is not None:
      if not np.isfinite(score):
        raise ValueError(f"child {index}: score must be finite, got {score!r}")
      metrics = {"score": float(score)}
    elif self._max_to_keep is not None:
      raise ValueError(f"child {index}: ModelStore(max_to_keep={self._max_to_keep}) needs a "
                       "score to rank children")
    args = orbax_io.save_args(PARAMS, params, meta, f"child {index} meta", self._process_local)
    if index in self._mngr.all_steps():
      self._mngr.wait_until_finished()
      self._mngr.delete(index)
    # force=True: child indices may arrive out of order (resume), which Orbax's default save
    # policy would silently skip.
    if not self._mngr.save(index, args=args, metrics=metrics, force=True):
      raise RuntimeError(f"Orbax did not save child {index} in {self._dir}")

  def indices(self) -> list[int]:
    """Stored child indices, ascending (waits for saves in flight)."""
    self.wait()
    self._mngr.reload()
    return sorted(self._mngr.all_steps())

  def scores(self) -> dict[int, float]:
    """{index: score} of the stored children that were saved with a score."""
    out = {}
    for index in self.indices():
      metrics = self._mngr.metadata(index).metrics or {}
      if "score" in metrics:
        out[index] = float(metrics["score"])
    return out

  def would_keep(self, score: float) -> bool:
    """Whether a child with `score` would survive the `max_to_keep` best-N cut if saved now."""
    if self._max_to_keep is None:
      return True
    kept = sorted(self.scores().values(), reverse=True)
    return len(kept) < self._max_to_keep or score >= kept[self._max_to_keep - 1]

  def load(self, index: int, template: Any = None) -> tuple[Any, dict]:
    """(params, meta) of child `index`; see `load_model`."""
    self.wait()
    return load_model(self.path(index), template)

  def delete(self, index: int) -> None:
    """Removes child `index` from disk."""
    self.wait()
    self._mngr.delete(int(index))
