"""Training-recipe sweep: which CPU budgets make the quick/cpu variants' models learn.

  python benchmarks/recipes.py --variant=quick --cohort_seed=1 --folds=3 --children=2 \
      --recipes='base;train.epochs=25;data.image_size=48,data.synthetic.render_size=96'

Each recipe (a `;`-separated list; each a `,`-separated list of config overrides on top of the
variant; `--variant=paper` is the default config) trains VGG19 and `--children` uniformly sampled
children (the same ones for every recipe) `--test_seeds` times on `--folds` subject-grouped outer
folds of the cohort (`data.synthetic.seed=--cohort_seed`: tune on another cohort than the one
reported), exactly as the pipeline's test trainings do (train part, validation part for the
weights, test part scored once). Prints one row per (recipe, model) with mean test AUROC (image
and subject level, the latter with the report's subjects-and-trainings bootstrap CI), accuracy,
sensitivity, specificity, the degenerate trainings (`metrics.degenerate`), whether the model
learned by the report's rule (CI above 0.5, none degenerate), and the seconds spent (compile
included); writes benchmarks/results/recipes_<name>.json.
"""

import argparse
import ast
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from benchmarks import common  # pylint: disable=g-import-not-at-top
from nasrl_jax import evaluate, metrics, pipeline, space  # pylint: disable=g-import-not-at-top
from nasrl_jax import stats  # pylint: disable=g-import-not-at-top
from nasrl_jax.errors import UserInputError  # pylint: disable=g-import-not-at-top


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--variant", default="quick", help="quick | cpu | paper (the default config).")
  p.add_argument("--cohort_seed", type=int, default=1, help="Simulator cohort (1: tuning).")
  p.add_argument("--folds", type=int, default=3, help="Outer folds (subject-grouped).")
  p.add_argument("--children", type=int, default=2, help="Sampled children besides VGG19.")
  p.add_argument("--test_seeds", type=int, default=1, help="Trainings per model and fold.")
  p.add_argument("--recipes", default="base", help="';'-separated override lists ('base' = none).")
  p.add_argument("--name", default="quick")
  p.add_argument("--workdir", default="/tmp/nasrl_recipes")
  p.add_argument("--results_dir", default="", help="'' = benchmarks/results.")
  args = p.parse_args(argv)
  if args.folds < 2:
    raise UserInputError(f"--folds={args.folds}: need at least 2")
  return args


def _apply(config, overrides: str):
  for item in [o for o in overrides.split(",") if o.strip() and o.strip() != "base"]:
    key, value = item.split("=", 1)
    node = config
    *path, last = key.strip().split(".")
    for part in path:
      node = node[part]
    old = node[last]
    if isinstance(old, tuple):  # a+b+c (commas separate overrides).
      node[last] = tuple(v for v in value.split("+") if v)
    elif isinstance(old, str):
      node[last] = value
    else:
      node[last] = type(old)(ast.literal_eval(value))
  return config


def _scores(result):
  y = np.asarray(result["test"]["label"]) > 0
  p = 1.0 - np.asarray(result["test"]["prob"])[:, 0]
  pred = p >= 0.5
  part = _subject_part(result)
  return {"auroc": metrics.auroc(y.astype(int), np.stack([1 - p, p], 1), 2),
          "subject_auroc": metrics.binary_metrics(part["label"], part["score"])["auroc"],
          "degenerate": metrics.degenerate(p, result["val_threshold"]),
          "accuracy": float(np.mean(pred == y)),
          "sensitivity": float(np.mean(pred[y])) if y.any() else float("nan"),
          "specificity": float(np.mean(~pred[~y])) if (~y).any() else float("nan")}


def run_recipe(args, overrides: str) -> list:
  from tests.conftest import load_config  # pylint: disable=g-import-not-at-top
  c = load_config(None if args.variant == "paper" else args.variant)
  c.max_hours = 0.0  # This is not a search: no pre-flight stop.
  c.data.synthetic.seed = args.cohort_seed
  c.eval.outer_folds = args.folds
  c.compile_cache_dir = ""
  _apply(c, overrides)
  tag = "".join(ch if ch.isalnum() else "_" for ch in overrides)[:80]
  r = pipeline.prepare(c, os.path.join(args.workdir, f"{args.variant}_{args.cohort_seed}_{tag}"),
                       check=False)
  sp = space.SearchSpace.from_config(r.config.space)
  archs = {"VGG19": sp.vgg19}
  for k in range(args.children):
    archs[f"child{k}"] = sp.sample(jax.random.key(1000 + k))
  rows = []
  for name, arch in archs.items():
    t0 = time.time()
    per_fold, parts = [], {}
    for i, fold in enumerate(r.folds):
      for t in range(args.test_seeds):
        result, _ = evaluate.final_training(r, fold, i, arch, training_seed=t)
        per_fold.append(dict(_scores(result), fold=i, training_seed=t))
        parts.setdefault(i, {})[t] = _subject_part(result)
    row = {"recipe": overrides, "model": name, "architecture": str(arch),
           "seconds": time.time() - t0,
           "steps_per_fold": r.config.train.epochs * r.sizes.num_train // r.config.train.batch_size}
    for k in ("auroc", "accuracy", "sensitivity", "specificity", "subject_auroc"):
      row[k] = float(np.nanmean([f[k] for f in per_fold]))
      row[k + "_folds"] = [f[k] for f in per_fold]
    row.update(_learned(parts, per_fold))
    rows.append(row)
    print(f"{overrides[:60]:60s} {name:7s} AUROC {row['auroc']:.3f} subject AUROC "
          f"{row['subject_auroc']:.3f} {row['subject_auroc_ci95']} degenerate "
          f"{row['degenerate']}/{len(per_fold)} learned {row['learned']} acc "
          f"{row['accuracy']:.3f} spec {row['specificity']:.3f} {row['seconds']:.0f}s", flush=True)
  return rows


def _subject_part(result):
  label, score = metrics.binary_view(np.asarray(result["test"]["label"]),
                                     np.asarray(result["test"]["prob"]))
  subjects, ys, ps = metrics.subject_level(np.asarray(result["test"]["subject_id"]), label, score)
  return {"subject": subjects, "label": ys, "score": ps}


def _learned(parts, per_fold):
  """The report's rule on these trainings: subject-level AUROC interval (subjects and trainings
  resampled within each fold) above 0.5 and no degenerate training."""
  stat = lambda w, p: {"auroc": metrics.weighted_auroc(w, p["label"], p["score"])}
  boot = stats.fold_bootstrap({"m": parts}, stat)["m"]
  low, high = (float(x) for x in boot["ci"]["auroc"])
  degenerate = sum(f["degenerate"] for f in per_fold)
  return {"subject_auroc_ci95": [round(low, 3), round(high, 3)], "degenerate": degenerate,
          "learned": bool(low > 0.5 and degenerate == 0)}


def main(argv):
  try:
    args = parse_args(argv)
  except UserInputError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  rec = common.record(f"recipes_{args.name}", ["benchmarks/recipes.py"] + list(argv), rows=[],
                      variant=args.variant, cohort_seed=args.cohort_seed, folds=args.folds,
                      test_seeds=args.test_seeds)
  for overrides in args.recipes.split(";"):
    rec["rows"] += run_recipe(args, overrides.strip())
    common.write_results(f"recipes_{args.name}", rec, args.results_dir or None)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
