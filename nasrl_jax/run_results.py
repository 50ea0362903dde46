"""The results dict the report reads (`results_dict`): models with their test trainings, winners,
search summaries, compile counts, the cohort, the flow counts and the versions (with the git
commit of the code that ran)."""

import datetime
import os
import platform

import jax
import numpy as np

from nasrl_jax import child as child_lib
from nasrl_jax import compiles
from nasrl_jax import evaluate
from nasrl_jax import rng as rng_lib
from nasrl_jax import space as space_lib
from nasrl_jax import strategies as strategies_lib
from nasrl_jax import train as train_lib


def versions() -> dict:
  """Library versions for the report (the NAS checklist)."""
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  out = {"python": platform.python_version()}
  for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "scipy",
               "scikit-learn", "statsmodels", "ml-collections"):
    try:
      out[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      out[name] = None
  out["nasrl_jax"] = __import__("nasrl_jax").__version__
  out["git_commit"] = git_commit()
  return out


def git_commit():
  """The commit of the code that runs ("<sha>" or "<sha>-dirty"), or None outside a git checkout."""
  import subprocess  # pylint: disable=g-import-not-at-top
  here = os.path.dirname(os.path.abspath(__file__))
  try:
    sha = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True,
                         timeout=10, check=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=10, check=True).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return None
  return f"{sha}-dirty" if dirty else sha or None


def cohort(config) -> dict:
  """Which cohort the run evaluates and whether recipes were tuned on it (synthetic data only:
  `tuned_on_it` is null for a user's own images, whose tuning history the run cannot know)."""
  d = config.data
  if d.source != "synthetic":
    return {"source": d.source, "seed": None, "tuned_on_it": None}
  seed = int(d.synthetic.seed)
  return {"source": "synthetic", "seed": seed,
          "tuned_on_it": seed in tuple(int(s) for s in d.synthetic.tuning_cohorts),
          "tuning_cohorts": [int(s) for s in d.synthetic.tuning_cohorts]}


def flow(dataset, folds) -> list:
  """Subjects and images (and fatty images) of every outer fold's parts: the STARD flow counts."""
  sid = np.asarray(dataset.subject_id).astype(str)
  fatty = np.asarray(dataset.label) > 0
  rows = []
  for i, fold in enumerate(folds):
    row = {"fold": i, "group": fold.get("group", ""),
           "excluded": int(np.asarray(fold.get("excluded", ())).size)}
    for part in ("train", "val", "test"):
      idx = np.asarray(fold[part], np.int64)
      row[part] = {"images": int(idx.size), "subjects": int(np.unique(sid[idx]).size),
                   "fatty_images": int(fatty[idx].sum())}
    rows.append(row)
  return rows


def model_order(models: dict) -> list:
  order = ["NASRL", "VGG19", "RandomSearch", "Evolution"]
  return [n for n in order if n in models] + sorted(n for n in models if n not in order)


def model_entry(r, outcome, name) -> dict:
  from nasrl_jax import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  meta = ckpt_lib.load_meta(os.path.join(r.workdir, "models", name))
  arch = space_lib.Architecture.from_json(meta["architecture"])
  speed = evaluate.inference_speed(arch, r.spec, None, iters=r.config.eval.fps_iters,
                                   throughput_batch=r.config.eval.throughput_batch)
  folds = sorted(outcome.models[name], key=evaluate.result_order)
  return {"name": name, "architecture": str(arch), "kernels": list(arch.kernels),
          "filters": list(arch.filters), "blocks": list(arch.blocks),
          "params": child_lib.count_params_for(arch, r.spec),
          "flops": child_lib.count_flops(arch, r.spec), "fps": speed["fps"],
          "latency_ms_median": speed["latency_ms_median"], "throughput": speed["throughput"],
          "throughput_batch": speed["throughput_batch"],
          "exported": {"fold": meta.get("fold"), "seed": meta.get("seed"),
                       "training_seed": meta.get("training_seed"), "source": meta.get("source")},
          "folds": folds}


def results_dict(r, outcome, models, command, wall) -> dict:
  config, dataset = r.config, r.dataset
  strategies = {}
  for strategy, runs in outcome.searches.items():
    strategies[strategy] = {"model": strategies_lib.model_name(strategy),
                            "runs": sorted(runs, key=lambda x: (x["fold"], x["seed"]))}
  snap = compiles.LOG.snapshot()
  snap["distinct_architectures"] = len(set(train_lib.PROGRAMS.archs.values()))
  snap["programs_cached"] = len(train_lib.PROGRAMS)
  snap["programs_evicted"] = train_lib.PROGRAMS.evicted  # Dropped for memory mappings.
  compile_s = float(snap["compile_seconds"])
  devices = jax.devices()
  outer_rows = []
  for i in sorted(outcome.winners):
    fold = r.folds[i]
    outer_rows.append({"fold": i, "group": fold.get("group", ""),
                       "test_images": len(fold["test"]),
                       "test_subjects": int(np.unique(np.asarray(dataset.subject_id)[
                           fold["test"]]).size),
                       "winners": outcome.winners[i]})
  data = dict(dataset.summary(), outer_groups=config.eval.outer_groups, outer_folds=len(r.folds),
              reward_splits=int(config.search.reward_splits), inner_parts=len(r.folds[0]["inner"]),
              padded_sizes={"train": r.sizes.num_train, "eval": r.sizes.num_eval},
              cap_cutoff=float(config.data.cap_cutoff),
              grade_cutoffs=[float(c) for c in config.data.grade_cutoffs])
  if config.eval.protocol == "paper":
    data["search_fold"] = int(config.search.fold)
  grade = config.data.label_mode == "grade"
  return {
      "command": command, "config_variant": config.variant,
      "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
      "device": evaluate.describe_device(), "protocol": config.eval.protocol,
      "label_mode": config.data.label_mode,
      "class_names": ["S0", "S1", "S2", "S3"][:config.model.num_classes] if grade else
                     ["S0", "S1-S3"],
      "seeds": [int(s) for s in config.search.seeds], "data": data,
      "test_seeds": int(config.eval.test_seeds), "primary_spec": list(config.eval.primary),
      "bootstrap_seed": rng_lib.bootstrap_seed(r.root), "cohort": cohort(config),
      "flow": flow(dataset, r.folds),
      "models": models,
      "outer_folds": outer_rows if config.eval.protocol == "nested" else [],
      "rescore": outcome.rescore,
      "search": {"reward_metric": config.controller.reward_metric,
                 "reward_transform": config.controller.reward,
                 "reward_splits": int(config.search.reward_splits),
                 "children_per_search": int(config.search.num_steps *
                                            config.search.children_per_step),
                 "rescore_top_k": int(config.search.rescore_top_k),
                 "rescore_seeds": int(config.search.rescore_seeds),
                 "strategies": strategies,
                 "paper_winners": (outcome.winners.get(int(config.search.fold))
                                   if config.eval.protocol == "paper" else None)},
      "final_search": outcome.final_search,
      "compute": {"wall_seconds": wall,
                  "device_hours": wall * max(1, jax.process_count()) * len(r.devices) / 3600.0,
                  "compile_seconds": compile_s,
                  "compile_share": compile_s / wall if wall > 0 else None,
                  "devices": len(devices), "processes": jax.process_count()},
      "compile": snap,
      "versions": versions(),
      "config": {"balance": config.data.balance, "augment": list(config.data.augment),
                 "image_size": int(config.data.image_size), "epochs": int(config.train.epochs),
                 "width_multiplier": float(config.space.width_multiplier),
                 "head": config.model.head, "batch_norm": bool(config.model.batch_norm)},
  }
