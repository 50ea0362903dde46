"""Child-training speed against the hardware limit: compile, step time, images/s, FLOP/s, MFU.

  python benchmarks/child_training.py                     # CPU defaults: 32 px, width 1/8, f32
  python benchmarks/child_training.py --size=224 --width=1.0 --dtype=bfloat16   # paper scale, GPU

For VGG19 and the search space's extremes (every layer 1x64 = smallest, 7x512 = largest), with the
library's own pure training functions (`train.make_train_fn`, the code a search runs) and the
default config's child setup (batch norm, VGG head, Adam, batch 32, loss-weighted balance; another
variant's with --config), on the paper cohort's padded split sizes (224 / 64 at batch 32) of
random pixels:
  compile   seconds of `programs(device)` (the step and evaluate programs, compiled ahead of time),
            cold: the persistent compilation cache is off; split into the step program and the
            evaluate program from JAX's own compile events (trace + lower + XLA of each);
  init      seconds of `init(key, device)`: host numpy weights and one transfer (paid once per
            training run, inside a search child's train seconds);
  step      median of synchronised calls of the compiled step after warm-up, and the mean step of
            an unsynchronised run of steps (how `train` dispatches them);
  img/s     batch / median step;
  FLOP/s    3 x forward FLOPs per image (child.count_flops) x batch / median step;
  MFU       FLOP/s / the measured peak of an n^3 matmul in the same dtype (n = 4096 on GPU,
            2048 on CPU), timed in this script;
  train     wall seconds of one `train(key, data, split)` call of --train_epochs epochs (init,
            steps, per-epoch evaluation, the one host read at the end); `child` projects
            compile + init + config epochs x (train - init) / train epochs for one search child.
Writes benchmarks/results/child_training.json (after every architecture, so a timeout keeps the
finished rows) and prints a table last:

  arch  params M  GFLOP/img  compile s  step/eval s  init s  step ms  pipe ms  img/s  TFLOP/s  MFU %
  train s (1 ep)  child s (30 ep)
"""

import argparse
import dataclasses
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from benchmarks import common  # pylint: disable=g-import-not-at-top
from nasrl_jax import child as child_lib  # pylint: disable=g-import-not-at-top
from nasrl_jax import rng as rng_lib  # pylint: disable=g-import-not-at-top
from nasrl_jax import train as train_lib  # pylint: disable=g-import-not-at-top
from nasrl_jax.errors import UserInputError  # pylint: disable=g-import-not-at-top


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", default="paper",
                 help="Config variant whose child setup is timed: paper (= default) | quick | cpu "
                      "| tiny.")
  p.add_argument("--size", type=int, default=32, help="Input size in pixels (32 | 64 | 224 | ...).")
  p.add_argument("--width", type=float, default=0.125, help="Width multiplier (0.125 | 1.0).")
  p.add_argument("--dtype", default="float32", help="Compute dtype: float32 | bfloat16.")
  p.add_argument("--archs", default="vgg19,smallest,largest",
                 help="Comma-separated names (vgg19, smallest, largest, found) or arch strings.")
  p.add_argument("--steps", type=int, default=20, help="Timed train steps per architecture.")
  p.add_argument("--warmup", type=int, default=3, help="Untimed steps before timing.")
  p.add_argument("--batch", type=int, default=0, help="Batch size (0 = config.train.batch_size).")
  p.add_argument("--train_epochs", type=int, default=1,
                 help="Epochs of the timed `train` call (the programs are compiled for it).")
  p.add_argument("--peak_n", type=int, default=0,
                 help="Matmul size of the peak measurement (0 = 4096 on GPU, 2048 on CPU).")
  p.add_argument("--max_seconds_per_arch", type=float, default=20.0,
                 help="Fewer timed steps (at least 5) if the warm-up says they would take longer.")
  p.add_argument("--compile_cache", default="off", help=common.COMPILE_CACHE_HELP)
  p.add_argument("--results_dir", default="",
                 help="Folder of the JSON (default benchmarks/results).")
  p.add_argument("--name", default="child_training", help="JSON file name (without .json).")
  a = p.parse_args(argv)
  common.check_choice("config", a.config, common.VARIANTS)
  common.check_choice("dtype", a.dtype, ("float32", "bfloat16"))
  common.check_name(a.name)
  common.check_size(a.size)
  if not a.size:
    raise UserInputError("--size must be given (a multiple of 32)")
  if not a.width > 0:
    raise UserInputError(f"--width={a.width}: must be > 0")
  if a.steps < 1 or a.warmup < 1 or a.train_epochs < 1 or a.batch < 0 or a.peak_n < 0:
    raise UserInputError("--steps, --warmup and --train_epochs must be >= 1, --batch and --peak_n "
                         ">= 0")
  a.arch_map = common.parse_archs(a.archs)
  return a


