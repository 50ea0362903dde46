"""Atomic writes for files a user reads (reports, history, folds): temp file + rename."""

import json
import os
import tempfile


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


def read_json(path):
  with open(path, encoding="utf-8") as f:
    return json.load(f)
