"""The `manifest` source: a folder of PNG/JPEG/BMP/TIFF images described by a CSV.

This module owns reading and validating label tables and turning them into a `Dataset`:

  path,subject_id,cap,device,site
  s001/img1.png,s001,251,LOGIQ S8,hospital A
  s001/img2.png,s001,251,LOGIQ S8,hospital A

`path` is relative to `config.data.root`, or to the CSV's folder when root is ''. Each row needs
`cap` (FibroScan CAP, dB/m; labels come from `labels.cap_to_label`) or `label` (0/1 in binary mode,
grade 0..3 in grade mode); when both are filled they must agree. `device` and `site` are optional
(the `Dataset` keeps both: `config.eval.outer_groups=device|site` holds one out per outer fold).

Validation runs in three passes so that a user mistake stops the run with one line naming the
file, row (as in the file: header = row 1) and field, before the slow part:
  1. the CSV alone: columns, empty rows/cells, numbers, duplicate paths, paths escaping the root,
     missing files, classes present, subjects >= num_folds;
  2. each image's header: format, size (decompression-bomb guard), crop box fit, `verify()`;
  3. decode + preprocess; a file that is truncated past its header is reported here.

The table helpers (`read_table`, `parse_targets`, `check_cohort`, `resolve_in_root`,
`open_image`) are reused by the DICOM source for its labels CSV.
"""

import csv
import dataclasses
import math
import os
import warnings
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image

from nasrl_jax.data import Dataset
from nasrl_jax.data import labels as labels_lib
from nasrl_jax.data import preprocess
from nasrl_jax.errors import UserInputError

CAP_MAX = 500.0  # dB/m: FibroScan reports 100-400; anything above this is a typo or unit error.
IMAGE_FORMATS = ("PNG", "JPEG", "MPO", "BMP", "TIFF")  # Pillow format names we accept (MPO = JPEG).


@dataclasses.dataclass(frozen=True)
class Table:
  """A validated-shape CSV: header names and rows, each with its row number in the file."""
  path: str
  header: Tuple[str, ...]
  rows: Tuple[Dict[str, str], ...]
  row_numbers: Tuple[int, ...]


def _one_line(text) -> str:
  return " ".join(str(text).split())


def read_table(csv_path: str, required: Sequence[str], one_of: Sequence[str] = ()) -> Table:
  """Reads a CSV, checking columns, row lengths and empty rows.

  Args:
    csv_path: the CSV file.
    required: columns that must exist.
    one_of: at least one of these columns must exist (e.g. cap, label).

  Returns:
    Table with cells stripped of surrounding spaces.

  Raises:
    UserInputError: missing/unreadable file, bad encoding, missing columns, ragged or empty rows.
  """
  if not csv_path:
    raise UserInputError("config.data.manifest is empty: give the CSV file describing the images")
  if not os.path.isfile(csv_path):
    raise UserInputError(f"{csv_path}: manifest CSV not found")
  try:
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
      reader = csv.reader(f)
      records = [(reader.line_num, rec) for rec in reader]
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise UserInputError(f"{csv_path}: cannot read the manifest CSV ({_one_line(e)})") from None
  if not records:
    raise UserInputError(f"{csv_path}: the manifest CSV is empty (no header row)")
  header_line, header = records[0]
  header = tuple(h.strip() for h in header)
  if any(not h for h in header):
    raise UserInputError(f"{csv_path}: row {header_line}: the header has an empty column name")
  dupes = sorted({h for h in header if header.count(h) > 1})
  if dupes:
    raise UserInputError(f"{csv_path}: row {header_line}: duplicate column(s) {dupes}")
  missing = [c for c in required if c not in header]
  if missing:
    raise UserInputError(
        f"{csv_path}: missing column(s) {missing}; the header has {list(header)}")
  if one_of and not any(c in header for c in one_of):
    raise UserInputError(
        f"{csv_path}: needs a {' or '.join(repr(c) for c in one_of)} column; the header has "
        f"{list(header)}")
  # Blank lines at the very end are editor noise; anywhere else they are an error.
  while len(records) > 1 and not any(c.strip() for c in records[-1][1]):
    records.pop()
  rows, numbers = [], []
  for line, rec in records[1:]:
    if not any(c.strip() for c in rec):
      raise UserInputError(f"{csv_path}: row {line} is empty")
    if len(rec) != len(header):
      raise UserInputError(
          f"{csv_path}: row {line} has {len(rec)} cells but the header has {len(header)}")
    rows.append({h: c.strip() for h, c in zip(header, rec)})
    numbers.append(line)
  if not rows:
    raise UserInputError(f"{csv_path}: the manifest CSV has a header but no rows")
  return Table(csv_path, header, tuple(rows), tuple(numbers))


