"""Scale-out: children on 4 host devices in 2 processes (2 each), and the nested pipeline on 2
processes, give the 1-device results.

Architectures, rewards (accuracies), statuses and accuracy curves must be identical. Validation
losses are compared with a relative tolerance: XLA:CPU splits its thread pool by device count, so
reductions round differently (measured: 2.9455950 vs 2.9455943, and 0.6773 vs 0.6769 after 16
steps of training on the 4-device run).
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "scaleout_worker.py")


def _jsonl(workdir, name):
  with open(os.path.join(workdir, name)) as f:
    return [json.loads(l) for l in f]


def _rows(workdir):
  """The children (exact fields, losses) and the controller's update of each step."""
  rows = _jsonl(workdir, "history.jsonl")
  steps = _jsonl(workdir, "steps.jsonl")
  return ([(r["step"], r["child"], r["architecture"], r["reward"], r["val_acc"], r["status"])
           for r in rows], [r["best_val_loss"] for r in rows],
          [(s["step"], s["valid"], s["mean_reward"], s["baseline"]) for s in steps],
          [[s["loss"], s["grad_norm"], s["entropy"]] for s in steps])


def _same(a, b):
  """Exact architectures, rewards, curves and statuses; losses to float-rounding level. The
  controller's update (REINFORCE loss, gradient norm, entropy) from the gathered rewards: the same
  rewards in the same order give the same numbers, to float rounding."""
  assert a[0] == b[0] and a[2] == b[2]
  np.testing.assert_allclose(a[1], b[1], rtol=5e-3)
  np.testing.assert_allclose(a[3], b[3], rtol=1e-5)


def _env(devices):
  """The session's environment and N CPU devices per process.

  The session's XLA_FLAGS stay (both sides compile alike). One device is CPU's default and gets no
  flag: XLA flags are part of JAX's compilation-cache key, so process 0 of a 1-device run reads the
  programs the session's in-process runs cached (process 1's device id differs: it compiles).
  """
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  flags = [f for f in env.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  if devices > 1:
    flags.append(f"--xla_force_host_platform_device_count={devices}")
  env["XLA_FLAGS"] = " ".join(flags)
  return env


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow(cpu_s=50)
def test_four_devices_in_two_processes_match_one_device(tmp_path):
  """The 1-device reference runs in the test's own process (one device: the worker's default).
  One run covers both scale-outs: 2 processes of 2 local devices each, so a step's 4 children go
  to 4 devices through both the local device queue and the cross-process split (one run where
  two, 4 devices in 1 process and 1 device in each of 2, cost 25 CPU-s more)."""
  sys.path.insert(0, HERE)
  import scaleout_worker  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  assert len(jax.local_devices()) == 1 and jax.process_count() == 1
  assert scaleout_worker.run(str(tmp_path / "one")) == "devices 1 processes 1"
  reference = _rows(tmp_path / "one")
  assert len(reference[0]) == 4 and len(reference[2]) == 1

  address = f"127.0.0.1:{_free_port()}"
  procs = [subprocess.Popen([sys.executable, WORKER, str(tmp_path / "four"), address, "2", str(i)],
                            env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True) for i in range(2)]
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
    assert "devices 2 processes 2" in out
  _same(_rows(tmp_path / "four"), reference)


def _modes_respect(workdir, umask):
  """Every file and folder of a run: never world-writable, no bit the umask clears."""
  bad = []
  for folder, dirs, files in os.walk(workdir):
    for name in dirs + files:
      path = os.path.join(folder, name)
      mode = os.stat(path).st_mode & 0o777
      if mode & 0o002 or mode & umask:
        bad.append(f"{path}: {oct(mode)}")
  return bad


@pytest.mark.slow(cpu_s=69)
def test_two_processes_give_the_single_process_report_and_respect_umask_002(tiny_run, tmp_path):
  """The tiny nested run on 2 processes (outer folds round-robin) under umask 002: the same report
  as the session's 1-process run (machine measurements exempt); files follow the umask."""
  from tests.test_pipeline import _report, _strip
  address = f"127.0.0.1:{_free_port()}"
  w = tmp_path / "w"
  worker = os.path.join(HERE, "pipeline_worker.py")
  procs = [subprocess.Popen([sys.executable, worker, str(w), tiny_run.data_cache, "--umask=002",
                             f"--distributed={address},2,{i}"], env=_env(1),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  outs = [p.communicate(timeout=900) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  assert _strip(_report(w)) == _strip(_report(tiny_run.workdir))
  assert not _modes_respect(str(w), 0o002)
  umask = os.umask(0)
  os.umask(umask)
  assert not _modes_respect(str(tiny_run.workdir), umask)  # The session's run, this umask.