def make_config(args):
  """The config's child setup (default: the paper's) with this run's size/width/dtype/batch."""
  return common.override(common.get_config(args.config), size=args.size, width=args.width,
                         dtype=args.dtype, batch=args.batch)


def bench_arch(name, arch, config, data, split, sizes, peak, args, phases) -> dict:
  # pylint: disable=too-many-locals
  """Times one architecture; returns its result row."""
  spec = child_lib.ChildSpec.from_config(config, (args.size, args.size, 1), 2)
  recipe = dataclasses.replace(train_lib.Recipe.from_config(config), epochs=args.train_epochs)
  batch = recipe.batch_size
  fns = train_lib.make_train_fn(arch, spec, recipe, sizes, num_images=data.num_images,
                                split_batching="sequential")
  device = data.device
  phases.reset()
  phases.reset_programs()
  progs = fns.programs(device)
  by_program = phases.reset_programs()
  compile_phases = phases.reset()
  key = rng_lib.train_key(rng_lib.root_key(0), seed=0, outer=0, split=0, replica=0)
  t0 = time.perf_counter()
  state = common.block(fns.init(key, device))
  init_s = time.perf_counter() - t0
  split_dev = jax.device_put(split, device)
  zero = jax.device_put(np.zeros((), np.int32), device)

  def step(s):
    return progs.step(s, data.images, data.labels, split_dev)

  warm = []
  for _ in range(args.warmup):
    t0 = time.perf_counter()
    state = common.block(step(state))
    warm.append(time.perf_counter() - t0)
  steps = args.steps
  if warm[-1] * steps > args.max_seconds_per_arch:
    steps = max(5, int(args.max_seconds_per_arch / warm[-1]))
  synced = []
  for _ in range(steps):
    t0 = time.perf_counter()
    state = common.block(step(state))
    synced.append(time.perf_counter() - t0)
  t0 = time.perf_counter()
  for _ in range(steps):  # Dispatched back to back, one sync at the end (as `train` runs them).
    state = step(state)
  common.block(state)
  pipelined = (time.perf_counter() - t0) / steps
  evals, metrics = [], None
  for _ in range(3):
    t0 = time.perf_counter()
    state, _, m = common.block(progs.evaluate(state, data.images, data.labels, split_dev.eval_idx,
                                              split_dev.eval_w, split_dev.class_weight, zero))
    evals.append(time.perf_counter() - t0)
    if metrics is None:  # The first evaluation's train loss covers every step above.
      metrics = np.asarray(m)
  del state
  t0 = time.perf_counter()
  res = fns.train(key, data, split)
  train_s = time.perf_counter() - t0

  med = statistics.median(synced)
  fwd = child_lib.count_flops(arch, spec)
  flops = 3.0 * fwd * batch / med
  per_program = {p: sum(v.values()) for p, v in by_program.items()}
  epoch_s = max(train_s - init_s, 0.0) / args.train_epochs
  epochs = int(config.train.epochs)
  return {
      "arch": name, "architecture": str(arch),
      "params": child_lib.count_params_for(arch, spec),
      "forward_flops_per_image": fwd, "batch": batch, "compile_seconds": progs.compile_seconds,
      "compile_step_seconds": per_program["step"], "compile_eval_seconds": per_program["eval"],
      "compile_phase_seconds": compile_phases, "compile_program_phase_seconds": by_program,
      "memory_bytes_estimate": progs.memory_bytes, "init_seconds": init_s, "timed_steps": steps,
      "warmup_seconds": warm, "step_seconds_median": med,
      "step_seconds_p90": float(np.percentile(synced, 90)), "step_seconds_pipelined": pipelined,
      "images_per_s": batch / med, "achieved_flops_per_s": flops,
      "mfu": flops / peak["flops_per_s"],
      "eval_seconds_median": statistics.median(evals), "steps_per_epoch": fns.steps_per_epoch,
      "train_epochs": args.train_epochs, "train_seconds": train_s,
      "train_step_seconds": train_s / (args.train_epochs * fns.steps_per_epoch),
      "epoch_seconds": epoch_s, "epochs": epochs,
      "child_seconds_projected": progs.compile_seconds + init_s + epochs * epoch_s,
      # val acc, val loss, mean train loss of the timed steps, and the `train` run's curves: a
      # non-finite loss would make the timing suspect.
      "finite": bool(np.all(np.isfinite(metrics)) and res.finite),
  }


