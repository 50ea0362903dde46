"""Reward fidelity: does a higher search reward mean a better tested model?

  python benchmarks/reward_fidelity.py --config=configs/fatty_liver.py:cpu \
      --children=16 --folds=2 --test_seeds=1 --name=reward_fidelity_screen_base [--config.X=Y ...]

Takes the same --config flags as launch.py (so a user can run it on tuning subjects of their own
cohort), on the tuning cohort by default: the simulator's evaluation cohort (seed 0) is switched to
the first of configs/fatty_liver.py's TUNING_COHORTS unless --allow_evaluation_cohort is given.
`--children` architectures sampled uniformly from the search space (the raw material of every
search; the same ones for every recipe) and VGG19 go through `--folds` subject-grouped outer folds.
In each fold a child is scored as the search scores it (its reward on the fold's first reward
split, and its re-scored reward with a fresh seed beside it) and then trained and tested as the
protocol tests a winner (`--test_seeds` test trainings on the fold's train part, tested on its test
part). Per child: the mean reward over folds and the mean tested subject-level AUROC over folds
(a fold's value: the mean over its test trainings, as the report scores a fold).

Kendall's tau between the two, over children (not over (child, fold) pairs, which would measure
fold difficulty), with a percentile bootstrap CI over children; failed and degenerate children
stay in (a failed child's reward ranks lowest, a failed test training counts as AUROC 0.5).
Beside tau: the spread of tested AUROC between children, the reward's between/within ratio, the
share of degenerate trainings (`metrics.degenerate`), VGG19's AUROC and the seconds. Writes
benchmarks/results/<name>.json (rewritten after every architecture) and prints a table row.
"""

import dataclasses
import math
import os
import shlex
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # pylint: disable=g-import-not-at-top
import jax  # pylint: disable=g-import-not-at-top
import ml_collections  # pylint: disable=g-import-not-at-top
from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import scipy.stats  # pylint: disable=g-import-not-at-top

from benchmarks import common  # pylint: disable=g-import-not-at-top
from nasrl_jax import evaluate, metrics, pipeline, reinforce  # pylint: disable=g-import-not-at-top
from nasrl_jax import child as child_lib  # pylint: disable=g-import-not-at-top
from nasrl_jax import rng as rng_lib  # pylint: disable=g-import-not-at-top
from nasrl_jax import space as space_lib  # pylint: disable=g-import-not-at-top
from nasrl_jax import train as train_lib  # pylint: disable=g-import-not-at-top
from nasrl_jax.errors import UserInputError  # pylint: disable=g-import-not-at-top

TUNING_COHORT = 1  # configs/fatty_liver.py TUNING_COHORTS[0] (the config file is not a module).
BOOTSTRAP = 2000
FAILED_AUROC = 0.5  # A test training that failed (non-finite) ranks as chance.


def _flags(argv):
  fv = flags.FlagValues()
  # sys_argv: config_flags defines the --config.x.y override flags it finds in the command line;
  # in-process (tests) that line is `argv`, not sys.argv.
  holder = config_flags.DEFINE_config_file(
      "config", "configs/fatty_liver.py:cpu", "Experiment config, as launch.py's.",
      flag_values=fv, lock_config=False, sys_argv=list(argv))
  flags.DEFINE_integer("children", 16, "Uniformly sampled children besides VGG19.", flag_values=fv)
  flags.DEFINE_integer("folds", 2, "Subject-grouped outer folds.", flag_values=fv)
  flags.DEFINE_integer("test_seeds", 1, "Test trainings per child and fold.", flag_values=fv)
  flags.DEFINE_integer("sample_seed", 0, "Seed of the children's sampling (keep it across "
                       "recipes: the same children).", flag_values=fv)
  flags.DEFINE_string("name", "reward_fidelity", "Results file name (benchmarks/results/).",
                      flag_values=fv)
  flags.DEFINE_string("results_dir", "", "Folder of the results file ('' = benchmarks/results).",
                      flag_values=fv)
  flags.DEFINE_string("workdir", "/tmp/nasrl_fidelity", "Folder for folds.json.", flag_values=fv)
  flags.DEFINE_bool("allow_evaluation_cohort", False, "Run on the simulator's cohort 0 (the "
                    "evaluation cohort; never for choosing a recipe).", flag_values=fv)
  return fv, holder


@dataclasses.dataclass
class Row:
  """One architecture over the folds."""
  name: str
  architecture: str
  folds: list = dataclasses.field(default_factory=list)
  seconds: float = 0.0

  def mean(self, key):
    values = [f[key] for f in self.folds if f[key] is not None and math.isfinite(f[key])]
    return float(np.mean(values)) if values else math.nan


