"""A/B of the tiny config's cost on a machine whose speed drifts: two cold runs started together.

  python benchmarks/tiny_pair.py --b=space.width_multiplier=0.0625,model.min_width=8

Runs `pipeline.run` on the tiny config twice at the same time, each in a fresh process with an
empty compilation cache and the test suite's XLA flags (`tests/conftest.TEST_XLA_FLAGS`): A with
--a's overrides, B with --b's (`benchmarks/recipes.py` syntax: key=value, comma-separated; ''
= the config as it is). Both share the 2 cores, so both see the same machine speed: single
sequential runs of one config here drifted by up to 25 %, two started together by < 1 %
(docs/suite.md). Prints each side's wall seconds of `pipeline.run` and CPU seconds of its whole
process, imports included (the suite is CPU-bound: CPU decides).
Data: the simulator cache in --data_cache (rendered once, then shared).
"""

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def worker(overrides: str, workdir: str, data_cache: str) -> None:
  from benchmarks import recipes  # pylint: disable=g-import-not-at-top
  from nasrl_jax import io_utils, pipeline  # pylint: disable=g-import-not-at-top
  from tests.conftest import load_config  # pylint: disable=g-import-not-at-top
  config = recipes._apply(load_config("tiny"), overrides)  # pylint: disable=protected-access
  config.data.cache_dir = data_cache
  config.compile_cache_dir = os.path.join(workdir, "compile_cache")  # Empty: a cold run.
  io_utils.enable_compile_cache(config.compile_cache_dir)
  t0 = time.time()
  pipeline.run(config, os.path.join(workdir, "w"))
  r = resource.getrusage(resource.RUSAGE_SELF)
  print(f"wall {time.time() - t0:.1f} s, cpu {r.ru_utime + r.ru_stime:.1f} s", flush=True)


def main(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--a", default="", help="Overrides of side A ('' = the tiny config).")
  p.add_argument("--b", default="", help="Overrides of side B.")
  p.add_argument("--data_cache", default=os.path.join(tempfile.gettempdir(), "tiny_pair_data"))
  p.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)  # OVERRIDES WORKDIR
  args = p.parse_args(argv[1:])
  if args.worker:
    return worker(args.worker[0], args.worker[1], args.data_cache)
  from tests.conftest import TEST_XLA_FLAGS  # pylint: disable=g-import-not-at-top
  env = dict(os.environ, XLA_FLAGS=" ".join(TEST_XLA_FLAGS), JAX_PLATFORMS="cpu")
  with tempfile.TemporaryDirectory() as tmp:
    procs = {side: subprocess.Popen(
        [sys.executable, __file__, f"--data_cache={args.data_cache}", "--worker", over,
         os.path.join(tmp, side)], env=env, stdout=subprocess.PIPE, text=True)
             for side, over in (("A", args.a), ("B", args.b))}
    for side, proc in procs.items():
      out, _ = proc.communicate()
      if proc.returncode:
        sys.exit(f"side {side} failed (exit {proc.returncode})")
      print(f"{side} ({getattr(args, side.lower()) or 'tiny'}): {out.strip().splitlines()[-1]}")


if __name__ == "__main__":
  main(sys.argv)
