"""Tests for nasrl_jax.data.folds: subject-level stratified folds and folds.json."""

import json
import warnings

import numpy as np
import pytest
from sklearn.model_selection import StratifiedGroupKFold

from nasrl_jax.data import folds as F
from nasrl_jax.errors import UserInputError


def _cohort(num_subjects, num_images, frac0, seed=0):
  """Subjects with 1+ images each; one label per subject (about frac0 of subjects are 0)."""
  rng = np.random.default_rng(seed)
  sub = np.concatenate([np.arange(num_subjects),
                        rng.integers(0, num_subjects, num_images - num_subjects)])
  lab_s = (rng.random(num_subjects) >= frac0).astype(np.int32)
  lab_s[:2] = (0, 1)  # Both classes present whatever the draw.
  return np.array([f"S{s:03d}" for s in sub]), lab_s[sub]


@pytest.fixture(scope="module")
def paper_like():
  sid, lab = _cohort(120, 160, 0.3)
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # A healthy cohort gives no missing-class warning.
    folds = F.make_folds(sid, lab, 10, seed=3)
  return sid, lab, folds


def test_parts_partition_images_and_subjects(paper_like):
  sid, lab, folds = paper_like
  n = lab.size
  assert len(folds) == 10
  tests = np.concatenate([f["test"] for f in folds])
  assert np.array_equal(np.sort(tests), np.arange(n))  # Test parts partition all images.
  for f in folds:
    for part in F.PARTS:
      assert f[part].dtype == np.int64
      assert np.all(np.diff(f[part]) > 0)  # Sorted, distinct.
    allidx = np.concatenate([f[p] for p in F.PARTS])
    assert np.array_equal(np.sort(allidx), np.arange(n))
    subj = {p: set(sid[f[p]]) for p in F.PARTS}
    assert not subj["train"] & subj["val"]
    assert not subj["train"] & subj["test"]
    assert not subj["val"] & subj["test"]


def test_proportions_and_stratification(paper_like):
  sid, lab, folds = paper_like
  n = lab.size
  frac = np.array([[f[p].size / n for p in F.PARTS] for f in folds]).mean(axis=0)
  np.testing.assert_allclose(frac, [0.8, 0.1, 0.1], atol=0.02)  # 8:1:1.
  overall = lab.mean()
  for f in folds:
    assert abs(lab[f["test"]].mean() - overall) < 0.15
    assert abs(lab[f["val"]].mean() - overall) < 0.15


def test_test_parts_are_sklearn_stratified_group_kfold(paper_like):
  sid, lab, folds = paper_like
  sgkf = StratifiedGroupKFold(n_splits=10, shuffle=True, random_state=3)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    expected = [np.sort(t) for _, t in sgkf.split(np.zeros(lab.size), lab, sid)]
  for f, t in zip(folds, expected):
    assert np.array_equal(f["test"], t)


def test_deterministic_per_seed():
  sid, lab = _cohort(40, 60, 0.33, seed=1)
  a = F.make_folds(sid, lab, 3, seed=7)
  b = F.make_folds(sid, lab, 3, seed=7)
  c = F.make_folds(sid, lab, 3, seed=8)
  for fa, fb in zip(a, b):
    for p in F.PARTS:
      assert np.array_equal(fa[p], fb[p])
  assert any(not np.array_equal(fa["test"], fc["test"]) for fa, fc in zip(a, c))


def test_tiny_config_cohort_three_folds_is_one_to_one_to_one():
  sid, lab = _cohort(40, 60, 0.33, seed=2)  # The 'tiny' config: 40 subjects, 60 images, 3 folds.
  folds = F.make_folds(sid, lab, 3, seed=0)
  for f in folds:
    for p in F.PARTS:
      assert set(lab[f[p]]) == {0, 1}
      assert 12 <= f[p].size <= 28  # (3-1-1):1:1 of 60 images.


def test_integer_subject_ids_and_grade_labels():
  rng = np.random.default_rng(0)
  sid = np.repeat(np.arange(60), 2)
  lab = np.repeat(rng.integers(0, 4, 60), 2)
  folds = F.make_folds(sid, lab, 5, seed=0)
  for f in folds:
    assert set(lab[f["train"]]) == {0, 1, 2, 3}


