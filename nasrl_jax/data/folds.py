"""Subject-level, label-stratified k-fold splits (train / val / test) and the folds.json file.

How a fold is made (decided here, recorded in docs/notes_folds_metrics.md):
  1. Test parts: scikit-learn's `StratifiedGroupKFold(num_folds, shuffle=True, random_state=seed)`
     with groups = subject_id and y = label. The k test parts partition all images.
  2. Validation part of fold i: the non-test rest of fold i is split again with
     `StratifiedGroupKFold(num_folds - 1, shuffle=True, random_state=<seed, i>)`; the first
     `val_parts` of those inner parts are the validation part, the others the training part.
     Each inner part is about the size of one outer part, so train:val:test is
     (num_folds - 1 - val_parts):val_parts:1 -- 8:1:1 with 10 folds, the paper's split -- and the
     validation part is grouped by subject and stratified on the rest itself.
     The inner seed is derived from (seed, i) with `np.random.SeedSequence`, so folds are
     deterministic per seed and independent of each other.

No subject is ever in two parts of a fold. A fold whose training part lacks a class is an error
(nothing could learn that class); a validation or test part lacking a class only warns by
default (small cohorts such as the 40-subject test cohort hit it legitimately; accuracy is still
defined there, while per-class metrics of that fold become NaN).
"""

import os
import warnings

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from nasrl_jax.errors import UserInputError
from nasrl_jax.io_utils import atomic_write_json, read_json

PARTS = ("train", "val", "test")


def _as_labels(label, where):
  """Integer label array; refuses non-integer values (NaN, 0.5, strings)."""
  arr = np.asarray(label)
  if arr.ndim != 1 or arr.size == 0:
    raise UserInputError(f"{where}: label must be a non-empty 1-D array, got shape {arr.shape}")
  if arr.dtype.kind in "iu":
    return arr.astype(np.int64)
  if arr.dtype.kind == "b":
    return arr.astype(np.int64)
  if arr.dtype.kind == "f":
    bad = ~np.isfinite(arr) | (arr != np.round(arr))
    if np.any(bad):
      i = int(np.flatnonzero(bad)[0])
      raise UserInputError(f"{where}: label[{i}]={arr[i].item()} is not an integer class")
    return arr.astype(np.int64)
  raise UserInputError(f"{where}: label must be integer classes, got dtype {arr.dtype}")


def _as_subjects(subject_id, n, where):
  arr = np.asarray(subject_id)
  if arr.ndim != 1 or arr.shape[0] != n:
    raise UserInputError(
        f"{where}: subject_id has shape {arr.shape} but label has {n} entries; "
        "need one subject id per image")
  if arr.dtype.kind not in "iuUSO":
    raise UserInputError(f"{where}: subject_id must be strings or integers, got dtype {arr.dtype}")
  if arr.dtype.kind == "O":
    arr = arr.astype(str)
  return arr


def _split(n_splits, groups, y, random_state, where):
  """Test-index arrays of StratifiedGroupKFold; sklearn's complaints become one-line errors."""
  sgkf = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
  with warnings.catch_warnings():
    # sklearn warns when a class has fewer *images* than n_splits; the per-part class checks
    # in make_folds say the same thing more usefully (which fold, which part, which class).
    warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
    try:
      parts = [np.sort(test) for _, test in sgkf.split(np.zeros(len(y)), y, groups)]
    except ValueError as e:
      raise UserInputError(f"{where}: cannot make {n_splits} stratified subject folds: {e}") from e
  if any(p.size == 0 for p in parts):
    raise UserInputError(
        f"{where}: StratifiedGroupKFold left a part empty with n_splits={n_splits}; "
        "use fewer folds or more subjects")
  return parts


