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

What Orbax does, and is not redone here: atomic commits (temporary folder + rename; a commit file
on GCS), cleaning up interrupted saves, refusing a step that exists, keeping the newest or best
steps and, when the restore target is an abstract tree of sharded `jax.ShapeDtypeStruct`s (what
`_abstract` builds), checking that the stored tree has the same structure and shapes. What it
misses, and is kept here:

* The array bytes: a flipped byte inside an array chunk restores as a different number without
  any error (`test_orbax_alone_misses_a_flipped_array_byte`). So each save also writes a SHA-256
  per leaf (`checksums`) and each restore compares them.
* Which leaf differs: Orbax's shape error names no leaf. After a failed restore, `_mismatch`
  compares the target with Orbax's own stored metadata to name it.
* Quiet failures: Orbax runs each restore in a fresh asyncio loop that it closes without
  cancelling the tasks still waiting on tensorstore; when a restore fails (a corrupt step),
  their late completions hit the closed loop and Python prints "Event loop is closed" tracebacks.
  `_quiet_restore_loop` gives Orbax loops that cancel and await their own tasks on close and drop
  completions that arrive after it.

Multi-process runs: Orbax saves are collective by default (every process calls save, process 0
writes). `process_local=True` makes the calling process save alone, for weights only it holds:
`MultiprocessingOptions(primary_host=this process, active_processes={this process})`, the arrays
handed to Orbax as jax.Arrays (`_as_global`; its numpy handler writes only from process 0) and
folders created synchronously (`_async_options`). Reads (`load_model`, `load_meta`) are always
process-local: any process can load a model while the others do something else.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import time
from typing import Any, Mapping, Optional

from absl import logging
from etils import epath
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from nasrl_jax import io_utils
from nasrl_jax.errors import UserInputError

CORRUPT_SUBDIR = "_corrupt"
# Item names inside every checkpoint folder.
_STATE, _PARAMS, _META, _SUMS = "state", "params", "meta", "checksums"


class _Corrupt(Exception):
  """A checkpoint whose arrays do not read back as they were written."""


class StructureMismatch(UserInputError):
  """A readable checkpoint whose tree differs from the restore target.

  Attributes:
    leaf: the first differing leaf's path ('params/convs/0/bias').
    stored: its stored shape, or None when the checkpoint lacks it.
    wanted: the target's shape, or None when the target lacks it.
  """

  def __init__(self, where: str, leaf: str, stored, wanted, differ: int):
    self.leaf, self.stored, self.wanted = leaf, stored, wanted
    got = "missing" if stored is None else f"shape {stored}"
    need = "absent" if wanted is None else f"shape {wanted}"
    super().__init__(f"{where}: {differ} stored array(s) do not fit; first {leaf}: stored {got}, "
                     f"expected {need}")


# ----------------------------------------------------------------------------- shared helpers


def _short(err: BaseException, limit: int = 240) -> str:
  """First line of an exception, type included, cut to `limit` characters (for one-line logs)."""
  text = str(err).strip().splitlines()
  msg = f"{type(err).__name__}: {text[0] if text else ''}"
  return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def _check_json(meta: Any, what: str) -> dict:
  """`meta` as a dict, checked to be JSON before any (asynchronous) Orbax work starts.

  Orbax's JsonSave would fail later in a background thread and leave a temporary folder behind.
  """
  if not isinstance(meta, Mapping):
    raise TypeError(f"{what} must be a dict of JSON values, got {type(meta).__name__}")
  meta = dict(meta)
  try:
    json.dumps(meta)
  except (TypeError, ValueError) as e:
    raise TypeError(f"{what} is not JSON-serializable: {e}") from None
  return meta


def _leaf_path(path) -> str:
  """'params/convs/0/kernel': the same string for int and str dict keys (Orbax stores str)."""
  return jax.tree_util.keystr(path, simple=True, separator="/")


def _is_key(x) -> bool:
  return jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key)


def _digest(leaf) -> str:
  """SHA-256 of one leaf's values as a restored jax.Array holds them.

  Orbax casts to the restore target's dtype (a Python int saved as int64 comes back as int32 into
  a `jax.eval_shape` template) and JAX narrows 64-bit values unless `jax_enable_x64`; so
  integers are hashed as JAX's default int, floats of up to 32 bits as float32 and wider floats
  as JAX's default float. Exact casts and that narrowing leave the digest as it was; changed
  bytes do not.
  """
  arr = np.asarray(jax.random.key_data(leaf) if _is_key(leaf) else leaf)
  if jnp.issubdtype(arr.dtype, jnp.integer) or arr.dtype == np.bool_:
    arr = arr.astype(jax.dtypes.canonicalize_dtype(np.int64), copy=False)
  elif jnp.issubdtype(arr.dtype, jnp.floating):
    wide = jax.dtypes.canonicalize_dtype(np.float64)
    arr = arr.astype(np.float32 if arr.dtype.itemsize <= 4 else wide, copy=False)
  return hashlib.sha256(np.ascontiguousarray(arr).reshape(-1).view(np.uint8)).hexdigest()


