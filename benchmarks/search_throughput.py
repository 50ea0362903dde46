"""Search throughput: children/hour, compile share, cached trainers, cache hits, memo, AOT prefetch.

  python benchmarks/search_throughput.py                  # CPU: quick config, 2 x 2 children
  python benchmarks/search_throughput.py --config=paper --data=random --epochs=2   # GPU scale

A real short search (`search.run_search` with the library's `search.ChildEvaluator` on the
pipeline's reward splits: `--data=synthetic` builds them with `pipeline.prepare`; `--data=random`
uses random pixels of the paper cohort's shapes and needs no simulator) in fresh subprocesses, so
no in-process cache helps one run from another:
  search cold  the search with a fresh, empty persistent compilation cache dir; then, in the same
               process, `again`: the same search in a new folder (same seed: the same children,
               retrained, no memo), whose child programs all come from the run-wide program cache
               (`train.PROGRAMS`): it must compile nothing; then `repeat`: a search over a
               one-architecture space (every child 3x64), so one child trains and the others are
               memo hits;
  search warm  the same again with the same cache dir: its compiles are persistent-cache hits
               (--warm=0 skips it);
  aot off/on   K uniformly sampled children (random search, one step of K), persistent cache off,
               with `config.search.aot_compile` off (compile, train, compile, ...) and on (the
               evaluator's `prefetch` compiles child i+1 in a thread while child i trains).
Compiles are counted from JAX's own events (`compiles.install().snapshot()`): child-program
compiles, persistent-cache hits and compile seconds; the compile share is child-program compile
seconds / search wall time ("other s": every other compile, e.g. the strategy's ask/tell).
Reported: children/hour (with memo hits, and trained only), compile share, cache hits/misses, the
`again` search's compiles (0 = cached trainers work), memo hits, the AOT wall-time ratio, and
per-child compile and train seconds with the FLOPs that benchmarks/summary.py projects paper-scale
cost from. Writes benchmarks/results/search_throughput.json after every subprocess and prints a
table last:

  run  children  trained  memo  wall s  compile s  compile %  compiled/hits  other s  train s
  children/h  cache hit/miss
("compiled/hits": child programs compiled / served by the persistent cache, from compile events;
"cache hit/miss": every program's persistent-cache hits and misses.)
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # pylint: disable=g-import-not-at-top
from nasrl_jax.errors import UserInputError  # pylint: disable=g-import-not-at-top

STRATEGIES = ("reinforce", "random", "evolution")


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", default="quick",
                 help="Config variant of configs/fatty_liver.py: quick | cpu | tiny | paper (= "
                      "default).")
  p.add_argument("--size", type=int, default=0, help="Image size override (0 = the config's).")
  p.add_argument("--width", type=float, default=0.0, help="Width multiplier override (0 = config).")
  p.add_argument("--dtype", default="", help="float32 | bfloat16 ('' = the config's).")
  p.add_argument("--epochs", type=int, default=0, help="Epochs per child (0 = the config's).")
  p.add_argument("--blocks", default="",
                 help="Conv layers per block, e.g. 1,1,1,1,1 ('' = the config's).")
  p.add_argument("--strategy", default="reinforce", help="reinforce | random | evolution.")
  p.add_argument("--steps", type=int, default=2, help="Steps of the search.")
  p.add_argument("--children", type=int, default=2, help="Children per step.")
  p.add_argument("--reward_splits", type=int, default=0,
                 help="Reward splits r per child (0 = the config's).")
  p.add_argument("--warm", type=int, default=1,
                 help="1: the warm-cache search worker after the cold one; 0: cold only.")
  p.add_argument("--again", type=int, default=1,
                 help="1: after the search, the same search again in the same process (cached "
                      "trainers: must compile nothing); 0: off.")
  p.add_argument("--repeat_children", type=int, default=3,
                 help="Children of the one-architecture repeat phase (1 trained, the rest memo "
                      "hits); 0 = off.")
  p.add_argument("--aot_children", type=int, default=3,
                 help="Children of the AOT-prefetch comparison (0 = skip it).")
  p.add_argument("--data", default="synthetic",
                 help="synthetic (the simulator cohort through pipeline.prepare) | random (the "
                      "cohort's shapes, random pixels: no simulator or Pillow needed).")
  p.add_argument("--data_cache", default="",
                 help="Simulator cache folder ('' = the config's, ~/.cache/nasrl_jax).")
  p.add_argument("--cache_dir", default="", help="Persistent cache dir ('' = a fresh temp dir).")
  p.add_argument("--worker_timeout", type=float, default=1800.0, help="Seconds per subprocess.")
  p.add_argument("--budget_seconds", type=float, default=0.0,
                 help="Total seconds for all subprocesses (0 = no limit): a worker gets what is "
                      "left and is skipped when under 20 s remain, so results so far are kept.")
  p.add_argument("--results_dir", default="",
                 help="Folder of the JSON (default benchmarks/results).")
  p.add_argument("--name", default="search_throughput", help="JSON file name (without .json).")
  p.add_argument("--worker", default="", help=argparse.SUPPRESS)  # search | aot_off | aot_on
  p.add_argument("--worker_out", default="", help=argparse.SUPPRESS)
  p.add_argument("--workdir", default="", help=argparse.SUPPRESS)
  a = p.parse_args(argv)
  common.check_choice("config", a.config, common.VARIANTS)
  common.check_choice("data", a.data, ("synthetic", "random"))
  common.check_choice("strategy", a.strategy, STRATEGIES)
  if a.dtype:
    common.check_choice("dtype", a.dtype, ("float32", "bfloat16"))
  common.check_name(a.name)
  common.check_size(a.size)
  if a.blocks:
    common.parse_ints("blocks", a.blocks)
  if (a.steps < 1 or a.children < 1 or a.aot_children < 0 or a.repeat_children < 0
      or a.reward_splits < 0 or a.epochs < 0):
    raise UserInputError("--steps and --children must be >= 1; --aot_children, "
                         "--repeat_children, --reward_splits and --epochs >= 0")
  common.check_choice("again", a.again, (0, 1))
  common.check_choice("warm", a.warm, (0, 1))
  return a


def make_config(args):
  """The chosen config variant with this run's overrides (quiet progress logging)."""
  c = common.override(common.get_config(args.config), size=args.size, width=args.width,
                      dtype=args.dtype, epochs=args.epochs, blocks=args.blocks)
  c.search.num_steps = args.steps
  c.search.children_per_step = args.children
  c.search.strategy = args.strategy
  c.search.top_k = 0
  if args.reward_splits:
    c.search.reward_splits = args.reward_splits
  if args.data_cache:
    c.data.cache_dir = args.data_cache
  return c


