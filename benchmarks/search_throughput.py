"""Search throughput: children/hour, compile share, persistent-cache hits, memo hits, AOT compile.

  python benchmarks/search_throughput.py                  # CPU: quick config, 2 x 2 children
  python benchmarks/search_throughput.py --config=paper --data=random --epochs=2   # GPU scale

Four fresh subprocesses (so no in-process cache helps one from another):
  search cold  a short real REINFORCE search (`search.run_search` with the library's
               ChildEvaluator; the config's child setup) with a fresh, empty persistent
               compilation cache dir, then a repeat phase: a search over a one-architecture space
               (every child 3x64), so one child trains and the others are memo hits;
  search warm  the same again with the same cache dir: the same seed samples the same children,
               so its compile time is that of persistent-cache hits;
  aot off      K uniformly sampled children trained one after the other (compile, train,
               compile, ...), persistent cache off;
  aot on       the same K children, compiling child i+1 (`Trainer.compile`, i.e.
               jax.jit(...).lower(...).compile()) in a ThreadPoolExecutor while child i trains.
Reported: children/hour (trained, and with memo hits), the share of search wall time spent
compiling, persistent-cache hits/misses (jax.monitoring events), memo hits, and per-child compile
and train seconds with the FLOPs that benchmarks/summary.py projects paper-scale cost from.
Writes benchmarks/results/search_throughput.json after every subprocess and prints a table last.
"""

import argparse
import concurrent.futures
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

# The paper cohort's split sizes, used by --data=random (see child_training.py).
COHORT_IMAGES, TRAIN_EXAMPLES, EVAL_EXAMPLES = 310, 342, 31


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", default="quick",
                 help="Config variant of configs/fatty_liver.py: quick | tiny | paper (= default).")
  p.add_argument("--size", type=int, default=0, help="Image size override (0 = the config's).")
  p.add_argument("--width", type=float, default=0.0, help="Width multiplier override (0 = config).")
  p.add_argument("--dtype", default="", help="float32 | bfloat16 ('' = the config's).")
  p.add_argument("--epochs", type=int, default=0, help="Epochs per child (0 = the config's).")
  p.add_argument("--steps", type=int, default=2, help="Controller steps of the search.")
  p.add_argument("--children", type=int, default=2, help="Children per controller step.")
  p.add_argument("--repeat_children", type=int, default=3,
                 help="Children of the one-architecture repeat phase (1 trained, the rest memo "
                      "hits); 0 = off.")
  p.add_argument("--aot_children", type=int, default=3,
                 help="Children of the AOT-compile comparison (0 = skip it).")
  p.add_argument("--aot_workers", type=int, default=1, help="Compile threads (children ahead).")
  p.add_argument("--data", default="synthetic",
                 help="synthetic (the simulator cohort + real folds) | random (same shapes, random "
                      "pixels: no simulator, scikit-learn or Pillow needed).")
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
  common.check_choice("config", a.config, ("quick", "tiny", "paper"))
  common.check_choice("data", a.data, ("synthetic", "random"))
  if a.dtype:
    common.check_choice("dtype", a.dtype, ("float32", "bfloat16"))
  common.check_name(a.name)
  if a.size and (a.size < 32 or a.size % 32):
    raise UserInputError(f"--size={a.size}: must be a multiple of 32 (five 2x2 pools)")
  if a.steps < 1 or a.children < 1 or a.aot_children < 0 or a.repeat_children < 0:
    raise UserInputError("--steps and --children must be >= 1; --aot_children, "
                         "--repeat_children >= 0")
  if a.aot_workers < 1:
    raise UserInputError("--aot_workers must be >= 1")
  return a


def make_config(args):
  """The chosen config variant with this run's overrides (quiet progress logging)."""
  from configs import fatty_liver
  c = fatty_liver.get_config(None if args.config == "paper" else args.config)
  if args.size:
    c.data.image_size = args.size
  if args.width:
    c.space.width_multiplier = args.width
  if args.dtype:
    c.train.dtype = args.dtype
  if args.epochs:
    c.train.epochs = args.epochs
  c.search.num_steps = args.steps
  c.search.children_per_step = args.children
  c.log_every_s = 1e9
  return c


