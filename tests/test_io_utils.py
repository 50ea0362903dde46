"""Tests for nasrl_jax.io_utils: atomic writes, the umask read once, JSON-safe values."""

import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

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


_WRITE_EVERYTHING = """
import json, os, stat, sys
os.umask(int(sys.argv[2], 8))  # Before anything is imported, as a user's shell would set it.
import numpy as np
from nasrl_jax import checkpoint, child, export, io_utils, logs, space
from configs import fatty_liver
root = sys.argv[1]
io_utils.atomic_write_json(os.path.join(root, "report.json"), {"a": 1})
with logs.MetricWriter(os.path.join(root, "tb")) as w:
  w.scalars(0, {"reward/mean": 0.5})
  logs.write_child_curves(w, 3, [0.5], [0.7], [0.6])
arch = space.Architecture((1,), (64,), (1,))
spec = child.ChildSpec((16, 16, 1), 2, "gap", 8, 0.0, False, 1 / 64)
_, params, stats = child.init(arch, spec, 0)
data_cfg = fatty_liver.get_config("tiny").data
data_cfg.image_size = 16
meta = export.metadata(arch, spec, data_cfg, name="m", threshold=0.5, threshold_source="test")
export.save(os.path.join(root, "models", "m"), params, stats, meta)
export.load(os.path.join(root, "models", "m"))
with checkpoint.ControllerCheckpointer(os.path.join(root, "controller")) as ckpt:
  ckpt.save(0, {"w": np.ones(3, np.float32)}, {"n": 0})
  ckpt.save(1, {"w": np.ones(3, np.float32)}, {"n": 1})
with checkpoint.ModelStore(os.path.join(root, "children"), max_to_keep=1) as store:
  store.save(0, {"w": np.ones(3, np.float32)}, {}, score=1.0)
  store.save(1, {"w": np.ones(3, np.float32)}, {}, score=2.0)
modes = {}
for folder, dirs, files in os.walk(root):
  for name in dirs + files:
    path = os.path.join(folder, name)
    modes[os.path.relpath(path, root)] = [os.path.isdir(path), stat.S_IMODE(os.stat(path).st_mode)]
print(json.dumps(modes))
"""


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_every_writer_follows_the_umask(tmp_path, umask):
  """Files from io_utils, logs, export and the checkpoint classes (Orbax's and tensorboardX's
  included): exactly the modes the umask gives, never world-writable."""
  res = subprocess.run([sys.executable, "-c", _WRITE_EVERYTHING, str(tmp_path), oct(umask)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu"))
  assert res.returncode == 0, res.stderr
  modes = json.loads(res.stdout.splitlines()[-1])
  kinds = {p.split(os.sep)[0] for p in modes}
  assert kinds >= {"report.json", "tb", "models", "controller", "children"}
  assert any("tfevents" in p for p in modes) and any("checksums" in p for p in modes)
  wrong = {p: oct(m) for p, (is_dir, m) in modes.items()
           if m != (0o777 if is_dir else 0o666) & ~umask or m & 0o002}
  assert not wrong


def test_the_private_coordination_client_path_exists_and_is_none_single_process():
  """multihost.coordination_client is the package's one private JAX import: it must still resolve
  in the installed JAX (a JAX upgrade that moves it fails here, not in a 2-process run), and a
  single-process run without jax.distributed has no client, so allgather_json takes the 1-process
  path and returns its own value."""
  from nasrl_jax import multihost  # pylint: disable=g-import-not-at-top
  assert multihost.coordination_client() is None
  assert multihost.allgather_json({"a": float("nan"), "b": 1}, "t") == [{"a": None, "b": 1}]