def make_setup(config, mode: str, workdir: str) -> dict:
  """The search's trainer factory, device data and reward splits (what `ChildEvaluator` takes).

  synthetic: `pipeline.prepare` (the pipeline's own cohort, folds, padded sizes and balanced
  splits), reward splits of outer fold 0 for search seed 0; random: the paper cohort's shapes.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  from nasrl_jax import child as child_lib  # pylint: disable=g-import-not-at-top
  from nasrl_jax import rng as rng_lib  # pylint: disable=g-import-not-at-top
  from nasrl_jax import train as train_lib  # pylint: disable=g-import-not-at-top
  t0 = time.perf_counter()
  r = int(config.search.reward_splits)
  if mode == "random":
    size = int(config.data.image_size)
    images, labels = common.random_cohort(size)
    splits, keys, sizes = common.cohort_splits(config, labels, r)
    data = train_lib.DeviceData.from_numpy(images, labels)
    spec = child_lib.ChildSpec.from_config(config, images.shape[1:], 2)
    factory = train_lib.TrainerFactory.from_config(config, spec, sizes, len(labels))
    desc = f"random pixels, {len(labels)} images of {size}px"
  else:
    from nasrl_jax import pipeline  # pylint: disable=g-import-not-at-top
    run = pipeline.prepare(config, os.path.join(workdir, "prepare"), check=False)
    splits, keys = run.reward_splits(run.folds[0], 0, int(config.search.seeds[0]),
                                     rng_lib.SEARCH_REPLICA)
    data, sizes, factory = run.data, run.sizes, run.factory
    desc = f"{run.dataset.name}: {len(run.dataset)} images of {run.dataset.images.shape[1]}px"
  return {"factory": factory, "data": data, "splits": splits, "keys": keys, "sizes": sizes,
          "desc": desc, "seconds": time.perf_counter() - t0,
          "num_train_real": int(np.mean([s.num_train_real for s in splits]))}


def _child_rows(history) -> list:
  return [{"index": r.index, "status": r.status, "architecture": str(r.architecture),
           "params": r.params, "flops": r.flops, "compile_seconds": r.compile_seconds,
           "train_seconds": r.train_seconds, "reward": r.reward} for r in history]


def _search(config, evaluator, workdir, log, **kw) -> dict:
  """One run_search with its compile-event counts and its share of the wall time."""
  from nasrl_jax import search as search_lib  # pylint: disable=g-import-not-at-top
  log.reset()
  t0 = time.perf_counter()
  res = search_lib.run_search(config, evaluator, workdir, **kw)
  wall = time.perf_counter() - t0
  snap = log.snapshot()
  summary = res.summary()
  summary.pop("per_step", None)
  return {"summary": summary, "wall_seconds": wall, "compiles": snap,
          "compile_share": snap["compile_seconds"] / wall if wall > 0 else None,
          "children": _child_rows(res.history)}


def worker_search(args) -> dict:
  """The search, `again` and `repeat` in this fresh process; returns its measurements."""
  common.enable_compile_cache(args.cache_dir)
  counter = common.CacheCounter()
  from nasrl_jax import compiles  # pylint: disable=g-import-not-at-top
  from nasrl_jax import search as search_lib  # pylint: disable=g-import-not-at-top
  log = compiles.install()
  config = make_config(args)
  config.search.aot_compile = "off"
  setup = make_setup(config, args.data, args.workdir)
  evaluator = search_lib.ChildEvaluator(setup["factory"], setup["data"], setup["splits"],
                                        setup["keys"], config=config)
  out = {"data": setup["desc"], "data_seconds": setup["seconds"],
         "num_train": setup["sizes"].num_train, "num_eval": setup["sizes"].num_eval,
         "num_train_real": setup["num_train_real"], "epochs": int(config.train.epochs),
         "reward_splits": int(config.search.reward_splits), "strategy": args.strategy}
  try:
    out.update(_search(config, evaluator, os.path.join(args.workdir, "search"), log))
    out["search_cache"] = counter.as_dict()
    if args.again:
      # Same seed, new folder and memo: the same children train again; their programs are in the
      # run-wide cache, so nothing compiles.
      out["again"] = _search(config, evaluator, os.path.join(args.workdir, "again"), log)
    if args.repeat_children:
      # A one-architecture space: every sample is 3x64 everywhere, so the first child trains and
      # the others must come from the memo (search.memo), at no training cost.
      config.space.kernels = (3,)
      config.space.filters = (64,)
      config.search.num_steps = 1
      config.search.children_per_step = args.repeat_children
      out["repeat"] = _search(config, evaluator, os.path.join(args.workdir, "repeat"), log)
  finally:
    evaluator.close()
  out["cache"] = counter.as_dict()
  counter.close()
  return out


def worker_aot(args, overlap: bool) -> dict:
  """K sampled children (random search, one step), with the evaluator's AOT prefetch on or off."""
  common.disable_compile_cache()
  from nasrl_jax import compiles  # pylint: disable=g-import-not-at-top
  from nasrl_jax import search as search_lib  # pylint: disable=g-import-not-at-top
  log = compiles.install()
  config = make_config(args)
  config.search.aot_compile = "on" if overlap else "off"
  config.search.strategy = "random"
  config.search.num_steps = 1
  config.search.children_per_step = args.aot_children
  setup = make_setup(config, args.data, args.workdir)
  evaluator = search_lib.ChildEvaluator(setup["factory"], setup["data"], setup["splits"],
                                        setup["keys"], config=config)
  try:
    res = _search(config, evaluator, os.path.join(args.workdir, "aot"), log, strategy="random")
  finally:
    evaluator.close()
  kids = res["children"]
  return {"data": setup["desc"], "overlap": overlap, "wall_seconds": res["wall_seconds"],
          "children": kids, "num_train": setup["sizes"].num_train,
          "epochs": int(config.train.epochs), "compiles": res["compiles"],
          "compile_seconds": sum(c["compile_seconds"] for c in kids),
          "train_seconds": sum(c["train_seconds"] for c in kids)}


