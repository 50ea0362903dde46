"""One summary of the benchmark results against the issues' targets, with the cost projection.

  python benchmarks/summary.py [--results_dir=benchmarks/results] [--children=200]

Reads every <name>.json the benchmarks wrote in the folder and prints one table (measure, setup,
value, target, status): child-training MFU (target >= 40 % in bfloat16 at paper scale on an H100)
with step and compile (step / eval programs), compile share of search wall time (<= 10 %), the
cached-trainers check (a second search of the same children compiles 0 programs), the AOT
prefetch ratio, vmapped vs sequential k-fold CV (best form and its speed-up; largest validation-
loss difference), batch-1 inference FPS of the found model (>= 1,000), the reward-noise table's
float move of a re-scored reward (<= 0.03, issue 12) and between/within ratio, the balance modes'
AUROC, the toy-landscape strategies, and the projected GPU-hours of a search of --children
children plus 10-fold cross-validation of three models (<= 2 h).

The projection (shown line by line) uses the search benchmark's measured children:
  compile  mean cold compile seconds per trained child;
  rate     effective training FLOP/s = sum_i 3 x fwd FLOPs_i x padded train rows x epochs x r /
           sum_i train seconds_i (r reward splits per child; train seconds include init and
           per-epoch evaluation, so the rate is conservative);
  child    3 x mean fwd FLOPs of 2,000 uniformly sampled architectures (the controller's start
           and random search) x train rows x 30 epochs x r / rate;
  total    children x (compile + child) + 3 models x (compile + folds x child / r) [+ the same
           search budget again for the random-search baseline].
A scale target is checked only on results at paper scale (224 px, width 1.0) from a GPU; otherwise
its status is 'n/a' and the numbers are shown for the record. The cached-trainers and float-move
checks hold at any scale.
"""

import argparse
import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top

from benchmarks import common  # pylint: disable=g-import-not-at-top
from nasrl_jax.errors import UserInputError  # pylint: disable=g-import-not-at-top

PAPER_EPOCHS, PAPER_FOLDS, CV_MODELS = 30, 10, 3
TARGETS = {"mfu": 0.40, "compile_share": 0.10, "fps": 1000.0, "gpu_hours": 2.0,
           "float_move": 0.03}


def load_results(results_dir: str) -> list:
  """Every benchmark record (a JSON with a 'benchmark' field) in the folder, by file name."""
  out = []
  for path in sorted(glob.glob(os.path.join(results_dir, "*.json"))):
    try:
      with open(path, encoding="utf-8") as f:
        rec = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
      print(f"skipping {path}: {e}", file=sys.stderr)
      continue
    if isinstance(rec, dict) and "benchmark" in rec:
      rec["_file"] = os.path.basename(path)
      out.append(rec)
  return out


def paper_scale(rec: dict) -> bool:
  """True for results at the paper's scale (224 px, width 1.0) from an accelerator."""
  size = rec.get("size", rec.get("image_size"))
  return rec.get("platform") not in (None, "cpu") and size == 224 and rec.get("width") == 1.0


def mean_uniform_flops(image_size: int, width: float, samples: int = 2000, seed: int = 0) -> float:
  """Mean forward FLOPs per image of uniformly sampled architectures of the default space."""
  from configs import fatty_liver
  from nasrl_jax import child as child_lib
  from nasrl_jax import space as space_lib
  c = fatty_liver.get_config()
  c.space.width_multiplier = width
  spec = child_lib.ChildSpec.from_config(c, (image_size, image_size, 1), 2)
  sp = space_lib.SearchSpace.from_config(c.space)
  rng = np.random.default_rng(seed)
  total = 0
  for _ in range(samples):
    arch = space_lib.Architecture(rng.choice(sp.kernels, sp.num_layers),
                                  rng.choice(sp.filters, sp.num_layers), sp.blocks)
    total += child_lib.count_flops(arch, spec)
  return total / samples


