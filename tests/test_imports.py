"""What importing a module pulls in: the search core no plotting, statistics, DICOM, TFDS or
TensorBoard library; `logs` no tensorboardX (it loads it on first write); `predict` and `report`
no matplotlib; `checkpoint`, `export` and `predict` no onnx or onnxruntime.

One interpreter imports the modules in CHECKS' order and lists, after each import, the watched
libraries loaded so far (one process instead of one per module: each costs ~2 s of JAX import). A
module passes when none of the libraries it must leave out is loaded after its import: everything
imported before it counts too, so this is at least as strict as a fresh interpreter per module.
"""

import functools
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("matplotlib", "sklearn", "pydicom", "tensorflow_datasets", "tensorboardX")
ONNX = ("onnx", "onnxruntime")
CHECKS = [  # (module, libraries it must leave out), in import order.
    ("nasrl_jax.space", HEAVY + ("jax",)),  # The vocabulary alone: results readers stay light.
    ("nasrl_jax.reinforce", HEAVY),
    ("nasrl_jax.controller", HEAVY),
    ("nasrl_jax.child", HEAVY),
    ("nasrl_jax.strategies", HEAVY),
    ("nasrl_jax.train", HEAVY),
    ("nasrl_jax.search", HEAVY),
    ("nasrl_jax.logs", ("tensorboardX",)),
    ("nasrl_jax.checkpoint", ONNX),
    ("nasrl_jax.export", ONNX),
    ("nasrl_jax.predict", ONNX + ("matplotlib",)),
    ("nasrl_jax.report", ("matplotlib",)),
]
WATCHED = sorted(set(HEAVY + ONNX + ("jax",)))


@functools.lru_cache(maxsize=None)
def _loaded_after_each_import() -> dict:
  code = ("import importlib, json, sys\n"
          "out = {}\n"
          f"for m in {[m for m, _ in CHECKS]!r}:\n"
          "  importlib.import_module(m)\n"
          f"  out[m] = sorted(w for w in {WATCHED!r} if w in sys.modules)\n"
          "print(json.dumps(out))\n")
  res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu"), timeout=300)
  assert res.returncode == 0, res.stderr[-3000:]
  return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module, left_out", CHECKS, ids=[m for m, _ in CHECKS])
def test_importing_leaves_heavy_libraries_out(module, left_out):
  loaded = _loaded_after_each_import()[module]
  assert not set(loaded) & set(left_out), f"after importing {module}: {loaded} loaded"
