"""What a run exports: each model's best-validation test training (or the final search's model)
under `models/<name>/` (Orbax weights and metadata, `export.py`), its ONNX graph with the
standalone predictor (`onnx_export.py`), and the search's top-k children (`search.top_k`)."""

import logging
import os

import jax

from nasrl_jax import evaluate
from nasrl_jax import export as export_lib
from nasrl_jax import space as space_lib
from nasrl_jax.errors import UserInputError


def exporter(run):
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


def store_factory(run):
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
    folder = os.path.join(evaluate.search_dir(run, strategy, seed, outer), "children")
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


def ensure_exports(run, outcome):
  """Every model's exported folder holds its best-validation test training (or the final
  search's model); retrains (same key: same weights) where the folder holds another."""
  from nasrl_jax import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  if outcome.final_search:
    return  # The final search exported the deployable models.
  export = exporter(run)
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


def ensure_onnx(run, names) -> None:
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