def _split_rewards(run, fns, fold, outer, replica, arch):
  """The reward as the search computes it (replica 0) or as re-scoring does (replica 1..):
  the mean over the fold's reward splits of `reinforce.split_reward`; NaN if a split diverged."""
  splits, keys = run.reward_splits(fold, outer, 0, replica)
  results = fns.train_many(keys, run.data, splits, tag={"phase": "fidelity"})
  if not all(r.finite for r in results):
    return math.nan
  params = child_lib.count_params_for(arch, run.spec)
  return float(np.mean([reinforce.split_reward(r, params, run.config,
                                               run.num_classes)["reward"] for r in results]))


def _tested(run, fold, outer, arch, t):
  """(subject-level AUROC, degenerate) of one test training; (FAILED_AUROC, False) if it failed."""
  try:
    result, _ = evaluate.final_training(run, fold, outer, arch, training_seed=t)
  except train_lib.ChildTrainingError:
    return FAILED_AUROC, False, "failed"
  label, score = metrics.binary_view(np.asarray(result["test"]["label"]),
                                     np.asarray(result["test"]["prob"]))
  _, ys, ps = metrics.subject_level(np.asarray(result["test"]["subject_id"]), label, score)
  auroc = metrics.binary_metrics(ys, ps)["auroc"]
  return auroc, metrics.degenerate(score, result["val_threshold"]), "ok"


def measure(run, name, arch, test_seeds) -> Row:
  t0 = time.perf_counter()
  row = Row(name, str(arch))
  fns = run.factory(arch)
  for i, fold in enumerate(run.folds):
    reward = _split_rewards(run, fns, fold, i, rng_lib.SEARCH_REPLICA, arch)
    rescore = _split_rewards(run, fns, fold, i, rng_lib.SEARCH_REPLICA + 1, arch)
    tests = [_tested(run, fold, i, arch, t) for t in range(test_seeds)]
    row.folds.append({"fold": i, "reward": reward, "rescore": rescore,
                      "test_auroc": float(np.mean([a for a, _, _ in tests])),
                      "test_aurocs": [a for a, _, _ in tests],
                      "degenerate": [bool(d) for _, d, _ in tests],
                      "status": [s for _, _, s in tests]})
  row.seconds = time.perf_counter() - t0
  return row


def kendall(rewards, aurocs, n_boot=BOOTSTRAP, seed=0) -> dict:
  """Kendall's tau-b between per-child rewards and tested AUROCs, with a bootstrap CI over children.

  A NaN reward (failed child) ranks below every finite one; a NaN AUROC counts as chance.
  """
  r = np.asarray(rewards, np.float64)
  a = np.asarray(aurocs, np.float64)
  if r.size < 3:
    return {"tau": math.nan, "tau_ci95": None, "p": math.nan}
  finite = np.isfinite(r)
  r = np.where(finite, r, (np.min(r[finite]) - 1.0) if finite.any() else 0.0)
  a = np.where(np.isfinite(a), a, FAILED_AUROC)
  tau, p = scipy.stats.kendalltau(r, a)
  rng = np.random.default_rng(seed)
  draws = rng.integers(0, r.size, size=(n_boot, r.size))
  boot = np.array([scipy.stats.kendalltau(r[d], a[d])[0] for d in draws])
  boot = boot[np.isfinite(boot)]
  ci = [float(x) for x in np.percentile(boot, [2.5, 97.5])] if boot.size else None
  return {"tau": float(tau), "tau_ci95": ci, "p": float(p)}


def between_within(rows) -> float:
  """sd between children of the mean reward / sd within a child (reward vs re-scored reward)."""
  within = [(f["reward"] - f["rescore"]) ** 2 / 2 for r in rows for f in r.folds
            if math.isfinite(f["reward"]) and math.isfinite(f["rescore"])]
  means = [np.nanmean([[f["reward"], f["rescore"]] for f in r.folds]) for r in rows]
  means = [m for m in means if math.isfinite(m)]
  if len(means) < 2 or not within:
    return math.nan
  return float(np.std(means, ddof=1) / math.sqrt(np.mean(within)))


