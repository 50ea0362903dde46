"""The whole job, importable from a notebook: `run(config, workdir)`.

  data -> folds.json -> REINFORCE search (search fold's train/val only) -> random search (same
  budget) -> 10-fold CV of the NAS winner, VGG19 and the random-search winner -> report.

Every stage resumes: rerunning with the same workdir skips finished work (the search restores its
controller and history, CV skips finished folds) after checking that the config still describes the
same experiment (`check_resume`).
"""

import datetime
import json
import logging
import os
import time

from flax import nnx
import jax
import ml_collections
import numpy as np

from nasrl_jax import checkpoint as ckpt_lib
from nasrl_jax import child as child_lib
from nasrl_jax import evaluate
from nasrl_jax import io_utils
from nasrl_jax import report as report_lib
from nasrl_jax import search as search_lib
from nasrl_jax import space as space_lib
from nasrl_jax import train as train_lib
from nasrl_jax import data as data_lib
from nasrl_jax.data import folds as folds_lib
from nasrl_jax.data import labels as labels_lib
from nasrl_jax.errors import UserInputError

# Config fields that may change between a run and its resume without changing the experiment.
HARMLESS_FIELDS = ("variant", "log_every_s", "compile_cache_dir", "data.cache_dir",
                   "eval.fps_iters", "eval.throughput_batch", "search.aot_compile",
                   "search.max_devices", "train.epoch_loop", "eval.models")


class _QuietOrbax(logging.Filter):
  """Drops Orbax's INFO chatter (dozens of lines per save) from the absl log; keeps its warnings."""

  def filter(self, record):
    return record.levelno >= logging.WARNING or "/orbax/" not in record.pathname


def setup_runtime(config) -> None:
  """Quiet Orbax logs, and JAX's persistent compilation cache (repeats and resumes skip compiling)."""
  for handler in logging.getLogger().handlers + logging.getLogger("absl").handlers:
    if not any(isinstance(f, _QuietOrbax) for f in handler.filters):
      handler.addFilter(_QuietOrbax())
  io_utils.enable_compile_cache(config.compile_cache_dir)


def _flatten(d, prefix=""):
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(_flatten(v, key + "."))
    else:
      out[key] = v
  return out


def check_resume(config, workdir) -> None:
  """Refuses to resume a workdir whose config.json describes another experiment.

  Raises:
    UserInputError naming the differing fields (harmless ones, see HARMLESS_FIELDS, are allowed).
  """
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  old = _flatten(io_utils.read_json(path))
  new = _flatten(json.loads(config.to_json()))
  diff = sorted(k for k in set(old) | set(new)
                if k not in HARMLESS_FIELDS and old.get(k) != new.get(k))
  if diff:
    shown = ", ".join(f"{k} ({old.get(k)!r} -> {new.get(k)!r})" for k in diff[:6])
    raise UserInputError(
        f"{workdir} holds a run of another experiment; differing config fields: {shown}"
        f"{' ...' if len(diff) > 6 else ''}. Use a new --workdir or the original config.")


def _model_metadata(arch, spec, config, extra=None) -> dict:
  meta = {"architecture": arch.to_json(), "spec": spec.to_json(),
          "preprocessing": {"image_size": int(config.data.image_size), "crop": config.data.crop,
                            "crop_box": list(config.data.crop_box),
                            "label_mode": config.data.label_mode,
                            "cap_cutoff": float(config.data.cap_cutoff),
                            "grade_cutoffs": list(config.data.grade_cutoffs)},
          "threshold": 0.5}
  meta.update(extra or {})
  return meta


def _pure(weights):
  params, stats = weights
  return {"params": params.to_pure_dict(), "batch_stats": stats.to_pure_dict()}


def load_exported(directory):
  """Loads an exported model: (arch, spec, graphdef, params, batch_stats, metadata)."""
  tree, meta = ckpt_lib.load_model(directory)
  arch = space_lib.Architecture.from_json(meta["architecture"])
  spec = child_lib.ChildSpec(**meta["spec"])
  graphdef, params, stats = child_lib.abstract_state(arch, spec)
  nnx.replace_by_pure_dict(params, tree["params"])
  nnx.replace_by_pure_dict(stats, tree.get("batch_stats", {}))
  _check_weights(arch, spec, params, stats, os.fspath(directory))
  return arch, spec, graphdef, params, stats, meta


def _shapes(state) -> dict[str, tuple]:
  """{'convs/0/kernel': (shape, not loaded)} of an NNX State of arrays or shape placeholders."""
  flat = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(state))[0]
  return {"/".join(str(getattr(k, "key", k)) for k in path):
          (tuple(leaf.shape), isinstance(leaf, jax.ShapeDtypeStruct)) for path, leaf in flat}


