"""Files in and out of prediction: finding inputs, reading them as training did, CSV and PNG out.

This module owns:

* which files a PATH names (`find_files`: files as given, folders recursed; in folders, image and
  DICOM extensions and extensionless files with a DICOM preamble; hidden files and DICOMDIR are
  skipped);
* reading one file into what the model saw in training (`read_image`): the same decoding and
  preprocessing as the training sources (`manifest.open_image`/`decode_image` +
  `preprocess.preprocess` for stills; `dicom.check_header`, `read_frames` and
  `preprocess_frames` for DICOM, every frame);
* the optional subject manifest (`read_subject_manifest`, `path,subject_id`);
* the outputs: the CSV (`COLUMNS`, `write_csv`, atomic) and the saliency PNGs' names and bytes.
"""

from __future__ import annotations

import collections
import csv
import io
import os
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from nasrl_jax import io_utils
from nasrl_jax.data import dicom as dicom_lib
from nasrl_jax.data import manifest as manifest_lib
from nasrl_jax.data import preprocess
from nasrl_jax.errors import UserInputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DICOM_EXTENSIONS = (".dcm", ".dicom")
COLUMNS = ("level", "path", "frame", "subject_id", "n_images", "prob", "label", "threshold",
           "model", "architecture", "saliency")


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
    data_cfg: `config.data`-like (image_size, crop, crop_box, max_pixels); see
      `export.data_config`.

  Returns:
    uint8[F, S, S]: one image per frame (F = 1 except for multi-frame DICOM).

  Raises:
    UserInputError: an unreadable, corrupt, refused (non-US DICOM, too large) or undecodable file.
  """
  if is_dicom(path):
    dicom_lib.check_header(dicom_lib.read_header(path, path), data_cfg, path)
    frames, ds = dicom_lib.read_frames(path, path)
    return dicom_lib.preprocess_frames(frames, ds, data_cfg)
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
    key = real_key(full)
    if key in subject_of:
      if subject_of[key] != row["subject_id"]:
        raise UserInputError(f"{where}, field 'subject_id': {row['path']!r} is listed before with "
                             f"subject {subject_of[key]!r}")
      continue
    subject_of[key] = row["subject_id"]
    files.append(full)
  return subject_of, files, errors


def real_key(path: str) -> str:
  """The key files are matched by (manifest rows, duplicates): the normalised real path."""
  return os.path.normcase(os.path.realpath(path))


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


def write_png(path: str, rgb: np.ndarray) -> None:
  """Writes an RGB uint8 image as PNG, atomically."""
  buf = io.BytesIO()
  Image.fromarray(rgb, mode="RGB").save(buf, format="PNG")
  io_utils.atomic_write_bytes(path, buf.getvalue())


def write_csv(path: str | os.PathLike, rows: Sequence[dict]) -> None:
  """Writes prediction rows as CSV (columns `COLUMNS`, prob with 6 decimals), atomically."""
  buf = io.StringIO()
  writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
  writer.writeheader()
  for r in rows:
    writer.writerow(dict(r, prob=f"{r['prob']:.6f}", threshold=f"{r['threshold']:g}"))
  io_utils.atomic_write_text(path, buf.getvalue())