def _parse_cap(text: str, where: str) -> float:
  try:
    cap = float(text)
  except ValueError:
    raise UserInputError(f"{where}, field 'cap': {text!r} is not a number (dB/m)") from None
  if math.isnan(cap):
    raise UserInputError(f"{where}, field 'cap': value is NaN")
  if cap < 0:
    raise UserInputError(f"{where}, field 'cap': {text} dB/m is negative")
  if cap > CAP_MAX:
    raise UserInputError(
        f"{where}, field 'cap': {text} dB/m is absurd (FibroScan CAP is 100-400, limit "
        f"{CAP_MAX:g})")
  return cap


def _parse_label(text: str, where: str, n_classes: int, mode: str) -> int:
  try:
    value = float(text)
  except ValueError:
    value = math.nan
  if not (math.isfinite(value) and value == int(value) and 0 <= value < n_classes):
    allowed = "0 or 1" if mode == "binary" else f"an integer grade 0..{n_classes - 1}"
    raise UserInputError(f"{where}, field 'label': {text!r} is not {allowed} ({mode} mode)")
  return int(value)


def parse_targets(table: Table, data_cfg) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """CAP, labels and subject ids of every row, validated.

  Args:
    table: from `read_table`; uses columns subject_id, cap and/or label.
    data_cfg: `config.data` (label_mode, cap_cutoff, grade_cutoffs).

  Returns:
    (cap float32[N] with nan where only a label was given, label int32[N], subject_id str[N]).
  """
  n_classes = labels_lib.num_classes(data_cfg)
  caps, labels, subjects = [], [], []
  for row, line in zip(table.rows, table.row_numbers):
    where = f"{table.path}: row {line}"
    subject = row.get("subject_id", "")
    if not subject:
      raise UserInputError(f"{where}, field 'subject_id' is empty")
    cap_text, label_text = row.get("cap", ""), row.get("label", "")
    if not cap_text and not label_text:
      fields = " and ".join(repr(c) for c in ("cap", "label") if c in table.header)
      raise UserInputError(f"{where}, field {fields} is empty")
    cap = _parse_cap(cap_text, where) if cap_text else math.nan
    label = _parse_label(label_text, where, n_classes, data_cfg.label_mode) if label_text else None
    if cap_text:
      from_cap = int(labels_lib.cap_to_label(np.array([cap]), data_cfg)[0])
      if label is not None and label != from_cap:
        raise UserInputError(
            f"{where}, field 'label': {label} disagrees with cap {cap_text} dB/m, which gives "
            f"label {from_cap} with the configured cut-offs")
      label = from_cap
    caps.append(cap)
    labels.append(label)
    subjects.append(subject)
  return (np.asarray(caps, np.float32), np.asarray(labels, np.int32), np.asarray(subjects, str))


def check_cohort(label: np.ndarray, subject_id: np.ndarray, data_cfg, where: str) -> None:
  """Refuses cohorts a k-fold study cannot use: one class only, fewer subjects than folds.

  Args:
    label: int labels, one per image.
    subject_id: subject of each image.
    data_cfg: `config.data` (num_folds).
    where: the file to name in the error.
  """
  classes = np.unique(label)
  if classes.size < 2:
    raise UserInputError(
        f"{where}: only one class present (label {int(classes[0])} for all {label.size} images); "
        "need normal and fatty images")
  k = int(data_cfg.num_folds)
  n_subjects = np.unique(subject_id).size
  if n_subjects < k:
    raise UserInputError(
        f"{where}: {n_subjects} subjects, fewer than config.data.num_folds={k} (splits are by "
        "subject)")


def resolve_in_root(root: str, rel: str, where: str, field: str = "path") -> str:
  """Joins `rel` to `root`, refusing paths that leave the root or do not exist.

  The check is lexical (after normalising `..`), so symlinks placed inside the root on purpose
  still work. Backslashes are read as folder separators (CSV files written on Windows).

  Args:
    root: the data folder.
    rel: the path cell (relative, or absolute inside root).
    where: 'file: row N' for errors.
    field: the column name for errors.

  Returns:
    The absolute path.
  """
  if not rel:
    raise UserInputError(f"{where}, field '{field}' is empty")
  cleaned = rel.replace("\\", "/") if os.sep == "/" else rel
  root_abs = os.path.abspath(root)
  full = os.path.normpath(os.path.join(root_abs, cleaned))
  if os.path.commonpath([root_abs, full]) != root_abs:
    raise UserInputError(
        f"{where}, field '{field}': {rel!r} points outside the data root {root_abs}")
  if not os.path.isfile(full):
    raise UserInputError(f"{where}, field '{field}': {rel!r} does not exist ({full})")
  return full


def data_root(data_cfg, csv_path: str) -> str:
  """`config.data.root`, or the CSV's folder when it is ''; must be a folder."""
  root = data_cfg.root or os.path.dirname(os.path.abspath(csv_path))
  if not os.path.isdir(root):
    raise UserInputError(f"config.data.root={data_cfg.root!r}: folder not found")
  return root