def make_folds(subject_id, label, num_folds, seed, val_parts=1, missing_class="warn"):
  """Makes subject-grouped, label-stratified train/val/test folds.

  Args:
    subject_id: [N] subject of each image (strings or ints); splits are grouped by it.
    label: [N] integer class of each image (binary or grade labels).
    num_folds: k; the test parts of the k folds partition all images.
    seed: non-negative int; the folds are a deterministic function of (data, k, seed, val_parts).
    val_parts: size of the validation part in units of one test part: train:val:test is
      (num_folds - 1 - val_parts):val_parts:1 (8:1:1 for k = 10 and val_parts = 1).
    missing_class: 'warn' (default) or 'error': what to do when a validation or test part lacks
      a class present in the data. A training part lacking a class is always an error.

  Returns:
    A list of num_folds dicts {"train", "val", "test"} of sorted int64 image indices.

  Raises:
    UserInputError: bad arguments, fewer subjects than folds, a single class, or a fold whose
      training part (or, with missing_class='error', val/test part) lacks a class.
  """
  where = "make_folds"
  y = _as_labels(label, where)
  groups = _as_subjects(subject_id, y.size, where)
  if isinstance(num_folds, bool) or not isinstance(num_folds, (int, np.integer)) or num_folds < 2:
    raise UserInputError(f"config.data.num_folds={num_folds}: must be an integer >= 2")
  num_folds = int(num_folds)
  if isinstance(val_parts, bool) or not isinstance(val_parts, (int, np.integer)) or not (
      1 <= val_parts <= num_folds - 2):
    raise UserInputError(
        f"config.data.val_parts={val_parts}: must be an integer in [1, num_folds - 2] = "
        f"[1, {num_folds - 2}] so that train, val and test parts are all non-empty")
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
    raise UserInputError(f"seed={seed}: must be an integer in [0, 2**32)")
  if missing_class not in ("warn", "error"):
    raise ValueError(f"missing_class={missing_class!r}: must be 'warn' or 'error'")
  classes = np.unique(y)
  if classes.size < 2:
    raise UserInputError(
        f"labels: only class {int(classes[0])} is present in all {y.size} images; "
        "need at least two classes to train and evaluate a classifier")
  num_subjects = np.unique(groups).size
  if num_subjects < num_folds:
    raise UserInputError(
        f"config.data.num_folds={num_folds}: the data has only {num_subjects} subjects; "
        "need at least one subject per fold")

  tests = _split(num_folds, groups, y, int(seed), where)
  folds = []
  for i, test in enumerate(tests):
    rest = np.setdiff1d(np.arange(y.size), test, assume_unique=True)
    inner_seed = int(np.random.SeedSequence([int(seed), i]).generate_state(1)[0])
    inner = _split(num_folds - 1, groups[rest], y[rest], inner_seed, f"{where} (fold {i})")
    val = np.sort(np.concatenate([rest[p] for p in inner[:val_parts]]))
    train = np.sort(np.concatenate([rest[p] for p in inner[val_parts:]]))
    folds.append({"train": train.astype(np.int64), "val": val.astype(np.int64),
                  "test": test.astype(np.int64)})
  _check_classes(folds, y, classes, missing_class)
  return folds


def _check_classes(folds, y, classes, missing_class):
  """Error if a training part lacks a class; warn (or error) for val/test parts."""
  for i, fold in enumerate(folds):
    for part in PARTS:
      missing = np.setdiff1d(classes, y[fold[part]])
      if missing.size == 0:
        continue
      msg = (f"fold {i}: the {part} part ({fold[part].size} images) has no image of class(es) "
             f"{[int(c) for c in missing]}")
      if part == "train":
        raise UserInputError(msg + "; use fewer folds or more subjects of that class")
      if missing_class == "error":
        raise UserInputError(msg)
      warnings.warn(msg + "; per-class metrics of this fold will be NaN", UserWarning, stacklevel=3)


def validate_folds(subject_id, label, folds, where="folds"):
  """Checks that folds fit the data: indices in range, parts disjoint and covering all images,
  no subject in two parts of a fold, every training part non-empty.

  Args:
    subject_id: [N] subject of each image.
    label: [N] integer class of each image.
    folds: list of {"train", "val", "test"} index arrays/lists.
    where: name used in error messages (e.g. the folds.json path).

  Returns:
    The folds with sorted int64 numpy arrays.

  Raises:
    UserInputError: naming `where`, the fold and the problem.
  """
  y = _as_labels(label, where)
  groups = _as_subjects(subject_id, y.size, where)
  if not isinstance(folds, (list, tuple)) or not folds:
    raise UserInputError(f"{where}: 'folds' must be a non-empty list")
  out = []
  for i, fold in enumerate(folds):
    if not isinstance(fold, dict) or set(fold) != set(PARTS):
      keys = sorted(fold) if isinstance(fold, dict) else type(fold).__name__
      raise UserInputError(
          f"{where}: fold {i} must have exactly the keys {list(PARTS)}, got {keys}")
    parts = {}
    for part in PARTS:
      idx = np.asarray(fold[part])
      if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
        raise UserInputError(f"{where}: fold {i} {part} must be a list of integer image indices")
      idx = idx.astype(np.int64)
      if idx.size and (idx.min() < 0 or idx.max() >= y.size):
        raise UserInputError(
            f"{where}: fold {i} {part} has index out of range [0, {y.size}) for {y.size} images")
      if np.unique(idx).size != idx.size:
        raise UserInputError(f"{where}: fold {i} {part} lists an image index twice")
      parts[part] = np.sort(idx)
    if parts["train"].size == 0:
      raise UserInputError(f"{where}: fold {i} has an empty train part")
    allidx = np.concatenate([parts[p] for p in PARTS])
    if allidx.size != y.size or np.unique(allidx).size != y.size:
      raise UserInputError(
          f"{where}: fold {i} parts must be disjoint and cover all {y.size} images, "
          f"they list {allidx.size} indices ({np.unique(allidx).size} distinct)")
    for a in range(len(PARTS)):
      for b in range(a + 1, len(PARTS)):
        shared = np.intersect1d(groups[parts[PARTS[a]]], groups[parts[PARTS[b]]])
        if shared.size:
          raise UserInputError(
              f"{where}: fold {i}: subject {shared[0].item()!r} is in both the {PARTS[a]} and the "
              f"{PARTS[b]} part")
    out.append(parts)
  return out


