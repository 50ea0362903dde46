"""Tests of nasrl_jax.preflight: children that cannot fit, smaller vmap chunks, the time estimate."""

import jax
import numpy as np
import pytest

from nasrl_jax import child, preflight, rng, search, train
from nasrl_jax.errors import UserInputError
from nasrl_jax.space import Architecture

ARCH = Architecture((3, 1, 3, 1, 3), (64, 128, 128, 256, 512), (1, 1, 1, 1, 1))


def _setup(config_factory, mode="sequential", chunk=0):
  c = config_factory("tiny")
  c.train.epochs = 1
  c.train.split_batching = mode
  c.train.vmap_chunk = chunk
  r = np.random.default_rng(0)
  y = (np.arange(48) % 2).astype(np.int32)
  x = r.integers(0, 255, (48, 32, 32, 1)).astype(np.uint8)
  sizes = train.Sizes(32, 16)
  spec = child.ChildSpec.from_config(c, (32, 32, 1), 2)
  factory = train.TrainerFactory.from_config(c, spec, sizes, 48)
  splits = [train.make_split(np.arange(32), np.zeros(32), np.arange(32, 48), sizes)] * 4
  keys = [rng.train_key(rng.root_key(0), seed=0, outer=0, split=j, replica=0) for j in range(4)]
  return c, factory, train.DeviceData.from_numpy(x, y), splits, keys


def test_a_child_that_cannot_fit_is_marked_without_training(config_factory):
  from tests.conftest import hooked_trainings  # pylint: disable=g-import-not-at-top
  c, factory, data, splits, keys = _setup(config_factory)
  calls = []
  fit = preflight.make_fit_check(factory, limit_for=lambda device: 1024)  # 1 KiB "device".
  ev = search.ChildEvaluator(factory, data, splits, keys, config=c, fit_check=fit)
  with hooked_trainings(lambda *a: calls.append(a)):
    (res,) = ev([ARCH])
  assert res.status == search.DOES_NOT_FIT and "does not fit" in res.error
  assert not calls  # Nothing was trained.
  # Such a child is out of every strategy update (ChildRecord.valid) and counted as its own kind.
  rec = search.Ledger(c, "/tmp/unused", "random", 0, 0, write=False)._record(  # pylint: disable=protected-access
      0, 0, ARCH, np.zeros(10, int), res)
  assert rec.status == search.DOES_NOT_FIT and not rec.valid


def test_a_smaller_vmap_chunk_is_chosen_when_it_suffices(config_factory):
  c, factory, data, splits, keys = _setup(config_factory, "vmap", 4)
  fns = factory(ARCH)
  device = data.device
  need4 = preflight.child_memory(fns, device)
  limit = int(need4 * 0.6)  # Chunks of 4 do not fit; 2 should.
  fit = preflight.make_fit_check(factory, limit_for=lambda d: limit)
  why, fns2 = fit(ARCH, fns, device)
  assert why == "" and 1 <= fns2.chunk < 4
  assert preflight.child_memory(fns2, device) <= limit
  assert factory(ARCH).chunk == fns2.chunk  # Re-scoring and test trainings use it too.
  ev = search.ChildEvaluator(factory, data, splits, keys, config=c, fit_check=fit)
  (res,) = ev([ARCH])
  assert res.status == "ok" and len(res.split_rewards) == 4


def test_memory_estimate_grows_with_the_child(config_factory):
  c, factory, data, _, _ = _setup(config_factory)
  small = Architecture((1,) * 5, (64,) * 5, (1, 1, 1, 1, 1))
  big = Architecture((7,) * 5, (512,) * 5, (1, 1, 1, 1, 1))
  m_small = preflight.child_memory(factory(small), data.device)
  m_big = preflight.child_memory(factory(big), data.device)
  assert 0 < m_small < m_big


def test_the_time_estimate_stops_a_run_far_over_max_hours(config_factory):
  c = config_factory()  # The paper-scale default.
  spec = child.ChildSpec.from_config(c, (224, 224, 1), 2)
  sizes = train.Sizes(256, 64)
  est = preflight.estimate_hours(c, 5, sizes, spec, peak=1e11)  # A 100 GFLOP/s CPU.
  assert est["hours"] > 1000 and est["runs"] > 1000
  with pytest.raises(UserInputError, match=r"device-hours .*max_hours=72") as e:
    preflight.check_time(c, 5, sizes, spec)  # This machine's own matmul: still far above.
  assert "\n" not in str(e.value)
  quick = config_factory("quick")
  q = preflight.estimate_hours(quick, 2, train.Sizes(128, 64),
                               child.ChildSpec.from_config(quick, (32, 32, 1), 2), peak=1e11)
  assert q["hours"] < 0.2


_PEAK_SCRIPT = r"""
import gc, json, sys
import jax, numpy as np
sys.path.insert(0, sys.argv[1])
from nasrl_jax import child, rng, train
from nasrl_jax.space import Architecture
from tests.conftest import load_config

def status(field):
  with open("/proc/self/status") as f:
    return next(int(l.split()[1]) * 1024 for l in f if l.startswith(field + ":"))

c = load_config("tiny")
c.train.batch_size = 32
c.space.width_multiplier, c.model.min_width = 0.0625, 8  # 32 channels: buffers of a few 100 MB.
arch = Architecture((7,) * 5, (512,) * 5, (1, 1, 1, 1, 1))
n, size = 64, 64
spec = child.ChildSpec.from_config(c, (size, size, 1), 2)
sizes = train.Sizes(64, 32)
fns = train.make_train_fn(arch, spec, train.Recipe.from_config(c), sizes, num_images=n)
device = jax.local_devices()[0]
progs = fns.programs(device)
gc.collect()
before = status("VmRSS")
r = np.random.default_rng(0)
data = train.DeviceData.from_numpy(r.integers(0, 255, (n, size, size, 1)).astype(np.uint8),
                                   (np.arange(n) % 2).astype(np.int32), device)
split = jax.device_put(train.make_split(np.arange(48), np.zeros(48), np.arange(48, 64), sizes),
                       device)
state = fns.init(rng.train_key(rng.root_key(0), seed=0, outer=0, split=0, replica=0), device)
with open("/proc/self/clear_refs", "w") as f:
  f.write("5")  # Resets VmHWM to the current RSS.
for _ in range(3):
  state = progs.step(state, data.images, data.labels, split)
jax.block_until_ready(state)
print(json.dumps({"estimate": progs.memory_bytes, "measured": status("VmHWM") - before}))
"""


def test_memory_estimate_is_within_2x_of_the_measured_peak(tmp_path):
  """XLA's compiled memory analysis against the process's real peak (RSS high-water mark from
  just before the state and data exist to after three steps) for a child whose buffers dominate
  the process's noise (5 x 7x512 convolutions at 64 px, batch 32: a few hundred MB)."""
  import json
  import os
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, root], capture_output=True,
                       text=True, timeout=600,
                       env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=root))
  assert out.returncode == 0, out.stderr[-2000:]
  m = json.loads(out.stdout.strip().splitlines()[-1])
  assert m["estimate"] > 50 * 2**20, m
  assert 0.5 <= m["estimate"] / m["measured"] <= 2.0, m