def open_image(path: str, data_cfg, where: str,
               formats: Sequence[str] = IMAGE_FORMATS) -> Tuple[int, int]:
  """Opens an image header, refusing wrong formats, decompression bombs and corrupt files.

  Pillow's own bomb guard (`Image.MAX_IMAGE_PIXELS`, a process-wide setting we leave alone) raises
  above about 179 M pixels and warns above about 89 M; `config.data.max_pixels` is checked from
  the header first, so any limit below Pillow's applies without touching global state.

  Args:
    path: image file.
    data_cfg: `config.data` (max_pixels, crop, crop_box).
    where: 'file: row N' for errors.
    formats: accepted Pillow format names.

  Returns:
    (height, width) from the header (`verify()` passed; pixels not decoded).
  """
  name = os.path.basename(path)
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("error", Image.DecompressionBombWarning)
      with Image.open(path) as probe:
        fmt, (width, height) = probe.format, probe.size
        if fmt not in formats:
          raise UserInputError(
              f"{where}: image {name} is {fmt}, not one of {', '.join(formats)}")
        if width * height > int(data_cfg.max_pixels):
          raise UserInputError(
              f"{where}: image {name} is {width}x{height} = {width * height} pixels, over "
              f"config.data.max_pixels={int(data_cfg.max_pixels)} (decompression-bomb guard)")
        probe.verify()  # Checks structure and checksums (PNG CRCs) without decoding pixels.
  except UserInputError:
    raise
  except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
    raise UserInputError(
        f"{where}: image {name} refused as a decompression bomb ({_one_line(e)})") from None
  except Exception as e:  # pylint: disable=broad-except  # Pillow raises many types on bad files.
    raise UserInputError(
        f"{where}: image {name} is corrupt or not an image ({type(e).__name__}: "
        f"{_one_line(e)})") from None
  preprocess.check_box_fits(height, width, data_cfg, where=f"{where}: image {name}")
  return height, width


def decode_image(path: str, where: str) -> np.ndarray:
  """Fully decodes an image (first frame) into a uint8 grayscale array.

  Args:
    path: image file already checked by `open_image`.
    where: 'file: row N' for errors.

  Returns:
    uint8[H, W].
  """
  try:
    with Image.open(path) as img:
      img.load()  # Raises on truncated data (ImageFile.LOAD_TRUNCATED_IMAGES stays False).
      return preprocess.to_grayscale(img)
  except UserInputError as e:
    raise UserInputError(f"{where}: image {os.path.basename(path)}: {e}") from None
  except Exception as e:  # pylint: disable=broad-except
    raise UserInputError(
        f"{where}: image {os.path.basename(path)} is corrupt or truncated ({type(e).__name__}: "
        f"{_one_line(e)})") from None


def validate(data_cfg) -> Tuple[Table, List[str], Tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """Passes 1 and 2: everything but decoding pixels (see the module docstring).

  Args:
    data_cfg: `config.data`.

  Returns:
    (table, absolute image paths, (cap, label, subject_id)).
  """
  preprocess.validate_config(data_cfg)
  labels_lib.num_classes(data_cfg)
  table = read_table(data_cfg.manifest, required=("path", "subject_id"), one_of=("cap", "label"))
  root = data_root(data_cfg, table.path)
  cap, label, subject_id = parse_targets(table, data_cfg)
  paths, seen = [], {}
  for row, line in zip(table.rows, table.row_numbers):
    where = f"{table.path}: row {line}"
    full = resolve_in_root(root, row["path"], where)
    key = os.path.normcase(os.path.realpath(full))
    if key in seen:
      raise UserInputError(
          f"{where}, field 'path': {row['path']!r} duplicates row {seen[key]} (same file)")
    seen[key] = line
    paths.append(full)
  check_cohort(label, subject_id, data_cfg, table.path)
  for full, line in zip(paths, table.row_numbers):
    open_image(full, data_cfg, f"{table.path}: row {line}")
  return table, paths, (cap, label, subject_id)


def load(data_cfg) -> Dataset:
  """Loads the manifest source into a `Dataset`.

  Args:
    data_cfg: `config.data` (manifest, root, image_size, crop, crop_box, max_pixels, label_mode,
      cap_cutoff, grade_cutoffs, num_folds).

  Returns:
    Dataset with images uint8[N, S, S, 1] in CSV row order.
  """
  table, paths, (cap, label, subject_id) = validate(data_cfg)
  size = int(data_cfg.image_size)
  images = np.empty((len(paths), size, size, 1), np.uint8)
  for i, (full, line) in enumerate(zip(paths, table.row_numbers)):
    gray = decode_image(full, f"{table.path}: row {line}")
    images[i, ..., 0] = preprocess.resize(preprocess.crop(gray, data_cfg), size)
  device = np.asarray([row.get("device", "") for row in table.rows], str)
  site = np.asarray([row.get("site", "") for row in table.rows], str)
  return Dataset(
      images=images, label=label, cap=cap, subject_id=subject_id, device=device,
      true_cap=np.full(len(paths), np.nan, np.float32),
      name=f"manifest:{os.path.basename(table.path)}", site=site)