def main(argv):
  args = parse_args(argv[1:])
  config = make_config(args)
  cache = common.apply_compile_cache(args.compile_cache)
  images, labels = common.random_cohort(args.size)
  data = train_lib.DeviceData.from_numpy(images, labels)
  splits, _, sizes = common.cohort_splits(config, labels, 1)
  peak = common.matmul_peak(args.dtype, args.peak_n or None)
  info = common.device_info()
  peak["nominal_flops_per_s"] = common.nominal_peak(info["device_kind"], args.dtype)
  rec = common.record("child_training", argv, device=info, config_variant=args.config,
                      size=args.size, width=args.width,
                      dtype=args.dtype, batch=int(config.train.batch_size),
                      num_train=sizes.num_train, num_eval=sizes.num_eval, compile_cache=cache,
                      peak=peak, rows=[])
  phases = common.CompilePhases()
  common.run_rows("child_training", rec, args.arch_map,
                  lambda name, arch: bench_arch(name, arch, config, data, splits[0], sizes, peak,
                                                args, phases),
                  args.name, args.results_dir)
  phases.close()
  print_table(rec, config, args)
  return rec


def print_table(rec, config, args):
  peak = rec["peak"]
  print(f"\nchild training, {rec['device']}, {args.size}px, width {args.width}, {args.dtype}, "
        f"batch {rec['batch']}, {rec['num_train']} train rows; peak ({peak['n']}^3 matmul) "
        f"{peak['flops_per_s'] / 1e12:.3g} TFLOP/s"
        + (f" (nominal {peak['nominal_flops_per_s'] / 1e12:.0f})"
           if peak["nominal_flops_per_s"] else "") + f"; {rec['date']}")
  header = ["arch", "params M", "GFLOP/img", "compile s", "step/eval s", "init s", "step ms",
            "pipe ms", "img/s", "TFLOP/s", "MFU %", f"train s ({args.train_epochs} ep)",
            f"child s ({config.train.epochs} ep)"]
  rows = []
  for r in rec["rows"]:
    if "error" in r:
      rows.append([r["arch"], "error: " + r["error"][:60]] + [""] * (len(header) - 2))
      continue
    rows.append([r["arch"], common.fmt(r["params"] / 1e6),
                 common.fmt(r["forward_flops_per_image"] / 1e9), common.fmt(r["compile_seconds"]),
                 f"{r['compile_step_seconds']:.2g}/{r['compile_eval_seconds']:.2g}",
                 common.fmt(r["init_seconds"]),
                 common.fmt(1e3 * r["step_seconds_median"], ".4g"),
                 common.fmt(1e3 * r["step_seconds_pipelined"], ".4g"),
                 common.fmt(r["images_per_s"], ".4g"),
                 common.fmt(r["achieved_flops_per_s"] / 1e12), common.fmt(100 * r["mfu"]),
                 common.fmt(r["train_seconds"]), common.fmt(r["child_seconds_projected"])])
  print(common.table(rows, header))


if __name__ == "__main__":
  try:
    main(sys.argv)
  except UserInputError as e:
    sys.exit(f"error: {e}")
