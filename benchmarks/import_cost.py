"""Process CPU to start JAX and the pipeline in fresh interpreters (a test run starts ~30 of them).

  python benchmarks/import_cost.py --runs=5 --python=/path/to/venv/bin/python

Per run, every interpreter (this one and each --python) imports each target in a fresh process,
one after the other, so all of them see the same machine speed (this machine's speed drifts by
up to 2x within an hour: compare interpreters within one invocation, not across invocations).
The CPU is the child's user + sys time (`RUSAGE_CHILDREN` before and after it). Targets: `import jax` and a first jnp op,
and `import nasrl_jax.pipeline` (what launch.py, the pipeline tests' workers and the notebook
import first). Prints the median per interpreter and target with the interpreter's numpy and
ml_dtypes versions, and writes --results_dir/import_cost.json.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGETS = {
    "jax + first op": "import jax, jax.numpy as jnp; jnp.zeros(3).block_until_ready()",
    "nasrl_jax.pipeline": "import nasrl_jax.pipeline",
}
VERSIONS = ("import importlib.metadata as m, json; "
            "print(json.dumps({n: m.version(n) for n in ('numpy', 'ml_dtypes', 'jax')}))")


def child_cpu(python: str, code: str) -> float:
  """User + sys CPU seconds of a fresh `python -c code` (run from the checkout)."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  out = subprocess.run([python, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                       check=False)
  after = resource.getrusage(resource.RUSAGE_CHILDREN)  # run() waited: the child is counted.
  if out.returncode != 0:
    raise SystemExit(f"error: {python} -c {code!r} failed: {out.stderr.strip().splitlines()[-1:]}")
  return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--runs", type=int, default=5, help="fresh processes per target and python")
  parser.add_argument("--python", action="append", default=[],
                      help="another interpreter to compare (repeatable)")
  parser.add_argument("--results_dir", default=os.path.join(ROOT, "benchmarks", "results"))
  args = parser.parse_args(argv)
  if args.runs < 1:
    raise SystemExit(f"error: --runs={args.runs}: need at least 1")
  pythons = [sys.executable] + args.python
  versions = {}
  for py in pythons:
    out = subprocess.run([py, "-c", VERSIONS], capture_output=True, text=True, check=False)
    if out.returncode != 0:
      raise SystemExit(f"error: --python={py} cannot report its versions: "
                       f"{out.stderr.strip().splitlines()[-1:]}")
    versions[py] = json.loads(out.stdout)
  cpu = {(py, name): [] for py in pythons for name in TARGETS}
  for _ in range(args.runs):
    for name, code in TARGETS.items():
      for py in pythons:  # Alternating: every interpreter sees the same drift.
        cpu[(py, name)].append(child_cpu(py, code))
  rows = [{"python": py, **versions[py], "target": name, "runs": args.runs,
           "cpu_s_median": round(statistics.median(v), 3), "cpu_s": [round(x, 3) for x in v]}
          for (py, name), v in cpu.items()]
  print(f"{'target':20} {'numpy':8} {'ml_dtypes':9} {'CPU s (median)':>14}  python")
  for r in rows:
    print(f"{r['target']:20} {r['numpy']:8} {r['ml_dtypes']:9} {r['cpu_s_median']:14.2f}  "
          f"{r['python']}")
  os.makedirs(args.results_dir, exist_ok=True)
  rec = {"rows": rows, "command": " ".join(["python", "benchmarks/import_cost.py"] +
                                            (argv if argv is not None else sys.argv[1:]))}
  with open(os.path.join(args.results_dir, "import_cost.json"), "w", encoding="utf-8") as f:
    json.dump(rec, f, indent=1)
  return rec


if __name__ == "__main__":
  main()