def _plain_ids(subject_id):
  """Plain Python ints or strs for JSON."""
  arr = np.asarray(subject_id)
  if arr.dtype.kind in "iu":
    return [int(s) for s in arr]
  return [str(s) for s in arr]


def write_folds(path, subject_id, label, folds, meta=None):
  """Writes folds atomically as JSON.

  The file is {"subject_id": [...], "label": [...], "folds": [{"train", "val", "test"}, ...]}
  (one subject id and label per image, plain ints/strs), plus "meta" when given (e.g. seed,
  num_folds, val_parts, so a resumed run can check it made the same split).

  Args:
    path: destination, e.g. workdir/folds.json.
    subject_id: [N] subject of each image.
    label: [N] integer class of each image.
    folds: list of {"train", "val", "test"} index arrays, as from make_folds.
    meta: optional JSON-serialisable dict stored under "meta".
  """
  folds = validate_folds(subject_id, label, folds, where=os.fspath(path))
  obj = {
      "subject_id": _plain_ids(subject_id),
      "label": [int(v) for v in _as_labels(label, os.fspath(path))],
      "folds": [{p: [int(j) for j in f[p]] for p in PARTS} for f in folds],
  }
  if meta is not None:
    obj["meta"] = dict(meta)
  atomic_write_json(path, obj)


def read_folds(path):
  """Reads a folds.json written by write_folds and validates it.

  Args:
    path: the JSON file.

  Returns:
    (subject_id, label, folds): subject_id as a numpy str (or int) array, label int32[N], folds
    a list of {"train", "val", "test"} sorted int64 arrays.

  Raises:
    UserInputError: the file is missing, not JSON, or inconsistent (one line naming the file).
  """
  path = os.fspath(path)
  try:
    obj = read_json(path)
  except FileNotFoundError as e:
    raise UserInputError(f"{path}: folds file not found") from e
  except (ValueError, UnicodeDecodeError) as e:
    raise UserInputError(f"{path}: not a valid JSON folds file ({e})") from e
  if not isinstance(obj, dict) or not {"subject_id", "label", "folds"} <= set(obj):
    raise UserInputError(f"{path}: must be a JSON object with keys subject_id, label, folds")
  if not isinstance(obj["subject_id"], list) or not isinstance(obj["label"], list):
    raise UserInputError(f"{path}: subject_id and label must be lists (one entry per image)")
  if len(obj["subject_id"]) != len(obj["label"]):
    raise UserInputError(
        f"{path}: subject_id has {len(obj['subject_id'])} entries but label has "
        f"{len(obj['label'])}")
  subject_id = np.asarray(obj["subject_id"])
  label = _as_labels(np.asarray(obj["label"]), path).astype(np.int32)
  folds = validate_folds(subject_id, label, obj["folds"], where=path)
  return subject_id, label, folds


def read_folds_meta(path):
  """The "meta" dict of a folds.json ({} if absent)."""
  obj = read_json(path)
  return dict(obj.get("meta", {})) if isinstance(obj, dict) else {}


def load_or_make_folds(path, subject_id, label, num_folds, seed, val_parts=1,
                       missing_class="warn"):
  """Folds for a run that may be resumed: reads `path` if it exists, else makes and writes it.

  An existing file must have been made for the same images (subject ids and labels, in order)
  and, when it records them, the same num_folds / seed / val_parts; otherwise the run would
  silently compare results across different splits.

  Args:
    path: workdir/folds.json.
    subject_id, label, num_folds, seed, val_parts, missing_class: as in make_folds.

  Returns:
    The folds (list of {"train", "val", "test"} sorted int64 arrays).

  Raises:
    UserInputError: the existing file does not match the data or the settings.
  """
  meta = {"num_folds": int(num_folds), "seed": int(seed), "val_parts": int(val_parts)}
  if not os.path.exists(path):
    folds = make_folds(subject_id, label, num_folds, seed, val_parts, missing_class)
    write_folds(path, subject_id, label, folds, meta=meta)
    return folds
  old_ids, old_label, folds = read_folds(path)
  y = _as_labels(label, os.fspath(path))
  ids = np.asarray(_plain_ids(subject_id))
  if (old_ids.shape != ids.shape or np.any(old_ids.astype(str) != ids.astype(str))
      or np.any(old_label != y)):
    raise UserInputError(
        f"{path}: was made for different data ({old_ids.size} images) than this run "
        f"({ids.size} images, or different subjects/labels); use a new --workdir")
  if len(folds) != int(num_folds):
    raise UserInputError(
        f"{path}: has {len(folds)} folds but config.data.num_folds={num_folds}; "
        "use a new --workdir")
  old_meta = read_folds_meta(path)
  for key, value in meta.items():
    if key in old_meta and old_meta[key] != value:
      raise UserInputError(
          f"{path}: was made with {key}={old_meta[key]} but this run has {key}={value}; "
          "use a new --workdir")
  return folds
