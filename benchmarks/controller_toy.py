"""Controller calibration on a toy landscape: REINFORCE at several learning rates vs random search.

  python benchmarks/controller_toy.py [--samples=1000] [--seeds=3]

Reward = fraction of the 32 decisions that agree with a fixed hidden target architecture (a smooth
landscape with one optimum, cheap enough for thousands of samples). Prints, per strategy, the mean
reward of the first and last 100 samples and the best reward found; writes
benchmarks/results/controller_toy.json.
"""

import argparse
import datetime
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from nasrl_jax import controller, reinforce  # pylint: disable=g-import-not-at-top
from nasrl_jax.space import SearchSpace  # pylint: disable=g-import-not-at-top
from tests.conftest import load_config  # pylint: disable=g-import-not-at-top


def run(strategy, lr, samples, seed, m=8):
  c = load_config()
  c.controller.learning_rate = lr
  sp = SearchSpace()
  target = sp.encode(sp.sample(jax.random.key(1000 + seed)))
  rewards = []
  if strategy == "random":
    for i in range(samples // m):
      a = np.stack([sp.sample_actions(k) for k in
                    jax.random.split(jax.random.fold_in(jax.random.key(seed), i), m)])
      rewards.extend((a == target).mean(1))
    return np.asarray(rewards)
  g, p, r = controller.init(c.controller, sp, jax.random.key(seed))
  sampler = controller.make_sampler(g, r, sp.num_decisions, c.controller)
  opt = reinforce.make_optimizer(c.controller)
  update = reinforce.make_update(controller.make_log_prob(g, r, c.controller), opt, c.controller)
  state = reinforce.init_state(p, opt)
  for i in range(samples // m):
    a, _, _ = sampler(state.params, jax.random.split(jax.random.fold_in(jax.random.key(seed), i), m))
    rw = (np.asarray(a) == target).mean(1)
    state, _ = update(state, a, jnp.asarray(rw, jnp.float32))
    rewards.extend(rw)
  return np.asarray(rewards)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--samples", type=int, default=1000)
  ap.add_argument("--seeds", type=int, default=3)
  args = ap.parse_args()
  rows = []
  for name, strategy, lr in [("random", "random", 0.0), ("reinforce lr 6e-4 (Zoph)", "rl", 6e-4),
                             ("reinforce lr 2e-3", "rl", 2e-3),
                             ("reinforce lr 4e-3 (default)", "rl", 4e-3),
                             ("reinforce lr 1e-2", "rl", 1e-2)]:
    res = [run(strategy, lr, args.samples, s) for s in range(args.seeds)]
    rows.append({"strategy": name, "first100": float(np.mean([r[:100].mean() for r in res])),
                 "last100": float(np.mean([r[-100:].mean() for r in res])),
                 "best": float(np.mean([r.max() for r in res]))})
  out = {"device": str(jax.devices()[0]), "date": datetime.date.today().isoformat(),
         "command": "python " + " ".join(sys.argv), "samples": args.samples,
         "seeds": args.seeds, "rows": rows}
  os.makedirs(os.path.join(os.path.dirname(__file__), "results"), exist_ok=True)
  with open(os.path.join(os.path.dirname(__file__), "results", "controller_toy.json"), "w") as f:
    json.dump(out, f, indent=2)
  print(f"{'strategy':30s} {'first 100':>10s} {'last 100':>10s} {'best':>6s}")
  for r in rows:
    print(f"{r['strategy']:30s} {r['first100']:10.3f} {r['last100']:10.3f} {r['best']:6.3f}")


if __name__ == "__main__":
  main()
