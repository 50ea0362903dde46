"""Orbax checkpoints for the controller state, the search's top-k children and exported models.

This module owns every array that nasrl_jax writes to disk. Three streams, each an Orbax
`CheckpointManager` or `Checkpointer` over a `CompositeCheckpointHandler`:

* `ControllerCheckpointer`: the controller state (params, optax state, EMA baseline, step, raw
  PRNG key data) after every controller step, asynchronously, keeping the last `max_to_keep`.
  `restore(template)` returns the latest *good* step: a step whose commit marker is missing,
  whose files are truncated/deleted, or whose bytes fail the stored SHA-256 is skipped with a
  warning, moved to `<directory>/_corrupt/` (so the search can write that step number again)
  and the previous step is tried.
* `save_model` / `load_model`: one model (params as nested dicts of arrays + JSON metadata) in
  one directory, loadable *without a template*, so a prediction script needs only the folder.
* `ModelStore`: the search's children keyed by child index; optionally keeps only the
  `max_to_keep` best by `score` (Orbax's best-N preservation). Each child's folder has the
  same layout as `save_model`, so `load_model(store.path(i))` works.

Every checkpoint folder holds three items: the arrays (`StandardSave`, OCDBT/zarr files), the
caller's metadata (`JsonSave`, `meta/metadata`) and `integrity/metadata` (JSON: leaf paths,
shapes, dtypes and a SHA-256 of the array bytes). The integrity item is what lets a restore tell
a corrupt checkpoint (fall back) from a checkpoint of a different model (a user error: the
config changed under the same workdir). Nothing is pickled.
"""

from __future__ import annotations

import collections.abc
import hashlib
import json
import os
import time
from typing import Any, Mapping, Sequence

from absl import logging
from etils import epath
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from nasrl_jax.errors import UserInputError

# Orbax writes this file into a step folder as its last act before the atomic rename (local
# filesystems) or as the commit itself (GCS); a folder without it never finished saving.
COMMIT_MARKER = "commit_success.txt"
CORRUPT_SUBDIR = "_corrupt"
_FORMAT = "nasrl_jax.checkpoint/1"
# Item names inside every checkpoint folder.
_ARRAYS = {"controller": "state", "model": "params"}
_META = "meta"
_INTEGRITY = "integrity"


# ----------------------------------------------------------------------------- shared helpers


class _CorruptCheckpoint(Exception):
  """A checkpoint folder that cannot be read back as it was written."""


class _IncompatibleCheckpoint(Exception):
  """A readable checkpoint whose tree does not match the caller's template."""


def _short(err: BaseException, limit: int = 240) -> str:
  """First line of an exception, type included, cut to `limit` characters (for one-line logs)."""
  text = str(err).strip().splitlines()
  first = text[0] if text else ""
  msg = f"{type(err).__name__}: {first}"
  return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def _check_json(meta: Any, what: str) -> dict:
  """Returns `meta` as a dict after checking it is JSON-serializable (before any async work)."""
  if not isinstance(meta, Mapping):
    raise TypeError(f"{what} must be a dict of JSON values, got {type(meta).__name__}")
  meta = dict(meta)
  try:
    json.dumps(meta)
  except (TypeError, ValueError) as e:
    raise TypeError(f"{what} is not JSON-serializable: {e}") from None
  return meta


def _leaf_dtype_shape(leaf: Any) -> tuple[np.dtype, tuple[int, ...]]:
  """(dtype, shape) of an array, scalar or jax.ShapeDtypeStruct without copying device data."""
  if hasattr(leaf, "dtype") and hasattr(leaf, "shape"):
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      return leaf.dtype, tuple(int(d) for d in leaf.shape)  # Rejected by _check_leaf.
    return jnp.dtype(leaf.dtype), tuple(int(d) for d in leaf.shape)
  arr = np.asarray(leaf)
  return arr.dtype, arr.shape


