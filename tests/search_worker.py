"""Subprocess for the kill-and-resume tests: a REINFORCE search with a toy evaluator.

  python tests/search_worker.py WORKDIR KILL_AT

The evaluator SIGKILLs its own process when asked to evaluate the KILL_AT-th child of this process
(-1: never), a deterministic stand-in for a dropped Colab session at that point.
"""

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top

from nasrl_jax import search  # pylint: disable=g-import-not-at-top
from nasrl_jax.space import SearchSpace  # pylint: disable=g-import-not-at-top
from tests.conftest import load_config  # pylint: disable=g-import-not-at-top


def toy_config():
  c = load_config()
  c.search.num_steps = 5
  c.search.children_per_step = 3
  c.search.memo = False
  c.search.seeds = (0,)
  c.log_every_s = 1e9
  return c


def make_evaluator(kill_at=-1):
  target = SearchSpace().encode(SearchSpace().sample(__import__("jax").random.key(7)))
  calls = {"n": 0}

  def evaluator(archs):
    out = []
    for a in archs:
      if calls["n"] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
      calls["n"] += 1
      out.append(float(np.mean(SearchSpace().encode(a) == target)))
    return out

  return evaluator


if __name__ == "__main__":
  search.run_search(toy_config(), make_evaluator(int(sys.argv[2])), sys.argv[1])
