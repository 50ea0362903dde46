"""The exported-model format: weights, architecture, preprocessing and decision threshold.

This module owns what an exported model folder (`W/models/<name>/`) holds and how it is read back;
nothing else in nasrl_jax knows its layout:

* `metadata(arch, spec, data_cfg, *, name, threshold, threshold_source, **extra)`: the JSON record
  (format tag, architecture, child spec, the preprocessing the model was trained with, the
  decision threshold and where it came from, plus the caller's extra fields).
* `save(directory, params, batch_stats, meta)`: the weights and that record, written by Orbax
  through `checkpoint.save_model` (atomic, replacing the folder).
* `load(directory) -> Exported`: the record first, then the weights, restored by Orbax against
  the abstract state that the record's architecture and spec define (`child.abstract_state`), so
  that Orbax checks every leaf's presence and shape and the checksums catch altered bytes. A
  folder that is missing, is not a model, or holds weights of another network is one
  `UserInputError` line, before any image is read.

`python -m nasrl_jax.export --onnx MODEL_DIR` adds `model.onnx` (and `predict_onnx.py`) to an
exported folder: see `onnx_export`.

The search's top-k children (`checkpoint.ModelStore`) use the same folder layout, so `load` reads
a child folder too. Folders exported before the format tag existed (no "format", no
"max_pixels", no checksums) still load.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

from flax import nnx
import ml_collections
import numpy as np

from nasrl_jax import checkpoint
from nasrl_jax import child as child_lib
from nasrl_jax import io_utils
from nasrl_jax import space as space_lib
from nasrl_jax.data import preprocess
from nasrl_jax.errors import UserInputError

FORMAT = "nasrl_jax.export/1"
# For records written before these fields were exported: config.data.max_pixels's default (the
# decompression-bomb guard) and the pipeline's threshold then.
DEFAULT_MAX_PIXELS = 60_000_000
DEFAULT_THRESHOLD = 0.5
_FIELDS = ("format", "name", "architecture", "spec", "preprocessing", "threshold",
           "threshold_source")


@dataclasses.dataclass(frozen=True)
class Exported:
  """An exported model ready for inference.

  Attributes:
    name: the model's name ("NASRL", "VGG19", ...; the folder name if the record has none).
    directory: absolute path of the folder.
    arch: the architecture.
    spec: the child spec (input shape, head, batch norm, widths, dtype).
    graphdef: NNX graph definition (`nnx.merge(graphdef, params, batch_stats)`).
    params: NNX State of the weights (jax Arrays on the first local device).
    batch_stats: NNX State of the batch-norm statistics (empty without batch norm).
    metadata: the JSON record as written by `metadata`.
    threshold: label = P(fatty) >= threshold.
    data_cfg: the preprocessing part of `config.data` the model was trained with.
  """
  name: str
  directory: str
  arch: space_lib.Architecture
  spec: child_lib.ChildSpec
  graphdef: Any
  params: nnx.State
  batch_stats: nnx.State
  metadata: dict
  threshold: float
  data_cfg: ml_collections.ConfigDict


def check_threshold(value, where: str) -> float:
  """`value` as a float after checking it is a probability; UserInputError naming `where`."""
  if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or \
      not 0.0 <= float(value) <= 1.0:
    raise UserInputError(f"{where}={value!r}: must be a probability in [0, 1]")
  return float(value)


def preprocessing(data_cfg) -> dict:
  """The preprocessing record of `config.data`: what `data_config` rebuilds at prediction."""
  return {"image_size": int(data_cfg.image_size), "crop": str(data_cfg.crop),
          "crop_box": [int(v) for v in data_cfg.crop_box],
          "max_pixels": int(data_cfg.max_pixels), "label_mode": str(data_cfg.label_mode),
          "cap_cutoff": float(data_cfg.cap_cutoff),
          "grade_cutoffs": [float(v) for v in data_cfg.grade_cutoffs]}


def metadata(arch: space_lib.Architecture, spec: child_lib.ChildSpec, data_cfg, *, name: str,
             threshold: float, threshold_source: str, **extra) -> dict:
  """The JSON record of an exported model.

  Args:
    arch: the model's architecture.
    spec: its child spec.
    data_cfg: `config.data` (image_size, crop, crop_box, max_pixels, label_mode, cap_cutoff,
      grade_cutoffs are recorded).
    name: the model's name.
    threshold: the decision threshold (a probability).
    threshold_source: how it was chosen ("Youden J on the fold's validation part").
    **extra: more fields ("fold", "seed", "source", "test_metrics", ...).

  Returns:
    A plain-JSON dict (numpy values as Python numbers, NaN as null, tuples as lists).

  Raises:
    ValueError: an extra field reuses a reserved name, or the threshold is not in [0, 1].
  """
  reserved = sorted(set(extra) & set(_FIELDS))
  if reserved:
    raise ValueError(f"export.metadata: {', '.join(reserved)} cannot be extra fields")
  meta = {"format": FORMAT, "name": str(name), "architecture": arch.to_json(),
          "spec": spec.to_json(), "preprocessing": preprocessing(data_cfg),
          "threshold": check_threshold(threshold, "threshold"),
          "threshold_source": str(threshold_source)}
  meta.update(extra)
  return io_utils.to_json_safe(meta)


def _pure(state) -> dict:
  return nnx.to_pure_dict(state) if isinstance(state, nnx.State) else dict(state)


def save(directory: str | os.PathLike, params, batch_stats, meta: Mapping[str, Any], *,
         process_local: bool = False) -> None:
  """Writes an exported model to `directory`, replacing what is there (atomically, by Orbax).

  Args:
    directory: the model's folder, e.g. `W/models/NASRL`.
    params: the weights, an NNX State (from `nnx.split`) or its pure dict; device or host arrays.
    batch_stats: the batch-norm statistics, likewise (empty without batch norm).
    meta: the record from `metadata`.
    process_local: save from this process alone in a multi-process run (Orbax saves are
      collective by default).

  Raises:
    ValueError: `meta` is not a record made by `metadata`.
  """
  if not isinstance(meta, Mapping) or meta.get("format") != FORMAT:
    raise ValueError("export.save: meta must be the record made by export.metadata")
  tree = {"params": _pure(params), "batch_stats": _pure(batch_stats)}
  checkpoint.save_model(directory, tree, meta, process_local=process_local)


def data_config(record: Any, where: str = "model metadata") -> ml_collections.ConfigDict:
  """Rebuilds the preprocessing part of `config.data` from a model's preprocessing record.

  Args:
    record: `metadata["preprocessing"]` (fields of `preprocessing`; max_pixels optional).
    where: what to name in errors.

  Returns:
    A ConfigDict with the fields `preprocess`, `manifest.open_image` and the DICOM reader use.

  Raises:
    UserInputError: a missing or invalid field.
  """
  if not isinstance(record, Mapping) or "image_size" not in record:
    raise UserInputError(f"{where}: no 'preprocessing' record with an image_size")
  try:
    cfg = ml_collections.ConfigDict({
        "image_size": record["image_size"],
        "crop": record.get("crop", "none"),
        "crop_box": tuple(record.get("crop_box", (0, 0, 0, 0))),
        "max_pixels": int(record.get("max_pixels", DEFAULT_MAX_PIXELS)),
        "label_mode": record.get("label_mode", "binary"),
        "cap_cutoff": float(record.get("cap_cutoff", 238.0)),
        "grade_cutoffs": tuple(record.get("grade_cutoffs", (238.0, 260.0, 290.0))),
    })
    preprocess.validate_config(cfg)
  except (UserInputError, TypeError, ValueError) as e:
    raise UserInputError(f"{where}: bad preprocessing record ({e})") from None
  return cfg


def load(directory: str | os.PathLike) -> Exported:
  """Loads an exported model (or a `ModelStore` child folder).

  Args:
    directory: the model's folder.

  Returns:
    Exported.

  Raises:
    UserInputError: one line naming the folder and what is wrong: missing, not a model folder,
      a bad record (format, architecture, spec, preprocessing, threshold), weights that do not
      fit the record's architecture and spec, or unreadable/corrupt weights.
  """
  path = os.path.abspath(os.fspath(directory))
  meta = checkpoint.load_meta(path)
  where = f"{path}: metadata"
  if meta.get("format", FORMAT) != FORMAT:
    raise UserInputError(f"{where}: format {meta['format']!r} is not {FORMAT!r} (written by "
                         "another nasrl_jax version)")
  try:
    arch = space_lib.Architecture.from_json(meta["architecture"])
    spec = child_lib.ChildSpec(**meta["spec"])
    graphdef, params, stats = child_lib.abstract_state(arch, spec)
  except Exception as e:  # pylint: disable=broad-except  # KeyError, TypeError, ValueError ...
    raise UserInputError(f"{where}: no usable architecture and spec ({type(e).__name__}: "
                         f"{' '.join(str(e).split())})") from None
  data_cfg = data_config(meta.get("preprocessing"), where)
  size = int(data_cfg.image_size)
  if tuple(spec.input_shape) != (size, size, 1):
    raise UserInputError(f"{where}: spec.input_shape {spec.input_shape} does not match "
                         f"preprocessing.image_size {size} (expected ({size}, {size}, 1))")
  threshold = check_threshold(meta.get("threshold", DEFAULT_THRESHOLD), f"{where}: threshold")
  target = {"params": nnx.to_pure_dict(params), "batch_stats": nnx.to_pure_dict(stats)}
  try:
    tree, _ = checkpoint.load_model(path, target)
  except checkpoint.StructureMismatch as e:
    found = "missing" if e.stored is None else f"shape {e.stored}"
    need = "no such array" if e.wanted is None else f"shape {e.wanted}"
    raise UserInputError(f"{path}: not a usable nasrl_jax exported model: {e.leaf} is {found}, "
                         f"the architecture and spec in its metadata need {need}") from None
  nnx.replace_by_pure_dict(params, tree["params"])
  nnx.replace_by_pure_dict(stats, tree["batch_stats"])
  return Exported(name=str(meta.get("name") or os.path.basename(path)), directory=path, arch=arch,
                  spec=spec, graphdef=graphdef, params=params, batch_stats=stats, metadata=meta,
                  threshold=threshold, data_cfg=data_cfg)


if __name__ == "__main__":
  # `python -m nasrl_jax.export --onnx MODEL_DIR`: the ONNX writer lives in onnx_export, which
  # needs the onnx package; importing this module must not.
  import sys  # pylint: disable=g-import-not-at-top
  from nasrl_jax import onnx_export  # pylint: disable=g-import-not-at-top
  sys.exit(onnx_export.main(sys.argv[1:], prog="python -m nasrl_jax.export"))
