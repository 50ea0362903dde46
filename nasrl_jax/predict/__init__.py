"""Prediction on new images with an exported model: P(fatty liver) per image and per subject.

This package owns inference on files a user brings (not a `Dataset`):

  python -m nasrl_jax.predict --model=W/models/NASRL --output=preds.csv \\
      [--threshold=T] [--manifest=CSV] [--saliency=DIR] [--batch_size=32] PATH...

* PATHs are PNG/JPEG/BMP/TIFF/DICOM files and folders (`io.find_files`); every frame of a
  multi-frame DICOM is predicted.
* Preprocessing is the training one, rebuilt from the model's record (`export.load`), through the
  training sources' own functions (`io.read_image`): full screen captures with sector fans,
  burned-in text and rulers go through the crop the model was trained with.
* Output CSV (written atomically), one row per image/frame with `level=image`, plus, with
  `--manifest` (columns `path`, `subject_id`, paths relative to the CSV's folder, as the training
  manifest), one row per subject with `level=subject` and the mean probability of the subject's
  images. Columns: `io.COLUMNS`. `prob` is P(fatty) = 1 - P(S0) (the softmax's class 1 in binary
  mode, S1-S3 together in grade mode); `label` is `prob >= threshold`.
* Unreadable files do not stop the run: each gets one error line, collected, printed to stderr at
  the end, followed by a summary line. Exit code 0 when at least one image was predicted and no
  file failed, 1 when some failed (or nothing was found), 2 on bad flags or an unusable model.
* `--saliency=DIR` writes one Grad-CAM overlay PNG per image (`gradcam.make_predict_fn`).
* `--backend=onnx` runs the folder's `model.onnx` with onnxruntime instead of JAX (same CSV, prob
  within 1e-5; written by `python -m nasrl_jax.export --onnx MODEL_DIR`); no saliency there.

Modules: `io` (files in and out), `gradcam` (the jitted model call and the overlay), `cli` (flags,
exit codes). Batches have a fixed size (`--batch_size`); the last one is padded to the next power
of two, so each call compiles at most 1 + log2(batch_size) shapes and typically two.

Library use (a notebook): `rows, errors = predict_paths(model_dir, paths, ...)`.
"""

from __future__ import annotations

import collections
import logging
import math
import os
from typing import Optional, Sequence

import jax.numpy as jnp
import numpy as np

from nasrl_jax import export
from nasrl_jax import metrics as metrics_lib
from nasrl_jax.errors import UserInputError
from nasrl_jax.predict import io as predict_io
from nasrl_jax.predict.cli import run_cli
from nasrl_jax.predict.gradcam import features, head, make_predict_fn, overlay
from nasrl_jax.predict.io import (COLUMNS, find_files, is_dicom, read_image,
                                  read_subject_manifest, saliency_names, write_csv)

__all__ = ["COLUMNS", "features", "find_files", "head", "is_dicom", "make_predict_fn", "overlay",
           "predict_paths", "read_image", "read_subject_manifest", "run_cli", "saliency_names",
           "subject_rows", "write_csv"]


BACKENDS = ("jax", "onnx")


def _batch_shape(n: int, batch_size: int) -> int:
  """Full batches run at batch_size; a last partial one at the next power of two (<= batch_size)."""
  return min(batch_size, 1 << max(0, math.ceil(math.log2(n))))