def make_data(config, mode):
  """(DeviceData, Split, num_train, num_eval, description) of the search split."""
  import numpy as np
  from nasrl_jax import train as train_lib
  if mode == "random":
    size = int(config.data.image_size)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (COHORT_IMAGES, size, size, 1), dtype=np.uint8)
    labels = rng.integers(0, 2, COHORT_IMAGES).astype(np.int32)
    num_train = train_lib.pad_to(TRAIN_EXAMPLES, int(config.train.batch_size))
    num_eval = train_lib.pad_to(EVAL_EXAMPLES, int(config.train.eval_batch_size))
    split = train_lib.make_split(rng.integers(0, COHORT_IMAGES, TRAIN_EXAMPLES),
                                 rng.integers(0, 4, TRAIN_EXAMPLES), np.arange(EVAL_EXAMPLES),
                                 num_train, num_eval)
    return (train_lib.DeviceData.from_numpy(images, labels), split, num_train, num_eval,
            f"random pixels, {COHORT_IMAGES} images of {size}px")
  # The pipeline's own path (pipeline.run): cohort, subject folds, balanced padded split.
  from nasrl_jax import data as data_lib
  from nasrl_jax import evaluate
  from nasrl_jax.data import folds as folds_lib
  ds = data_lib.load(config.data)
  folds = folds_lib.make_folds(ds.subject_id, ds.label, int(config.data.num_folds),
                               int(config.seed), int(config.data.val_parts))
  labels = np.asarray(ds.label)
  sizes = evaluate.padded_sizes(folds, labels, config)
  split = evaluate.fold_split(folds[int(config.search.fold)], labels, config, sizes)
  return (train_lib.DeviceData.from_numpy(ds.images, labels), split, sizes.num_train,
          sizes.num_eval, f"{ds.name}: {len(ds)} images of {ds.images.shape[1]}px")


def _child_rows(history) -> list:
  return [{"index": r.index, "status": r.status, "architecture": str(r.architecture),
           "params": r.params, "flops": r.flops, "compile_seconds": r.compile_seconds,
           "train_seconds": r.train_seconds, "reward": r.reward} for r in history]


def worker_search(args) -> dict:
  """A search (and the repeat phase) in this fresh process; returns its measurements."""
  common.enable_compile_cache(args.cache_dir)
  counter = common.CacheCounter()
  from nasrl_jax import search as search_lib
  config = make_config(args)
  t0 = time.perf_counter()
  data, split, num_train, num_eval, desc = make_data(config, args.data)
  data_s = time.perf_counter() - t0
  shape = (int(config.data.image_size),) * 2 + (1,)
  evaluator = search_lib.ChildEvaluator(config, data, split, shape, 2, num_train, num_eval)
  res = search_lib.run_search(config, evaluator, os.path.join(args.workdir, "search"))
  out = {"data": desc, "data_seconds": data_s, "num_train": num_train, "num_eval": num_eval,
         "epochs": int(config.train.epochs), "search": res.summary(),
         "children": _child_rows(res.history), "search_cache": counter.as_dict()}
  out["search"].pop("per_step", None)
  if args.repeat_children:
    # A one-architecture space: every sample is 3x64 everywhere, so the first child trains and
    # the others must come from the memo (search.memo), at no training cost.
    config.space.kernels = (3,)
    config.space.filters = (64,)
    config.search.num_steps = 1
    config.search.children_per_step = args.repeat_children
    rep = search_lib.run_search(config, evaluator, os.path.join(args.workdir, "repeat"))
    out["repeat"] = rep.summary()
    out["repeat"].pop("per_step", None)
    out["repeat_children"] = _child_rows(rep.history)
  out["cache"] = counter.as_dict()
  counter.close()
  return out


