"""The whole job, importable from a notebook: `run(config, workdir)`.

  data -> folds.json (outer folds with inner splits) -> the protocol (`evaluate.py`: nested by
  default, or the paper's) -> optional final search on all subjects -> exported models ->
  inference speed -> report.

Every stage resumes: rerunning with the same workdir skips finished work after checking that the
config still describes the same experiment (`check_resume`). A run of several processes
(`jax.distributed`) spreads the outer folds round-robin over the processes; process 0 gathers the
results and writes the report and the merged ledger.
"""

import datetime
import json
import logging
import os
import platform
import time

import jax
import ml_collections
import numpy as np

from nasrl_jax import child as child_lib
from nasrl_jax import compiles
from nasrl_jax import evaluate
from nasrl_jax import export as export_lib
from nasrl_jax import io_utils
from nasrl_jax import multihost
from nasrl_jax import preflight
from nasrl_jax import rng as rng_lib
from nasrl_jax import search as search_lib
from nasrl_jax import space as space_lib
from nasrl_jax import strategies as strategies_lib
from nasrl_jax import train as train_lib
from nasrl_jax import data as data_lib
from nasrl_jax.data import folds as folds_lib
from nasrl_jax.data import labels as labels_lib
from nasrl_jax.errors import UserInputError

# Config fields that may change between a run and its resume without changing the experiment.
HARMLESS_FIELDS = ("variant", "log_every_s", "compile_cache_dir", "data.cache_dir",
                   "eval.fps_iters", "eval.throughput_batch", "search.aot_compile",
                   "search.max_devices", "max_hours",
                   # Turning the final search on after a run adds it; the estimate is untouched.
                   "eval.final_search")
PROTOCOLS = ("nested", "paper")
OUTER_GROUPS = ("subject", "device", "site")
# Workdir layout version, in config.json's sibling run.json: 1 = before nested CV; 2 = search keys
# shared by outer folds, one test training per model; 3 = independent searches per outer fold,
# test trainings per training seed.
FORMAT = 3


class _QuietOrbax(logging.Filter):
  """Drops Orbax's INFO chatter (dozens of lines per save) from the absl log; keeps its warnings."""

  def filter(self, record):
    return record.levelno >= logging.WARNING or "/orbax/" not in record.pathname


