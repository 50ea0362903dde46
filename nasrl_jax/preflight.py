"""Pre-flight checks before training: the run's device time, and each child's memory.

Time: the whole run's device time is estimated from FLOP counts (the expected forward FLOPs of a
child of the search space, from `child.count_flops` on sampled architectures, times the planned
training runs, epochs and images; backward = 2 x forward) and a matmul timed on this device (a
second, not a training run), plus a compile allowance per distinct architecture. Above
`config.max_hours` the run stops before any training with one line naming the estimate and what
to change.

Memory: a child's peak device memory is XLA's memory analysis of its compiled step program
(arguments + outputs + temporaries - donated aliases). A child that cannot fit on the device (GPU:
its memory limit; CPU: the RAM available now, since there the kernel kills the whole process) is
`does_not_fit`: recorded as failed without training, with zero advantage; the search goes on. In
vmapped split batching a smaller chunk is tried first. Only VGG19 not fitting stops the run.
"""

import logging
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from nasrl_jax import child as child_lib
from nasrl_jax import space as space_lib
from nasrl_jax.errors import UserInputError

# Share of the timed matmul peak a child's training step reaches. Measured on the 2-core CPU
# (BUILD_NOTES.md): VGG19 at 32 px 20 %, the largest child 47 %; conv nets on GPUs reach a similar
# share of their dense peak.
STEP_EFFICIENCY = 0.3
# Compile allowance per distinct architecture (two programs), seconds: measured 8-13 s per quick
# child on this CPU; larger images barely change XLA's compile time.
COMPILE_SECONDS_PER_ARCH = 12.0
# Fraction of available memory a child may plan to use (the rest: data, Python, the OS).
MEMORY_SAFETY = 0.85


def matmul_flops_per_second(n: int = 1024, dtype=jnp.float32, iters: int = 5) -> float:
  """Dense matmul throughput of the default device (median of `iters` timed calls)."""
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda x, y: x @ y)
  f(a, a).block_until_ready()
  times = []
  for _ in range(iters):
    t0 = time.perf_counter()
    f(a, a).block_until_ready()
    times.append(time.perf_counter() - t0)
  return 2.0 * n ** 3 / max(statistics.median(times), 1e-9)


def expected_child_flops(space: space_lib.SearchSpace, spec: child_lib.ChildSpec,
                         samples: int = 64, seed: int = 0) -> float:
  """Mean forward FLOPs per image of uniformly sampled children (a seeded numpy sample)."""
  rng = np.random.default_rng(seed)
  total = 0.0
  for _ in range(samples):
    acts = [rng.integers(0, n) for n in space.choices_per_decision]
    total += child_lib.count_flops(space.decode(acts), spec)
  return total / samples


def plan(config, num_folds: int, sizes) -> dict:
  """Training runs, images per run and distinct architectures the config asks for (upper bounds:
  memo hits only make a run cheaper)."""
  se, ev = config.search, config.eval
  strategies = len(tuple(se.strategies))
  seeds = len(tuple(se.seeds))
  children = int(se.num_steps) * int(se.children_per_step)
  r = int(se.reward_splits)
  rescore = int(se.rescore_top_k) * int(se.rescore_seeds) * r
  models = strategies + 1  # Winners and VGG19.
  if ev.protocol == "nested":
    searches = num_folds * seeds * strategies
    tests = num_folds * seeds * models
    archs = searches * children
  else:
    searches = seeds * strategies
    tests = num_folds * seeds * models
    archs = searches * children
  if ev.final_search:
    searches += strategies
    tests += models
    archs += strategies * children
  runs = searches * (children * r + rescore) + tests
  return {"runs": runs, "searches": searches, "distinct_architectures_max": archs + 1,
          "images_per_run": int(config.train.epochs) * (3 * sizes.num_train + sizes.num_eval)}


def estimate_hours(config, num_folds: int, sizes, spec, devices: int = 1, peak=None) -> dict:
  """The run's device time (hours) and how it was obtained."""
  space = space_lib.SearchSpace.from_config(config.space)
  flops_child = expected_child_flops(space, spec)
  flops_vgg = child_lib.count_flops(space.vgg19, spec)
  p = plan(config, num_folds, sizes)
  peak = matmul_flops_per_second() if peak is None else peak
  per_image = max(flops_child, flops_vgg)
  train_s = p["runs"] * p["images_per_run"] * per_image / (peak * STEP_EFFICIENCY)
  compile_s = p["distinct_architectures_max"] * COMPILE_SECONDS_PER_ARCH
  hours = (train_s + compile_s) / 3600.0 / max(devices, 1)
  return dict(p, hours=hours, train_hours=train_s / 3600 / max(devices, 1),
              compile_hours=compile_s / 3600 / max(devices, 1), matmul_flops_per_s=peak,
              child_gflops=flops_child / 1e9, devices=devices)