def summarise(rows, vgg19) -> dict:
  rewards = [r.mean("reward") for r in rows]
  aurocs = [r.mean("test_auroc") for r in rows]
  fid = kendall(rewards, aurocs)
  fid_rescore = kendall([r.mean("rescore") for r in rows], aurocs, seed=1)
  degenerate = [d for r in rows for f in r.folds for d in f["degenerate"]]
  return {"tau": fid["tau"], "tau_ci95": fid["tau_ci95"], "tau_p": fid["p"],
          "tau_rescore": fid_rescore["tau"], "tau_rescore_ci95": fid_rescore["tau_ci95"],
          "children": len(rows), "children_auroc_mean": float(np.nanmean(aurocs)),
          "auroc_spread": float(np.nanstd(aurocs, ddof=1)) if len(rows) > 1 else math.nan,
          "auroc_range": [float(np.nanmin(aurocs)), float(np.nanmax(aurocs))],
          "reward_between_within": between_within(rows),
          "near_constant_share": float(np.mean(degenerate)) if degenerate else math.nan,
          "vgg19_auroc": vgg19.mean("test_auroc") if vgg19 else math.nan,
          "vgg19_degenerate": (sum(d for f in vgg19.folds for d in f["degenerate"])
                               if vgg19 else None)}


def _config(fv, holder):
  config = ml_collections.ConfigDict(holder.value)
  config.eval.outer_folds = int(fv.folds)
  config.eval.test_seeds = int(fv.test_seeds)
  if config.data.source == "synthetic" and not fv.allow_evaluation_cohort and \
      int(config.data.synthetic.seed) == 0:
    config.data.synthetic.seed = TUNING_COHORT
    print(f"[reward_fidelity] cohort: synthetic seed {TUNING_COHORT} (the tuning cohort; seed 0 "
          "is the evaluation cohort)", flush=True)
  if fv.children < 3 or fv.folds < 2 or fv.test_seeds < 1:
    raise UserInputError(f"--children={fv.children} (>= 3), --folds={fv.folds} (>= 2) and "
                         f"--test_seeds={fv.test_seeds} (>= 1) are needed")
  return config


def run_benchmark(fv, holder, argv) -> dict:
  config = _config(fv, holder)
  harmless = ("--config.compile_cache_dir", "--config.data.cache_dir", "--config.log_every_s")
  recipe = " ".join(a for a in argv[1:] if a.startswith("--config.") and
                    not a.startswith(harmless))
  workdir = os.path.join(fv.workdir, fv.name)
  t_start = time.perf_counter()
  run = pipeline.prepare(config, workdir, check=False)
  space = space_lib.SearchSpace.from_config(run.config.space)
  archs = {"VGG19": space.vgg19}
  archs.update({f"child{k}": space.sample(jax.random.key(1000 * fv.sample_seed + k))
                for k in range(fv.children)})
  rec = common.record(fv.name, argv, recipe=recipe or "base",
                      cohort_seed=(int(run.config.data.synthetic.seed)
                                   if run.config.data.source == "synthetic" else None),
                      reward_metric=run.config.controller.reward_metric,
                      git_commit=pipeline.git_commit(),
                      folds=fv.folds, test_seeds=fv.test_seeds, rows=[])
  rows, vgg19 = [], None
  for name, arch in archs.items():
    row = measure(run, name, arch, fv.test_seeds)
    rec["rows"].append(dataclasses.asdict(row))
    if name == "VGG19":
      vgg19 = row
    else:
      rows.append(row)
    if len(rows) >= 3:
      rec.update(summarise(rows, vgg19))
    rec["seconds"] = time.perf_counter() - t_start
    common.write_results(fv.name, rec, fv.results_dir or None)
    print(f"[reward_fidelity] {name}: reward {row.mean('reward'):.4f}, tested AUROC "
          f"{row.mean('test_auroc'):.3f} ({row.seconds:.0f}s)", flush=True)
  return rec


def main(argv) -> dict:
  """Runs the benchmark (argv as sys.argv); returns its record. Bad flags or input: one line on
  stderr and exit code 2."""
  fv, holder = _flags(argv)
  try:
    fv(argv)
    rec = run_benchmark(fv, holder, argv)
  except (flags.Error, UserInputError) as e:
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    sys.exit(2)
  print(common.table([[rec["recipe"], common.fmt(rec["tau"]), str(rec["tau_ci95"]),
                       common.fmt(rec["children_auroc_mean"]), common.fmt(rec["auroc_spread"]),
                       common.fmt(rec["near_constant_share"]), common.fmt(rec["vgg19_auroc"]),
                       common.fmt(rec["seconds"], ".0f")]],
                     ["recipe", "tau", "tau 95% CI", "children AUROC", "spread",
                      "degenerate", "VGG19", "s"]))
  return rec


if __name__ == "__main__":
  main(sys.argv)