def projection(search: dict, children: int, random_baseline: bool) -> dict:
  """GPU-hours of a search plus 10-fold CV of three models, from measured per-child cost."""
  run = search.get("runs", {}).get("search cold", {})
  kids = [c for c in run.get("children", []) if c.get("status") == "ok"]
  if not kids or not run.get("num_train"):
    return {}
  num_train, epochs = run["num_train"], run["epochs"]
  r = int(run.get("reward_splits") or 1)
  compile_c = float(np.mean([c["compile_seconds"] for c in kids]))
  work = sum(3.0 * c["flops"] * num_train * epochs * r for c in kids)
  rate = work / sum(c["train_seconds"] for c in kids)
  flops = mean_uniform_flops(search["image_size"], search["width"])
  child = 3.0 * flops * num_train * PAPER_EPOCHS * r / rate
  search_s = children * (compile_c + child)
  cv_s = CV_MODELS * (compile_c + PAPER_FOLDS * child / r)
  total = search_s + cv_s + (search_s if random_baseline else 0.0)
  return {"measured_children": len(kids), "num_train": num_train, "measured_epochs": epochs,
          "reward_splits": r, "compile_seconds_per_child": compile_c,
          "effective_train_flops_per_s": rate, "mean_uniform_forward_flops": flops,
          "child_train_seconds": child, "children": children, "search_seconds": search_s,
          "cv_seconds": cv_s, "random_baseline": random_baseline, "total_seconds": total,
          "gpu_hours": total / 3600.0,
          "compile_share_projected": children * compile_c / search_s,
          "gpu_hours_compile_hidden": (total - (children * (2 if random_baseline else 1) +
                                                CV_MODELS - 1) * compile_c) / 3600.0}


def status(value, target, higher_is_better, applicable) -> str:
  if value is None:
    return "missing"
  if not applicable:
    return "n/a"
  ok = value >= target if higher_is_better else value <= target
  return "PASS" if ok else "FAIL"


def _child_rows(rec, scale, applicable) -> list:
  rows = []
  for r in rec.get("rows", []):
    if "error" in r:
      rows.append([f"child MFU {r['arch']}", scale, "error", "", r["error"][:50]])
      continue
    target_here = applicable and rec.get("dtype") == "bfloat16"
    rows.append([f"child MFU {r['arch']}", scale, f"{100 * r['mfu']:.1f} %", ">= 40 % (bf16)",
                 status(r["mfu"], TARGETS["mfu"], True, target_here)])
    split = ""
    if r.get("compile_step_seconds") is not None:
      split = f" (step {r['compile_step_seconds']:.2g} + eval {r['compile_eval_seconds']:.2g})"
    rows.append([f"  step / compile {r['arch']}", scale,
                 f"{1e3 * r['step_seconds_median']:.4g} ms / {r['compile_seconds']:.3g} s{split}",
                 "", ""])
  return rows


def _search_rows(rec, scale, applicable) -> list:
  rows = []
  for r in rec.get("rows", []):
    if "error" in r:
      rows.append([r["run"], scale, "error", "", r["error"][:50]])
      continue
    rows.append([f"compile share, {r['run']}", f"{scale} {rec.get('epochs')}ep",
                 f"{100 * r['compile_share']:.1f} %", "<= 10 %",
                 status(r["compile_share"], TARGETS["compile_share"], False,
                        applicable and rec.get("epochs") == PAPER_EPOCHS)])
    rows.append([f"  children/h, {r['run']}", "", f"{r['children_per_hour']:.4g}", "", ""])
    again = r.get("again")
    if again:
      rows.append([f"  cached trainers, {r['run']}", f"{again['children']} children again",
                   f"{again['compiles']} compiles", "0 compiles",
                   "PASS" if again["compiles"] == 0 else "FAIL"])
  aot = rec.get("aot")
  if aot:
    rows.append(["AOT prefetch speed-up", scale, f"x{aot['speedup']:.2f}", "", ""])
  return rows