@pytest.mark.parametrize("kwargs,needle", [
    (dict(num_folds=1), "num_folds=1"),
    (dict(num_folds=2), "inner parts=1"),  # 2 folds leave 1 inner part: no train + val.
    (dict(num_folds=3, val_parts=2), "val_parts=2"),
    (dict(num_folds=30), "only 20 subjects"),
    (dict(num_folds=3, seed=-1), "seed=-1"),
])
def test_bad_settings_raise_one_line(kwargs, needle):
  sid, lab = _cohort(20, 30, 0.4)
  args = dict(num_folds=3, seed=0)
  args.update(kwargs)
  with pytest.raises(UserInputError, match=needle) as e:
    F.make_folds(sid, lab, **args)
  assert "\n" not in str(e.value)


def test_bad_data_raises():
  sid, lab = _cohort(20, 30, 0.4)
  with pytest.raises(UserInputError, match="only class 1"):
    F.make_folds(sid, np.ones_like(lab), 3, 0)
  with pytest.raises(UserInputError, match="one subject id per image"):
    F.make_folds(sid[:-1], lab, 3, 0)
  with pytest.raises(UserInputError, match=r"label\[0\]=nan"):
    F.make_folds(sid, np.where(np.arange(lab.size) == 0, np.nan, lab), 3, 0)


def test_train_part_lacking_a_class_is_an_error():
  sid = np.array([f"S{i}" for i in range(12)])
  lab = np.zeros(12, np.int32)
  lab[0] = 1  # One fatty subject: the fold that tests it has none to train on.
  with pytest.raises(UserInputError, match=r"fold \d: the train part .* class\(es\) \[1\]"):
    F.make_folds(sid, lab, 3, 0)


def test_val_or_test_lacking_a_class_warns_or_errors():
  sid = np.array([f"S{i:02d}" for i in range(40)])
  lab = np.zeros(40, np.int32)
  lab[:8] = 1  # 8 fatty subjects over 10 test parts: at least 2 test parts have none.
  with pytest.warns(UserWarning, match=r"fold \d: the (val|test) part .* \[1\]"):
    folds = F.make_folds(sid, lab, 10, 0)
  assert all(1 in lab[f["train"]] for f in folds)
  with pytest.raises(UserInputError, match=r"the (val|test) part"):
    F.make_folds(sid, lab, 10, 0, missing_class="error")


def test_write_read_roundtrip(tmp_path, paper_like):
  sid, lab, folds = paper_like
  path = tmp_path / "sub" / "folds.json"
  F.write_folds(path, sid, lab, folds, meta={"seed": 3})
  raw = json.loads(path.read_text())
  assert raw["subject_id"][:2] == [str(s) for s in sid[:2]]
  assert isinstance(raw["folds"][0]["train"][0], int)
  assert raw["meta"] == {"seed": 3}
  sid2, lab2, folds2 = F.read_folds(path)
  assert np.array_equal(sid2, sid) and np.array_equal(lab2, lab)
  assert lab2.dtype == np.int32
  for a, b in zip(folds, folds2):
    for p in F.PARTS:
      assert np.array_equal(a[p], b[p])
  assert not list(tmp_path.glob("sub/*.tmp"))  # Atomic write left no temp file.


def test_read_folds_rejects_bad_files(tmp_path, paper_like):
  sid, lab, folds = paper_like
  path = tmp_path / "folds.json"
  with pytest.raises(UserInputError, match="not found"):
    F.read_folds(path)
  path.write_text("{not json")
  with pytest.raises(UserInputError, match="not a valid JSON"):
    F.read_folds(path)
  F.write_folds(path, sid, lab, folds)
  raw = json.loads(path.read_text())
  raw["folds"][0]["inner"][1].pop()  # An image in no part.
  path.write_text(json.dumps(raw))
  with pytest.raises(UserInputError, match="cover all 160 images"):
    F.read_folds(path)
  raw = json.loads(path.read_text())
  old = {"subject_id": raw["subject_id"], "label": raw["label"],
         "folds": [{k: f[k] for k in ("train", "val", "test")} for f in raw["folds"]]}
  path.write_text(json.dumps(old))
  with pytest.raises(UserInputError, match="earlier nasrl_jax version"):
    F.read_folds(path)
  F.write_folds(path, sid, lab, folds)
  raw = json.loads(path.read_text())
  raw["folds"][0]["val"].append(10_000)
  path.write_text(json.dumps(raw))
  with pytest.raises(UserInputError, match="out of range"):
    F.read_folds(path)


