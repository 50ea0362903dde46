"""Subprocess for the scale-out tests: a small real search (children trained on random images).

  python tests/scaleout_worker.py WORKDIR                       # all local devices, one process
  python tests/scaleout_worker.py WORKDIR ADDRESS NUM_PROC ID   # one of NUM_PROC processes
  scaleout_worker.run(WORKDIR)                                  # in the test's own process

Run with XLA_FLAGS=--xla_force_host_platform_device_count=4 for 4 CPU devices.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from nasrl_jax import child, io_utils, rng, search, train  # pylint: disable=g-import-not-at-top
from tests.conftest import CACHE_ENV, load_config  # pylint: disable=g-import-not-at-top


def run(workdir):
  """The search in this process (its devices, and its peers if jax.distributed is up)."""
  c = load_config("quick")
  c.space.blocks = (1, 1, 1, 1, 1)
  tiny = load_config("tiny")  # The tiny config's narrow children (width and floor).
  c.space.width_multiplier, c.model.min_width = tiny.space.width_multiplier, tiny.model.min_width
  # One step of 4 children: one per device of the 2 x 2 run. The controller's update from the
  # gathered rewards is compared through steps.jsonl (a second step only re-ran the same plumbing
  # with 4 more compiles per side).
  c.search.num_steps = 1
  c.search.children_per_step = 4
  c.train.epochs = 1
  c.train.batch_size = 16
  c.train.eval_batch_size = 16
  c.data.balance = "none"
  c.model.batch_norm = True
  c.controller.reward_metric = "val_accuracy"  # Compared exactly across device counts.
  c.data.augment = ()
  c.train.cpu_opt_level = 0  # Compile-bound: see the tiny config.
  c.train.cpu_fusion_emitters = False
  c.log_every_s = 1e9
  r = np.random.default_rng(0)
  y = (np.arange(48) % 2).astype(np.int32)
  x = (r.integers(0, 150, (48, 32, 32, 1)) + 60 * y[:, None, None, None]).astype(np.uint8)
  data = train.DeviceData.from_numpy(x, y, jax.local_devices()[0])
  sizes = train.Sizes(32, 16)
  splits = [train.make_split(np.arange(32), np.zeros(32), np.arange(32, 48), sizes)]
  keys = [rng.train_key(rng.root_key(0), seed=0, outer=0, split=0, replica=0)]
  spec = child.ChildSpec.from_config(c, (32, 32, 1), 2)
  factory = train.TrainerFactory.from_config(c, spec, sizes, 48)
  local = search.ChildEvaluator(factory, data, splits, keys, config=c,
                                devices=jax.local_devices())
  ev = search.DistributedEvaluator(local) if jax.process_count() > 1 else local
  search.run_search(c, ev, workdir, strategy="reinforce", seed=0)
  local.close()
  return f"devices {len(jax.local_devices())} processes {jax.process_count()}"


def main(argv):
  if len(argv) > 2:
    jax.distributed.initialize(coordinator_address=argv[2], num_processes=int(argv[3]),
                               process_id=int(argv[4]), coordinator_bind_address=argv[2],
                               initialization_timeout=120)
  io_utils.enable_compile_cache(os.environ.get(CACHE_ENV, ""))  # The test session's cache.
  print(run(argv[1]), flush=True)


if __name__ == "__main__":
  main(sys.argv)