def _vmap_rows(rec, scale) -> list:
  rows = []
  by_arch = {}
  for r in rec.get("rows", []):
    by_arch.setdefault(r["arch"], []).append(r)
  for arch, rs in by_arch.items():
    ok = [r for r in rs if "error" not in r and r.get("speedup") is not None]
    seq = [r for r in ok if r["kind"] == "sequential"]
    others = [r for r in ok if r["kind"] != "sequential"]
    setup = f"{scale} {rec.get('folds')} folds x {rec.get('epochs')}ep"
    if not seq or not others:
      rows.append([f"vmap CV {arch}", setup, "incomplete", "", ""])
      continue
    best = max(others, key=lambda r: r["speedup_with_compile"])
    rows.append([f"vmap CV {arch}: best batched form", setup,
                 f"{best['form']} x{best['speedup']:.2f} (x{best['speedup_with_compile']:.2f} "
                 "with compile)", "> 1 to beat sequential", ""])
    rows.append([f"  sequential s/split {arch}", "", f"{seq[0]['seconds_per_split']:.3g} s", "",
                 ""])
    worst = max(r["max_abs_val_loss_diff"] for r in others)
    rows.append([f"  max |val loss - sequential| {arch}", "", f"{worst:.2g}", "", ""])
  return rows


def _noise_rows(rec) -> list:
  """Two rows per reward metric: between/within sd ratio and float move, for every r."""
  rows = []
  by_metric = {}
  for r in rec.get("rows", []):
    by_metric.setdefault(r["metric"], []).append(r)
  setup = f"{rec.get('config_variant')}, {rec.get('seeds')} seeds, r=" + ",".join(
      str(r) for r in rec.get("splits", []))
  for metric, rs in by_metric.items():
    ratios = "/".join(common.fmt(r.get("between_over_within"), ".2f") for r in rs)
    within = "/".join(common.fmt(r.get("within_sd"), ".3f") for r in rs)
    rows.append([f"reward noise {metric}: between/within (within sd)", setup,
                 f"{ratios} ({within})", "", ""])
    moves = [r.get("float_max_move_seed_mean") for r in rs]
    if any(m is not None for m in moves):
      worst = max(m for m in moves if m is not None)
      rows.append([f"  float move of the seed mean (x{rec.get('float_devices')} devices)", "",
                   "/".join(common.fmt(m, ".3f") for m in moves), "<= 0.03",
                   status(worst, TARGETS["float_move"], False, True)])
  return rows


def _balance_rows(rec) -> list:
  rows = []
  setup = f"{rec.get('config_variant')} {rec.get('epochs')}ep"
  for r in rec.get("rows", []):
    label = r["balance"] + ("+" + "+".join(r["augment"]) if r.get("augment") else "")
    if "error" in r:
      rows.append([f"balance {label}", setup, "error", "", r["error"][:50]])
      continue
    rows.append([f"balance {label} AUROC / specificity", setup,
                 f"{common.fmt(r.get('auroc'), '.3f')} / {common.fmt(r.get('specificity'), '.3f')}",
                 "", ""])
  return rows


def _toy_rows(rec) -> list:
  return [[f"toy search {r['strategy']} last {rec.get('window', 100)}",
           f"{rec.get('samples')} samples", f"{r['last']:.3f} (best {r['best']:.3f})", "", ""]
          for r in rec.get("rows", []) if "last" in r]


