"""The `results` contract between the pipeline and the report, checked before anything is computed.

This module owns `validate(results)`: it raises `UserInputError` naming the first malformed field
(e.g. `results['models'][1]['folds'][2]['test']['prob'][5]: expected 4 probabilities`), so that a
malformed dict writes nothing. The schema itself is documented in docs/notes_report.md; the checks
here are the ones the report's numbers depend on (shapes, label ranges, probabilities, fold and
seed keys, disjoint test subjects), plus the types of the pass-through sections.
"""

import math
import numbers

from nasrl_jax.errors import UserInputError
from nasrl_jax.report import primary as primary_lib

PROTOCOLS = ("nested", "paper")
LABEL_MODES = ("binary", "grade")
OUTER_GROUPS = ("subject", "device", "site")
# Softmax rows sum to 1; this slack admits float32 rounding and probabilities written with a few
# decimals, and still refuses logits or one-hot garbage.
PROB_SUM_TOLERANCE = 1e-2
# Sections passed through to report.json: each must be a dict when present.
PASS_THROUGH_DICTS = ("search", "compute", "compile", "versions", "rescore")


def _fail(where, message):
  raise UserInputError(f"{where}: {message}")


def _is_int(x):
  return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _is_num(x):
  return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _optional_num(value, where):
  if value is not None and not _is_num(value):
    _fail(where, f"expected a number or None, got {value!r}")


def _dict(value, where):
  if not isinstance(value, dict):
    _fail(where, f"expected a dict, got {type(value).__name__}")
  return value


def _list(value, where, non_empty=False):
  if not isinstance(value, list):
    _fail(where, f"expected a list, got {type(value).__name__}")
  if non_empty and not value:
    _fail(where, "expected a non-empty list")
  return value


def _test_part(test, where, num_classes):
  _dict(test, where)
  for key in ("subject_id", "label", "prob"):
    if key not in test:
      _fail(where, f"missing '{key}'")
  sid = _list(test["subject_id"], f"{where}['subject_id']", non_empty=True)
  label = _list(test["label"], f"{where}['label']")
  prob = _list(test["prob"], f"{where}['prob']")
  if not len(sid) == len(label) == len(prob):
    _fail(where, f"subject_id ({len(sid)}), label ({len(label)}) and prob ({len(prob)}) must "
          "have one entry per test image")
  for i, s in enumerate(sid):
    if not isinstance(s, (str, numbers.Integral)) or isinstance(s, bool):
      _fail(f"{where}['subject_id'][{i}]", f"expected a string, got {s!r}")
  for i, y in enumerate(label):
    if not _is_int(y) or not 0 <= y < num_classes:
      _fail(f"{where}['label'][{i}]", f"expected an integer label in 0..{num_classes - 1}, "
            f"got {y!r}")
  for i, row in enumerate(prob):
    pw = f"{where}['prob'][{i}]"
    if not isinstance(row, (list, tuple)) or len(row) != num_classes:
      _fail(pw, f"expected {num_classes} probabilities (one per class name), got {row!r}")
    if not all(_is_num(p) and math.isfinite(p) and 0.0 <= p <= 1.0 for p in row):
      _fail(pw, f"expected finite probabilities in [0, 1], got {row!r}")
    if abs(sum(row) - 1.0) > PROB_SUM_TOLERANCE:
      _fail(pw, f"probabilities sum to {sum(row):.4f}, not 1 (softmax outputs expected)")


def _fold_entry(fold, where, num_classes):
  _dict(fold, where)
  if not _is_int(fold.get("fold")):
    _fail(where, f"'fold' must be an int, got {fold.get('fold')!r}")
  if fold.get("seed") is not None and not _is_int(fold["seed"]):  # None: no search chose it.
    _fail(where, f"'seed' must be an int or None, got {fold.get('seed')!r}")
  if not _is_int(fold.get("training_seed", 0)):
    _fail(where, f"'training_seed' must be an int, got {fold.get('training_seed')!r}")
  for key in ("n_train", "n_test"):  # The corrected t-test's n_test / (n - n_test).
    if not _is_int(fold.get(key)) or fold[key] <= 0:
      _fail(where, f"'{key}' must be a positive int, got {fold.get(key)!r}")
  if "test" not in fold:
    _fail(where, "missing 'test'")
  _test_part(fold["test"], f"{where}['test']", num_classes)
  cap = fold["test"].get("cap")
  if cap is not None and (not isinstance(cap, list) or len(cap) != len(fold["test"]["label"]) or
                          not all(c is None or _is_num(c) for c in cap)):
    _fail(f"{where}['test']['cap']", "expected one CAP (dB/m) or None per test image")
  threshold = fold.get("val_threshold")
  if threshold is not None and not (_is_num(threshold) and 0.0 <= threshold <= 1.0):
    _fail(f"{where}['val_threshold']", f"expected a number in [0, 1] or None, got {threshold!r}")
  if not isinstance(fold.get("group", ""), str):
    _fail(f"{where}['group']", f"expected a string, got {fold.get('group')!r}")