def setup_runtime(config) -> None:
  """Quiet Orbax logs, JAX's persistent compilation cache, and the compile counters."""
  for handler in logging.getLogger().handlers + logging.getLogger("absl").handlers:
    if not any(isinstance(f, _QuietOrbax) for f in handler.filters):
      handler.addFilter(_QuietOrbax())
  io_utils.enable_compile_cache(config.compile_cache_dir)
  compiles.install()


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
    UserInputError naming the differing fields (harmless ones, see HARMLESS_FIELDS, are allowed),
    or saying the workdir was written by an earlier version of nasrl_jax.
  """
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  run_json = os.path.join(workdir, "run.json")
  fmt = io_utils.read_json(run_json).get("format") if os.path.exists(run_json) else 1
  if fmt != FORMAT:
    raise UserInputError(
        f"{workdir} holds a run of an earlier nasrl_jax layout (format {fmt}, this version "
        f"writes {FORMAT}: independent searches per outer fold, several test trainings); it "
        "cannot be resumed. Use a new --workdir (the old results stay readable where they are).")
  old = _flatten(io_utils.read_json(path))
  new = _flatten(json.loads(config.to_json()))
  diff = sorted(k for k in set(old) | set(new)
                if k not in HARMLESS_FIELDS and old.get(k) != new.get(k))
  if diff:
    shown = ", ".join(f"{k} ({old.get(k)!r} -> {new.get(k)!r})" for k in diff[:6])
    raise UserInputError(
        f"{workdir} holds a run of another experiment; differing config fields: {shown}"
        f"{' ...' if len(diff) > 6 else ''}. Use a new --workdir or the original config.")


def validate_config(config) -> None:
  """One clear line for a config value that cannot work, before any data is read."""
  ev, se = config.eval, config.search
  if ev.protocol not in PROTOCOLS:
    raise UserInputError(f"config.eval.protocol={ev.protocol!r}: use nested or paper")
  if ev.outer_groups not in OUTER_GROUPS:
    raise UserInputError(f"config.eval.outer_groups={ev.outer_groups!r}: use subject, device or "
                         "site")
  if ev.outer_groups != "subject" and ev.protocol != "nested":
    raise UserInputError("config.eval.outer_groups=device/site needs eval.protocol=nested")
  if config.data.balance not in evaluate.BALANCE_MODES:
    raise UserInputError(f"config.data.balance={config.data.balance!r}: use one of "
                         f"{', '.join(evaluate.BALANCE_MODES)}")
  try:
    train_lib.Recipe.from_config(config)
  except ValueError as e:
    raise UserInputError(str(e)) from None
  evaluate._strategies(config)  # pylint: disable=protected-access
  evaluate._seeds(config)  # pylint: disable=protected-access
  evaluate.test_seeds(config)
  from nasrl_jax.report import primary as primary_lib  # pylint: disable=g-import-not-at-top
  primary_lib.parse(config.eval.primary, strategies_lib.model_names())
  from nasrl_jax import reinforce  # pylint: disable=g-import-not-at-top
  reinforce.check_reward_config(config.controller)
  for name, v, lo in (("search.reward_splits", se.reward_splits, 1),
                      ("search.rescore_top_k", se.rescore_top_k, 0),
                      ("search.rescore_seeds", se.rescore_seeds, 0),
                      ("search.num_steps", se.num_steps, 1),
                      ("search.children_per_step", se.children_per_step, 1),
                      ("evolution.population", config.evolution.population, 2),
                      ("evolution.tournament", config.evolution.tournament, 1)):
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
      raise UserInputError(f"config.{name}={v!r}: must be an integer >= {lo}")
  if config.evolution.tournament > config.evolution.population:
    raise UserInputError(f"config.evolution.tournament={config.evolution.tournament} exceeds "
                         f"evolution.population={config.evolution.population}")
  outer = int(ev.outer_folds or config.data.num_folds)
  if outer < 2:
    raise UserInputError(f"config.eval.outer_folds={ev.outer_folds}: need at least 2")
  inner = int(config.data.num_folds) - 1
  if se.reward_splits * int(config.data.val_parts) > inner:
    raise UserInputError(
        f"config.search.reward_splits={se.reward_splits} needs {se.reward_splits} disjoint "
        f"validation parts of val_parts={config.data.val_parts} inner parts each, but an outer "
        f"fold has {inner} inner parts (data.num_folds - 1)")


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


def _groups(dataset, config):
  kind = config.eval.outer_groups
  if kind == "subject":
    return None
  values = np.asarray(dataset.device if kind == "device" else dataset.site).astype(str)
  return values


def prepare(config, workdir, *, check=True):
  """Data, folds and the `evaluate.Run` of a run (everything before the first training)."""
  workdir = os.path.abspath(os.path.expanduser(workdir))
  config = ml_collections.ConfigDict(config)  # Unlocked copy: derived fields below.
  config.model.num_classes = labels_lib.num_classes(config.data)
  validate_config(config)
  if check:
    check_resume(config, workdir)
  os.makedirs(workdir, exist_ok=True)
  setup_runtime(config)
  root = rng_lib.root_key(config.seed)
  with _Stage("data"):
    dataset = data_lib.load(config.data)
    outer = int(config.eval.outer_folds or config.data.num_folds)
    folds, final_fold = folds_lib.load_or_make_folds(
        os.path.join(workdir, "folds.json"), dataset.subject_id, dataset.label, outer,
        rng_lib.folds_seed(root), int(config.data.val_parts),
        inner=int(config.data.num_folds) - 1, groups=_groups(dataset, config),
        final=bool(config.eval.final_search))
    logging.info("%s", dataset.summary())
  if jax.process_index() == 0:
    io_utils.atomic_write_text(os.path.join(workdir, "config.json"), config.to_json(indent=2))
    io_utils.atomic_write_json(os.path.join(workdir, "run.json"), {"format": FORMAT})
  labels = np.asarray(dataset.label)
  sizes = evaluate.padded_sizes(config, folds, final_fold, labels)
  data = train_lib.DeviceData.from_numpy(dataset.images, labels)
  spec = child_lib.ChildSpec.from_config(config, tuple(dataset.images.shape[1:]),
                                         config.model.num_classes)
  factory = train_lib.TrainerFactory.from_config(config, spec, sizes, len(dataset))
  devices = jax.local_devices()
  if config.search.max_devices:
    devices = devices[:int(config.search.max_devices)]
  writer = jax.process_index() == 0
  merged = search_lib.MergedLedger(os.path.join(workdir, "search", "history.jsonl"),
                                   os.path.join(workdir, "search"), writer)
  run = evaluate.Run(config=config, workdir=workdir, dataset=dataset, folds=folds,
                     final_fold=final_fold, data=data, sizes=sizes, spec=spec, factory=factory,
                     root=root, devices=devices, writer=writer, on_record=merged.append)
  logging.info("padded sizes: %s; %d outer folds, %d inner parts each", sizes, len(folds),
               len(folds[0]["inner"]))
  return run


def _exporter(run):
  """export(name, arch, fold result, train result, source) -> writes models/<name>."""

  def export(name, arch, result, train_res, source):
    if not run.writer:
      return
    meta = export_lib.metadata(
        arch, run.spec, run.config.data, name=name, threshold=result["val_threshold"],
        threshold_source="Youden's J on the validation part of the training that made it",
        fold=result["fold"], seed=result["seed"], training_seed=result.get("training_seed"),
        source=source, val_score=result["val_score"],
        reward_metric=run.config.controller.reward_metric, protocol=run.config.eval.protocol)
    # Only the writer exports, often while its peers train other outer folds: a collective
    # Orbax save would wait for them (and time out); a process-local one does not.
    export_lib.save(os.path.join(run.workdir, "models", name), train_res.params,
                    train_res.batch_stats, meta, process_local=jax.process_count() > 1)

  return export


def _store_factory(run):
  """(strategy, seed, outer) -> (on_child, store): keeps each search's top-k children's weights.

  In a multi-process run each process saves the children it trained itself (process-local Orbax
  saves), in its own folder when the processes share a search.
  """
  top_k = int(run.config.search.top_k)
  if top_k <= 0:
    return None
  from nasrl_jax import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  local = jax.process_count() > 1

  def factory(strategy, seed, outer):
    folder = os.path.join(evaluate._search_dir(run, strategy, seed, outer), "children")  # pylint: disable=protected-access
    if run.distribute_children:
      folder = os.path.join(folder, f"process{jax.process_index()}")
    store = ckpt_lib.ModelStore(folder, max_to_keep=top_k, process_local=local)

    def on_child(rec, res):
      if res.weights is not None and store.would_keep(rec.reward):
        params, stats = res.weights
        meta = export_lib.metadata(rec.architecture, run.spec, run.config.data,
                                   name=f"{strategy}-child{rec.index}", threshold=0.5,
                                   threshold_source="not chosen (a search child)",
                                   reward=rec.reward, index=rec.index, fold=outer, seed=seed)
        store.save(rec.index, {"params": params.to_pure_dict(),
                               "batch_stats": stats.to_pure_dict()}, meta, score=rec.reward)

    return on_child, store

  return factory


def _ensure_exports(run, outcome):
  """Every model's exported folder holds its best-validation test training (or the final
  search's model); retrains (same key: same weights) where the folder holds another."""
  from nasrl_jax import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  if outcome.final_search:
    return  # The final search exported the deployable models.
  export = _exporter(run)
  for name, rows in sorted(outcome.models.items()):
    best = evaluate.best_by_validation(rows)
    folder = os.path.join(run.workdir, "models", name)
    try:
      meta = ckpt_lib.load_meta(folder)
      ok = (meta.get("fold"), meta.get("training_seed"),
            meta.get("architecture", {}).get("string")) == (
                best["fold"], best["training_seed"], best["architecture"])
    except Exception:  # pylint: disable=broad-except  (missing or unreadable: export again)
      ok = False
    if not ok:
      arch = space_lib.Architecture.from_string(best["architecture"])
      result, train_res = evaluate.retrain_for_export(run, best, arch)
      export(name, arch, result, train_res, "best_validation_outer_fold")


