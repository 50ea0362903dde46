"""The whole job, importable from a notebook: `run(config, workdir)`.

  data -> folds.json (outer folds with inner splits) -> the protocol (`evaluate.py`: nested by
  default, or the paper's) -> optional final search on all subjects -> exported models ->
  inference speed -> report.

Every stage resumes: rerunning with the same workdir skips finished work after checking that the
config still describes the same experiment (`check_resume`). A run of several processes
(`jax.distributed`) spreads the outer folds round-robin over the processes; process 0 gathers the
results and writes the report and the merged ledger.

Its parts: `run_config` (config checks, resume refusal), `run_context.Run` (built once here,
never changed after), `evaluate` (the protocols), `deploy` (exported models, ONNX),
`run_results` (the results dict), `report` and `model_card`.
"""

import dataclasses
import logging
import os
import time

import jax
import ml_collections
import numpy as np

from nasrl_jax import child as child_lib
from nasrl_jax import compiles
from nasrl_jax import data as data_lib
from nasrl_jax import deploy
from nasrl_jax import evaluate
from nasrl_jax import io_utils
from nasrl_jax import multihost
from nasrl_jax import preflight
from nasrl_jax import rng as rng_lib
from nasrl_jax import run_config
from nasrl_jax import run_results
from nasrl_jax import search as search_lib
from nasrl_jax import space as space_lib
from nasrl_jax import train as train_lib
from nasrl_jax.data import folds as folds_lib
from nasrl_jax.data import labels as labels_lib
# Part of the pipeline's API (a notebook checks a config before running it).
from nasrl_jax.run_config import check_resume, validate_config  # pylint: disable=unused-import
from nasrl_jax.run_results import git_commit  # pylint: disable=unused-import

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
  run_config.validate_config(config)
  if check:
    run_config.check_resume(config, workdir)
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
    io_utils.atomic_write_json(os.path.join(workdir, "run.json"), {"format": run_config.FORMAT})
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
  several = jax.process_count() > 1
  rows = []  # Multi-process: this process's history lines, gathered after the protocol.
  on_record = (lambda rec: (rows.append(rec.to_json()), merged.append(rec))) if several else (
      merged.append)
  nested = config.eval.protocol == "nested"
  run = evaluate.Run(config=config, workdir=workdir, dataset=dataset, folds=folds,
                     final_fold=final_fold, data=data, sizes=sizes, spec=spec, factory=factory,
                     root=root, devices=devices, writer=writer, on_record=on_record, rows=rows,
                     fit_check=preflight.make_fit_check(factory),
                     fold_local=several and nested, distribute_children=several and not nested)
  logging.info("padded sizes: %s; %d outer folds, %d inner parts each", sizes, len(folds),
               len(folds[0]["inner"]))
  return run


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
  export = deploy.exporter(r)
  stores = deploy.store_factory(r)
  # Outer folds (nested) or CV folds (paper) round-robin over the processes of the run.
  mine = [i for i in range(len(r.folds)) if i % processes == pid] if processes > 1 else None
  with _Stage(f"protocol {protocol} ({processes} process(es), {len(r.devices)} device(s))"):
    if protocol == "nested":
      outcome = evaluate.run_nested(r, folds_to_run=mine, store_factory=stores, export=export)
    else:
      outcome = evaluate.run_paper(r, store_factory=stores, export=export, test_folds=mine)
  if processes > 1:
    with _Stage("gather"):
      parts = multihost.allgather_json({"outcome": outcome.to_json(), "rows": r.rows},
                                       f"outcome-{protocol}")
      outcome.models, outcome.winners, outcome.rescore, outcome.searches = {}, {}, {}, {}
      outcome.merge([p["outcome"] for p in parts])
      if r.writer and protocol == "nested":
        every = [row for p in parts for row in p["rows"]]
        every.sort(key=search_lib._merged_order)  # pylint: disable=protected-access
        search_lib.rewrite_jsonl(os.path.join(r.workdir, "search", "history.jsonl"), every)
    # The final search runs on every process together, as one single-process run would.
    r = dataclasses.replace(r, fold_local=False, distribute_children=False)
  if config.eval.final_search:
    with _Stage("final search on all subjects"):
      evaluate.run_final_search(r, outcome, export)
  results = {}
  if r.writer:
    deploy.ensure_exports(r, outcome)
    with _Stage("ONNX export"):
      deploy.ensure_onnx(r, run_results.model_order(outcome.models))
    models = []
    with _Stage("inference speed"):
      for name in run_results.model_order(outcome.models):
        models.append(run_results.model_entry(r, outcome, name))
    results = run_results.results_dict(r, outcome, models, command, time.time() - t_start)
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