def _check_weights(arch, spec, params, batch_stats, model_dir: str) -> None:
  """Refuses weights that do not fit the architecture and spec in the metadata.

  `nnx.replace_by_pure_dict` (inside `pipeline.load_exported`) swaps values without comparing
  shapes, and leaves shape-only placeholders where the checkpoint lacks a leaf; without this check
  such a model would fail inside the first jitted batch with an XLA shape error.
  """
  _, want_params, want_stats = child_lib.abstract_state(arch, spec)
  for name, want, got in (("params", want_params, params), ("batch_stats", want_stats,
                                                            batch_stats)):
    want_shapes, got_shapes = _shapes(want), _shapes(got)
    for path, (shape, _) in want_shapes.items():
      got_shape, missing = got_shapes.get(path, (None, True))
      if missing or got_shape != shape:
        found = "missing" if missing else f"shape {got_shape}"
        raise UserInputError(
            f"{model_dir}: not a usable nasrl_jax exported model: {name}/{path} is {found}, the "
            f"architecture and spec in its metadata need shape {shape}")




class _Stage:
  """Logs a stage's start and wall time."""

  def __init__(self, name):
    self.name = name

  def __enter__(self):
    self.t0 = time.time()
    logging.info("== %s", self.name)
    return self

  def __exit__(self, *exc):
    self.seconds = time.time() - self.t0
    logging.info("== %s done in %.1fs", self.name, self.seconds)


def run(config: ml_collections.ConfigDict, workdir: str, command: str = "") -> dict:
  """Runs (or resumes) the whole job; returns the report's results dict."""
  t_start = time.time()
  workdir = os.path.abspath(os.path.expanduser(workdir))
  config = ml_collections.ConfigDict(config)  # Unlocked copy: num_classes is derived below.
  config.model.num_classes = labels_lib.num_classes(config.data)
  check_resume(config, workdir)
  os.makedirs(workdir, exist_ok=True)
  setup_runtime(config)

  with _Stage("data"):
    dataset = data_lib.load(config.data)
    folds = folds_lib.load_or_make_folds(
        os.path.join(workdir, "folds.json"), dataset.subject_id, dataset.label,
        int(config.data.num_folds), int(config.seed), int(config.data.val_parts))
    fold_f = int(config.search.fold)
    if not 0 <= fold_f < len(folds):
      raise UserInputError(f"config.search.fold={fold_f} is outside 0..{len(folds) - 1}")
    logging.info("%s", dataset.summary())
  if jax.process_index() == 0:
    io_utils.atomic_write_text(os.path.join(workdir, "config.json"), config.to_json(indent=2))

  labels = np.asarray(dataset.label)
  sizes = evaluate.padded_sizes(folds, labels, config)
  data = train_lib.DeviceData.from_numpy(dataset.images, labels)
  input_shape = tuple(dataset.images.shape[1:])
  spec = child_lib.ChildSpec.from_config(config, input_shape, config.model.num_classes)
  search_split = evaluate.fold_split(folds[fold_f], labels, config, sizes)
  sp = space_lib.SearchSpace.from_config(config.space)

  # ---------------------------------------------------------------- searches
  devices = jax.local_devices()
  if config.search.max_devices:
    devices = devices[:int(config.search.max_devices)]
  processes = jax.process_count()
  writer = jax.process_index() == 0

  def run_one(strategy, seed, subdir):
    # The top-k children's weights are kept in single-process runs only: in a multi-process run
    # each process holds the weights of its own children, and Orbax saves are collective.
    store = None if processes > 1 else ckpt_lib.ModelStore(
        os.path.join(workdir, subdir, "children"), max_to_keep=int(config.search.top_k))

    def keep_top(rec, res):
      if (store is not None and res.weights is not None and rec.status == "ok"
          and store.would_keep(rec.reward)):
        store.save(rec.index, _pure(res.weights),
                   _model_metadata(rec.architecture, spec, config,
                                   {"reward": rec.reward, "index": rec.index}), score=rec.reward)

    local = search_lib.ChildEvaluator(config, data, search_split, input_shape,
                                      config.model.num_classes, sizes.num_train, sizes.num_eval,
                                      keep_weights=store is not None, devices=devices)
    evaluator = search_lib.DistributedEvaluator(local) if processes > 1 else local
    try:
      with _Stage(f"search {strategy} seed {seed} ({len(devices)} device(s) x {processes} "
                  f"process(es))"):
        return search_lib.run_search(config, evaluator, os.path.join(workdir, subdir),
                                     strategy=strategy, seed=seed, on_child=keep_top)
    finally:
      local.close()
      if store is not None:
        store.close()

  seeds = [int(s) for s in config.search.seeds] or [int(config.seed)]
  searches = {}
  for i, s in enumerate(seeds):
    searches[s] = run_one(config.search.strategy, s, "search" if i == 0 else f"search_seed{s}")
  nas = searches[seeds[0]]
  rnd = run_one("random", seeds[0], "random_search") if config.search.random_search else None

  # ---------------------------------------------------------------- cross-validation
  candidates = {"NASRL": nas.best(1)[0].architecture if nas.best(1) else None,
                "VGG19": sp.vgg19,
                "RandomSearch": rnd.best(1)[0].architecture if rnd and rnd.best(1) else None}
  models = []
  for name in config.eval.models:
    arch = candidates.get(name)
    if arch is None:
      logging.warning("model %s skipped (no architecture: disabled or every child failed)", name)
      continue
    # Every process runs the (deterministic) CV so Orbax's collective export saves line up;
    # only process 0 writes files.
    models.append(_cross_validate_model(name, arch, dataset, folds, config, data, sizes, spec,
                                        workdir, writer))

  # ---------------------------------------------------------------- report
  fold = folds[fold_f]
  sid = np.asarray(dataset.subject_id)
  results = {
      "command": command, "config_variant": config.variant,
      "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
      "device": evaluate.describe_device(),
      "data": dict(dataset.summary(), num_folds=len(folds), search_fold=fold_f,
                   search_saw={"train_images": len(fold["train"]), "val_images": len(fold["val"]),
                               "train_subjects": int(np.unique(sid[fold["train"]]).size),
                               "val_subjects": int(np.unique(sid[fold["val"]]).size),
                               "test_images_never_seen": len(fold["test"])}),
      "models": models,
      "search": {"reinforce": nas.summary(), "random": rnd.summary() if rnd else None,
                 "seeds": [{"seed": s, "best_reward": (r.best(1)[0].reward if r.best(1) else None),
                            "best_architecture": (str(r.best(1)[0].architecture)
                                                  if r.best(1) else None)}
                           for s, r in searches.items()],
                 "devices": len(devices), "processes": processes},
      "wall_seconds": time.time() - t_start,
  }
  if writer:
    with _Stage("report"):
      paths = report_lib.write_report(results, workdir)
    logging.info("report: %s", paths.get("report_md"))
  return results