def worker_aot(args, overlap: bool) -> dict:
  """K sampled children trained back to back, compiling the next one in a thread if `overlap`."""
  import jax
  from nasrl_jax import child as child_lib
  from nasrl_jax import space as space_lib
  from nasrl_jax import train as train_lib
  common.disable_compile_cache()
  config = make_config(args)
  data, split, num_train, num_eval, desc = make_data(config, args.data)
  shape = (int(config.data.image_size),) * 2 + (1,)
  spec = child_lib.ChildSpec.from_config(config, shape, 2)
  sp = space_lib.SearchSpace.from_config(config.space)
  key = jax.random.key(int(config.seed) + 12345)
  archs = [sp.sample(jax.random.fold_in(key, i)) for i in range(args.aot_children)]
  t0 = time.perf_counter()
  trainers = [train_lib.Trainer(a, spec, config.train, num_train, num_eval, data) for a in archs]
  rows = []
  if overlap:
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.aot_workers) as pool:
      futures = {i: pool.submit(trainers[i].compile)
                 for i in range(min(args.aot_workers, len(trainers)))}
      for i, tr in enumerate(trainers):
        t_wait = time.perf_counter()
        futures.pop(i).result()
        waited = time.perf_counter() - t_wait
        nxt = i + args.aot_workers
        if nxt < len(trainers):
          futures[nxt] = pool.submit(trainers[nxt].compile)
        res = tr.fit(int(config.seed), split)
        rows.append({"architecture": str(archs[i]), "compile_seconds": tr.compile_seconds,
                     "compile_wait_seconds": waited, "train_seconds": res.train_seconds,
                     "flops": child_lib.count_flops(archs[i], spec)})
  else:
    for a, tr in zip(archs, trainers):
      res = tr.fit(int(config.seed), split)
      rows.append({"architecture": str(a), "compile_seconds": res.compile_seconds,
                   "compile_wait_seconds": res.compile_seconds, "train_seconds": res.train_seconds,
                   "flops": child_lib.count_flops(a, spec)})
  wall = time.perf_counter() - t0
  return {"data": desc, "overlap": overlap, "workers": args.aot_workers if overlap else 0,
          "wall_seconds": wall, "children": rows, "num_train": num_train,
          "epochs": int(config.train.epochs),
          "compile_seconds": sum(r["compile_seconds"] for r in rows),
          "compile_wait_seconds": sum(r["compile_wait_seconds"] for r in rows),
          "train_seconds": sum(r["train_seconds"] for r in rows)}


def run_worker(args, argv, kind, extra, timeout) -> dict:
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
  from nasrl_jax import search as search_lib  # Reading JSON lines: no device work.
  from nasrl_jax import train as train_lib
  rows = search_lib.read_jsonl(os.path.join(workdir, "search", "history.jsonl"))
  if not rows:
    return {}
  config = make_config(args)
  out = {"partial": True, "epochs": int(config.train.epochs),
         "children": [{k: r.get(k) for k in ("index", "status", "architecture", "params", "flops",
                                              "compile_seconds", "train_seconds", "reward")}
                      for r in rows]}
  if args.data == "random":  # The split sizes are fixed (make_data); synthetic ones are not known.
    out["num_train"] = train_lib.pad_to(TRAIN_EXAMPLES, int(config.train.batch_size))
  return out


def search_row(name, r) -> dict:
  """The derived figures of one search run."""
  if "error" in r:
    return {"run": name, "error": r["error"]}
  s = r["search"]
  trained = sum(c["status"] == "ok" for c in r["children"])
  wall = s["wall_seconds"]
  return {"run": name, "children": s["children"], "trained": trained, "memo_hits": s["memo_hits"],
          "failed": s["failed"], "wall_seconds": wall, "compile_seconds": s["compile_seconds"],
          "train_seconds": s["train_seconds"], "compile_share": s["compile_share"],
          "children_per_hour": 3600 * s["children"] / wall,
          "trained_children_per_hour": 3600 * trained / wall,
          "cache_hits": r["search_cache"]["cache_hits"],
          "cache_misses": r["search_cache"]["cache_misses"],
          "repeat": ({"children": r["repeat"]["children"], "memo_hits": r["repeat"]["memo_hits"],
                      "wall_seconds": r["repeat"]["wall_seconds"],
                      "compile_seconds": r["repeat"]["compile_seconds"],
                      "train_seconds": r["repeat"]["train_seconds"]} if "repeat" in r else None)}