def run_worker(argv, kind, extra, timeout) -> dict:
  """Runs this script as a fresh subprocess worker; returns its JSON or an error dict."""
  fd, out = tempfile.mkstemp(suffix=".json")
  os.close(fd)
  cmd = [sys.executable, os.path.abspath(__file__)] + list(argv) + [
      f"--worker={kind}", f"--worker_out={out}"] + extra
  t0 = time.perf_counter()
  try:
    proc = subprocess.run(cmd, timeout=timeout, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
      return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-600:]}",
              "process_seconds": time.perf_counter() - t0}
    with open(out, encoding="utf-8") as f:
      res = json.load(f)
  except subprocess.TimeoutExpired:
    return {"error": f"timed out after {timeout:.0f}s",
            "process_seconds": time.perf_counter() - t0}
  finally:
    os.unlink(out)
  res["process_seconds"] = time.perf_counter() - t0
  return res


def salvage_search(args, workdir: str) -> dict:
  """What a search worker that timed out or crashed left in its history.jsonl (or {})."""
  from nasrl_jax import search as search_lib  # pylint: disable=g-import-not-at-top
  rows = search_lib.read_jsonl(os.path.join(workdir, "search", "history.jsonl"))
  if not rows:
    return {}
  config = make_config(args)
  out = {"partial": True, "epochs": int(config.train.epochs),
         "reward_splits": int(config.search.reward_splits),
         "children": [{k: r.get(k) for k in ("index", "status", "architecture", "params", "flops",
                                              "compile_seconds", "train_seconds", "reward")}
                      for r in rows]}
  if args.data == "random":  # The split sizes are fixed (common.cohort_splits).
    from nasrl_jax import train as train_lib  # pylint: disable=g-import-not-at-top
    out["num_train"] = train_lib.pad_to(common.TRAIN_EXAMPLES, int(config.train.batch_size))
    out["num_train_real"] = common.TRAIN_EXAMPLES
  return out