def predict_paths(model_dir: str | os.PathLike | export.Exported,
                  paths: Sequence[str | os.PathLike], threshold: Optional[float] = None,
                  saliency_dir: Optional[str | os.PathLike] = None,
                  manifest: Optional[str | os.PathLike] = None, *,
                  batch_size: int = 32, backend: str = "jax") -> tuple[list[dict], list[str]]:
  """Predicts P(fatty liver) for image/DICOM files and folders.

  Args:
    model_dir: an exported model folder (`W/models/NASRL`) or an `export.Exported`.
    paths: files and folders (see `io.find_files`); may be empty when `manifest` is given.
    threshold: label = prob >= threshold; None = the model's threshold.
    saliency_dir: if set, one Grad-CAM overlay PNG per image is written under it.
    manifest: optional `path,subject_id` CSV (paths relative to its folder): its files are predicted
      too, image rows get their subject_id and one `level=subject` row per subject is appended.
    batch_size: images per model call.
    backend: "jax" (the Orbax weights) or "onnx" (the folder's `model.onnx`, by onnxruntime; no
      saliency).

  Returns:
    (rows, errors): rows are dicts with the keys of `COLUMNS` (image rows in file and frame order,
    then subject rows sorted by subject); errors are one line per file that could not be read.

  Raises:
    UserInputError: an unusable model, threshold, batch size, backend, manifest structure or
      saliency folder, or a missing or invalid model.onnx (before any image is read).
  """
  model = model_dir if isinstance(model_dir, export.Exported) else export.load(model_dir)
  threshold = model.threshold if threshold is None else export.check_threshold(threshold,
                                                                                "threshold")
  if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or \
      batch_size < 1:
    raise UserInputError(f"batch_size={batch_size!r}: must be an integer >= 1")
  if saliency_dir is not None:
    saliency_dir = os.fspath(saliency_dir)
    if os.path.exists(saliency_dir) and not os.path.isdir(saliency_dir):
      raise UserInputError(f"saliency folder {saliency_dir} exists and is not a folder")
  subject_of, manifest_files, errors = {}, [], []
  if manifest is not None:
    subject_of, manifest_files, errors = read_subject_manifest(os.fspath(manifest))
  if not paths and manifest is None:
    raise UserInputError("no input: give image/DICOM files or folders (or a manifest)")
  files, find_errors = find_files(list(paths) + manifest_files,
                                  exclude_dirs=[saliency_dir] if saliency_dir else [])
  errors += find_errors
  names = saliency_names(files) if saliency_dir is not None else {}
  fn = _model_fn(model, backend, saliency_dir is not None)
  arch_text = str(model.arch)
  rows: list[dict] = []
  pending: list[tuple[str, int, int, np.ndarray]] = []  # (file, frame, frames in file, image).

  def run_batch():
    n = len(pending)
    x = np.stack([p[3] for p in pending])[..., None]
    size = _batch_shape(n, batch_size)
    if size > n:  # Pad with copies of a real image: no NaNs, same compiled shape.
      x = np.concatenate([x, np.repeat(x[:1], size - n, axis=0)])
    prob, cam = fn(x)
    prob = np.asarray(prob, np.float64)[:n]
    cam = None if cam is None else np.asarray(cam)[:n]
    for j, (path, frame, n_frames, image) in enumerate(pending):
      out_png = ""
      if cam is not None:
        suffix = f"_f{frame:04d}" if n_frames > 1 else ""
        out_png = os.path.join(saliency_dir, f"{names[path]}{suffix}_saliency.png")
        predict_io.write_png(out_png, overlay(image, cam[j]))
      p = float(prob[j])
      rows.append({"level": "image", "path": path, "frame": frame,
                   "subject_id": subject_of.get(predict_io.real_key(path), ""),
                   "n_images": 1, "prob": p, "label": int(p >= threshold), "threshold": threshold,
                   "model": model.name, "architecture": arch_text, "saliency": out_png})
    pending.clear()

  for k, path in enumerate(files):
    try:
      images = read_image(path, model.data_cfg)
    except UserInputError as e:
      errors.append(str(e))
      continue
    except Exception as e:  # pylint: disable=broad-except  # One odd file must not stop the rest.
      errors.append(f"{path}: {type(e).__name__}: {' '.join(str(e).split())}")
      continue
    for frame, image in enumerate(images):
      pending.append((path, frame, images.shape[0], image))
      if len(pending) == batch_size:
        run_batch()
    if (k + 1) % 100 == 0:
      logging.info("read %d/%d files, predicted %d images", k + 1, len(files), len(rows))
  if pending:
    run_batch()
  if manifest is not None:
    rows += subject_rows(rows, threshold, model.name, arch_text)
  return rows, errors


def _model_fn(model: export.Exported, backend: str, saliency: bool):
  """`fn(x uint8[B, S, S, 1]) -> (P(fatty) [B], Grad-CAM [B, S, S] | None)` of the backend."""
  if backend not in BACKENDS:
    raise UserInputError(f"backend={backend!r}: must be one of {', '.join(BACKENDS)}")
  if backend == "onnx":
    if saliency:
      raise UserInputError("--saliency needs --backend=jax (Grad-CAM differentiates the JAX "
                           "model; the ONNX graph has no gradients)")
    from nasrl_jax import onnx_export  # pylint: disable=g-import-not-at-top  # onnx only here.
    return onnx_export.predict_fn(model)
  jitted = make_predict_fn(model.graphdef, saliency)
  return lambda x: jitted(model.params, model.batch_stats, jnp.asarray(x))


def subject_rows(image_rows: Sequence[dict], threshold: float, model_name: str,
                 architecture: str) -> list[dict]:
  """One `level=subject` row per subject: the mean probability of its images (and frames).

  Args:
    image_rows: `level=image` rows; those with an empty subject_id are left out.
    threshold: label = mean prob >= threshold.
    model_name: the `model` column.
    architecture: the `architecture` column.

  Returns:
    Rows sorted by subject_id.
  """
  rows = [r for r in image_rows if r["level"] == "image" and r["subject_id"]]
  if not rows:
    return []
  sid = np.array([r["subject_id"] for r in rows])
  # metrics.subject_level is the report's aggregation (mean of image probabilities); labels unused.
  subjects, _, prob = metrics_lib.subject_level(sid, np.zeros(sid.size, np.int64),
                                                [r["prob"] for r in rows])
  counts = collections.Counter(sid.tolist())
  return [{"level": "subject", "path": "", "frame": "", "subject_id": str(s),
           "n_images": counts[str(s)], "prob": float(p), "label": int(p >= threshold),
           "threshold": threshold, "model": model_name, "architecture": architecture,
           "saliency": ""} for s, p in zip(subjects, prob)]
