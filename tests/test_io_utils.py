"""Tests for nasrl_jax.io_utils: atomic writes, the umask read once, JSON-safe values."""

import os
import stat
import subprocess
import sys

import numpy as np

from conftest import ROOT
from nasrl_jax import io_utils


def _mode(path) -> int:
  return stat.S_IMODE(os.stat(path).st_mode)


def test_umask_is_read_without_changing_it():
  # A subprocess with a known umask: the module reads it at import, and the umask is unchanged.
  code = ("import os; os.umask(0o027); from nasrl_jax import io_utils; "
          "print(oct(io_utils.UMASK), oct(os.umask(0o027)))")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=ROOT), check=True).stdout.split()
  assert out == ["0o27", "0o27"]


def test_atomic_write_mode_and_no_temp_left(tmp_path):
  path = tmp_path / "sub" / "report.json"
  io_utils.atomic_write_json(path, {"a": 1})
  io_utils.atomic_write_json(path, {"a": 2})  # Replacing keeps the mode.
  assert io_utils.read_json(path) == {"a": 2}
  assert _mode(path) == 0o666 & ~io_utils.UMASK
  assert os.listdir(path.parent) == ["report.json"]


def test_atomic_write_never_touches_the_process_umask(tmp_path, monkeypatch):
  # The umask is process-wide: setting it, even for a moment, changes the mode of any file another
  # thread (Orbax, XLA's compile cache) creates meanwhile. Writes must not call os.umask at all.
  def umask(_):
    raise AssertionError("os.umask called while writing")

  monkeypatch.setattr(os, "umask", umask)
  io_utils.atomic_write_text(tmp_path / "a.txt", "x")
  assert _mode(tmp_path / "a.txt") == io_utils.FILE_MODE


def test_to_json_safe():
  assert io_utils.to_json_safe({"a": (1, np.float32(0.5)), 2: np.array([np.nan, 1.0]),
                                "b": np.bool_(True), "c": float("inf")}) == {
      "a": [1, 0.5], "2": [None, 1.0], "b": True, "c": None}
