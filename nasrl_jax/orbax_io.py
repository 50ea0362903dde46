"""How nasrl_jax puts pytrees through Orbax: the pieces `checkpoint.py` builds its savers from.

What Orbax does, and is not redone here: atomic commits (temporary folder + rename; a commit file
on GCS), cleaning up interrupted saves, refusing a step that exists, keeping the newest or best
steps and, when the restore target is an abstract tree of sharded `jax.ShapeDtypeStruct`s (what
`abstract` builds), checking that the stored tree has the same structure and shapes. What it
misses, and is kept here:

* The array bytes: a flipped byte inside an array chunk restores as a different number without
  any error (`test_orbax_alone_misses_a_flipped_array_byte`). So each save also writes a SHA-256
  per leaf (`checksums`) and each restore compares them.
* Which leaf differs: Orbax's shape error names no leaf. After a failed restore, `mismatch`
  compares the target with Orbax's own stored metadata to name it.
* Quiet failures: Orbax runs each restore in a fresh asyncio loop that it closes without
  cancelling the tasks still waiting on tensorstore; when a restore fails (a corrupt step),
  their late completions hit the closed loop and Python prints "Event loop is closed" tracebacks.
  `quiet_restore_loop` gives Orbax loops that cancel and await their own tasks on close and drop
  completions that arrive after it.

Multi-process runs: Orbax saves are collective by default (every process calls save, process 0
writes). `process_local=True` makes the calling process save alone, for weights only it holds:
`MultiprocessingOptions(primary_host=this process, active_processes={this process})`, the arrays
handed to Orbax as jax.Arrays (`as_global`; its numpy handler writes only from process 0) and
folders created synchronously (`async_options`). Reads (`load_model`, `load_meta`) are always
process-local: any process can load a model while the others do something else.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from typing import Any, Mapping, Optional

from etils import epath
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from nasrl_jax.errors import UserInputError

CORRUPT_SUBDIR = "_corrupt"
# Item names inside every checkpoint folder.
STATE, PARAMS, META, SUMS = "state", "params", "meta", "checksums"


class Corrupt(Exception):
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


def short(err: BaseException, limit: int = 240) -> str:
  """First line of an exception, type included, cut to `limit` characters (for one-line logs)."""
  text = str(err).strip().splitlines()
  msg = f"{type(err).__name__}: {text[0] if text else ''}"
  return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def check_json(meta: Any, what: str) -> dict:
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


def leaf_path(path) -> str:
  """'params/convs/0/kernel': the same string for int and str dict keys (Orbax stores str)."""
  return jax.tree_util.keystr(path, simple=True, separator="/")


def is_key(x) -> bool:
  return jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key)


def digest(leaf) -> str:
  """SHA-256 of one leaf's values as a restored jax.Array holds them.

  Orbax casts to the restore target's dtype (a Python int saved as int64 comes back as int32 into
  a `jax.eval_shape` template) and JAX narrows 64-bit values unless `jax_enable_x64`; so
  integers are hashed as JAX's default int, floats of up to 32 bits as float32 and wider floats
  as JAX's default float. Exact casts and that narrowing leave the digest as it was; changed
  bytes do not.
  """
  arr = np.asarray(jax.random.key_data(leaf) if is_key(leaf) else leaf)
  if jnp.issubdtype(arr.dtype, jnp.integer) or arr.dtype == np.bool_:
    arr = arr.astype(jax.dtypes.canonicalize_dtype(np.int64), copy=False)
  elif jnp.issubdtype(arr.dtype, jnp.floating):
    wide = jax.dtypes.canonicalize_dtype(np.float64)
    arr = arr.astype(np.float32 if arr.dtype.itemsize <= 4 else wide, copy=False)
  return hashlib.sha256(np.ascontiguousarray(arr).reshape(-1).view(np.uint8)).hexdigest()


def checksums(tree) -> dict[str, str]:
  return {leaf_path(p): digest(x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def verify(tree, saved: Mapping[str, str]) -> None:
  """Raises Corrupt unless every leaf of `tree` has the checksum saved with it."""
  got = checksums(tree)
  bad = sorted(p for p in set(got) | set(saved) if got.get(p) != saved.get(p))
  if bad:
    raise Corrupt(f"{len(bad)} array(s) differ from the checksums saved with them, first "
                   f"{bad[0] or '(root)'}")


def abstract(template) -> Any:
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


def shape(leaf) -> tuple[int, ...]:
  if is_key(leaf):  # Stored as its raw key data.
    return tuple(jax.eval_shape(jax.random.key_data, leaf).shape)
  return tuple(int(d) for d in getattr(leaf, "shape", None) or np.shape(leaf))


def mismatch(item_dir: epath.Path, target, where: str) -> Optional[StructureMismatch]:
  """The first leaf whose presence or shape differs between `target` and the stored item.

  Read from Orbax's own metadata; None when they agree or the metadata is unreadable (then the
  failure was corruption, not a different model).
  """
  try:
    stored = ocp.StandardCheckpointHandler().metadata(item_dir).tree
  except Exception:  # pylint: disable=broad-except
    return None
  have = {leaf_path(p): shape(m) for p, m in jax.tree_util.tree_flatten_with_path(stored)[0]}
  want = {leaf_path(p): shape(x) for p, x in jax.tree_util.tree_flatten_with_path(target)[0]}
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
def quiet_restore_loop():
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


def multiprocessing_options(process_local: bool) -> ocp.options.MultiprocessingOptions:
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


def local_array_handler() -> ocp.PyTreeCheckpointHandler:
  """The arrays handler of a save by this process alone: it writes this process's jax.Arrays.

  Orbax's numpy and scalar handlers write only from process 0 whatever the multiprocessing
  options (in a 2-process run, process 1's process-local save held no array data), so such saves
  hand Orbax jax.Arrays and this ArrayHandler, as Orbax's own process-local checkpoints
  (`replicator_checkpoint_manager`) do.
  """
  local = ocp.type_handlers.create_type_handler_registry(
      (jax.Array, ocp.type_handlers.ArrayHandler(primary_host=jax.process_index(),
                                                 replica_id=None, use_replica_parallel=False)))
  return ocp.PyTreeCheckpointHandler(multiprocessing_options=multiprocessing_options(True),
                                     type_handler_registry=local)


def async_options(process_local: bool) -> ocp.options.AsyncOptions:
  """Synchronous folder creation for process-local saves.

  Orbax signals "folder created" to the other processes through the distributed key-value store
  under keys numbered by a per-process operation counter; processes saving alone at the same
  time then read and delete each other's signals (a 2-process test hung on one).
  """
  return ocp.options.AsyncOptions(create_directories_asynchronously=not process_local)


def as_global(x) -> jax.Array:
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


def handler_registry(arrays: str, process_local: bool):
  """Handlers for the three items, all with the same multiprocessing options.

  Orbax creates handlers it was not given with the default (collective) options, so a
  process-local save must name every item's handler.
  """
  mp = multiprocessing_options(process_local)
  registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
  registry.add(arrays, ocp.args.StandardRestore,
               ocp.StandardCheckpointHandler(multiprocessing_options=mp))
  if process_local:
    registry.add(arrays, ocp.args.PyTreeSave, local_array_handler())
  else:
    registry.add(arrays, ocp.args.StandardSave,
                 ocp.StandardCheckpointHandler(multiprocessing_options=mp))
  for item in (META, SUMS):
    handler = ocp.JsonCheckpointHandler(multiprocessing_options=mp)
    registry.add(item, ocp.args.JsonSave, handler)
    registry.add(item, ocp.args.JsonRestore, handler)
  return registry


def save_args(arrays: str, tree: Any, meta: Mapping, what: str,
              process_local: bool = False) -> ocp.args.Composite:
  """Composite save args; arrays are copied to host first (checksums need the bytes anyway)."""
  meta = check_json(meta, what)
  host = jax.device_get(tree)
  if process_local:  # See local_array_handler.
    saved = ocp.args.PyTreeSave(jax.tree.map(as_global, host))
  else:
    saved = ocp.args.StandardSave(host)
  return ocp.args.Composite(**{arrays: saved, META: ocp.args.JsonSave(meta),
                               SUMS: ocp.args.JsonSave(checksums(host))})


def restore_args(folder: epath.Path, arrays: str, target) -> ocp.args.Composite:
  args = {arrays: ocp.args.StandardRestore(target), META: ocp.args.JsonRestore()}
  if (folder / SUMS).is_dir():  # Folders written before checksums existed restore unchecked.
    args[SUMS] = ocp.args.JsonRestore()
  return ocp.args.Composite(**args)


def check_restored(restored, arrays: str) -> tuple[Any, dict]:
  if SUMS in restored and restored[SUMS] is not None:
    verify(restored[arrays], restored[SUMS])
  return restored[arrays], dict(restored[META] or {})


class Managed:
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

