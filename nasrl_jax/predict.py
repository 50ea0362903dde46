"""Prediction on new images with an exported model: P(fatty liver) per image and per subject.

This module owns inference on files a user brings (not a `Dataset`):

  python -m nasrl_jax.predict --model=W/models/NASRL --output=preds.csv \\
      [--threshold=T] [--manifest=CSV] [--saliency=DIR] [--batch_size=32] PATH...

* PATHs are PNG/JPEG/BMP/TIFF/DICOM files and folders (recursed; in folders, files with an image
  or DICOM extension, and extensionless files with a DICOM preamble, are read; hidden files and
  DICOMDIR are skipped). Every frame of a multi-frame DICOM is predicted.
* Preprocessing is the training one, rebuilt from the model's metadata (`data_config`): the same
  decoding (`manifest.open_image`/`decode_image`, `dicom.read_frames`), the DICOM ultrasound region
  crop, `preprocess.crop` (none | box | sector) and the resize to the model's input size. So full
  screen captures with sector fans, burned-in text and rulers go through the crop the model was
  trained with.
* Output CSV (written atomically), one row per image/frame with `level=image`, plus, when
  `--manifest` (columns `path`, `subject_id`, paths relative to the CSV's folder, as the training
  manifest) is given, one row per subject with `level=subject` and the mean probability of the
  subject's images. Columns: see `COLUMNS`. `prob` is P(fatty) = 1 - P(S0) (the softmax's class 1
  in binary mode, S1-S3 together in grade mode); `label` is `prob >= threshold`.
* Unreadable files do not stop the run: each gets one error line, collected, printed to stderr at
  the end, followed by a summary line. Exit code 0 when at least one image was predicted and no
  file failed, 1 when some failed (or nothing was found), 2 on bad flags or an unusable model.
* `--saliency=DIR` writes one Grad-CAM overlay PNG per image (see `make_predict_fn`).

Batches have a fixed size (`--batch_size`); the last one is padded to the next power of two, so
each call compiles at most 1 + log2(batch_size) shapes and typically two.

Library use (a notebook): `rows, errors = predict_paths(model_dir, paths, ...)`.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import io
import logging
import math
import os
import sys
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import matplotlib
import ml_collections
import numpy as np
from flax import nnx
from PIL import Image

from nasrl_jax import child as child_lib
from nasrl_jax import io_utils
from nasrl_jax import metrics as metrics_lib
from nasrl_jax import pipeline
from nasrl_jax import space as space_lib
from nasrl_jax.data import dicom as dicom_lib
from nasrl_jax.data import manifest as manifest_lib
from nasrl_jax.data import preprocess
from nasrl_jax.errors import UserInputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DICOM_EXTENSIONS = (".dcm", ".dicom")
# Used when a model's metadata has no max_pixels (pipeline does not export it): the default of
# config.data.max_pixels, the decompression-bomb guard.
DEFAULT_MAX_PIXELS = 60_000_000
# When the metadata has no threshold (the pipeline exports one chosen on validation data).
DEFAULT_THRESHOLD = 0.5
COLUMNS = ("level", "path", "frame", "subject_id", "n_images", "prob", "label", "threshold",
           "model", "architecture", "saliency")
SALIENCY_ALPHA = 0.6  # Opacity of the heat map where the Grad-CAM map is at its maximum.
SALIENCY_CMAP = "jet"  # Matplotlib colormap of the heat map (blue = low, red = high).


@dataclasses.dataclass(frozen=True)
class LoadedModel:
  """An exported model ready for inference, and the preprocessing it was trained with."""
  name: str
  directory: str
  arch: space_lib.Architecture
  spec: child_lib.ChildSpec
  graphdef: Any
  params: Any
  batch_stats: Any
  metadata: dict
  data_cfg: ml_collections.ConfigDict
  threshold: float


# ------------------------------------------------------------------------------ model loading


def _check_threshold(value, where: str) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or \
      not 0.0 <= float(value) <= 1.0:
    raise UserInputError(f"{where}={value!r}: must be a probability in [0, 1]")
  return float(value)


def data_config(preprocessing: Mapping[str, Any], where: str = "model metadata",
                ) -> ml_collections.ConfigDict:
  """Rebuilds the preprocessing part of `config.data` from an exported model's metadata.

  Args:
    preprocessing: `metadata["preprocessing"]` as written by `pipeline._model_metadata`
      (image_size, crop, crop_box, label_mode, cap_cutoff, grade_cutoffs; max_pixels optional).
    where: what to name in errors.

  Returns:
    A ConfigDict with the fields `preprocess`, `manifest.open_image` and the DICOM reader use.

  Raises:
    UserInputError: a missing or invalid field.
  """
  if not isinstance(preprocessing, Mapping) or "image_size" not in preprocessing:
    raise UserInputError(f"{where}: no 'preprocessing' record with an image_size")
  try:
    cfg = ml_collections.ConfigDict({
        "image_size": preprocessing["image_size"],
        "crop": preprocessing.get("crop", "none"),
        "crop_box": tuple(preprocessing.get("crop_box", (0, 0, 0, 0))),
        "max_pixels": int(preprocessing.get("max_pixels", DEFAULT_MAX_PIXELS)),
        "label_mode": preprocessing.get("label_mode", "binary"),
        "cap_cutoff": float(preprocessing.get("cap_cutoff", 238.0)),
        "grade_cutoffs": tuple(preprocessing.get("grade_cutoffs", (238.0, 260.0, 290.0))),
    })
    preprocess.validate_config(cfg)
  except (UserInputError, TypeError, ValueError) as e:
    raise UserInputError(f"{where}: bad preprocessing record ({e})") from None
  return cfg


def load_model(model_dir: str | os.PathLike) -> LoadedModel:
  """Loads a model exported by the pipeline (`W/models/<name>`).

  Args:
    model_dir: the model's folder (`checkpoint.save_model` layout, pipeline metadata).

  Returns:
    LoadedModel.

  Raises:
    UserInputError: the folder is missing, corrupt, or not a nasrl_jax exported model.
  """
  model_dir = os.path.abspath(os.fspath(model_dir))
  try:
    arch, spec, graphdef, params, stats, meta = pipeline.load_exported(model_dir)
  except UserInputError:
    raise
  except Exception as e:  # pylint: disable=broad-except  # KeyError, ValueError, TypeError ...
    raise UserInputError(f"{model_dir}: not a usable nasrl_jax exported model ({type(e).__name__}:"
                         f" {' '.join(str(e).split())})") from None
  where = f"{model_dir}: metadata"
  data_cfg = data_config(meta.get("preprocessing"), where)
  size = int(data_cfg.image_size)
  if tuple(spec.input_shape) != (size, size, 1):
    raise UserInputError(f"{where}: spec.input_shape {spec.input_shape} does not match "
                         f"preprocessing.image_size {size} (expected ({size}, {size}, 1))")
  threshold = _check_threshold(meta.get("threshold", DEFAULT_THRESHOLD), f"{where}: threshold")
  return LoadedModel(name=str(meta.get("name") or os.path.basename(model_dir)),
                     directory=model_dir, arch=arch, spec=spec, graphdef=graphdef, params=params,
                     batch_stats=stats, metadata=meta, data_cfg=data_cfg, threshold=threshold)


# ------------------------------------------------------------------------------ reading files


def is_dicom(path: str) -> bool:
  """True for a DICOM extension or the 'DICM' magic at byte 128 (extensionless PACS exports)."""
  if os.path.splitext(path)[1].lower() in DICOM_EXTENSIONS:
    return True
  try:
    with open(path, "rb") as f:
      head = f.read(132)
  except OSError:
    return False
  return len(head) == 132 and head[128:] == b"DICM"


def _wanted_in_folder(path: str) -> bool:
  name = os.path.basename(path)
  if name.startswith(".") or name.upper() == "DICOMDIR":
    return False
  ext = os.path.splitext(name)[1].lower()
  if ext in IMAGE_EXTENSIONS or ext in DICOM_EXTENSIONS:
    return True
  return is_dicom(path)  # Unknown or no extension: only if it is DICOM.


def find_files(paths: Iterable[str | os.PathLike], exclude_dirs: Sequence[str | os.PathLike] = (),
               ) -> tuple[list[str], list[str]]:
  """Expands files and folders (recursively, sorted) into the files to predict.

  Args:
    paths: files (always tried, whatever their extension) and folders.
    exclude_dirs: folders not to descend into (the saliency folder, so that a rerun does not
      predict the previous run's overlays).

  Returns:
    (files, errors): files in argument order without duplicates (by real path); one error line
    per path that does not exist or folder without any image or DICOM file.
  """
  files, errors, seen = [], [], set()
  excluded = {os.path.normcase(os.path.realpath(d)) for d in exclude_dirs}

  def add(path):
    key = os.path.normcase(os.path.realpath(path))
    if key not in seen:
      seen.add(key)
      files.append(path)

  for raw in paths:
    path = os.fspath(raw)
    if os.path.isfile(path):
      add(path)
    elif os.path.isdir(path):
      found = []
      for folder, dirs, names in os.walk(path):
        if os.path.normcase(os.path.realpath(folder)) in excluded:
          dirs[:] = []
          continue
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(folder, n) for n in sorted(names)
                  if _wanted_in_folder(os.path.join(folder, n))]
      if not found:
        errors.append(f"{path}: folder holds no PNG/JPEG/BMP/TIFF/DICOM file")
      for f in found:
        add(f)
    else:
      errors.append(f"{path}: no such file or folder")
  return files, errors


def read_image(path: str, data_cfg) -> np.ndarray:
  """Reads and preprocesses one file exactly as the training data sources do.

  Args:
    path: PNG/JPEG/BMP/TIFF or DICOM file.
    data_cfg: `config.data`-like (image_size, crop, crop_box, max_pixels); see `data_config`.

  Returns:
    uint8[F, S, S]: one image per frame (F = 1 except for multi-frame DICOM).

  Raises:
    UserInputError: an unreadable, corrupt, refused (non-US DICOM, too large) or undecodable file.
  """
  size = int(data_cfg.image_size)
  if is_dicom(path):
    header = dicom_lib.read_header(path, path)
    # Same refusals as the training source: Modality must be US, a decoder must exist, size guard.
    dicom_lib._check_header(header, data_cfg, path)  # pylint: disable=protected-access
    frames, ds = dicom_lib.read_frames(path, path)
    # As dicom.load: crop to the ultrasound region first, unless the model used a fixed box.
    box = None if data_cfg.crop == "box" else dicom_lib.region_box(ds)
    out = []
    for frame in frames:
      if box is not None:
        top, left, h, w = box
        frame = frame[top:top + h, left:left + w]
      out.append(preprocess.resize(preprocess.crop(frame, data_cfg), size))
    return np.stack(out)
  manifest_lib.open_image(path, data_cfg, path)
  gray = manifest_lib.decode_image(path, path)
  return preprocess.preprocess(gray, data_cfg)[None]


def read_subject_manifest(csv_path: str) -> tuple[dict[str, str], list[str], list[str]]:
  """Reads a `path,subject_id` CSV (other columns ignored), paths relative to the CSV's folder.

  Args:
    csv_path: the manifest.

  Returns:
    (subject of each file keyed by real path, the files in row order, error lines for rows whose
    file is missing or whose subject_id is empty).

  Raises:
    UserInputError: the CSV is unreadable or lacks the path/subject_id columns, or two rows name
      the same file with different subjects.
  """
  table = manifest_lib.read_table(csv_path, required=("path", "subject_id"))
  root = os.path.dirname(os.path.abspath(csv_path))
  subject_of, files, errors = {}, [], []
  for row, line in zip(table.rows, table.row_numbers):
    where = f"{csv_path}: row {line}"
    if not row["subject_id"]:
      errors.append(f"{where}, field 'subject_id' is empty")
      continue
    try:
      full = manifest_lib.resolve_in_root(root, row["path"], where)
    except UserInputError as e:
      errors.append(str(e))
      continue
    key = os.path.normcase(os.path.realpath(full))
    if key in subject_of:
      if subject_of[key] != row["subject_id"]:
        raise UserInputError(f"{where}, field 'subject_id': {row['path']!r} is listed before with "
                             f"subject {subject_of[key]!r}")
      continue
    subject_of[key] = row["subject_id"]
    files.append(full)
  return subject_of, files, errors


# ------------------------------------------------------------------------------ the model


def features(model: child_lib.ChildNet, x: jax.Array) -> jax.Array:
  """The last conv layer's activations (before the last pool), eval mode."""
  return model.features(x, train=False)


def head(model: child_lib.ChildNet, a: jax.Array) -> jax.Array:
  """The rest of the network in eval mode: logits [B, classes]."""
  return model.head_logits(a, train=False)


def fatty_log_odds(logits: jax.Array) -> jax.Array:
  """log P(fatty) - log P(S0) from logits [B, classes]: logit_1 - logit_0 in binary mode."""
  return jax.nn.logsumexp(logits[:, 1:], axis=-1) - logits[:, 0]


def make_predict_fn(graphdef, saliency: bool) -> Callable:
  """Jitted `fn(params, batch_stats, x uint8[B, S, S, 1]) -> (prob [B], cam [B, S, S] | None)`.

  `prob` is P(fatty) = sigmoid(fatty log-odds) = 1 - softmax(logits)[0].

  With `saliency`, `cam` is Grad-CAM (Selvaraju et al. 2017) for the fatty log-odds: the last conv
  layer's activations A_k weighted by the spatial mean of d(log-odds)/dA_k, summed over channels,
  ReLU, bilinearly upsampled to the input size and divided by its per-image maximum (all zeros when
  nothing in the image argues for fatty). The log-odds, not logit_1 alone, is the quantity the
  decision depends on. Batch norm is in eval mode, so images in a batch do not interact and one
  vector-Jacobian product gives every image's gradient.
  """

  def predict(params, batch_stats, x):
    model = nnx.merge(graphdef, params, batch_stats, copy=True)
    a = features(model, x)
    if not saliency:
      return jax.nn.sigmoid(fatty_log_odds(head(model, a))), None
    score, vjp = jax.vjp(lambda a_: fatty_log_odds(head(model, a_)), a)
    (grad,) = vjp(jnp.ones_like(score))
    a32, g32 = a.astype(jnp.float32), grad.astype(jnp.float32)
    weights = g32.mean(axis=(1, 2), keepdims=True)
    cam = jax.nn.relu((weights * a32).sum(axis=-1))
    cam = jax.image.resize(cam, (x.shape[0], x.shape[1], x.shape[2]), "bilinear")
    cam = jnp.maximum(cam, 0.0)  # Bilinear interpolation of non-negative values stays >= 0.
    peak = cam.max(axis=(1, 2), keepdims=True)
    cam = jnp.where(peak > 0, cam / jnp.where(peak > 0, peak, 1.0), 0.0)
    return jax.nn.sigmoid(score), cam

  return jax.jit(predict)


def overlay(gray: np.ndarray, cam: np.ndarray) -> np.ndarray:
  """The preprocessed image with a colour heat map blended in where the map is high.

  Args:
    gray: uint8[S, S] (what the model saw).
    cam: float[S, S] in [0, 1].

  Returns:
    uint8[S, S, 3]: gray where cam is 0; up to SALIENCY_ALPHA of the colormap where cam is 1.
  """
  cam = np.clip(np.asarray(cam, np.float64), 0.0, 1.0)
  color = matplotlib.colormaps[SALIENCY_CMAP](cam)[..., :3]
  base = (np.asarray(gray, np.float64) / 255.0)[..., None]
  w = SALIENCY_ALPHA * cam[..., None]
  return np.clip(np.rint(((1.0 - w) * base + w * color) * 255.0), 0, 255).astype(np.uint8)


def _png_bytes(rgb: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(rgb, mode="RGB").save(buf, format="PNG")
  return buf.getvalue()


def saliency_names(files: Sequence[str]) -> dict[str, str]:
  """Output name (without suffix) per input file: its path relative to the inputs' common folder.

  `a/s001/img1.png` and `a/s002/img1.png` -> `s001/img1`, `s002/img1`; two files of one folder
  with the same stem keep their extension apart (`img1_png`, `img1_jpg`).
  """
  if not files:
    return {}
  absolute = [os.path.abspath(f) for f in files]
  common = os.path.commonpath([os.path.dirname(f) for f in absolute])
  rel = [os.path.relpath(f, common) for f in absolute]
  stems = collections.Counter(os.path.splitext(r)[0] for r in rel)
  names = {}
  for f, r in zip(files, rel):
    stem, ext = os.path.splitext(r)
    names[f] = f"{stem}_{ext.lstrip('.').lower()}" if stems[stem] > 1 and ext else stem
  return names


# ------------------------------------------------------------------------------ prediction


def _batch_shape(n: int, batch_size: int) -> int:
  """Full batches run at batch_size; a last partial one at the next power of two (<= batch_size)."""
  return min(batch_size, 1 << max(0, math.ceil(math.log2(n))))


def predict_paths(model_dir: str | os.PathLike | LoadedModel,
                  paths: Sequence[str | os.PathLike], threshold: Optional[float] = None,
                  saliency_dir: Optional[str | os.PathLike] = None,
                  manifest: Optional[str | os.PathLike] = None, *,
                  batch_size: int = 32) -> tuple[list[dict], list[str]]:
  """Predicts P(fatty liver) for image/DICOM files and folders.

  Args:
    model_dir: an exported model folder (`W/models/NASRL`) or a `LoadedModel`.
    paths: files and folders (see `find_files`); may be empty when `manifest` is given.
    threshold: label = prob >= threshold; None = the model's metadata threshold.
    saliency_dir: if set, one Grad-CAM overlay PNG per image is written under it.
    manifest: optional `path,subject_id` CSV (paths relative to its folder): its files are predicted
      too, image rows get their subject_id and one `level=subject` row per subject is appended.
    batch_size: images per model call.

  Returns:
    (rows, errors): rows are dicts with the keys of `COLUMNS` (image rows in file and frame order,
    then subject rows sorted by subject); errors are one line per file that could not be read.

  Raises:
    UserInputError: an unusable model, threshold, batch size, manifest structure or saliency folder
      (before any image is read).
  """
  model = model_dir if isinstance(model_dir, LoadedModel) else load_model(model_dir)
  threshold = model.threshold if threshold is None else _check_threshold(threshold, "threshold")
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
  fn = make_predict_fn(model.graphdef, saliency_dir is not None)
  arch_text = str(model.arch)
  rows: list[dict] = []
  pending: list[tuple[str, int, int, np.ndarray]] = []  # (file, frame, frames in file, image).

  def run_batch():
    n = len(pending)
    x = np.stack([p[3] for p in pending])[..., None]
    size = _batch_shape(n, batch_size)
    if size > n:  # Pad with copies of a real image: no NaNs, same compiled shape.
      x = np.concatenate([x, np.repeat(x[:1], size - n, axis=0)])
    prob, cam = fn(model.params, model.batch_stats, jnp.asarray(x))
    prob = np.asarray(prob, np.float64)[:n]
    cam = None if cam is None else np.asarray(cam)[:n]
    for j, (path, frame, n_frames, image) in enumerate(pending):
      out_png = ""
      if cam is not None:
        suffix = f"_f{frame:04d}" if n_frames > 1 else ""
        out_png = os.path.join(saliency_dir, f"{names[path]}{suffix}_saliency.png")
        io_utils.atomic_write_bytes(out_png, _png_bytes(overlay(image, cam[j])))
      p = float(prob[j])
      rows.append({"level": "image", "path": path, "frame": frame,
                   "subject_id": subject_of.get(os.path.normcase(os.path.realpath(path)), ""),
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


def write_csv(path: str | os.PathLike, rows: Sequence[dict]) -> None:
  """Writes prediction rows as CSV (columns `COLUMNS`, prob with 6 decimals), atomically."""
  buf = io.StringIO()
  writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
  writer.writeheader()
  for r in rows:
    writer.writerow(dict(r, prob=f"{r['prob']:.6f}", threshold=f"{r['threshold']:g}"))
  io_utils.atomic_write_text(path, buf.getvalue())


# ------------------------------------------------------------------------------ command line


def _define_flags():
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("model", None, "Exported model folder, e.g. W/models/NASRL.")
  flags.DEFINE_string("output", None, "CSV file to write (replaced atomically).")
  flags.DEFINE_float("threshold", None, "Label = prob >= threshold (default: the model's).")
  flags.DEFINE_string("manifest", None, "Optional CSV with path,subject_id columns (paths "
                      "relative to its folder): adds per-subject rows.")
  flags.DEFINE_string("saliency", None, "Optional folder for Grad-CAM overlay PNGs.")
  flags.DEFINE_integer("batch_size", 32, "Images per model call.")
  return flags.FLAGS


def _parse_flags(argv):
  """absl's parser, but a bad flag exits with code 2 (the documented code for bad flags/model)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.stderr.write(f"error: {' '.join(str(e).split())} (see --helpshort)\n")
    sys.exit(2)


def run_cli(model: Optional[str], output: Optional[str], paths: Sequence[str], *,
            threshold: Optional[float] = None, manifest: Optional[str] = None,
            saliency: Optional[str] = None, batch_size: int = 32, out=None, err=None) -> int:
  """The command line's work after flag parsing: predict, write the CSV, report.

  Args:
    model: exported model folder.
    output: CSV file to write.
    paths: files and folders.
    threshold: see `predict_paths`.
    manifest: see `predict_paths`.
    saliency: see `predict_paths` (saliency_dir).
    batch_size: see `predict_paths`.
    out: stream for the summary line (default sys.stdout).
    err: stream for error lines (default sys.stderr).

  Returns:
    The exit code: 0 all predicted, 1 some file failed or nothing found, 2 bad flags or model.
  """
  out = sys.stdout if out is None else out
  err = sys.stderr if err is None else err
  try:
    if not model:
      raise UserInputError("--model is required (an exported model folder, e.g. W/models/NASRL)")
    if not output:
      raise UserInputError("--output is required (the CSV file to write)")
    if os.path.isdir(output):
      raise UserInputError(f"--output={output} is a folder; give a CSV file name")
    rows, errors = predict_paths(model, paths, threshold=threshold, saliency_dir=saliency or None,
                                 manifest=manifest or None, batch_size=batch_size)
  except UserInputError as e:
    err.write(f"error: {e}\n")
    return 2
  write_csv(output, rows)
  n_images = sum(r["level"] == "image" for r in rows)
  n_files = len({r["path"] for r in rows if r["level"] == "image"})
  n_subjects = sum(r["level"] == "subject" for r in rows)
  for e in errors:
    err.write(f"error: {e}\n")
  err.flush()
  subjects = f", {n_subjects} subjects" if manifest else ""
  out.write(f"predicted {n_images} images from {n_files} files{subjects}; {len(errors)} failed; "
            f"wrote {output}\n")
  out.flush()
  return 0 if n_images > 0 and not errors else 1


class _OwnInfoOnly(logging.Filter):
  """Keeps everyone's warnings but only nasrl_jax's INFO lines (Orbax logs dozens per load)."""

  def filter(self, record):
    return record.levelno >= logging.WARNING or f"{os.sep}nasrl_jax{os.sep}" in record.pathname


def main(argv: Sequence[str]) -> int:
  """absl entry point: flags -> `run_cli`."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  for handler in logging.getLogger().handlers + logging.getLogger("absl").handlers:
    handler.addFilter(_OwnInfoOnly())
  return run_cli(f.model, f.output, list(argv[1:]), threshold=f.threshold, manifest=f.manifest,
                 saliency=f.saliency, batch_size=f.batch_size)


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  _define_flags()
  app.run(main, flags_parser=_parse_flags)