def test_read_folds_rejects_subject_leak(tmp_path):
  sid = np.array(["a", "a", "b", "c", "d"])
  lab = np.array([0, 0, 1, 0, 1])
  bad = [{"train": [0, 2], "val": [3], "test": [1, 4], "inner": [[0, 2], [3]], "group": "",
          "excluded": []}]  # Subject 'a' in an inner part and the test part.
  path = tmp_path / "folds.json"
  path.write_text(json.dumps({"subject_id": sid.tolist(), "label": lab.tolist(), "folds": bad}))
  with pytest.raises(UserInputError, match=r"subject 'a' is in both the test and the inner part 0"):
    F.read_folds(path)
  with pytest.raises(UserInputError, match="is in both"):
    F.write_folds(tmp_path / "x.json", sid, lab, bad)
  assert not (tmp_path / "x.json").exists()


def test_load_or_make_folds_resumes_and_refuses_other_data(tmp_path):
  sid, lab = _cohort(40, 60, 0.33, seed=4)
  path = tmp_path / "folds.json"
  first, _ = F.load_or_make_folds(path, sid, lab, 3, seed=0)
  assert path.exists()
  again, _ = F.load_or_make_folds(path, sid, lab, 3, seed=0)
  for a, b in zip(first, again):
    assert np.array_equal(a["val"], b["val"])
  with pytest.raises(UserInputError, match="seed=0 but this run has seed=1"):
    F.load_or_make_folds(path, sid, lab, 3, seed=1)
  with pytest.raises(UserInputError, match="different data"):
    F.load_or_make_folds(path, sid, 1 - lab, 3, seed=0)
  with pytest.raises(UserInputError, match="has 3 folds"):
    F.load_or_make_folds(path, sid, lab, 4, seed=0)


def test_inner_splits_are_subject_disjoint_inside_the_non_test_subjects(paper_like):
  """r reward splits: validation parts disjoint by subject, all inside the fold's non-test part."""
  sid, lab, folds = paper_like
  for f in folds:
    test_subjects = set(sid[f["test"]])
    vals = []
    for j in range(3):
      tr, va = F.split_indices(f, j)
      assert not set(sid[tr]) & set(sid[va])
      assert not (set(sid[tr]) | set(sid[va])) & test_subjects
      assert sorted(np.concatenate([tr, va]).tolist()) == sorted(
          np.concatenate(f["inner"]).tolist())
      vals.append(set(sid[va]))
    assert not vals[0] & vals[1] and not vals[1] & vals[2] and not vals[0] & vals[2]
    np.testing.assert_array_equal(F.split_indices(f, 0)[1], f["val"])
  assert F.max_splits(folds[0]) == 9


def test_leave_one_machine_out_keeps_held_out_subjects_out_of_training():
  sid = np.array(["a", "a", "b", "c", "c", "d", "e", "f", "g", "h", "i", "j"] * 2)
  sid = np.array([f"{s}{i // 12}" for i, s in enumerate(sid)])
  lab = np.array([0, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 0] * 2)
  dev = np.array(["A", "B", "A", "B", "C", "C", "A", "B", "C", "A", "B", "C"] * 2)
  folds = F.make_folds(sid, lab, 3, seed=0, inner=2, groups=dev, missing_class="warn")
  assert [f["group"] for f in folds] == ["A", "B", "C"]
  for f in folds:
    assert set(dev[f["test"]]) == {f["group"]}
    held = set(sid[f["test"]])
    inner = np.concatenate(f["inner"])
    assert not set(sid[inner]) & held  # Subject a0 imaged on A and B: out of B's training too.
    assert set(sid[f["excluded"]]) <= held and f["group"] not in set(dev[f["excluded"]])
  with pytest.raises(UserInputError, match="at least two groups"):
    F.make_folds(sid, lab, 3, seed=0, inner=2, groups=np.full(sid.size, "A"))


def test_final_split_covers_every_image(paper_like, tmp_path):
  sid, lab, folds = paper_like
  final = F.final_split(sid, lab, 9, 1)
  assert final["test"].size == 0
  assert sorted(np.concatenate(final["inner"]).tolist()) == list(range(lab.size))
  path = tmp_path / "folds.json"
  F.write_folds(path, sid, lab, folds, final=final)
  _, _, _, back = F.read_folds_all(path)
  np.testing.assert_array_equal(back["val"], final["val"])