def _cross_validate_model(name, arch, dataset, folds, config, data, sizes, spec, workdir,
                          writer=True):
  """CV of one model with per-fold resume files; exports the search fold's model."""
  cv_dir = os.path.join(workdir, "cv", name)
  os.makedirs(cv_dir, exist_ok=True)
  tag = str(arch)
  done = {}
  for i in range(len(folds)):
    p = os.path.join(cv_dir, f"fold_{i}.json")
    if os.path.exists(p):
      r = io_utils.read_json(p)
      if r.get("architecture") == tag:
        for level in ("image", "subject"):  # JSON null -> NaN (e.g. AUROC of a one-class part).
          r[level] = {k: (float("nan") if v is None else v) for k, v in r[level].items()}
        done[i] = r
  fold_f = int(config.search.fold)
  export_dir = os.path.join(workdir, "models", name)

  def on_fold(i, result, weights):
    if i == fold_f:  # The exported model: trained on the search fold's training part.
      ckpt_lib.save_model(export_dir, _pure(weights), _model_metadata(
          arch, spec, config, {"name": name, "fold": i, "threshold": result["val_threshold"],
                               "threshold_source": "Youden J on the fold's validation part",
                               "test_metrics": io_utils.to_json_safe(result)}))
    if writer:
      io_utils.atomic_write_json(os.path.join(cv_dir, f"fold_{i}.json"),
                                 io_utils.to_json_safe(dict(result, architecture=tag)))

  with _Stage(f"cross-validation {name}: {arch}"):
    cv = evaluate.cross_validate(arch, dataset, folds, config, data=data, sizes=sizes,
                                 on_fold=on_fold, done=done)
  weights = cv["last_weights"]
  if weights is None:  # Every fold came from disk: time freshly initialised weights.
    speed = evaluate.inference_speed(arch, spec, None, iters=config.eval.fps_iters,
                                     throughput_batch=config.eval.throughput_batch)
  else:
    speed = evaluate.inference_speed(arch, spec, weights, iters=config.eval.fps_iters,
                                     throughput_batch=config.eval.throughput_batch)
  fold_results = [dict(r) for r in cv["folds"]]
  for r in fold_results:
    r.pop("architecture", None)
  return {"name": name, "architecture": tag, "kernels": list(arch.kernels),
          "filters": list(arch.filters), "blocks": list(arch.blocks),
          "params": child_lib.count_params_for(arch, spec),
          "flops": child_lib.count_flops(arch, spec), "fps": speed["fps"],
          "latency_ms_median": speed["latency_ms_median"], "throughput": speed["throughput"],
          "throughput_batch": speed["throughput_batch"], "folds": fold_results,
          "search_fold_test": {k: fold_results[fold_f][k] for k in ("image", "subject")},
          "compile_seconds": cv["compile_seconds"]}
