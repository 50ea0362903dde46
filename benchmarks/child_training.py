"""Child-training speed against the hardware limit: compile, step time, images/s, FLOP/s, MFU.

  python benchmarks/child_training.py                     # CPU defaults: 32 px, width 1/8, f32
  python benchmarks/child_training.py --size=224 --width=1.0 --dtype=bfloat16   # paper scale, GPU

For VGG19 and the search space's extremes (every layer 1x64 = smallest, 7x512 = largest), with the
library's own `train.Trainer` (the code a search runs) and the default config's child setup
(batch norm, VGG head, Adam, batch 32, the paper cohort's padded split sizes):
  compile   seconds of Trainer.compile() (train step + end-of-epoch eval + predict), cold: the
            persistent compilation cache is off;
  init      seconds to initialise the parameters on the host and put them on the device (paid
            once per fit, inside a search child's train_seconds);
  step      median of synchronised train steps after warm-up, and the mean step of an
            unsynchronised run of steps (how `fit` dispatches them);
  img/s     batch / median step;
  FLOP/s    3 x forward FLOPs per image (child.count_flops) x batch / median step;
  MFU       FLOP/s / the measured peak of an n^3 matmul in the same dtype (n = 4096 on GPU,
            2048 on CPU), timed in this script;
  epoch     steps per epoch x pipelined step + one end-of-epoch evaluation; `child` projects
            compile + init + epochs x epoch for one search child with the config's epochs.
Writes benchmarks/results/child_training.json (after every architecture, so a timeout keeps the
finished rows) and prints a table last.
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from benchmarks import common  # pylint: disable=g-import-not-at-top
from configs import fatty_liver  # pylint: disable=g-import-not-at-top
from nasrl_jax import child as child_lib  # pylint: disable=g-import-not-at-top
from nasrl_jax import train as train_lib  # pylint: disable=g-import-not-at-top
from nasrl_jax.errors import UserInputError  # pylint: disable=g-import-not-at-top

# The paper cohort's split sizes (310 images, fold 0 of 10): about 248 training images topped up
# to about 342 by rot90 balancing, 31 validation images; padded as the pipeline pads them.
COHORT_IMAGES = 310
TRAIN_EXAMPLES = 342
EVAL_EXAMPLES = 31


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--size", type=int, default=32, help="Input size in pixels (32 | 64 | 224 | ...).")
  p.add_argument("--width", type=float, default=0.125, help="Width multiplier (0.125 | 1.0).")
  p.add_argument("--dtype", default="float32", help="Compute dtype: float32 | bfloat16.")
  p.add_argument("--archs", default="vgg19,smallest,largest",
                 help="Comma-separated names (vgg19, smallest, largest, found) or arch strings.")
  p.add_argument("--steps", type=int, default=20, help="Timed train steps per architecture.")
  p.add_argument("--warmup", type=int, default=3, help="Untimed steps before timing.")
  p.add_argument("--batch", type=int, default=0, help="Batch size (0 = config.train.batch_size).")
  p.add_argument("--peak_n", type=int, default=0,
                 help="Matmul size of the peak measurement (0 = 4096 on GPU, 2048 on CPU).")
  p.add_argument("--max_seconds_per_arch", type=float, default=20.0,
                 help="Fewer timed steps (at least 5) if the warm-up says they would take longer.")
  p.add_argument("--results_dir", default="",
                 help="Folder of the JSON (default benchmarks/results).")
  p.add_argument("--name", default="child_training", help="JSON file name (without .json).")
  a = p.parse_args(argv)
  common.check_choice("dtype", a.dtype, ("float32", "bfloat16"))
  common.check_name(a.name)
  if a.size < 32 or a.size % 32:
    raise UserInputError(f"--size={a.size}: must be a multiple of 32 (five 2x2 pools), "
                         "e.g. 32, 64, 224")
  if not a.width > 0:
    raise UserInputError(f"--width={a.width}: must be > 0")
  if a.steps < 1 or a.warmup < 1 or a.batch < 0 or a.peak_n < 0:
    raise UserInputError("--steps and --warmup must be >= 1, --batch and --peak_n >= 0")
  a.arch_map = common.parse_archs(a.archs)
  return a


def make_config(args):
  """The default (paper) config's child setup with this run's size/width/dtype/batch."""
  c = fatty_liver.get_config()
  c.data.image_size = args.size
  c.space.width_multiplier = args.width
  c.train.dtype = args.dtype
  if args.batch:
    c.train.batch_size = args.batch
  return c


def bench_arch(name, arch, config, data, split, peak, args, phases) -> dict:
  """Times one architecture; returns its result row."""
  spec = child_lib.ChildSpec.from_config(config, (args.size, args.size, 1), 2)
  batch = int(config.train.batch_size)
  num_train = train_lib.pad_to(TRAIN_EXAMPLES, batch)
  num_eval = train_lib.pad_to(EVAL_EXAMPLES, int(config.train.eval_batch_size))
  trainer = train_lib.Trainer(arch, spec, config.train, num_train, num_eval, data)
  phases.reset()
  compile_s = trainer.compile()
  compile_phases = phases.reset()
  # The compiled functions and the initial state are Trainer internals: a benchmark needs the
  # bare step, which the public `fit` does not expose (see docs/notes_benchmarks.md).
  train_fn, end_fn = trainer.compiled_functions()
  t0 = time.perf_counter()
  state, best = common.block(trainer.initial_state(0))
  init_s = time.perf_counter() - t0
  tidx, trot, tw, eidx, ew = jax.device_put(
      (split.train_idx, split.train_rot, split.train_w, split.eval_idx, split.eval_w))
  args_d = (data.images, data.labels, tidx, trot, tw)

  warm = []
  for _ in range(args.warmup):
    t0 = time.perf_counter()
    state = common.block(train_fn(state, *args_d))
    warm.append(time.perf_counter() - t0)
  steps = args.steps
  if warm[-1] * steps > args.max_seconds_per_arch:
    steps = max(5, int(args.max_seconds_per_arch / warm[-1]))
  synced = []
  for _ in range(steps):
    t0 = time.perf_counter()
    state = common.block(train_fn(state, *args_d))
    synced.append(time.perf_counter() - t0)
  t0 = time.perf_counter()
  for _ in range(steps):  # Dispatched back to back, one sync at the end (as `fit` runs them).
    state = train_fn(state, *args_d)
  common.block(state)
  pipelined = (time.perf_counter() - t0) / steps
  evals, finite_metrics = [], None
  for _ in range(3):
    t0 = time.perf_counter()
    state, best, metrics = common.block(end_fn(state, best, data.images, data.labels, eidx, ew))
    evals.append(time.perf_counter() - t0)
    if finite_metrics is None:  # The first eval's train loss covers every step above.
      finite_metrics = np.asarray(metrics)
  del state, best, trainer

  step = statistics.median(synced)
  fwd = child_lib.count_flops(arch, spec)
  flops = 3.0 * fwd * batch / step
  spe = num_train // batch
  epoch_s = spe * pipelined + statistics.median(evals)
  return {
      "arch": name, "architecture": str(arch),
      "params": child_lib.count_params_for(arch, spec),
      "forward_flops_per_image": fwd, "batch": batch, "compile_seconds": compile_s,
      "compile_phase_seconds": compile_phases,
      "init_seconds": init_s, "timed_steps": steps, "warmup_seconds": warm,
      "step_seconds_median": step, "step_seconds_p90": float(np.percentile(synced, 90)),
      "step_seconds_pipelined": pipelined, "images_per_s": batch / step,
      "achieved_flops_per_s": flops, "mfu": flops / peak["flops_per_s"],
      "eval_seconds_median": statistics.median(evals), "steps_per_epoch": spe,
      "epoch_seconds": epoch_s, "epochs": int(config.train.epochs),
      "child_seconds_projected": compile_s + init_s + int(config.train.epochs) * epoch_s,
      # val acc, val loss, mean train loss: a non-finite loss would make the timing suspect.
      "finite": bool(np.all(np.isfinite(finite_metrics))),
  }


def main(argv):
  args = parse_args(argv[1:])
  config = make_config(args)
  common.disable_compile_cache()  # Cold compiles: what a never-seen child costs.
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (COHORT_IMAGES, args.size, args.size, 1), dtype=np.uint8)
  labels = rng.integers(0, 2, COHORT_IMAGES).astype(np.int32)
  data = train_lib.DeviceData.from_numpy(images, labels)
  batch = int(config.train.batch_size)
  split = train_lib.make_split(
      rng.integers(0, COHORT_IMAGES, TRAIN_EXAMPLES), rng.integers(0, 4, TRAIN_EXAMPLES),
      np.arange(EVAL_EXAMPLES), train_lib.pad_to(TRAIN_EXAMPLES, batch),
      train_lib.pad_to(EVAL_EXAMPLES, int(config.train.eval_batch_size)))
  peak = common.matmul_peak(args.dtype, args.peak_n or None)
  info = common.device_info()
  peak["nominal_flops_per_s"] = common.nominal_peak(info["device_kind"], args.dtype)
  rec = common.record("child_training", argv, device=info, size=args.size, width=args.width,
                      dtype=args.dtype, peak=peak, rows=[])
  phases = common.CompilePhases()
  common.run_rows("child_training", rec, args.arch_map,
                  lambda name, arch: bench_arch(name, arch, config, data, split, peak, args,
                                                phases),
                  args.name, args.results_dir)

  print(f"\nchild training, {rec['device']}, {args.size}px, width {args.width}, {args.dtype}, "
        f"batch {batch}; peak ({peak['n']}^3 matmul) "
        f"{peak['flops_per_s'] / 1e12:.3g} TFLOP/s"
        + (f" (nominal {peak['nominal_flops_per_s'] / 1e12:.0f})"
           if peak["nominal_flops_per_s"] else "") + f"; {rec['date']}")
  header = ["arch", "params M", "GFLOP/img", "compile s", "(trace/lower/xla)", "init s",
            "step ms", "pipe ms", "img/s", "TFLOP/s", "MFU %", "epoch s",
            f"child s ({config.train.epochs} ep)"]
  rows = []
  for r in rec["rows"]:
    if "error" in r:
      rows.append([r["arch"], "error: " + r["error"][:60]] + [""] * (len(header) - 2))
      continue
    rows.append([r["arch"], common.fmt(r["params"] / 1e6),
                 common.fmt(r["forward_flops_per_image"] / 1e9), common.fmt(r["compile_seconds"]),
                 "/".join(common.fmt(r["compile_phase_seconds"][k], ".2g")
                          for k in ("trace", "lower", "backend")),
                 common.fmt(r["init_seconds"]),
                 common.fmt(1e3 * r["step_seconds_median"], ".4g"),
                 common.fmt(1e3 * r["step_seconds_pipelined"], ".4g"),
                 common.fmt(r["images_per_s"], ".4g"),
                 common.fmt(r["achieved_flops_per_s"] / 1e12), common.fmt(100 * r["mfu"]),
                 common.fmt(r["epoch_seconds"]), common.fmt(r["child_seconds_projected"])])
  print(common.table(rows, header))


if __name__ == "__main__":
  try:
    main(sys.argv)
  except UserInputError as e:
    sys.exit(f"error: {e}")