def check_time(config, num_folds: int, sizes, spec, devices: int = 1) -> dict:
  """Stops (UserInputError) when the estimate exceeds config.max_hours (> 0); returns it."""
  est = estimate_hours(config, num_folds, sizes, spec, devices)
  logging.info("pre-flight: %d training runs of ~%.2g GFLOP/image, %.0f images each; matmul "
               "%.3g FLOP/s -> about %.2f device-hours (%.2f training, %.2f compiling)",
               est["runs"], est["child_gflops"], est["images_per_run"],
               est["matmul_flops_per_s"], est["hours"], est["train_hours"], est["compile_hours"])
  limit = float(config.max_hours)
  if limit > 0 and est["hours"] > limit:
    platform = jax.devices()[0].platform
    where = ("this CPU" if platform == "cpu" else f"{devices} {platform.upper()} device(s)")
    raise UserInputError(
        f"pre-flight: this config needs about {est['hours']:,.0f} device-hours on {where} "
        f"({est['runs']:,} training runs of {est['child_gflops']:.3g} GFLOP/image), above "
        f"config.max_hours={limit:g}. Use a GPU, the `quick` or `cpu` variant "
        "(configs/fatty_liver.py:quick), fewer children (search.num_steps, "
        "search.children_per_step), outer folds (eval.outer_folds) or strategies, or raise "
        "--config.max_hours.")
  return est


def memory_limit(device) -> int:
  """Bytes a child may use on `device`: GPU/TPU memory limit; CPU: RAM available now."""
  try:
    stats = device.memory_stats() or {}
  except Exception:  # pylint: disable=broad-except  (CPU devices have no memory stats)
    stats = {}
  if "bytes_limit" in stats:
    return int(MEMORY_SAFETY * (stats["bytes_limit"] - stats.get("bytes_in_use", 0)))
  return int(MEMORY_SAFETY * available_ram())


def available_ram() -> int:
  """MemAvailable of /proc/meminfo (Linux), else total physical memory."""
  try:
    with open("/proc/meminfo", encoding="ascii") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def child_memory(fns, device) -> int:
  """Peak bytes of a child's training step on `device` (compiles its programs if needed)."""
  return int(fns.programs(device).memory_bytes)


def make_fit_check(factory, limit_for=memory_limit):
  """fit_check(arch, fns, device) -> (reason or '', TrainFns to train with) for ChildEvaluator.

  With vmapped split batching, a child whose chunk does not fit gets the largest smaller chunk
  that should (memory grows about linearly with the chunk), said in the log; the factory then
  hands every later training of that architecture (re-scoring, test) the same chunk.
  """
  def fit_check(arch, fns, device):
    need, limit = child_memory(fns, device), limit_for(device)
    if not need or need <= limit:
      return "", fns
    if fns.chunk > 1:
      smaller = max(1, int(fns.chunk * limit / need))
      logging.warning("child %s: a vmapped chunk of %d splits needs %.1f GiB (%.1f GiB "
                      "available); training it in chunks of %d", arch, fns.chunk, need / 2**30,
                      limit / 2**30, smaller)
      factory.limit_chunk(arch, smaller)
      return fit_check(arch, factory(arch), device)
    return (f"does not fit: its training step needs about {need / 2**30:.1f} GiB, "
            f"{limit / 2**30:.1f} GiB available on {device.platform}"), fns
  return fit_check


def check_vgg19(factory, space, device) -> None:
  """Stops the run up front when even VGG19 cannot fit (nothing could be compared then)."""
  vgg = space.vgg19
  fns = factory(vgg)
  need, limit = child_memory(fns, device), memory_limit(device)
  if need and need > limit:
    raise UserInputError(
        f"pre-flight: VGG19 needs about {need / 2**30:.1f} GiB to train at this image size and "
        f"batch ({factory.spec.input_shape[0]} px, batch {factory.recipe.batch_size}), only "
        f"{limit / 2**30:.1f} GiB are available on {device.platform}. Use a GPU, a smaller "
        "--config.train.batch_size or --config.data.image_size, or the quick/cpu variant.")
