"""Files a user reads (reports, history, folds): atomic writes (temp file + rename), JSON-safe
values, and the file mode every file nasrl_jax writes itself gets.

Stdlib and numpy only, so light modules (benchmarks, the search) can use it.

File modes: the user's umask is read once, when this module is imported, without changing it
(Linux: /proc/self/status). Files are given `0o666 & ~umask` with `os.fchmod` on the file being
written, never by changing the process-wide umask: a umask change inside a process that runs
Orbax and XLA compile threads would apply to whatever file another thread creates meanwhile.
"""

import json
import math
import os
import tempfile

import numpy as np


def _read_umask() -> int:
  """The process's umask, read without changing it where the OS allows (Linux >= 4.7)."""
  try:
    with open("/proc/self/status", encoding="ascii") as f:
      for line in f:
        if line.startswith("Umask:"):
          return int(line.split()[1], 8)
  except (OSError, ValueError, IndexError):
    pass
  # Elsewhere the only way to read it is to set it; done once, at import, before the threads
  # that could create files in between exist.
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


UMASK = _read_umask()
FILE_MODE = 0o666 & ~UMASK  # What open() gives a new file; mkstemp's 0600 is widened to this.


def atomic_write_bytes(path, data: bytes) -> None:
  """Writes `data` to `path` so readers see the old file or the new one, never half of it.

  The file gets the usual permissions (`FILE_MODE`), not mkstemp's owner-only 0600.
  """
  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      if hasattr(os, "fchmod"):  # Not on Windows before Python 3.13 (mkstemp's mode stays).
        os.fchmod(f.fileno(), FILE_MODE)
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


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
