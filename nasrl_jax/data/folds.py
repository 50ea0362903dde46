"""Subject-level, label-stratified outer folds with inner splits, and the folds.json file.

An outer fold has a test part and the inner parts of its non-test images (`fold["inner"]`, by
subject, label-stratified). Inner split j validates on part j (`val_parts` consecutive parts) and
trains on the others: split 0 is the fold's classic `train`/`val` (the final training's weight
selection); splits 0..r-1 are a search's r reward splits, subject-disjoint validation parts inside
the fold's non-test subjects. With `groups` (e.g. the machine of every image), each outer test
part is one group (leave one machine out); subjects imaged on the held-out machine are kept out of
that fold's other parts (`fold["excluded"]`).

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


def split_indices(fold: dict, j: int, val_parts: int = 1):
  """(train, val) image indices of inner split j of an outer fold.

  Validation = inner parts j*val_parts .. j*val_parts + val_parts - 1; training = the other parts.
  """
  inner = fold["inner"]
  n = len(inner)
  if not 0 <= j * val_parts and (j + 1) * val_parts <= n:
    raise UserInputError(f"inner split {j} with val_parts={val_parts} needs {(j + 1) * val_parts} "
                         f"inner parts; the fold has {n}")
  val_ids = set(range(j * val_parts, (j + 1) * val_parts))
  val = np.sort(np.concatenate([np.asarray(inner[k], np.int64) for k in sorted(val_ids)]))
  train = np.sort(np.concatenate([np.asarray(inner[k], np.int64) for k in range(n)
                                  if k not in val_ids]))
  return train, val


def max_splits(fold: dict, val_parts: int = 1) -> int:
  """How many inner splits with disjoint validation parts the fold holds."""
  return len(fold["inner"]) // val_parts


def inner_parts(subject_id, label, idx, n_parts, seed, where):
  """StratifiedGroupKFold parts (by subject) of the images `idx`."""
  idx = np.asarray(idx, np.int64)
  y = _as_labels(label, where)
  groups = _as_subjects(subject_id, y.size, where)
  parts = _split(n_parts, groups[idx], y[idx], int(seed), where)
  return [np.sort(idx[p]) for p in parts]


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


def make_folds(subject_id, label, num_folds, seed, val_parts=1, missing_class="warn", *,
               inner=None, groups=None):
  """Makes subject-grouped, label-stratified outer folds with inner splits.

  Args:
    subject_id: [N] subject of each image (strings or ints); splits are grouped by it.
    label: [N] integer class of each image (binary or grade labels).
    num_folds: k; the test parts of the k folds partition all images (ignored with `groups`:
      one fold per group).
    seed: non-negative int; the folds are a deterministic function of (data, k, seed, val_parts).
    val_parts: size of the validation part in units of one inner part: with the default
      inner = num_folds - 1 parts, train:val:test is (num_folds - 1 - val_parts):val_parts:1
      (8:1:1 for k = 10 and val_parts = 1).
    missing_class: 'warn' (default) or 'error': what to do when a validation or test part lacks
      a class present in the data. A training part lacking a class is always an error.
    inner: inner parts per outer fold (default num_folds - 1).
    groups: optional [N] group of each image (device or site): leave-one-group-out test parts.

  Returns:
    A list of dicts {"train", "val", "test", "inner": [parts], "group": str, "excluded"} of
    sorted int64 image indices ("train"/"val" = inner split 0).

  Raises:
    UserInputError: bad arguments, fewer subjects than folds, a single class, or a fold whose
      training part (or, with missing_class='error', val/test part) lacks a class.
  """
  where = "make_folds"
  y = _as_labels(label, where)
  subjects = _as_subjects(subject_id, y.size, where)
  if isinstance(num_folds, bool) or not isinstance(num_folds, (int, np.integer)) or num_folds < 2:
    raise UserInputError(f"config.data.num_folds={num_folds}: must be an integer >= 2")
  num_folds = int(num_folds)
  n_inner = int(num_folds - 1 if inner is None else inner)
  if n_inner < 2:
    raise UserInputError(f"inner parts={n_inner}: an outer fold's non-test part needs at least 2 "
                         "(config.data.num_folds >= 3)")
  if isinstance(val_parts, bool) or not isinstance(val_parts, (int, np.integer)) or not (
      1 <= val_parts <= n_inner - 1):
    raise UserInputError(
        f"config.data.val_parts={val_parts}: must be an integer in [1, inner parts - 1] = "
        f"[1, {n_inner - 1}] so that train and val parts are both non-empty")
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
    raise UserInputError(f"seed={seed}: must be an integer in [0, 2**32)")
  if missing_class not in ("warn", "error"):
    raise ValueError(f"missing_class={missing_class!r}: must be 'warn' or 'error'")
  classes = np.unique(y)
  if classes.size < 2:
    raise UserInputError(
        f"labels: only class {int(classes[0])} is present in all {y.size} images; "
        "need at least two classes to train and evaluate a classifier")
  num_subjects = np.unique(subjects).size
  if groups is None and num_subjects < num_folds:
    raise UserInputError(
        f"config.data.num_folds={num_folds}: the data has only {num_subjects} subjects; "
        "need at least one subject per fold")

  if groups is None:
    tests = _split(num_folds, subjects, y, int(seed), where)
    names = [""] * len(tests)
  else:
    tests, names = _leave_one_group_out(groups, where)
  folds = []
  for i, test in enumerate(tests):
    # Subjects with an image in the test part stay out of the rest (another machine's images of
    # a held-out subject would leak it).
    held = np.isin(subjects, subjects[test])
    excluded = np.flatnonzero(held & ~np.isin(np.arange(y.size), test))
    rest = np.flatnonzero(~held)
    inner_seed = int(np.random.SeedSequence([int(seed), i]).generate_state(1)[0])
    parts = inner_parts(subjects, y, rest, n_inner, inner_seed, f"{where} (fold {i})")
    fold = {"test": test.astype(np.int64), "inner": parts, "group": names[i],
            "excluded": excluded.astype(np.int64)}
    fold["train"], fold["val"] = split_indices(fold, 0, val_parts)
    folds.append(fold)
  _check_classes(folds, y, classes, missing_class)
  return folds


def _leave_one_group_out(groups, where):
  """One test part per distinct group value (sorted by name)."""
  g = np.asarray(groups).astype(str)
  names = sorted(set(g.tolist()))
  if len(names) < 2:
    raise UserInputError(f"{where}: leave-one-group-out needs at least two groups; the data has "
                         f"{names or 'none'} (fill the manifest's device/site column)")
  if "" in names:
    raise UserInputError(f"{where}: {int(np.sum(g == ''))} images have no group (empty device/"
                         "site): every image needs one to hold machines out")
  return [np.flatnonzero(g == name).astype(np.int64) for name in names], names


def final_split(subject_id, label, n_inner, seed, val_parts=1, missing_class="warn"):
  """Inner parts of ALL images (the optional final search on every subject: no test part)."""
  y = _as_labels(label, "final search")
  parts = inner_parts(subject_id, y, np.arange(y.size), n_inner, seed, "final search")
  fold = {"test": np.zeros(0, np.int64), "inner": parts, "group": "all subjects",
          "excluded": np.zeros(0, np.int64)}
  fold["train"], fold["val"] = split_indices(fold, 0, val_parts)
  return fold


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


KEYS = ("train", "val", "test", "inner", "group", "excluded")


def _index_array(value, where, n):
  idx = np.asarray(value)
  if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
    raise UserInputError(f"{where} must be a list of integer image indices")
  idx = idx.astype(np.int64)
  if idx.size and (idx.min() < 0 or idx.max() >= n):
    raise UserInputError(f"{where} has an index out of range [0, {n}) for {n} images")
  if np.unique(idx).size != idx.size:
    raise UserInputError(f"{where} lists an image index twice")
  return np.sort(idx)


def validate_folds(subject_id, label, folds, where="folds", allow_empty_test=False):
  """Checks that folds fit the data: indices in range; test, inner parts and excluded images
  disjoint and covering all images; no subject in two of them; train/val = the inner parts.

  Args:
    subject_id: [N] subject of each image.
    label: [N] integer class of each image.
    folds: list of dicts with the keys `KEYS` (index arrays/lists; "group" a string).
    where: name used in error messages (e.g. the folds.json path).
    allow_empty_test: the final-search fold has no test part.

  Returns:
    The folds with sorted int64 numpy arrays.

  Raises:
    UserInputError: naming `where`, the fold and the problem.
  """
  y = _as_labels(label, where)
  subjects = _as_subjects(subject_id, y.size, where)
  if not isinstance(folds, (list, tuple)) or not folds:
    raise UserInputError(f"{where}: 'folds' must be a non-empty list")
  out = []
  for i, fold in enumerate(folds):
    if not isinstance(fold, dict) or set(fold) != set(KEYS):
      keys = sorted(fold) if isinstance(fold, dict) else type(fold).__name__
      raise UserInputError(
          f"{where}: fold {i} must have exactly the keys {list(KEYS)}, got {keys} (a folds file "
          "of an earlier nasrl_jax version? use a new --workdir)")
    f = {p: _index_array(fold[p], f"{where}: fold {i} {p}", y.size)
         for p in ("train", "val", "test", "excluded")}
    if not isinstance(fold["inner"], (list, tuple)) or len(fold["inner"]) < 2:
      raise UserInputError(f"{where}: fold {i} inner must be a list of at least two parts")
    f["inner"] = [_index_array(part, f"{where}: fold {i} inner part {k}", y.size)
                  for k, part in enumerate(fold["inner"])]
    f["group"] = str(fold["group"])
    if f["train"].size == 0:
      raise UserInputError(f"{where}: fold {i} has an empty train part")
    if f["test"].size == 0 and not allow_empty_test:
      raise UserInputError(f"{where}: fold {i} has an empty test part")
    blocks = [("test", f["test"]), ("excluded", f["excluded"])] + [
        (f"inner part {k}", part) for k, part in enumerate(f["inner"])]
    allidx = np.concatenate([b for _, b in blocks])
    if allidx.size != y.size or np.unique(allidx).size != y.size:
      raise UserInputError(
          f"{where}: fold {i}: test, excluded and inner parts must be disjoint and cover all "
          f"{y.size} images; they list {allidx.size} indices ({np.unique(allidx).size} distinct)")
    inner_all = np.sort(np.concatenate(f["inner"]))
    if not np.array_equal(np.sort(np.concatenate([f["train"], f["val"]])), inner_all):
      raise UserInputError(f"{where}: fold {i}: train and val must be the inner parts' images")
    for a in range(len(blocks)):
      for b in range(a + 1, len(blocks)):
        if {blocks[a][0], blocks[b][0]} == {"test", "excluded"}:
          continue  # Excluded images are the held-out subjects' other images.
        shared = np.intersect1d(subjects[blocks[a][1]], subjects[blocks[b][1]])
        if shared.size:
          raise UserInputError(
              f"{where}: fold {i}: subject {shared[0].item()!r} is in both the {blocks[a][0]} and "
              f"the {blocks[b][0]}")
    out.append(f)
  return out


def _fold_json(f):
  return {"train": [int(j) for j in f["train"]], "val": [int(j) for j in f["val"]],
          "test": [int(j) for j in f["test"]], "group": str(f.get("group", "")),
          "excluded": [int(j) for j in f.get("excluded", [])],
          "inner": [[int(j) for j in part] for part in f["inner"]]}


def _plain_ids(subject_id):
  """Plain Python ints or strs for JSON."""
  arr = np.asarray(subject_id)
  if arr.dtype.kind in "iu":
    return [int(s) for s in arr]
  return [str(s) for s in arr]


def write_folds(path, subject_id, label, folds, meta=None, final=None):
  """Writes folds atomically as JSON.

  The file is {"subject_id": [...], "label": [...], "folds": [{"train", "val", "test", "inner",
  "group", "excluded"}, ...]} (one subject id and label per image, plain ints/strs), plus "final"
  (the all-subject split of the optional final search) and "meta" when given (seed, num_folds,
  val_parts, ... so a resumed run can check it made the same split).
  """
  folds = validate_folds(subject_id, label, folds, where=os.fspath(path))
  obj = {
      "subject_id": _plain_ids(subject_id),
      "label": [int(v) for v in _as_labels(label, os.fspath(path))],
      "folds": [_fold_json(f) for f in folds],
  }
  if final is not None:
    validate_folds(subject_id, label, [final], where=f"{os.fspath(path)} (final)",
                   allow_empty_test=True)
    obj["final"] = _fold_json(final)
  if meta is not None:
    obj["meta"] = dict(meta)
  atomic_write_json(path, obj)


def read_folds(path):
  """Reads a folds.json written by write_folds and validates it.

  Returns:
    (subject_id, label, folds): subject_id as a numpy str (or int) array, label int32[N], folds
    a list of fold dicts with sorted int64 arrays (see `validate_folds`).

  Raises:
    UserInputError: the file is missing, not JSON, or inconsistent (one line naming the file).
  """
  subject_id, label, folds, _ = read_folds_all(path)
  return subject_id, label, folds


def read_folds_all(path):
  """`read_folds` plus the final-search fold (None when the file has none)."""
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
  final = None
  if obj.get("final") is not None:
    final = validate_folds(subject_id, label, [obj["final"]], where=f"{path} (final)",
                           allow_empty_test=True)[0]
  return subject_id, label, folds, final


def read_folds_meta(path):
  """The "meta" dict of a folds.json ({} if absent)."""
  obj = read_json(path)
  return dict(obj.get("meta", {})) if isinstance(obj, dict) else {}


def load_or_make_folds(path, subject_id, label, num_folds, seed, val_parts=1,
                       missing_class="warn", *, inner=None, groups=None, final=False):
  """Folds for a run that may be resumed: reads `path` if it exists, else makes and writes it.

  An existing file must have been made for the same images (subject ids and labels, in order)
  and, when it records them, the same settings; otherwise the run would silently compare results
  across different splits.

  Args:
    path: workdir/folds.json.
    subject_id, label, num_folds, seed, val_parts, missing_class, inner, groups: as in make_folds
      (`groups` given as the [N] array; its name is recorded through `meta`).
    final: also make the all-subject split of the final search.

  Returns:
    (folds, final fold or None).

  Raises:
    UserInputError: the existing file does not match the data or the settings.
  """
  n_inner = int(num_folds - 1 if inner is None else inner)
  meta = {"num_folds": int(num_folds), "seed": int(seed), "val_parts": int(val_parts),
          "inner": n_inner, "groups": groups is not None}
  if not os.path.exists(path):
    folds = make_folds(subject_id, label, num_folds, seed, val_parts, missing_class,
                       inner=n_inner, groups=groups)
    final_fold = None
    if final:
      final_seed = int(np.random.SeedSequence([int(seed), 2**31 - 1]).generate_state(1)[0])
      final_fold = final_split(subject_id, label, n_inner, final_seed, val_parts)
    write_folds(path, subject_id, label, folds, meta=meta, final=final_fold)
    return folds, final_fold
  old_ids, old_label, folds, final_fold = read_folds_all(path)
  y = _as_labels(label, os.fspath(path))
  ids = np.asarray(_plain_ids(subject_id))
  if (old_ids.shape != ids.shape or np.any(old_ids.astype(str) != ids.astype(str))
      or np.any(old_label != y)):
    raise UserInputError(
        f"{path}: was made for different data ({old_ids.size} images) than this run "
        f"({ids.size} images, or different subjects/labels); use a new --workdir")
  if groups is None and len(folds) != int(num_folds):
    raise UserInputError(
        f"{path}: has {len(folds)} folds but this run asks for {num_folds}; use a new --workdir")
  old_meta = read_folds_meta(path)
  for key, value in meta.items():
    if key in old_meta and old_meta[key] != value:
      raise UserInputError(
          f"{path}: was made with {key}={old_meta[key]} but this run has {key}={value}; "
          "use a new --workdir")
  if final and final_fold is None:
    # Turning the final search on after a run adds its split; the outer folds stay as they are.
    final_seed = int(np.random.SeedSequence([int(seed), 2**31 - 1]).generate_state(1)[0])
    final_fold = final_split(subject_id, label, n_inner, final_seed, val_parts)
    write_folds(path, subject_id, label, folds, meta=dict(old_meta), final=final_fold)
  return folds, final_fold