def _model(model, where, num_classes):
  _dict(model, where)
  if not isinstance(model.get("name"), str) or not model["name"]:
    _fail(where, "expected a non-empty string 'name'")
  where = f"{where} ({model['name']})"
  for key in ("params", "flops", "fps", "latency_ms_median", "throughput"):
    _optional_num(model.get(key), f"{where}['{key}']")
  for key in ("kernels", "filters", "blocks"):
    value = model.get(key)
    if value is not None and not (isinstance(value, list) and all(_is_int(v) for v in value)):
      _fail(f"{where}['{key}']", f"expected a list of ints, got {value!r}")
  folds = _list(model.get("folds"), f"{where}['folds']", non_empty=True)
  seen = {}
  for j, fold in enumerate(folds):
    fwhere = f"{where}['folds'][{j}]"
    _fold_entry(fold, fwhere, num_classes)
    key = (fold["fold"], fold["seed"], fold.get("training_seed", 0))
    if key in seen:
      _fail(fwhere, f"fold {key[0]} search seed {key[1]} training seed {key[2]} appears twice "
            f"(also at index {seen[key]})")
    seen[key] = j
  # Outer test parts partition the subjects: a subject tested in two folds means the folds (or
  # the predictions attached to them) are wrong, and every number of the report with them.
  owner = {}
  for j, fold in enumerate(folds):
    for s in fold["test"]["subject_id"]:
      other = owner.setdefault((fold["seed"], fold.get("training_seed", 0), str(s)), fold["fold"])
      if other != fold["fold"]:
        _fail(f"{where}['folds'][{j}]['test']['subject_id']",
              f"subject {s!r} is in the test parts of folds {other} and {fold['fold']} "
              f"(seed {fold['seed']}); outer test parts must not share subjects")


def _outer_folds(outer, protocol):
  where = "results['outer_folds']"
  _list(outer, where, non_empty=protocol == "nested")
  for i, entry in enumerate(outer):
    ew = f"{where}[{i}]"
    _dict(entry, ew)
    if not _is_int(entry.get("fold")):
      _fail(ew, f"'fold' must be an int, got {entry.get('fold')!r}")
    winners = _dict(entry.get("winners"), f"{ew}['winners']")
    for name, ws in winners.items():
      _list(ws, f"{ew}['winners'][{name!r}]", non_empty=True)
      for j, w in enumerate(ws):
        ww = f"{ew}['winners'][{name!r}][{j}]"
        _dict(w, ww)
        for key in ("seed", "architecture", "params"):
          if key not in w:
            _fail(ww, f"missing '{key}'")


def _rescore(rescore):
  for name, rows in rescore.items():
    where = f"results['rescore'][{name!r}]"
    _list(rows, where)
    for j, row in enumerate(rows):
      _dict(row, f"{where}[{j}]")
      for key in ("fold", "seed", "architecture", "search_reward", "mean", "std"):
        if key not in row:
          _fail(f"{where}[{j}]", f"missing '{key}'")
      for key in ("search_reward", "mean", "std"):
        _optional_num(row[key], f"{where}[{j}]['{key}']")


def _search(search):
  strategies = _dict(search.get("strategies", {}), "results['search']['strategies']")
  for key, strategy in strategies.items():
    where = f"results['search']['strategies'][{key!r}]"
    _dict(strategy, where)
    for j, run in enumerate(_list(strategy.get("runs", []), f"{where}['runs']")):
      _dict(run, f"{where}['runs'][{j}]")
      for field in ("per_step", "rewards"):
        if run.get(field) is not None:
          _list(run[field], f"{where}['runs'][{j}]['{field}']")


def validate(results):
  """Raises UserInputError naming the first malformed field of `results`; returns nothing.

  Args:
    results: the pipeline's results dict (schema in docs/notes_report.md).
  """
  if not isinstance(results, dict):
    raise UserInputError(f"results: expected a dict, got {type(results).__name__}")
  if results.get("protocol") not in PROTOCOLS:
    _fail("results['protocol']", f"expected one of {PROTOCOLS}, got {results.get('protocol')!r}")
  if results.get("label_mode") not in LABEL_MODES:
    _fail("results['label_mode']",
          f"expected one of {LABEL_MODES}, got {results.get('label_mode')!r}")
  names = results.get("class_names")
  if not (isinstance(names, list) and len(names) >= 2 and all(isinstance(n, str) for n in names)):
    _fail("results['class_names']", f"expected a list of at least 2 strings, got {names!r}")
  if results["label_mode"] == "binary" and len(names) != 2:
    _fail("results['class_names']", f"binary label mode needs 2 class names, got {names!r}")
  seeds = _list(results.get("seeds"), "results['seeds']", non_empty=True)
  if not all(_is_int(s) for s in seeds):
    _fail("results['seeds']", f"expected ints, got {seeds!r}")
  data = _dict(results.get("data"), "results['data']")
  if data.get("outer_groups", "subject") not in OUTER_GROUPS:
    _fail("results['data']['outer_groups']",
          f"expected one of {OUTER_GROUPS}, got {data.get('outer_groups')!r}")
  if results["protocol"] == "paper" and not _is_int(data.get("search_fold")):
    _fail("results['data']['search_fold']",
          f"the paper protocol needs the searched fold (an int), got {data.get('search_fold')!r}")
  models = _list(results.get("models"), "results['models']", non_empty=True)
  seen = set()
  for i, model in enumerate(models):
    _model(model, f"results['models'][{i}]", len(names))
    if model["name"] in seen:
      _fail(f"results['models'][{i}]", f"model name {model['name']!r} appears twice")
    seen.add(model["name"])
  _outer_folds(results.get("outer_folds", []), results["protocol"])
  for key in PASS_THROUGH_DICTS:
    if results.get(key) is not None:
      _dict(results[key], f"results['{key}']")
  _rescore(results.get("rescore") or {})
  _search(results.get("search") or {})
  if results.get("final_search") is not None:
    _dict(results["final_search"], "results['final_search']")
  if results.get("primary_spec") is not None:
    primary_lib.parse(results["primary_spec"])
