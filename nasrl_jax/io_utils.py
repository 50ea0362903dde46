"""Files a user reads (reports, history, folds): atomic writes (temp file + rename), JSON-safe values.

Stdlib and numpy only, so light modules (benchmarks, the search) can use it.
"""

import json
import math
import os
import tempfile

import numpy as np


def atomic_write_bytes(path, data: bytes) -> None:
  """Writes `data` to `path` so readers see the old file or the new one, never half of it."""
  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions.
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def atomic_write_text(path, text: str) -> None:
  """Text version of `atomic_write_bytes` (UTF-8)."""
  atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj, indent=2) -> None:
  """Writes `obj` as JSON atomically; callers replace NaN by None first (JSON has no NaN)."""
  atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def to_json_safe(obj):
  """Plain-JSON copy of `obj`: NaN/inf -> None, numpy scalars/arrays -> Python, tuples -> lists."""
  if isinstance(obj, dict):
    return {str(k): to_json_safe(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [to_json_safe(v) for v in obj]
  if isinstance(obj, np.ndarray):
    return to_json_safe(obj.tolist())
  if isinstance(obj, (bool, np.bool_)):
    return bool(obj)
  if isinstance(obj, (int, np.integer)):
    return int(obj)
  if isinstance(obj, (float, np.floating)):
    return float(obj) if math.isfinite(obj) else None
  return obj


def enable_compile_cache(path: str) -> None:
  """JAX's persistent compilation cache at `path`, caching every entry ('' leaves it off).

  Used by the pipeline (config.compile_cache_dir), the benchmarks and the tests (a temporary cache
  per test session, never the user's).
  """
  import jax  # Imported here: io_utils itself stays light.
  if not path:
    return
  path = os.path.expanduser(path)
  os.makedirs(path, exist_ok=True)
  jax.config.update("jax_enable_compilation_cache", True)
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def read_json(path):
  with open(path, encoding="utf-8") as f:
    return json.load(f)