def _check_leaf(leaf: Any, where: str) -> None:
  dtype, _ = _leaf_dtype_shape(leaf)
  if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
    raise TypeError(f"{where}: typed PRNG key arrays are not saved; pass "
                    "jax.random.key_data(key) (raw uint32) and wrap it back after restore")
  if dtype == np.dtype(object):
    raise TypeError(f"{where}: leaf of type {type(leaf).__name__} is not a numeric array")


def _sha256(leaves: Sequence[Any], dtypes: Sequence[np.dtype]) -> str:
  """SHA-256 over the bytes of `leaves`, each cast to the dtype it was saved with.

  Casting to the saved dtype makes the digest independent of the template's dtypes (Orbax
  casts on restore, e.g. a Python int saved as int64 and restored into an int32 template).
  """
  h = hashlib.sha256()
  for leaf, dtype in zip(leaves, dtypes):
    arr = np.ascontiguousarray(np.asarray(leaf, dtype=dtype))
    h.update(memoryview(arr).cast("B"))
  return h.hexdigest()


def _is_committed(path: epath.Path) -> bool:
  return (path / COMMIT_MARKER).exists()


# ----------------------------------------------------------------------- controller checkpoints


def _controller_signature(tree: Any) -> list[dict]:
  """[{path, shape, dtype}] of a pytree, paths as `jax.tree_util.keystr` strings."""
  out = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    dtype, shape = _leaf_dtype_shape(leaf)
    out.append({"path": jax.tree_util.keystr(path), "shape": list(shape), "dtype": dtype.name})
  return out


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