def _checksums(tree) -> dict[str, str]:
  return {_leaf_path(p): _digest(x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _verify(tree, saved: Mapping[str, str]) -> None:
  """Raises _Corrupt unless every leaf of `tree` has the checksum saved with it."""
  got = _checksums(tree)
  bad = sorted(p for p in set(got) | set(saved) if got.get(p) != saved.get(p))
  if bad:
    raise _Corrupt(f"{len(bad)} array(s) differ from the checksums saved with them, first "
                   f"{bad[0] or '(root)'}")


def _abstract(template) -> Any:
  """The restore target for `template`: array leaves become sharded `jax.ShapeDtypeStruct`s.

  With a sharding Orbax restores `jax.Array`s and checks every stored shape against the target;
  with plain numpy or unsharded targets it returns whatever shape is stored. Python scalars stay
  as they are (Orbax restores them as Python scalars).
  """
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

  def one(leaf):
    if isinstance(leaf, (jax.Array, jax.ShapeDtypeStruct, np.ndarray, np.generic)):
      sharding = getattr(leaf, "sharding", None)
      if not isinstance(sharding, jax.sharding.Sharding):
        sharding = device
      return jax.ShapeDtypeStruct(np.shape(leaf), leaf.dtype, sharding=sharding)
    return leaf

  return jax.tree.map(one, template)


def _shape(leaf) -> tuple[int, ...]:
  if _is_key(leaf):  # Stored as its raw key data.
    return tuple(jax.eval_shape(jax.random.key_data, leaf).shape)
  return tuple(int(d) for d in getattr(leaf, "shape", None) or np.shape(leaf))


def _mismatch(item_dir: epath.Path, target, where: str) -> Optional[StructureMismatch]:
  """The first leaf whose presence or shape differs between `target` and the stored item.

  Read from Orbax's own metadata; None when they agree or the metadata is unreadable (then the
  failure was corruption, not a different model).
  """
  try:
    stored = ocp.StandardCheckpointHandler().metadata(item_dir).tree
  except Exception:  # pylint: disable=broad-except
    return None
  have = {_leaf_path(p): _shape(m) for p, m in jax.tree_util.tree_flatten_with_path(stored)[0]}
  want = {_leaf_path(p): _shape(x) for p, x in jax.tree_util.tree_flatten_with_path(target)[0]}
  differ = sorted(p for p in set(have) | set(want) if have.get(p) != want.get(p))
  if not differ:
    return None
  leaf = differ[0]
  return StructureMismatch(where, leaf, have.get(leaf), want.get(leaf), len(differ))


class _OwnTasksLoop(asyncio.SelectorEventLoop):
  """An event loop that, when closed, cancels and awaits its own pending tasks (as `asyncio.run`
  does), and ignores completions that tensorstore threads deliver after it closed."""

  def call_soon_threadsafe(self, callback, *args, context=None):
    if self.is_closed():
      return None  # A read of a restore that already failed: nobody awaits it.
    return super().call_soon_threadsafe(callback, *args, context=context)

  def close(self):
    if not self.is_closed() and not self.is_running():
      pending = [t for t in asyncio.all_tasks(self) if not t.done()]
      for task in pending:
        task.cancel()
      if pending:  # Awaiting them also retrieves their exceptions (no "never retrieved" logs).
        self.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    super().close()


class _OwnTasksPolicy(asyncio.DefaultEventLoopPolicy):

  def new_event_loop(self):
    return _OwnTasksLoop()


@contextlib.contextmanager
def _quiet_restore_loop():
  """Orbax restores inside this block get `_OwnTasksLoop`s (it asks asyncio for a new loop).

  Event-loop policies are process-wide: another thread that creates a loop meanwhile (an Orbax
  background save) gets the same loop, which behaves as asyncio's own until it is closed.
  """
  previous = asyncio.get_event_loop_policy()
  asyncio.set_event_loop_policy(_OwnTasksPolicy())
  try:
    yield
  finally:
    asyncio.set_event_loop_policy(previous)


def _multiprocessing(process_local: bool) -> ocp.options.MultiprocessingOptions:
  """Orbax's default (collective) options, or options for a save by this process alone."""
  if not process_local:
    return ocp.options.MultiprocessingOptions()
  i = jax.process_index()
  # This process is the primary of its own save (it writes the metadata and the commit), and
  # the only participant of its barriers, under a per-process key prefix: processes saving alone
  # at the same time must not meet at each other's barriers (same key, other participants).
  # (primary_host=None, "every process is primary", works too but makes Orbax log a warning
  # on every restore.)
  return ocp.options.MultiprocessingOptions(primary_host=i, active_processes={i},
                                            barrier_sync_key_prefix=f"nasrl_process_{i}")


def _local_array_handler() -> ocp.PyTreeCheckpointHandler:
  """The arrays handler of a save by this process alone: it writes this process's jax.Arrays.

  Orbax's numpy and scalar handlers write only from process 0 whatever the multiprocessing
  options (in a 2-process run, process 1's process-local save held no array data), so such saves
  hand Orbax jax.Arrays and this ArrayHandler, as Orbax's own process-local checkpoints
  (`replicator_checkpoint_manager`) do.
  """
  local = ocp.type_handlers.create_type_handler_registry(
      (jax.Array, ocp.type_handlers.ArrayHandler(primary_host=jax.process_index(),
                                                 replica_id=None, use_replica_parallel=False)))
  return ocp.PyTreeCheckpointHandler(multiprocessing_options=_multiprocessing(True),
                                     type_handler_registry=local)


def _async_options(process_local: bool) -> ocp.options.AsyncOptions:
  """Synchronous folder creation for process-local saves.

  Orbax signals "folder created" to the other processes through the distributed key-value store
  under keys numbered by a per-process operation counter; processes saving alone at the same
  time then read and delete each other's signals (a 2-process test hung on one).
  """
  return ocp.options.AsyncOptions(create_directories_asynchronously=not process_local)


def _as_global(x) -> jax.Array:
  """This process's host array as a jax.Array replicated over one device of every process.

  Orbax refuses to save fully addressable (host-local) jax.Arrays in a multi-process run, and
  its numpy handler writes only from process 0. `make_array_from_single_device_arrays` only
  needs this process's shard, so no other process takes part.
  """
  x = np.asarray(x)
  firsts = {}
  for d in jax.devices():
    firsts.setdefault(d.process_index, d)
  mesh = jax.sharding.Mesh(np.array([firsts[p] for p in sorted(firsts)]), ("processes",))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  mine = firsts[jax.process_index()]
  return jax.make_array_from_single_device_arrays(x.shape, sharding, [jax.device_put(x, mine)])


def _registry(arrays: str, process_local: bool):
  """Handlers for the three items, all with the same multiprocessing options.

  Orbax creates handlers it was not given with the default (collective) options, so a
  process-local save must name every item's handler.
  """
  mp = _multiprocessing(process_local)
  registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
  registry.add(arrays, ocp.args.StandardRestore,
               ocp.StandardCheckpointHandler(multiprocessing_options=mp))
  if process_local:
    registry.add(arrays, ocp.args.PyTreeSave, _local_array_handler())
  else:
    registry.add(arrays, ocp.args.StandardSave,
                 ocp.StandardCheckpointHandler(multiprocessing_options=mp))
  for item in (_META, _SUMS):
    handler = ocp.JsonCheckpointHandler(multiprocessing_options=mp)
    registry.add(item, ocp.args.JsonSave, handler)
    registry.add(item, ocp.args.JsonRestore, handler)
  return registry


def _save_args(arrays: str, tree: Any, meta: Mapping, what: str,
               process_local: bool = False) -> ocp.args.Composite:
  """Composite save args; arrays are copied to host first (checksums need the bytes anyway)."""
  meta = _check_json(meta, what)
  host = jax.device_get(tree)
  if process_local:  # See _local_array_handler.
    saved = ocp.args.PyTreeSave(jax.tree.map(_as_global, host))
  else:
    saved = ocp.args.StandardSave(host)
  return ocp.args.Composite(**{arrays: saved, _META: ocp.args.JsonSave(meta),
                               _SUMS: ocp.args.JsonSave(_checksums(host))})


def _restore_args(folder: epath.Path, arrays: str, target) -> ocp.args.Composite:
  args = {arrays: ocp.args.StandardRestore(target), _META: ocp.args.JsonRestore()}
  if (folder / _SUMS).is_dir():  # Folders written before checksums existed restore unchecked.
    args[_SUMS] = ocp.args.JsonRestore()
  return ocp.args.Composite(**args)


def _check_restored(restored, arrays: str) -> tuple[Any, dict]:
  if _SUMS in restored and restored[_SUMS] is not None:
    _verify(restored[arrays], restored[_SUMS])
  return restored[arrays], dict(restored[_META] or {})


class _Managed:
  """Waiting, closing and `with` support shared by the classes around one CheckpointManager."""

  _mngr: ocp.CheckpointManager

  def wait(self) -> None:
    """Blocks until every save in flight is on disk."""
    self._mngr.wait_until_finished()

  def close(self) -> None:
    """Finishes saves in flight and releases Orbax's threads."""
    self._mngr.wait_until_finished()
    self._mngr.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc) -> None:
    self.close()


# ----------------------------------------------------------------------- controller checkpoints


class ControllerCheckpointer(_Managed):
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
      options.update(create=False, multiprocessing_options=_multiprocessing(True),
                     async_options=_async_options(True))
      self._mngr = ocp.CheckpointManager(self._dir,
                                         options=ocp.CheckpointManagerOptions(**options),
                                         handler_registry=_registry(_STATE, True))
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
    args = _save_args(_STATE, state, meta, "controller checkpoint meta", self._process_local)
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
    target = _abstract(template_state)
    self.wait()
    self._mngr.reload()
    skipped, result = [], None
    for step in sorted(self._mngr.all_steps(), reverse=True):
      folder = self._dir / str(step)
      try:
        with _quiet_restore_loop():
          try:
            restored = self._mngr.restore(step, args=_restore_args(folder, _STATE, target))
          except Exception as e:  # pylint: disable=broad-except
            mismatch = _mismatch(folder / _STATE, target, str(folder))
            if mismatch is not None:
              raise mismatch from None
            raise
        state, meta = _check_restored(restored, _STATE)
      except StructureMismatch as e:
        raise UserInputError(
            f"{e}: the saved controller state does not match this config; resume with the "
            "config that wrote it or use a new --workdir") from None
      except Exception as e:  # pylint: disable=broad-except
        # Corruption shows up as many exception types (tensorstore ValueError, JSON errors,
        # OSError, _Corrupt): any failure to read a step means "try the one before".
        skipped.append((step, _short(e)))
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
  args = _save_args(_PARAMS, tree, meta, "model metadata", process_local)
  path = epath.Path(directory).absolute()
  path.parent.mkdir(parents=True, exist_ok=True)
  with _checkpointer(process_local) as ckptr:
    ckptr.save(path, args=args, force=True)


def _checkpointer(process_local: bool) -> ocp.Checkpointer:
  mp = _multiprocessing(process_local)
  handler = ocp.CompositeCheckpointHandler(
      composite_options=ocp.CompositeOptions(multiprocessing_options=mp,
                                             async_options=_async_options(process_local)),
      handler_registry=_registry(_PARAMS, process_local))
  return ocp.Checkpointer(handler, multiprocessing_options=mp)


def _check_folder(path: epath.Path) -> None:
  if not path.is_dir():
    raise UserInputError(f"{path}: no such model folder")
  missing = [item for item in (_PARAMS, _META) if not (path / item).is_dir()]
  if missing:
    # The usual slip is naming the parent (W/models instead of W/models/NASRL): say what is in it.
    inside = sorted(p.name for p in path.iterdir()
                    if (p / _PARAMS).is_dir() and (p / _META).is_dir())
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
      meta = ckptr.restore(path, args=ocp.args.Composite(**{_META: ocp.args.JsonRestore()}))
  except Exception as e:  # pylint: disable=broad-except
    raise UserInputError(f"{path}: unreadable model metadata ({_short(e)})") from None
  if not isinstance(meta[_META], dict):
    raise UserInputError(f"{path}: model metadata is not a JSON object")
  return meta[_META]


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
  meta.update(_check_json(changes, "model metadata update"))
  io_utils.atomic_write_json(os.fspath(path / _META / "metadata"), meta)
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
  target = None if template is None else _abstract(template)
  try:
    with _quiet_restore_loop():
      try:
        # A read needs no other process: process-local options, so that one process of a
        # multi-process run can load a model while the others do something else.
        with _checkpointer(process_local=True) as ckptr:
          restored = ckptr.restore(path, args=_restore_args(path, _PARAMS, target))
      except Exception as e:  # pylint: disable=broad-except
        mismatch = None if target is None else _mismatch(path / _PARAMS, target, str(path))
        if mismatch is not None:
          raise mismatch from None
        raise
    return _check_restored(restored, _PARAMS)
  except UserInputError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise UserInputError(f"{path}: model checkpoint is unreadable or corrupt "
                         f"({_short(e)})") from None


class ModelStore(_Managed):
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
                   multiprocessing_options=_multiprocessing(process_local),
                   async_options=_async_options(process_local))
    if max_to_keep is not None:
      options.update(max_to_keep=max_to_keep, best_fn=lambda m: m["score"], best_mode="max",
                     keep_checkpoints_without_metrics=False)
    self._mngr = ocp.CheckpointManager(self._dir, options=ocp.CheckpointManagerOptions(**options),
                                       handler_registry=_registry(_PARAMS, process_local))

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
    args = _save_args(_PARAMS, params, meta, f"child {index} meta", self._process_local)
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
