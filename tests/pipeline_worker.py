"""Subprocess for pipeline tests: a tiny run, optionally SIGKILLed at the n-th training of a phase.

  python tests/pipeline_worker.py WORKDIR CACHE_DIR [--kill=PHASE:N] [--umask=OCTAL]
      [--distributed=ADDRESS,NUM_PROCESSES,PROCESS_ID] [KEY=VALUE...]

PHASE is search | rescore | final (the training call's `tag["phase"]`); the process kills
itself when asked to start its N-th training of that phase (0-based), a deterministic stand-in for
a dropped Colab session there. KEY=VALUE override config fields (values as Python literals).
"""

import ast
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nasrl_jax import pipeline  # pylint: disable=g-import-not-at-top
from tests.conftest import hooked_trainings, load_config  # pylint: disable=g-import-not-at-top


def main(argv):
  workdir, cache = argv[1], argv[2]
  kill, overrides, variant = None, [], "tiny"
  for a in argv[3:]:
    if a.startswith("--kill="):
      phase, n = a[len("--kill="):].split(":")
      kill = (phase, int(n))
    elif a.startswith("--umask="):
      os.umask(int(a[len("--umask="):], 8))
    elif a.startswith("--variant="):
      variant = a[len("--variant="):]
    elif a.startswith("--distributed="):
      import jax  # pylint: disable=g-import-not-at-top
      address, n, i = a[len("--distributed="):].split(",")
      jax.distributed.initialize(coordinator_address=address, num_processes=int(n),
                                 process_id=int(i), coordinator_bind_address=address,
                                 initialization_timeout=120)
    else:
      overrides.append(a.split("=", 1))
  c = load_config(variant)
  c.data.cache_dir = cache
  for key, value in overrides:
    node = c
    *path, last = key.split(".")
    for p in path:
      node = node[p]
    node[last] = ast.literal_eval(value)
  if kill is not None:
    seen = {"n": 0}

    def hook(arch, splits, test_idx, tag):
      del arch, splits, test_idx
      if (tag or {}).get("phase") == kill[0]:
        if seen["n"] == kill[1]:
          os.kill(os.getpid(), signal.SIGKILL)
        seen["n"] += 1

    with hooked_trainings(hook):
      pipeline.run(c, workdir, command="tests/pipeline_worker.py")
  else:
    pipeline.run(c, workdir, command="tests/pipeline_worker.py")
  print("finished", flush=True)


if __name__ == "__main__":
  main(sys.argv)
