"""k-fold CV wall time of one architecture: splits vmapped (several chunk sizes) vs sequential.

  python benchmarks/vmap_cv.py                        # quick config: 32 px, width 1/16, 10 folds
  python benchmarks/vmap_cv.py --size=224 --width=1.0 --archs=smallest --chunks=2,5 --epochs=1

Every fold of a k-fold CV is the same program with other index arrays (`train.py`), so the k
trainings of one architecture can run one after another (`split_batching=sequential`: one
compiled step) or as a `jax.vmap` axis of it (`vmap`, chunks of `vmap_chunk` members, a short last
chunk padded with copies). Forms timed, per architecture (VGG19 of the config's space and a
uniformly sampled child by default), on the paper cohort's shapes (310 random-pixel images with a
weak label cue, fold j validating and the other k-1 training):
  sequential        `make_train_fn(..., split_batching="sequential").train_many`;
  vmap c            the same with `split_batching="vmap", vmap_chunk=c`, for each --chunks c;
  vmap c xla-default  vmap with XLA:CPU's default backend optimisation level instead of the
                    config's `train.cpu_opt_level` (another XLA setting for the grouped
                    convolutions vmap makes; CPU only);
  unrolled c        c members' steps written out one after another inside one jitted program
                    (no vmap: every member keeps ordinary convolutions; one dispatch per step for
                    all c, and XLA may run their independent ops concurrently). Built here from
                    the engine's single-split step (`train._Core`), not a library path.
Columns: compile seconds (programs built ahead of time, persistent cache off), train seconds
(all k folds, `train_many` wall time: host init, steps, per-epoch evaluation, host reads),
seconds per split, speed-up of train seconds and of compile + train against sequential, and the
largest absolute difference of any fold's validation loss (every epoch) from the sequential
run's: the forms must train the same networks (Adam turns float-rounding differences into visible
ones over many steps; see tests/test_train.py). Writes benchmarks/results/vmap_cv.json after
every form and prints a table last:

  arch  form  chunk  compile s  train s  s/split  speed-up  speed-up (with compile)  max |dloss|
"""

import argparse
import dataclasses
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from benchmarks import common  # pylint: disable=g-import-not-at-top
from nasrl_jax import child as child_lib  # pylint: disable=g-import-not-at-top
from nasrl_jax import programs  # pylint: disable=g-import-not-at-top
from nasrl_jax import space as space_lib  # pylint: disable=g-import-not-at-top
from nasrl_jax import train as train_lib  # pylint: disable=g-import-not-at-top
from nasrl_jax.errors import UserInputError  # pylint: disable=g-import-not-at-top

FORMS = ("sequential", "vmap", "vmap_xla_default", "unrolled")


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", default="quick", help="Config variant: quick | cpu | tiny | paper.")
  p.add_argument("--size", type=int, default=0, help="Image size (0 = the config's: 32 quick).")
  p.add_argument("--width", type=float, default=0.0, help="Width multiplier (0 = the config's).")
  p.add_argument("--dtype", default="", help="float32 | bfloat16 ('' = the config's).")
  p.add_argument("--blocks", default="",
                 help="Conv layers per block, e.g. 1,1,1,1,1 ('' = the config's).")
  p.add_argument("--archs", default="vgg19,sampled",
                 help="Comma-separated: vgg19 (the space's), sampled, sampled2, ..., smallest, "
                      "largest, or arch strings.")
  p.add_argument("--arch_seed", type=int, default=0, help="Key of the sampled architectures.")
  p.add_argument("--folds", type=int, default=10, help="k of the k-fold CV.")
  p.add_argument("--epochs", type=int, default=3, help="Epochs per fold (0 = the config's).")
  p.add_argument("--batch", type=int, default=0, help="Batch size (0 = the config's).")
  p.add_argument("--chunks", default="2,5,10", help="vmap chunk sizes (members per call).")
  p.add_argument("--forms", default=",".join(FORMS),
                 help=f"Forms to time (sequential always runs): {', '.join(FORMS)}.")
  p.add_argument("--alt_chunk", type=int, default=0,
                 help="Chunk of the vmap_xla_default and unrolled forms (0 = the largest of "
                      "--chunks that is <= 5).")
  p.add_argument("--compile_cache", default="off", help=common.COMPILE_CACHE_HELP)
  p.add_argument("--results_dir", default="",
                 help="Folder of the JSON (default benchmarks/results).")
  p.add_argument("--name", default="vmap_cv", help="JSON file name (without .json).")
  a = p.parse_args(argv)
  common.check_choice("config", a.config, common.VARIANTS)
  if a.dtype:
    common.check_choice("dtype", a.dtype, ("float32", "bfloat16"))
  common.check_size(a.size)
  common.check_name(a.name)
  if a.blocks:
    common.parse_ints("blocks", a.blocks)
  if a.width < 0 or a.epochs < 0 or a.batch < 0 or a.alt_chunk < 0:
    raise UserInputError("--width, --epochs, --batch and --alt_chunk must be >= 0")
  if a.folds < 2:
    raise UserInputError(f"--folds={a.folds}: need at least 2")
  a.chunk_list = common.parse_ints("chunks", a.chunks)
  a.form_list = ("sequential",) + tuple(f for f in common.parse_words("forms", a.forms, FORMS)
                                        if f != "sequential")
  a.alt = a.alt_chunk or max([c for c in a.chunk_list if c <= 5] or [min(a.chunk_list)])
  return a


