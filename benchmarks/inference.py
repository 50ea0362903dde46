"""Inference speed: batch-1 FPS and large-batch throughput of VGG19 and a found model.

  python benchmarks/inference.py                                   # CPU: 32 px, width 1/8
  python benchmarks/inference.py --size=224 --width=1.0 --dtype=bfloat16   # paper scale (GPU)
  python benchmarks/inference.py --workdir=runs/quick              # the search's best child

Uses `evaluate.inference_speed`, the function the report's FPS column comes from: a jitted
softmax(forward) on uint8 images, batch 1 (median latency of `--iters` warm, synchronised calls;
FPS = 1 / median) and batch `--batch` (throughput = batch / median call). The found model is the
best child of `--workdir` (its report.json NASRL entry, else the best line of search/history.jsonl),
else a fixed found-model-like example (benchmarks/common.py: FOUND_EXAMPLE, 32.1M parameters at
224 px). Writes benchmarks/results/inference.json and prints a table last:

  arch  params M  GFLOP/img  FPS (b=1)  ms median  ms p90  img/s (b=64)
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # pylint: disable=g-import-not-at-top
from nasrl_jax import space as space_lib  # pylint: disable=g-import-not-at-top
from nasrl_jax.errors import UserInputError  # pylint: disable=g-import-not-at-top


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--size", type=int, default=32, help="Input size in pixels (32 | 64 | 224 | ...).")
  p.add_argument("--width", type=float, default=0.125, help="Width multiplier (0.125 | 1.0).")
  p.add_argument("--dtype", default="float32", help="Compute dtype: float32 | bfloat16.")
  p.add_argument("--archs", default="vgg19,found",
                 help="Comma-separated: vgg19, found, smallest, largest or arch strings.")
  p.add_argument("--workdir", default="", help="A run's workdir: 'found' = its best child.")
  p.add_argument("--iters", type=int, default=200, help="Timed batch-1 calls.")
  p.add_argument("--batch", type=int, default=64, help="Batch of the throughput figure.")
  p.add_argument("--compile_cache", default="off", help=common.COMPILE_CACHE_HELP)
  p.add_argument("--results_dir", default="",
                 help="Folder of the JSON (default benchmarks/results).")
  p.add_argument("--name", default="inference", help="JSON file name (without .json).")
  a = p.parse_args(argv)
  common.check_choice("dtype", a.dtype, ("float32", "bfloat16"))
  common.check_name(a.name)
  common.check_size(a.size)
  if not a.size:
    raise UserInputError("--size must be given (a multiple of 32)")
  if not a.width > 0 or a.iters < 3 or a.batch < 1:
    raise UserInputError("--width must be > 0, --iters >= 3, --batch >= 1")
  a.arch_map = common.parse_archs(a.archs)
  if "found" in a.arch_map and a.workdir:
    a.arch_map["found"], a.found_source = found_architecture(a.workdir)
  else:
    a.found_source = "fixed example (benchmarks/common.py FOUND_EXAMPLE)"
  return a


def found_architecture(workdir: str):
  """(Architecture, where it came from) of a run's NAS winner.

  Raises:
    UserInputError: the workdir holds neither a report.json with a NASRL model nor a history.
  """
  report = os.path.join(workdir, "report.json")
  if os.path.exists(report):
    with open(report, encoding="utf-8") as f:
      models = json.load(f).get("models", [])
    for m in models:
      if m.get("name") == "NASRL":
        return space_lib.Architecture.from_string(m["architecture"]), f"{report} (NASRL)"
  history = os.path.join(workdir, "search", "history.jsonl")
  if os.path.exists(history):
    from nasrl_jax import search as search_lib  # Imports tqdm: only when needed.
    recs = [search_lib.ChildRecord.from_json(d) for d in search_lib.read_jsonl(history)]
    res = search_lib.SearchResult(recs, [], 0.0, "reinforce").best(1)
    if res:
      return res[0].architecture, f"{history} (best reward {res[0].reward:.4f})"
  raise UserInputError(f"--workdir={workdir}: no report.json with a NASRL model and no "
                       "search/history.jsonl with a finished child")


def main(argv):
  args = parse_args(argv[1:])
  from nasrl_jax import child as child_lib
  from nasrl_jax import evaluate
  cache = common.apply_compile_cache(args.compile_cache)
  c = common.override(common.get_config("paper"), width=args.width, dtype=args.dtype)
  spec = child_lib.ChildSpec.from_config(c, (args.size, args.size, 1), 2)
  rec = common.record("inference", argv, size=args.size, width=args.width, dtype=args.dtype,
                      batch=args.batch, iters=args.iters, found_source=args.found_source,
                      compile_cache=cache, rows=[])
  def measure(name, arch):
    speed = evaluate.inference_speed(arch, spec, None, iters=args.iters,
                                     throughput_batch=args.batch)
    return dict({"arch": name, "architecture": str(arch),
                 "params": child_lib.count_params_for(arch, spec),
                 "forward_flops_per_image": child_lib.count_flops(arch, spec)}, **speed)

  common.run_rows("inference", rec, args.arch_map, measure, args.name, args.results_dir)

  print(f"\ninference, {rec['device']}, {args.size}px, width {args.width}, {args.dtype}; "
        f"found = {args.found_source}; {rec['date']}")
  header = ["arch", "params M", "GFLOP/img", "FPS (b=1)", "ms median", "ms p90",
            f"img/s (b={args.batch})"]
  rows = []
  for r in rec["rows"]:
    if "error" in r:
      rows.append([r["arch"], "error: " + r["error"][:60]] + [""] * (len(header) - 2))
      continue
    rows.append([r["arch"], common.fmt(r["params"] / 1e6),
                 common.fmt(r["forward_flops_per_image"] / 1e9), common.fmt(r["fps"], ".4g"),
                 common.fmt(r["latency_ms_median"]), common.fmt(r["latency_ms_p90"]),
                 common.fmt(r["throughput"], ".4g")])
  print(common.table(rows, header))
  return rec


if __name__ == "__main__":
  try:
    main(sys.argv)
  except UserInputError as e:
    sys.exit(f"error: {e}")