def _ensure_onnx(run, names) -> None:
  """`model.onnx` (checked against JAX at export), `predict_onnx.py` and its test vectors beside
  every exported model; skipped where the folder already holds the recorded file (a resume)."""
  from nasrl_jax import onnx_export  # pylint: disable=g-import-not-at-top  (onnx only here)
  for name in names:
    folder = os.path.join(run.workdir, "models", name)
    model = export_lib.load(folder)
    try:
      onnx_export.check_file(model)
    except UserInputError:
      record = onnx_export.export_onnx(model)
      logging.info("ONNX export of %s: opset %d, max |ONNX - JAX| %.1e", name, record["opset"],
                   record.get("max_abs_diff_vs_jax", float("nan")))


def run(config: ml_collections.ConfigDict, workdir: str, command: str = "") -> dict:
  """Runs (or resumes) the whole job; returns the report's results dict."""
  t_start = time.time()
  compiles.install().reset()
  r = prepare(config, workdir)
  config = r.config
  protocol = config.eval.protocol
  processes, pid = jax.process_count(), jax.process_index()
  with _Stage("pre-flight"):
    estimate = preflight.check_time(config, len(r.folds), r.sizes, r.spec,
                                    devices=len(r.devices) * processes)
    preflight.check_vgg19(r.factory, space_lib.SearchSpace.from_config(config.space),
                          r.devices[0])
    r.fit_check = preflight.make_fit_check(r.factory)
  export = _exporter(r)
  stores = _store_factory(r)
  # Outer folds (nested) or CV folds (paper) round-robin over the processes of the run.
  mine = [i for i in range(len(r.folds)) if i % processes == pid] if processes > 1 else None
  rows = []
  if processes > 1:
    merged_append = r.on_record
    r.on_record = lambda rec: (rows.append(rec.to_json()), merged_append(rec))
  with _Stage(f"protocol {protocol} ({processes} process(es), {len(r.devices)} device(s))"):
    if protocol == "nested":
      r.fold_local = processes > 1
      outcome = evaluate.run_nested(r, folds_to_run=mine, store_factory=stores, export=export)
    else:
      r.distribute_children = processes > 1
      outcome = evaluate.run_paper(r, store_factory=stores, export=export, test_folds=mine)
  if processes > 1:
    with _Stage("gather"):
      parts = multihost.allgather_json({"outcome": outcome.to_json(), "rows": rows},
                                       f"outcome-{protocol}")
      outcome.models, outcome.winners, outcome.rescore, outcome.searches = {}, {}, {}, {}
      outcome.merge([p["outcome"] for p in parts])
      if r.writer and protocol == "nested":
        every = [row for p in parts for row in p["rows"]]
        every.sort(key=search_lib._merged_order)  # pylint: disable=protected-access
        search_lib.rewrite_jsonl(os.path.join(r.workdir, "search", "history.jsonl"), every)
    r.fold_local = r.distribute_children = False
  if config.eval.final_search:
    with _Stage("final search on all subjects"):
      evaluate.run_final_search(r, outcome, export)
  results = {}
  if r.writer:
    _ensure_exports(r, outcome)
    with _Stage("ONNX export"):
      _ensure_onnx(r, _model_order(outcome.models))
    models = []
    with _Stage("inference speed"):
      for name in _model_order(outcome.models):
        models.append(_model_entry(r, outcome, name))
    results = _results(r, outcome, models, command, time.time() - t_start)
    results["compute"]["estimated_hours"] = estimate["hours"]
    with _Stage("report"):
      from nasrl_jax import report as report_lib  # pylint: disable=g-import-not-at-top
      paths = report_lib.write_report(results, r.workdir)
      from nasrl_jax import model_card  # pylint: disable=g-import-not-at-top
      model_card.write_all(r.workdir, io_utils.read_json(paths["report_json"]))
    logging.info("report: %s", paths.get("report_md"))
  # The other processes wait for the report: JAX's shutdown barrier gives a finished process
  # only minutes to be joined by its peers.
  multihost.barrier("run-end")
  return results


def _model_order(models: dict) -> list:
  order = ["NASRL", "VGG19", "RandomSearch", "Evolution"]
  return [n for n in order if n in models] + sorted(n for n in models if n not in order)


def _model_entry(r, outcome, name) -> dict:
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


def _results(r, outcome, models, command, wall) -> dict:
  config, dataset = r.config, r.dataset
  strategies = {}
  for strategy, runs in outcome.searches.items():
    strategies[strategy] = {"model": strategies_lib.model_name(strategy),
                            "runs": sorted(runs, key=lambda x: (x["fold"], x["seed"]))}
  snap = compiles.LOG.snapshot()
  snap["distinct_architectures"] = len(set(train_lib.PROGRAMS.archs.values()))
  snap["programs_cached"] = len(train_lib.PROGRAMS)
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