def make_config(args):
  return common.override(common.get_config(args.config), size=args.size, width=args.width,
                         dtype=args.dtype, epochs=args.epochs, batch=args.batch,
                         blocks=args.blocks)


class Unrolled:
  """c members' steps (and evaluations) written out in one jitted program, without vmap.

  Built from the engine's single-split step and evaluate (`train._Core`, the functions
  `make_train_fn` compiles), so the members train exactly as `train` trains them; only the
  batching differs. A short last chunk is padded with copies, as the vmapped form pads it.
  """

  def __init__(self, arch, spec, recipe, sizes, num_images, chunk):
    # pylint: disable-next=protected-access  (the engine exposes no traceable step; see notes)
    self.core = train_lib._Core(arch, spec, recipe, sizes, num_images)
    self.recipe, self.chunk = recipe, int(chunk)
    self.fns = train_lib.make_train_fn(arch, spec, recipe, sizes, num_images=num_images,
                                       split_batching="sequential")
    self.step_exe = self.eval_exe = None
    self.compile_seconds = 0.0

  def _step(self, states, images, labels, splits):
    return tuple(self.core.step(s, images, labels, sp) for s, sp in zip(states, splits))

  def _evaluate(self, states, images, labels, splits, use_best):
    outs = [self.core.evaluate(s, images, labels, sp.eval_idx, sp.eval_w, sp.class_weight,
                               use_best) for s, sp in zip(states, splits)]
    return tuple(o[0] for o in outs), jnp.stack([o[2] for o in outs])

  def _members(self, keys, splits, members, data):
    padded = members + [members[0]] * (self.chunk - len(members))
    states = tuple(self.fns.init(keys[i], data.device) for i in padded)
    return states, jax.device_put(tuple(splits[i] for i in padded), data.device)

  def compile(self, keys, splits, data):
    """Compiles both programs for this data (ahead of time, with the engine's CPU options)."""
    t0 = time.perf_counter()
    states, sp = self._members(keys, splits, [0], data)
    options = programs.compiler_options(self.recipe, data.device)
    self.step_exe = jax.jit(self._step, donate_argnums=(0,)).lower(
        states, data.images, data.labels, sp).compile(compiler_options=options)
    zero = jax.device_put(np.zeros((), np.int32), data.device)
    self.eval_exe = jax.jit(self._evaluate, donate_argnums=(0,)).lower(
        states, data.images, data.labels, sp, zero).compile(compiler_options=options)
    self.compile_seconds = time.perf_counter() - t0
    return self.compile_seconds

  def train_many(self, keys, data, splits):
    """Validation losses [k][epochs] of every member (host numpy)."""
    zero = jax.device_put(np.zeros((), np.int32), data.device)
    losses = []
    for start in range(0, len(splits), self.chunk):
      members = list(range(start, min(start + self.chunk, len(splits))))
      states, sp = self._members(keys, splits, members, data)
      curves = []
      for _ in range(self.recipe.epochs):
        for _ in range(self.core.steps_per_epoch):
          states = self.step_exe(states, data.images, data.labels, sp)
        states, m = self.eval_exe(states, data.images, data.labels, sp, zero)
        curves.append(m)
      curves = np.asarray(jax.device_get(jnp.stack(curves)))  # [epochs, chunk, 3]
      losses += [curves[:, j, 1] for j in range(len(members))]
    return losses


def time_form(form, chunk, arch, spec, recipe, sizes, data, splits, keys) -> dict:
  """Compile and train seconds and the validation losses of one form."""
  if form == "unrolled":
    u = Unrolled(arch, spec, recipe, sizes, data.num_images, chunk)
    compile_s = u.compile(keys, splits, data)
    t0 = time.perf_counter()
    losses = u.train_many(keys, data, splits)
    train_s = time.perf_counter() - t0
    finite = all(np.all(np.isfinite(l)) for l in losses)
  else:
    if form == "vmap_xla_default":
      recipe = dataclasses.replace(recipe, cpu_opt_level=-1)  # Emitters: already XLA's.
    mode = "sequential" if form == "sequential" else "vmap"
    fns = train_lib.make_train_fn(arch, spec, recipe, sizes, num_images=data.num_images,
                                  split_batching=mode, vmap_chunk=chunk)
    compile_s = fns.programs(data.device).compile_seconds
    t0 = time.perf_counter()
    results = fns.train_many(keys, data, splits)
    train_s = time.perf_counter() - t0
    losses = [r.val_loss for r in results]
    finite = all(r.finite for r in results)
  return {"compile_seconds": compile_s, "train_seconds": train_s,
          "seconds_per_split": train_s / len(splits), "finite": bool(finite),
          "val_loss": [np.asarray(l, np.float64).tolist() for l in losses]}