def main(argv):
  args = parse_args(argv[1:])
  if args.worker:
    if args.worker == "search":
      res = worker_search(args)
    else:
      res = worker_aot(args, overlap=args.worker == "aot_on")
    res["device_info"] = common.device_info()
    with open(args.worker_out, "w", encoding="utf-8") as f:
      json.dump(res, f)
    return

  own_cache = not args.cache_dir
  cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="nasrl_bench_cache_")
  config = make_config(args)
  # The parent never touches the accelerator (device facts come from the workers): on a GPU a
  # JAX client here would hold most of its memory while the workers run.
  rec = common.record(
      "search_throughput", argv, device={}, config_variant=args.config, data=args.data,
      image_size=int(config.data.image_size), width=float(config.space.width_multiplier),
      dtype=config.train.dtype, epochs=int(config.train.epochs),
      batch_size=int(config.train.batch_size), steps=args.steps, children_per_step=args.children,
      runs={}, rows=[])
  base = [f"--{k}={getattr(args, k)}" for k in (
      "config", "size", "width", "dtype", "epochs", "steps", "children", "repeat_children",
      "aot_children", "aot_workers", "data")]
  work = tempfile.mkdtemp(prefix="nasrl_bench_work_")
  plan = [("search cold", "search", os.path.join(work, "cold")),
          ("search warm", "search", os.path.join(work, "warm"))]
  if args.aot_children:
    plan += [("aot off", "aot_off", ""), ("aot on", "aot_on", "")]
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
      extra = [f"--cache_dir={cache_dir}", f"--workdir={workdir}"] if kind == "search" else []
      res = run_worker(args, base, kind, extra, timeout)
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
                  "children": args.aot_children, "workers": args.aot_workers}
  common.write_results(args.name, rec, args.results_dir or None)

  print(f"\nsearch throughput, {rec.get('device', '?')}, config {args.config} "
        f"({rec['image_size']}px, width {rec['width']}, {rec['dtype']}, {rec['epochs']} epochs, "
        f"batch {rec['batch_size']}), data {args.data}; {rec['date']}")
  header = ["run", "children", "trained", "memo", "wall s", "compile s", "compile %", "train s",
            "children/h", "cache hit/miss"]
  rows = []
  for r in rec["rows"]:
    if "error" in r:
      rows.append([r["run"], "error: " + r["error"][:70]] + [""] * (len(header) - 2))
      continue
    rows.append([r["run"], r["children"], r["trained"], r["memo_hits"],
                 common.fmt(r["wall_seconds"]), common.fmt(r["compile_seconds"]),
                 common.fmt(100 * r["compile_share"]), common.fmt(r["train_seconds"]),
                 common.fmt(r["children_per_hour"], ".4g"),
                 f"{r['cache_hits']}/{r['cache_misses']}"])
    if r["repeat"]:
      p = r["repeat"]
      rows.append(["  repeat (1 arch)", p["children"], p["children"] - p["memo_hits"],
                   p["memo_hits"], common.fmt(p["wall_seconds"]), common.fmt(p["compile_seconds"]),
                   "", common.fmt(p["train_seconds"]), "", ""])
  for name in ("aot off", "aot on"):
    v = rec["runs"].get(name)
    if v is None:
      continue
    if "error" in v:
      rows.append([name, "error: " + v["error"][:70]] + [""] * (len(header) - 2))
      continue
    n = len(v["children"])
    rows.append([name + (f" ({v['workers']} thread)" if v["overlap"] else ""), n, n, 0,
                 common.fmt(v["wall_seconds"]), common.fmt(v["compile_seconds"]),
                 common.fmt(100 * v["compile_wait_seconds"] / v["wall_seconds"]),
                 common.fmt(v["train_seconds"]),
                 common.fmt(3600 * n / v["wall_seconds"], ".4g"), ""])
  print(common.table(rows, header))
  if "aot" in rec:
    print(f"AOT compile in a thread: wall {rec['aot']['wall_off']:.1f}s -> "
          f"{rec['aot']['wall_on']:.1f}s (x{rec['aot']['speedup']:.2f}); for 'aot on', "
          "compile % is the time spent waiting for a compile.")


if __name__ == "__main__":
  try:
    main(sys.argv)
  except UserInputError as e:
    sys.exit(f"error: {e}")