class ControllerCheckpointer(_Managed):
  """Checkpoints the controller state after every controller step; resumes from the latest good one.

  Usage (the search loop)::

    with ControllerCheckpointer(workdir / "controller") as ckpt:
      restored = ckpt.restore(template_state)
      start = 0 if restored is None else restored[0] + 1
      ...
      ckpt.save(step, state, {"history_len": n, "config_hash": h})

  `state` is any pytree of jax/numpy arrays and Python scalars (optax namedtuples included);
  PRNG keys must be raw `jax.random.key_data` (uint32). Saves are asynchronous: `save` returns
  once the arrays are copied to host; `wait()` / `close()` block until they are on disk.
  Not thread-safe; one process per directory.
  """

  def __init__(self, directory: str | os.PathLike, max_to_keep: int = 3, *,
               async_save: bool = True):
    """Opens (creating if needed) a controller checkpoint directory.

    Args:
      directory: folder holding one sub-folder per saved step.
      max_to_keep: newest steps kept on disk (>= 1); older ones are deleted after each save.
      async_save: write in a background thread (`save` returns after the host copy).
    """
    if isinstance(max_to_keep, bool) or not isinstance(max_to_keep, int) or max_to_keep < 1:
      raise ValueError(f"max_to_keep must be an int >= 1, got {max_to_keep!r}")
    self._dir = epath.Path(directory).absolute()
    self._mngr = ocp.CheckpointManager(self._dir, options=ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        create=True,
        # Leftover `<step>.orbax-checkpoint-tmp-*` folders are saves a crash interrupted.
        cleanup_tmp_directories=True,
        enable_async_checkpointing=async_save,
    ))

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
      ValueError: `step` is not above the latest saved step (restore first), or is negative.
      TypeError: `meta` is not JSON, or `state` holds non-array leaves or typed PRNG keys.
    """
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
      raise ValueError(f"step must be an int >= 0, got {step!r}")
    step = int(step)
    meta = _check_json(meta, "controller checkpoint meta")
    leaves_with_path = jax.tree_util.tree_flatten_with_path(state)[0]
    for path, leaf in leaves_with_path:
      _check_leaf(leaf, f"controller state{jax.tree_util.keystr(path)}")
    latest = self._mngr.latest_step()  # Includes a save still in flight.
    if latest is not None and step <= latest:
      raise ValueError(f"cannot save controller step {step} in {self._dir}: step {latest} "
                       "is already there (call restore() and continue after it)")
    signature = _controller_signature(state)
    leaves = [leaf for _, leaf in leaves_with_path]
    integrity = {"format": _FORMAT, "kind": "controller", "leaves": signature,
                 "sha256": _sha256(leaves, [np.dtype(jnp.dtype(s["dtype"])) for s in signature])}
    saved = self._mngr.save(step, args=ocp.args.Composite(**{
        _ARRAYS["controller"]: ocp.args.StandardSave(state),
        _META: ocp.args.JsonSave(meta),
        _INTEGRITY: ocp.args.JsonSave(integrity),
    }), force=True)
    if not saved:  # force=True bypasses the save policy, so this is an Orbax surprise.
      raise RuntimeError(f"Orbax did not save controller step {step} in {self._dir}")

  def all_steps(self) -> list[int]:
    """Committed steps on disk, ascending (waits for saves in flight)."""
    self.wait()
    self._mngr.reload()
    return sorted(s for s in self._mngr.all_steps() if _is_committed(self._step_dir(s)))

  def latest_step(self) -> int | None:
    """The newest committed step (it may still fail to restore), or None if there is none."""
    steps = self.all_steps()
    return steps[-1] if steps else None

  def restore(self, template_state: Any) -> tuple[int, Any, dict] | None:
    """Restores the latest good checkpoint into the structure of `template_state`.

    Newer steps that cannot be read (no commit marker, truncated or missing files, checksum
    mismatch) are skipped with a `logging.warning` naming the step, and moved to
    `<directory>/_corrupt/` so that the caller can save those step numbers again.

    Args:
      template_state: a pytree with the structure, shapes and dtypes of the saved state
        (concrete arrays or `jax.ShapeDtypeStruct`s); namedtuples such as optax's
        `ScaleByAdamState` come back as the same types.

    Returns:
      (step, state, meta) of the latest good step, or None when no step is readable.

    Raises:
      UserInputError: a readable checkpoint holds a state of another structure or shape
        (e.g. the controller config changed under the same workdir).
    """
    template_sig = _controller_signature(template_state)
    self.wait()
    self._mngr.reload()
    skipped = []
    result = None
    for step in sorted(self._mngr.all_steps(), reverse=True):
      try:
        state, meta = self._restore_step(step, template_state, template_sig)
      except _IncompatibleCheckpoint as e:
        raise UserInputError(
            f"{self._step_dir(step)}: saved controller state does not match this config "
            f"({e}); resume with the config that wrote it or use a new --workdir") from None
      except Exception as e:  # pylint: disable=broad-except
        # Corruption shows up as many exception types (tensorstore ValueError, JSON errors,
        # OSError, UnicodeDecodeError): any failure to read a step means "try the one before".
        logging.warning("Controller checkpoint step %d in %s is unreadable (%s); skipping it "
                        "and falling back to the previous step.", step, self._dir, _short(e))
        skipped.append(step)
        continue
      result = (step, state, meta)
      break
    if skipped:
      self._quarantine(skipped)
    return result

  def _restore_step(self, step: int, template: Any, template_sig: list[dict]):
    path = self._step_dir(step)
    if not _is_committed(path):
      raise _CorruptCheckpoint(f"no {COMMIT_MARKER}: the save never finished")
    integrity = self._mngr.restore(step, args=ocp.args.Composite(
        **{_INTEGRITY: ocp.args.JsonRestore()}))[_INTEGRITY]
    if integrity.get("format") != _FORMAT or integrity.get("kind") != "controller":
      raise _CorruptCheckpoint(f"{_INTEGRITY} item is not a {_FORMAT} controller record")
    saved_sig = integrity["leaves"]
    _compare_signatures(saved_sig, template_sig)
    restored = self._mngr.restore(step, args=ocp.args.Composite(**{
        _ARRAYS["controller"]: ocp.args.StandardRestore(template),
        _META: ocp.args.JsonRestore(),
    }))
    state = restored[_ARRAYS["controller"]]
    leaves = jax.tree_util.tree_leaves(state)
    digest = _sha256(leaves, [np.dtype(jnp.dtype(s["dtype"])) for s in saved_sig])
    if digest != integrity["sha256"]:
      raise _CorruptCheckpoint("array bytes do not match the stored SHA-256")
    return state, dict(restored[_META])

  def _step_dir(self, step: int) -> epath.Path:
    return self._dir / str(step)

  def _quarantine(self, steps: Sequence[int]) -> None:
    """Moves unreadable step folders aside (kept for inspection, invisible to Orbax)."""
    target_root = self._dir / CORRUPT_SUBDIR
    target_root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for step in steps:
      src = self._step_dir(step)
      if not src.exists():
        continue
      dst = target_root / f"{step}-{stamp}"
      n = 1
      while dst.exists():
        dst = target_root / f"{step}-{stamp}-{n}"
        n += 1
      src.rename(dst)
      logging.warning("Moved unreadable controller checkpoint %s to %s.", src, dst)
    self._mngr.reload()


def _compare_signatures(saved: list[dict], expected: list[dict]) -> None:
  """Raises _IncompatibleCheckpoint naming the first path whose presence or shape differs.

  Dtypes are not compared: Orbax casts to the template's dtype (e.g. Python int -> int32).
  """
  saved_map = {s["path"]: tuple(s["shape"]) for s in saved}
  exp_map = {s["path"]: tuple(s["shape"]) for s in expected}
  if saved_map == exp_map:
    return
  for path in sorted(set(saved_map) | set(exp_map)):
    a, b = saved_map.get(path), exp_map.get(path)
    if a != b:
      differ = sum(saved_map.get(p) != exp_map.get(p) for p in set(saved_map) | set(exp_map))
      stored = "missing" if a is None else f"shape {a}"
      wanted = "absent" if b is None else f"shape {b}"
      raise _IncompatibleCheckpoint(
          f"{differ} leaves differ; first {path}: stored {stored}, template {wanted}")


# ----------------------------------------------------------------------------------- models


def _flatten_params(tree: Any, prefix: tuple = ()) -> tuple[list, list]:
  """Flattens nested Mappings into ([(keys, leaf)], [keys of empty mappings])."""
  if not isinstance(tree, collections.abc.Mapping):
    raise TypeError(f"params{_keys_str(prefix)}: model params must be nested dicts of "
                    f"arrays, got {type(tree).__name__}")
  leaves, empty = [], []
  if not tree:
    empty.append(prefix)
  for key, value in tree.items():
    if isinstance(key, bool) or not isinstance(key, (str, int)):
      raise TypeError(f"params{_keys_str(prefix)}: dict keys must be str or int, got {key!r}")
    keys = prefix + (key,)
    if isinstance(value, collections.abc.Mapping):
      sub_leaves, sub_empty = _flatten_params(value, keys)
      leaves += sub_leaves
      empty += sub_empty
    elif isinstance(value, (list, tuple)) or value is None:
      raise TypeError(f"params{_keys_str(keys)}: model params must be nested dicts of arrays, "
                      f"got {type(value).__name__} (convert NNX state with to_pure_dict())")
    else:
      _check_leaf(value, f"params{_keys_str(keys)}")
      leaves.append((keys, value))
  return leaves, empty


def _keys_str(keys: Sequence) -> str:
  return "".join(f"[{k!r}]" for k in keys)


def _set_path(tree: dict, keys: Sequence, value: Any) -> None:
  for k in keys[:-1]:
    tree = tree.setdefault(k, {})
  tree[keys[-1]] = value


def _model_args(params: Mapping, metadata: Mapping) -> ocp.args.Composite:
  """Composite save args for one model; params are copied to host numpy first."""
  metadata = _check_json(metadata, "model metadata")
  # A host copy: Orbax then stores numpy arrays, and a template-free restore returns numpy.
  params = jax.device_get(params)
  leaves, empty = _flatten_params(params)
  dtypes = [np.asarray(leaf).dtype for _, leaf in leaves]
  integrity = {
      "format": _FORMAT, "kind": "model",
      "leaves": [{"path": list(keys), "shape": list(np.shape(leaf)), "dtype": dt.name}
                 for (keys, leaf), dt in zip(leaves, dtypes)],
      "empty": [list(keys) for keys in empty],
      "sha256": _sha256([leaf for _, leaf in leaves], dtypes),
  }
  return ocp.args.Composite(**{
      _ARRAYS["model"]: ocp.args.StandardSave(params),
      _META: ocp.args.JsonSave(metadata),
      _INTEGRITY: ocp.args.JsonSave(integrity),
  })


def save_model(directory: str | os.PathLike, params: Mapping, metadata: Mapping[str, Any],
               ) -> None:
  """Writes one model (params + JSON metadata) to `directory`, replacing what is there.

  Args:
    directory: the model's folder (e.g. `workdir/models/NASRL`); written atomically by Orbax
      (temporary folder + rename), then holds `params/`, `meta/metadata` (the JSON, readable
      as is) and `integrity/metadata`.
    params: nested dicts (str or int keys) of jax/numpy arrays, e.g. NNX `state.to_pure_dict()`.
    metadata: JSON-serializable dict: architecture, head, input shape, preprocessing, metrics.

  Raises:
    TypeError: params are not nested dicts of numeric arrays, or metadata is not JSON.
  """
  args = _model_args(params, metadata)
  path = epath.Path(directory).absolute()
  path.parent.mkdir(parents=True, exist_ok=True)
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    ckptr.save(path, args=args, force=True)


def load_model(directory: str | os.PathLike) -> tuple[dict, dict]:
  """Loads a model written by `save_model` (or a `ModelStore` child) without any template.

  Args:
    directory: the model's folder.

  Returns:
    (params, metadata): params as nested dicts of numpy arrays with the saved keys (int keys
    stay int), bitwise equal to what was saved; metadata as the saved JSON dict.

  Raises:
    UserInputError: the folder is missing, incomplete, or fails its integrity check.
  """
  path = epath.Path(directory).absolute()
  if not path.is_dir():
    raise UserInputError(f"{path}: no such model checkpoint folder")
  if not _is_committed(path):
    raise UserInputError(f"{path}: incomplete model checkpoint (no {COMMIT_MARKER}; the save "
                         "was interrupted)")
  try:
    return _load_model(path)
  except UserInputError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise UserInputError(f"{path}: model checkpoint is unreadable or corrupt "
                         f"({_short(e)})") from None


def _load_model(path: epath.Path) -> tuple[dict, dict]:
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    restored = ckptr.restore(path, args=ocp.args.Composite(**{
        _ARRAYS["model"]: ocp.args.StandardRestore(),
        _META: ocp.args.JsonRestore(),
        _INTEGRITY: ocp.args.JsonRestore(),
    }))
  integrity = restored[_INTEGRITY]
  if integrity.get("format") != _FORMAT or integrity.get("kind") != "model":
    raise UserInputError(f"{path}: not a nasrl_jax model checkpoint ({_INTEGRITY} item is "
                         f"not a {_FORMAT} model record)")
  raw = restored[_ARRAYS["model"]]
  params: dict = {}
  leaves, dtypes = [], []
  for entry in integrity["leaves"]:
    keys = entry["path"]
    node = raw
    for k in keys:  # Orbax restores int dict keys as strings.
      node = node[str(k)] if str(k) in node else node[k]
    arr = np.asarray(node)
    if list(arr.shape) != list(entry["shape"]):
      raise _CorruptCheckpoint(f"params{_keys_str(keys)} has shape {arr.shape}, "
                               f"saved {tuple(entry['shape'])}")
    dtype = np.dtype(jnp.dtype(entry["dtype"]))
    _set_path(params, keys, arr)
    leaves.append(arr)
    dtypes.append(dtype)
  for keys in integrity.get("empty", []):
    if keys:
      _set_path(params, keys, {})
  if _sha256(leaves, dtypes) != integrity["sha256"]:
    raise _CorruptCheckpoint("array bytes do not match the stored SHA-256")
  return params, dict(restored[_META])


class ModelStore(_Managed):
  """Children's weights keyed by child index, optionally only the `max_to_keep` best by score.

  Each child's folder (`path(index)`) has the `save_model` layout. With `max_to_keep=k` every
  `save` needs a finite `score` (higher is better, e.g. the reward) and Orbax deletes all but the
  k best after each save (ties: the newer save stays); `would_keep(score)` lets the caller skip
  copying weights that would be dropped at once. Saving an index that exists replaces it (a
  resumed search retrains the children of an unfinished step).
  """

  def __init__(self, directory: str | os.PathLike, max_to_keep: int | None = None, *,
               async_save: bool = True):
    """Opens (creating if needed) a children store.

    Args:
      directory: folder holding one sub-folder per child index.
      max_to_keep: keep only this many best-scoring children; None keeps all.
      async_save: write in a background thread (`save` returns after the host copy; do not
        modify numpy arrays passed to `save` until `wait()`).
    """
    if max_to_keep is not None and (isinstance(max_to_keep, bool) or
                                    not isinstance(max_to_keep, int) or max_to_keep < 1):
      raise ValueError(f"max_to_keep must be None or an int >= 1, got {max_to_keep!r}")
    self._dir = epath.Path(directory).absolute()
    self._max_to_keep = max_to_keep
    options = dict(create=True, cleanup_tmp_directories=True,
                   enable_async_checkpointing=async_save)
    if max_to_keep is not None:
      options.update(max_to_keep=max_to_keep, best_fn=lambda m: m["score"], best_mode="max",
                     keep_checkpoints_without_metrics=False)
    self._mngr = ocp.CheckpointManager(self._dir, options=ocp.CheckpointManagerOptions(**options))

  @property
  def directory(self) -> epath.Path:
    return self._dir

  def path(self, index: int) -> epath.Path:
    """The folder of child `index` (for `load_model` or copying to `models/<name>`)."""
    return self._dir / str(int(index))

  def save(self, index: int, params: Mapping, meta: Mapping[str, Any],
           score: float | None = None) -> None:
    """Saves child `index` (replacing an existing one), asynchronously when enabled.

    Args:
      index: the child's integer index (>= 0) in the search.
      params: nested dicts of arrays (see `save_model`).
      meta: JSON-serializable dict (architecture, reward, ...).
      score: the value ranked by `max_to_keep` (required then; finite).

    Raises:
      ValueError: bad index, or a missing/non-finite score when `max_to_keep` is set.
      TypeError: params or meta of the wrong kind.
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
    args = _model_args(params, meta)
    if index in self._mngr.all_steps():
      self._mngr.wait_until_finished()
      self._mngr.delete(index)
    # force=True: child indices may arrive out of order (resume), which Orbax's default save
    # policy would silently skip.
    saved = self._mngr.save(index, args=args, metrics=metrics, force=True)
    if not saved:
      raise RuntimeError(f"Orbax did not save child {index} in {self._dir}")

  def indices(self) -> list[int]:
    """Committed child indices, ascending (waits for saves in flight)."""
    self.wait()
    self._mngr.reload()
    return sorted(i for i in self._mngr.all_steps() if _is_committed(self.path(i)))

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

  def load(self, index: int) -> tuple[dict, dict]:
    """(params, meta) of child `index`; see `load_model`."""
    self.wait()
    return load_model(self.path(index))

  def delete(self, index: int) -> None:
    """Removes child `index` from disk."""
    self.wait()
    self._mngr.delete(int(index))