def plan(args, platform: str) -> list:
  """(form label, form, chunk) in the order they run; sequential first (the reference)."""
  out = [("sequential", "sequential", 1)]
  if "vmap" in args.form_list:
    out += [(f"vmap {c}", "vmap", c) for c in args.chunk_list]
  if "vmap_xla_default" in args.form_list and platform == "cpu":
    out.append((f"vmap {args.alt} xla-default", "vmap_xla_default", args.alt))
  if "unrolled" in args.form_list:
    out.append((f"unrolled {args.alt}", "unrolled", args.alt))
  return out


def main(argv):
  args = parse_args(argv[1:])
  config = make_config(args)
  sp = space_lib.SearchSpace.from_config(config.space)
  arch_map = common.space_archs(args.archs, sp, args.arch_seed)
  cache = common.apply_compile_cache(args.compile_cache)
  size = int(config.data.image_size)
  images, labels = common.random_cohort(size)
  data = train_lib.DeviceData.from_numpy(images, labels)
  splits, keys, sizes = common.kfold_splits(config, labels, args.folds)
  spec = child_lib.ChildSpec.from_config(config, images.shape[1:], 2)
  # The forms are compared under XLA:CPU's fusion emitters (the default): under the older ones
  # (the tiny config's) the unrolled form rounds 5e-3 away from the sequential one (measured).
  recipe = dataclasses.replace(train_lib.Recipe.from_config(config), cpu_fusion_emitters=True)
  platform = data.device.platform
  rec = common.record("vmap_cv", argv, config_variant=args.config, size=size,
                      width=float(config.space.width_multiplier), dtype=config.train.dtype,
                      epochs=recipe.epochs, batch=recipe.batch_size, folds=args.folds,
                      num_train=sizes.num_train, num_eval=sizes.num_eval,
                      cpu_opt_level=recipe.cpu_opt_level, compile_cache=cache,
                      xla_flags=os.environ.get("XLA_FLAGS", ""),
                      default_split_batching=train_lib.default_split_batching(platform), rows=[])
  for arch_name, arch in arch_map.items():
    ref = None
    for label, form, chunk in plan(args, platform):
      t0 = time.perf_counter()
      row = {"arch": arch_name, "architecture": str(arch), "form": label, "kind": form,
             "chunk": chunk, "params": child_lib.count_params_for(arch, spec)}
      try:
        row.update(time_form(form, chunk, arch, spec, recipe, sizes, data, splits, keys))
      except Exception as e:  # pylint: disable=broad-except  (e.g. out of memory: keep going)
        row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
      row["wall_seconds"] = time.perf_counter() - t0
      if "error" not in row:
        if form == "sequential":
          ref = row
        if ref is not None:
          row["speedup"] = ref["train_seconds"] / row["train_seconds"]
          row["speedup_with_compile"] = ((ref["compile_seconds"] + ref["train_seconds"])
                                         / (row["compile_seconds"] + row["train_seconds"]))
          row["max_abs_val_loss_diff"] = float(np.max(np.abs(
              np.asarray(row["val_loss"]) - np.asarray(ref["val_loss"]))))
      rec["rows"].append(row)
      common.write_results(args.name, rec, args.results_dir or None)
      print(f"[vmap_cv] {arch_name} {label}: {row.get('error', 'done')} in "
            f"{row['wall_seconds']:.1f}s", flush=True)
  print_table(rec)
  return rec


def print_table(rec):
  print(f"\nk-fold CV, {rec['device']}, {rec['size']}px, width {rec['width']}, {rec['dtype']}, "
        f"{rec['folds']} folds x {rec['epochs']} epochs, batch {rec['batch']}, "
        f"{rec['num_train']} train rows; default here: {rec['default_split_batching']}"
        + (f"; XLA_FLAGS={rec['xla_flags']}" if rec["xla_flags"] else "") + f"; {rec['date']}")
  header = ["arch", "form", "compile s", "train s", "s/split", "speed-up", "(with compile)",
            "max |dloss|"]
  rows = []
  for r in rec["rows"]:
    if "error" in r:
      rows.append([r["arch"], r["form"], "error: " + r["error"][:60]] + [""] * (len(header) - 3))
      continue
    rows.append([r["arch"], r["form"], common.fmt(r["compile_seconds"]),
                 common.fmt(r["train_seconds"]), common.fmt(r["seconds_per_split"]),
                 common.fmt(r.get("speedup"), ".3f"), common.fmt(r.get("speedup_with_compile"),
                                                                  ".3f"),
                 common.fmt(r.get("max_abs_val_loss_diff"), ".2g")])
  print(common.table(rows, header))


if __name__ == "__main__":
  try:
    main(sys.argv)
  except UserInputError as e:
    sys.exit(f"error: {e}")
