"""Class-balancing modes side by side: VGG19 k-fold CV on the simulator, one row per mode.

  python benchmarks/balance_modes.py                   # quick config, every outer fold
  python benchmarks/balance_modes.py --config=tiny --folds=1 --modes=none,rot90 --augment=none

For each `config.data.balance` mode (none, loss_weight, upright_sample, repeat, rot90; issue 12
item 3) and, for the modes named by --augment, once more with `data.augment=("hflip", "gain")`,
VGG19 (the config space's) goes through the pipeline's own test trainings: `pipeline.prepare`
builds the run (cohort, outer folds by subject, padded sizes, the mode's balanced splits), and for
each outer fold `evaluate.final_training` trains on the fold's train part, keeps the weights of
the best validation loss and tests once on its test part, as the nested protocol trains VGG19.
Same folds, epochs and seed for every row. Reported per row: image-level test accuracy,
sensitivity and specificity at threshold 0.5, AUROC (`metrics.binary_metrics`), each the mean
(and sd) over the outer folds, and wall seconds (compile + training). rot90 is the paper's
balancing; its rotated copies are all minority-class images, so orientation can carry the label
(DESIGN.md). Writes benchmarks/results/balance_modes.json after every row and prints a table last:

  balance  augment  folds  accuracy  sensitivity  specificity  AUROC  seconds
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top

from benchmarks import common  # pylint: disable=g-import-not-at-top
from nasrl_jax.errors import UserInputError  # pylint: disable=g-import-not-at-top

MODES = ("none", "loss_weight", "upright_sample", "repeat", "rot90")  # evaluate.BALANCE_MODES
AUGMENT = ("hflip", "gain")
METRICS = ("accuracy", "sensitivity", "specificity", "auroc")


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", default="quick", help="Config variant: quick | cpu | tiny | paper.")
  p.add_argument("--modes", default=",".join(MODES), help="Balance modes, comma-separated.")
  p.add_argument("--augment", default="loss_weight",
                 help="Modes also run with data.augment=hflip,gain (comma-separated; 'none' = "
                      "no augmented rows).")
  p.add_argument("--arch", default="vgg19",
                 help="vgg19 (the config space's), sampled, ... or an architecture string.")
  p.add_argument("--outer_folds", type=int, default=0,
                 help="Outer folds of the CV (0 = the config's eval.outer_folds).")
  p.add_argument("--folds", type=int, default=0,
                 help="How many of the outer folds to train (0 = all).")
  p.add_argument("--epochs", type=int, default=0, help="Epochs per training (0 = the config's).")
  p.add_argument("--seed", type=int, default=0,
                 help="Training seed (rng.training_key's training seed).")
  p.add_argument("--data_cache", default="",
                 help="Simulator cache folder ('' = the config's, ~/.cache/nasrl_jax).")
  p.add_argument("--workdir", default="", help="Folder for folds.json per row ('' = a temp dir).")
  p.add_argument("--compile_cache", default="off", help=common.COMPILE_CACHE_HELP)
  p.add_argument("--results_dir", default="",
                 help="Folder of the JSON (default benchmarks/results).")
  p.add_argument("--name", default="balance_modes", help="JSON file name (without .json).")
  a = p.parse_args(argv)
  common.check_choice("config", a.config, common.VARIANTS)
  common.check_name(a.name)
  a.mode_list = common.parse_words("modes", a.modes, MODES)
  a.augment_list = () if a.augment.strip() == "none" else common.parse_words(
      "augment", a.augment, MODES)
  if a.outer_folds < 0 or a.folds < 0 or a.epochs < 0:
    raise UserInputError("--outer_folds, --folds and --epochs must be >= 0")
  if a.outer_folds == 1:
    raise UserInputError("--outer_folds=1: need at least 2 (or 0 = the config's)")
  from nasrl_jax import space as space_lib  # pylint: disable=g-import-not-at-top
  sp = space_lib.SearchSpace.from_config(make_config(a, a.mode_list[0], ()).space)
  a.architecture = list(common.space_archs(a.arch, sp).values())[0]  # Checked before any work.
  return a


def row_plan(args) -> list:
  """(balance mode, augment tuple) per row, in order."""
  plan = [(m, ()) for m in args.mode_list]
  plan += [(m, AUGMENT) for m in args.augment_list]
  return plan


def make_config(args, mode, augment):
  c = common.override(common.get_config(args.config), epochs=args.epochs)
  c.data.balance = mode
  c.data.augment = tuple(augment)
  if args.outer_folds:
    c.eval.outer_folds = args.outer_folds
  if args.data_cache:
    c.data.cache_dir = args.data_cache
  c.eval.final_search = False
  return c


def measure(args, mode, augment, workdir) -> dict:
  """One row: VGG19 through the outer folds under one balance/augment setting."""
  from nasrl_jax import evaluate  # pylint: disable=g-import-not-at-top
  from nasrl_jax import metrics  # pylint: disable=g-import-not-at-top
  from nasrl_jax import pipeline  # pylint: disable=g-import-not-at-top
  t0 = time.perf_counter()
  config = make_config(args, mode, augment)
  run = pipeline.prepare(config, workdir, check=False)
  arch = args.architecture
  n = len(run.folds) if not args.folds else min(args.folds, len(run.folds))
  folds = []
  for k in range(n):
    result, _ = evaluate.final_training(run, run.folds[k], k, arch, training_seed=args.seed)
    label, score = metrics.binary_view(np.asarray(result["test"]["label"]),
                                       np.asarray(result["test"]["prob"]))
    m = metrics.binary_metrics(label, score, threshold=0.5)
    folds.append({"fold": k, "n_train": result["n_train"], "n_test": result["n_test"],
                  "best_epoch": result["best_epoch"], **{x: m[x] for x in METRICS}})
  row = {"balance": mode, "augment": list(augment), "architecture": str(arch),
         "num_train_padded": run.sizes.num_train, "folds": folds, "seconds": 0.0}
  for x in METRICS:
    vals = np.asarray([f[x] for f in folds], np.float64)
    ok = vals[np.isfinite(vals)]
    row[x] = float(np.mean(ok)) if ok.size else None
    row[x + "_sd"] = float(np.std(ok, ddof=1)) if ok.size > 1 else None
  row["seconds"] = time.perf_counter() - t0
  return row


def main(argv):
  args = parse_args(argv[1:])
  cache = common.apply_compile_cache(args.compile_cache)
  config = make_config(args, args.mode_list[0], ())
  rec = common.record("balance_modes", argv, config_variant=args.config,
                      image_size=int(config.data.image_size),
                      width=float(config.space.width_multiplier), epochs=int(config.train.epochs),
                      outer_folds=int(config.eval.outer_folds or config.data.num_folds),
                      folds_run=args.folds or None, seed=args.seed, arch=args.arch,
                      compile_cache=cache, rows=[])
  root = args.workdir or tempfile.mkdtemp(prefix="nasrl_balance_modes_")
  for mode, augment in row_plan(args):
    label = mode + ("+" + "+".join(augment) if augment else "")
    t0 = time.perf_counter()
    try:
      row = measure(args, mode, augment, os.path.join(root, label))
    except UserInputError:
      raise
    except Exception as e:  # pylint: disable=broad-except  (keep the other modes)
      row = {"balance": mode, "augment": list(augment),
             "error": f"{type(e).__name__}: {str(e)[:300]}", "seconds": time.perf_counter() - t0}
    rec["rows"].append(row)
    common.write_results(args.name, rec, args.results_dir or None)
    print(f"[balance_modes] {label}: {row.get('error', 'done')} in {row['seconds']:.1f}s",
          flush=True)
  print_table(rec)
  return rec


def print_table(rec):
  print(f"\nbalance modes, {rec['device']}, config {rec['config_variant']} ({rec['image_size']}px,"
        f" width {rec['width']}, {rec['epochs']} epochs), {rec['arch']} over "
        f"{rec['folds_run'] or rec['outer_folds']} of {rec['outer_folds']} outer folds, seed "
        f"{rec['seed']}; test metrics at threshold 0.5, mean (sd) over folds; {rec['date']}")
  header = ["balance", "augment", "folds", "accuracy", "sensitivity", "specificity", "AUROC",
            "seconds"]
  rows = []
  cell = lambda r, k: (common.fmt(r[k], ".3f") + (f" ({r[k + '_sd']:.2f})"
                                                  if r.get(k + "_sd") is not None else ""))
  for r in rec["rows"]:
    aug = ",".join(r["augment"]) or "-"
    if "error" in r:
      rows.append([r["balance"], aug, "error: " + r["error"][:60]] + [""] * (len(header) - 3))
      continue
    rows.append([r["balance"], aug, len(r["folds"])] + [cell(r, k) for k in METRICS]
                + [common.fmt(r["seconds"], ".4g")])
  print(common.table(rows, header))


if __name__ == "__main__":
  try:
    main(sys.argv)
  except UserInputError as e:
    sys.exit(f"error: {e}")
