"""Search strategies on a toy landscape: REINFORCE at several learning rates, evolution, random.

  python benchmarks/controller_toy.py [--samples=1000] [--seeds=3] [--lrs=6e-4,2e-3,4e-3,1e-2]

Reward = fraction of the 32 decisions that agree with a hidden target architecture (one per seed,
a uniform sample of the default space): a smooth landscape with one optimum, cheap enough for
thousands of samples. Every strategy is the library's own (`strategies.make`: the REINFORCE
controller at each --lrs learning rate, regularized evolution with the config's population and
tournament, random search), run as one jitted `strategies.scan_search` (ask -> reward -> tell,
`lax.scan` over steps) of --samples // --children steps. Prints, per strategy, the mean reward of
the first and last 100 samples and the best reward found (means over seeds); writes
benchmarks/results/controller_toy.json and prints a table last:

  strategy  first 100  last 100  best  seconds
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from benchmarks import common  # pylint: disable=g-import-not-at-top
from nasrl_jax import space as space_lib  # pylint: disable=g-import-not-at-top
from nasrl_jax import strategies  # pylint: disable=g-import-not-at-top
from nasrl_jax.errors import UserInputError  # pylint: disable=g-import-not-at-top

ZOPH_LR = 6e-4  # Zoph & Le's controller learning rate (made for 12,800 children).


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--samples", type=int, default=1000, help="Children per search.")
  p.add_argument("--seeds", type=int, default=3, help="Searches per strategy (targets differ).")
  p.add_argument("--children", type=int, default=8, help="Children per step.")
  p.add_argument("--lrs", default="6e-4,2e-3,4e-3,1e-2",
                 help="Controller learning rates of the REINFORCE rows.")
  p.add_argument("--strategies", default="reinforce,evolution,random",
                 help="Strategies to run (reinforce once per learning rate).")
  p.add_argument("--window", type=int, default=100, help="Samples in the first/last means.")
  p.add_argument("--reward_scale", type=float, default=1.0,
                 help="Reward = offset + scale x agreement + noise: put the toy reward on the "
                      "scale of the search's real reward (e.g. val_nll's -0.7..-0.4).")
  p.add_argument("--reward_offset", type=float, default=0.0, help="See --reward_scale.")
  p.add_argument("--noise_sd", type=float, default=0.0,
                 help="sd of Gaussian noise drawn afresh for every evaluation (training noise).")
  p.add_argument("--entropy_weights", default="",
                 help="Comma-separated entropy weights of the REINFORCE rows ('' = config's).")
  p.add_argument("--baseline_decays", default="",
                 help="Comma-separated EMA baseline decays of the REINFORCE rows ('' = config's).")
  p.add_argument("--results_dir", default="",
                 help="Folder of the JSON (default benchmarks/results).")
  p.add_argument("--name", default="controller_toy", help="JSON file name (without .json).")
  a = p.parse_args(argv)
  common.check_name(a.name)
  if a.children < 1 or a.seeds < 1 or a.window < 1:
    raise UserInputError("--children, --seeds and --window must be >= 1")
  if a.samples < a.children:
    raise UserInputError(f"--samples={a.samples}: need at least --children={a.children}")
  try:
    a.lr_list = tuple(float(w) for w in a.lrs.split(",") if w.strip())
  except ValueError:
    raise UserInputError(f"--lrs={a.lrs!r}: give comma-separated numbers") from None
  if not a.lr_list or min(a.lr_list) <= 0:
    raise UserInputError(f"--lrs={a.lrs!r}: give learning rates > 0")
  a.strategy_list = common.parse_words("strategies", a.strategies, strategies.names())
  a.entropy_list = _floats("entropy_weights", a.entropy_weights, lo=0.0)
  a.decay_list = _floats("baseline_decays", a.baseline_decays, lo=0.0, hi=1.0)
  if a.noise_sd < 0 or a.reward_scale <= 0:
    raise UserInputError("--noise_sd must be >= 0 and --reward_scale > 0")
  return a


def _floats(name, text, lo, hi=None):
  """'' -> (None,) (the config's value); else the comma-separated numbers, range-checked."""
  if not text.strip():
    return (None,)
  try:
    values = tuple(float(w) for w in text.split(",") if w.strip())
  except ValueError:
    raise UserInputError(f"--{name}={text!r}: give comma-separated numbers") from None
  if not values or min(values) < lo or (hi is not None and max(values) >= hi):
    raise UserInputError(f"--{name}={text!r}: values must lie in [{lo}, {hi or 'inf'})")
  return values


def plan(args, config) -> list:
  """(row name, strategy name, controller overrides or None) per row."""
  rows = []
  for name in args.strategy_list:
    if name != "reinforce":
      rows.append((name, name, None))
      continue
    default = float(config.controller.learning_rate)
    for lr in args.lr_list:
      for ent in args.entropy_list:
        for decay in args.decay_list:
          tags = [t for t, hit in ((" (Zoph)", lr == ZOPH_LR), (" (default)", lr == default))
                  if hit]
          extra = "".join(f" {k} {v:g}" for k, v in (("entropy", ent), ("decay", decay))
                          if v is not None)
          over = {"learning_rate": lr, "entropy_weight": ent, "baseline_decay": decay}
          rows.append((f"reinforce lr {lr:g}{extra}" + "".join(tags), name,
                       {k: v for k, v in over.items() if v is not None}))
  return rows


def run_strategy(name, overrides, config, space, args) -> list:
  """[float[samples]] per seed: the rewards of each search, in sampling order.

  One jitted search per strategy row; seeds differ only in the key and the hidden target, and
  calls only in the reward's scale, offset and noise (all arguments), so they share its compiled
  program (in one process, or through a persistent compilation cache).
  """
  config = config.copy_and_resolve_references()
  for k, v in (overrides or {}).items():
    config.controller[k] = v
  strategy = strategies.make(name, config, space, children_per_step=args.children)
  steps = args.samples // args.children

  def search(key, target, scale, offset, noise_sd):
    def reward(actions, k):
      agree = jnp.mean((actions == target).astype(jnp.float32), axis=1)
      noise = noise_sd * jax.random.normal(k, agree.shape)
      return offset + scale * agree + noise
    return strategies.scan_search(strategy, reward, key, steps, with_key=True)[2]

  search = jax.jit(search)
  out = []
  for seed in range(args.seeds):
    target = jnp.asarray(space.encode(space.sample(jax.random.key(1000 + seed))))
    out.append(np.asarray(search(jax.random.key(seed), target, args.reward_scale,
                                 args.reward_offset, args.noise_sd)).reshape(-1))
  return out


def main(argv):
  args = parse_args(argv[1:])
  config = common.get_config("paper")
  space = space_lib.SearchSpace.from_config(config.space)
  rec = common.record("controller_toy", argv, samples=args.samples, seeds=args.seeds,
                      children_per_step=args.children, window=args.window,
                      reward_scale=args.reward_scale, reward_offset=args.reward_offset,
                      noise_sd=args.noise_sd,
                      population=int(config.evolution.population),
                      tournament=int(config.evolution.tournament), rows=[])
  w = args.window
  for row_name, name, over in plan(args, config):
    t0 = time.perf_counter()
    res = run_strategy(name, over, config, space, args)
    rec["rows"].append({
        "strategy": row_name, "name": name, **(over or {"learning_rate": None}),
        "first": float(np.mean([r[:w].mean() for r in res])),
        "last": float(np.mean([r[-w:].mean() for r in res])),
        "best": float(np.mean([r.max() for r in res])),
        "seconds": time.perf_counter() - t0})
    common.write_results(args.name, rec, args.results_dir or None)
  print(f"\ntoy landscape (agreement with a hidden target, {space.num_decisions} decisions), "
        f"{args.samples} samples x {args.seeds} seeds, {args.children} per step; {rec['date']}")
  rows = [[r["strategy"], f"{r['first']:.3f}", f"{r['last']:.3f}", f"{r['best']:.3f}",
           common.fmt(r["seconds"])] for r in rec["rows"]]
  print(common.table(rows, ["strategy", f"first {w}", f"last {w}", "best", "seconds"]))
  return rec


if __name__ == "__main__":
  try:
    main(sys.argv)
  except UserInputError as e:
    sys.exit(f"error: {e}")