def _phase_row(name, p) -> dict:
  s = p["summary"]
  trained = sum(c["status"] == "ok" for c in p["children"])
  wall = p["wall_seconds"]
  return {"run": name, "children": s["children"], "trained": trained, "memo_hits": s["memo_hits"],
          "failed": s["failed"], "wall_seconds": wall,
          "compile_seconds": p["compiles"]["compile_seconds"],
          "compiles": p["compiles"]["compiles"],
          "other_compile_seconds": p["compiles"]["other_compile_seconds"],
          "persistent_cache_hits": p["compiles"]["cache_hits"],
          "distinct_programs": p["compiles"]["distinct_programs"],
          "train_seconds": s["train_seconds"], "compile_share": p["compile_share"],
          "children_per_hour": 3600 * s["children"] / wall if wall > 0 else None,
          "trained_children_per_hour": 3600 * trained / wall if wall > 0 else None}


def search_row(name, r) -> dict:
  """The derived figures of one search worker (with its `again` and `repeat` phases)."""
  if "error" in r and "summary" not in r:
    return {"run": name, "error": r["error"]}
  row = _phase_row(name, r)
  row["cache_hits"] = r["search_cache"]["cache_hits"]
  row["cache_misses"] = r["search_cache"]["cache_misses"]
  row["again"] = _phase_row("again", r["again"]) if "again" in r else None
  row["repeat"] = _phase_row("repeat", r["repeat"]) if "repeat" in r else None
  return row


def main(argv):
  args = parse_args(argv[1:])
  if args.worker:
    if args.worker == "search":
      res = worker_search(args)
    else:
      res = worker_aot(args, overlap=args.worker == "aot_on")
    res["device_info"] = common.device_info()
    with open(args.worker_out, "w", encoding="utf-8") as f:
      json.dump(common.json_safe(res), f)
    return None

  own_cache = not args.cache_dir
  cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="nasrl_bench_cache_")
  config = make_config(args)
  # The parent never touches the accelerator (device facts come from the workers): on a GPU a
  # JAX client here would hold most of its memory while the workers run.
  rec = common.record(
      "search_throughput", argv, device={}, config_variant=args.config, data=args.data,
      image_size=int(config.data.image_size), width=float(config.space.width_multiplier),
      dtype=config.train.dtype, epochs=int(config.train.epochs),
      batch_size=int(config.train.batch_size), strategy=args.strategy, steps=args.steps,
      children_per_step=args.children, reward_splits=int(config.search.reward_splits),
      split_batching=config.train.split_batching, runs={}, rows=[])
  base = [f"--{k}={getattr(args, k)}" for k in (
      "config", "size", "width", "dtype", "epochs", "blocks", "strategy", "steps", "children",
      "reward_splits", "again", "repeat_children", "aot_children", "data", "data_cache")]
  work = tempfile.mkdtemp(prefix="nasrl_bench_work_")
  plan = [("search cold", "search", os.path.join(work, "cold"))]
  if args.warm:
    plan.append(("search warm", "search", os.path.join(work, "warm")))
  if args.aot_children:
    plan += [("aot off", "aot_off", os.path.join(work, "aot_off")),
             ("aot on", "aot_on", os.path.join(work, "aot_on"))]
  t_start = time.perf_counter()
  try:
    for name, kind, workdir in plan:
      timeout = args.worker_timeout
      if args.budget_seconds:
        timeout = min(timeout, args.budget_seconds - (time.perf_counter() - t_start))
        if timeout < 20:
          print(f"[search_throughput] {name}: skipped (budget spent)", flush=True)
          continue
      print(f"[search_throughput] {name} ...", flush=True)
      extra = [f"--workdir={workdir}"] + ([f"--cache_dir={cache_dir}"] if kind == "search"
                                          else [])
      res = run_worker(base, kind, extra, timeout)
      if kind == "search" and "error" in res:
        res.update(salvage_search(args, workdir))
      rec.update({k: v for k, v in res.get("device_info", {}).items() if k not in rec or
                  rec[k] is None})
      rec["runs"][name] = res
      if kind == "search":
        rec["rows"].append(search_row(name, res))
      common.write_results(args.name, rec, args.results_dir or None)
      print(f"[search_throughput] {name}: {res.get('error', 'done')} "
            f"({res['process_seconds']:.0f}s)", flush=True)
  finally:
    shutil.rmtree(work, ignore_errors=True)
    if own_cache:
      shutil.rmtree(cache_dir, ignore_errors=True)
  aot = {k: rec["runs"].get(k) for k in ("aot off", "aot on")}
  if all(v and "error" not in v for v in aot.values()):
    off, on = aot["aot off"]["wall_seconds"], aot["aot on"]["wall_seconds"]
    rec["aot"] = {"wall_off": off, "wall_on": on, "speedup": off / on,
                  "children": args.aot_children}
  common.write_results(args.name, rec, args.results_dir or None)
  print_table(rec, args)
  return rec