def summarize(records: list, children: int, random_baseline: bool):
  """(table rows, projection dict or {}, notes) of the loaded records."""
  rows, notes, proj = [], [], {}
  for rec in records:
    name, where = rec["benchmark"], f"{rec['_file']}: {rec.get('device', '?')}"
    scale = f"{rec.get('size', rec.get('image_size'))}px w{rec.get('width')} {rec.get('dtype')}"
    applicable = paper_scale(rec)
    if name == "child_training":
      rows += _child_rows(rec, scale, applicable)
    elif name == "inference":
      for r in rec.get("rows", []):
        if "error" in r:
          rows.append([f"FPS b=1 {r['arch']}", scale, "error", "", r["error"][:50]])
          continue
        rows.append([f"FPS b=1 {r['arch']}", scale, f"{r['fps']:.4g}",
                     ">= 1000 (found)" if r["arch"] == "found" else "",
                     status(r["fps"], TARGETS["fps"], True, applicable)
                     if r["arch"] == "found" else ""])
    elif name == "search_throughput":
      rows += _search_rows(rec, scale, applicable)
      p = projection(rec, children, random_baseline)
      if p:
        proj = dict(p, source=rec["_file"], scale=scale, device=rec.get("device"))
        rows.append([f"compile share, {PAPER_EPOCHS}ep (projected)", scale,
                     f"{100 * p['compile_share_projected']:.1f} %", "<= 10 %",
                     status(p["compile_share_projected"], TARGETS["compile_share"], False,
                            applicable)])
        rows.append([f"hours: {children} children + CV x{CV_MODELS}"
                     + (" + random search" if random_baseline else ""), scale,
                     f"{p['gpu_hours']:.2f} h", "<= 2 h",
                     status(p["gpu_hours"], TARGETS["gpu_hours"], False, applicable)])
    elif name == "vmap_cv":
      rows += _vmap_rows(rec, scale)
    elif name == "reward_noise":
      rows += _noise_rows(rec)
    elif name == "balance_modes":
      rows += _balance_rows(rec)
    elif name == "controller_toy":
      rows += _toy_rows(rec)
    else:
      notes.append(f"{where}: {name} (not summarised)")
  return rows, proj, notes


def main(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--results_dir", default=common.RESULTS_DIR)
  p.add_argument("--children", type=int, default=200, help="Search size to project.")
  p.add_argument("--random_baseline", action="store_true",
                 help="Also count a random search of the same size (the pipeline's default).")
  a = p.parse_args(argv[1:])
  if a.children < 1:
    raise UserInputError(f"--children={a.children}: must be >= 1")
  if not os.path.isdir(a.results_dir):
    raise UserInputError(f"--results_dir={a.results_dir}: no such folder")
  records = load_results(a.results_dir)
  if not records:
    raise UserInputError(f"--results_dir={a.results_dir}: no benchmark JSON files")
  rows, proj, notes = summarize(records, a.children, a.random_baseline)
  if proj:
    p = proj
    c, t = p["compile_seconds_per_child"], p["child_train_seconds"]
    print(f"projection from {p['source']} ({p['device']}, {p['scale']}):")
    print(f"  compile per child        {c:.3g} s (mean of {p['measured_children']} cold compiles)")
    print(f"  effective training rate  {p['effective_train_flops_per_s'] / 1e12:.3g} TFLOP/s "
          f"({p['measured_epochs']} epochs of {p['num_train']} padded rows x r={p['reward_splits']}"
          ", measured children)")
    print(f"  typical child            {p['mean_uniform_forward_flops'] / 1e9:.4g} GFLOP/img "
          f"forward -> {t:.3g} s for {PAPER_EPOCHS} epochs x r={p['reward_splits']}")
    print(f"  search                   {p['children']} x ({c:.3g} + {t:.3g}) s = "
          f"{p['search_seconds'] / 3600:.2f} h"
          + (" (twice: + the random-search baseline)" if p["random_baseline"] else ""))
    print(f"  cross-validation         {CV_MODELS} x ({c:.3g} + {PAPER_FOLDS} x "
          f"{t / p['reward_splits']:.3g}) s = "
          f"{p['cv_seconds'] / 3600:.2f} h")
    print(f"  total                    {p['gpu_hours']:.2f} h ({p['gpu_hours_compile_hidden']:.2f}"
          " h if compiles were fully hidden by AOT)")
  for n in notes:
    print(n)
  print("\nsummary against the targets (scale targets checked only at paper scale on a GPU):")
  print(common.table(rows, ["measure", "setup", "value", "target", "status"]))
  return rows, proj


if __name__ == "__main__":
  try:
    main(sys.argv)
  except UserInputError as e:
    sys.exit(f"error: {e}")