def print_table(rec, args):
  print(f"\nsearch throughput, {rec.get('device', '?')}, config {args.config} "
        f"({rec['image_size']}px, width {rec['width']}, {rec['dtype']}, {rec['epochs']} epochs, "
        f"batch {rec['batch_size']}, r={rec['reward_splits']}, {rec['split_batching']} splits), "
        f"{rec['strategy']}, data {args.data}; {rec['date']}")
  header = ["run", "children", "trained", "memo", "wall s", "compile s", "compile %",
            "compiled/hits", "other s", "train s", "children/h", "cache hit/miss"]
  rows = []

  def phase(label, p, cache=""):
    return [label, p["children"], p["trained"], p["memo_hits"], common.fmt(p["wall_seconds"]),
            common.fmt(p["compile_seconds"]), common.fmt(100 * p["compile_share"]),
            f"{p['compiles']}/{p['persistent_cache_hits']}", common.fmt(p["other_compile_seconds"]),
            common.fmt(p["train_seconds"]), common.fmt(p["children_per_hour"], ".4g"),
            cache]

  for r in rec["rows"]:
    if "error" in r:
      rows.append([r["run"], "error: " + r["error"][:70]] + [""] * (len(header) - 2))
      continue
    rows.append(phase(r["run"], r, f"{r['cache_hits']}/{r['cache_misses']}"))
    if r.get("again"):
      rows.append(phase("  again (cached)", r["again"]))
    if r.get("repeat"):
      rows.append(phase("  repeat (1 arch)", r["repeat"]))
  for name in ("aot off", "aot on"):
    v = rec["runs"].get(name)
    if v is None:
      continue
    if "error" in v:
      rows.append([name, "error: " + v["error"][:70]] + [""] * (len(header) - 2))
      continue
    n = len(v["children"])
    rows.append([name, n, sum(c["status"] == "ok" for c in v["children"]), 0,
                 common.fmt(v["wall_seconds"]), common.fmt(v["compiles"]["compile_seconds"]),
                 common.fmt(100 * v["compiles"]["compile_seconds"] / v["wall_seconds"]),
                 f"{v['compiles']['compiles']}/{v['compiles']['cache_hits']}",
                 common.fmt(v["compiles"]["other_compile_seconds"]),
                 common.fmt(v["train_seconds"]),
                 common.fmt(3600 * n / v["wall_seconds"], ".4g"), ""])
  print(common.table(rows, header))
  if "aot" in rec:
    print(f"AOT prefetch (config.search.aot_compile=on): wall {rec['aot']['wall_off']:.1f}s -> "
          f"{rec['aot']['wall_on']:.1f}s (x{rec['aot']['speedup']:.2f}); with prefetch, compile "
          "seconds overlap training.")


if __name__ == "__main__":
  try:
    main(sys.argv)
  except UserInputError as e:
    sys.exit(f"error: {e}")
