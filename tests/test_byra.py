"""Tests for nasrl_jax.data.byra on small .mat files written in the Byra et al. 2018 layout."""

import numpy as np
import pytest
import scipy.io

from configs import fatty_liver
from nasrl_jax.data import byra
from nasrl_jax.errors import UserInputError


def _write_mat(path, ids=(1, 2, 3, 4), classes=(0, 0, 1, 1), fats=(0, 2, 30, 70), frames=3,
               height=40, width=60, drop_field=None):
  """data: 1 x P struct (id, class, fat, images [frames, H, W] uint8), as the public file."""
  fields = [f for f in ("id", "class", "fat", "images") if f != drop_field]
  data = np.empty((1, len(ids)), dtype=[(f, object) for f in fields])
  for i, pid in enumerate(ids):
    # Frame j of patient i is constant 10 * i + j, so pixels can be traced back.
    imgs = (10 * i + np.arange(frames, dtype=np.uint8))[:, None, None] * np.ones(
        (1, height, width), np.uint8)
    values = {"id": np.array([[pid]], np.uint8), "class": np.array([[classes[i]]], np.uint8),
              "fat": np.array([[fats[i]]], np.uint8), "images": imgs}
    for f in fields:
      data[0, i][f] = values[f]
  scipy.io.savemat(str(path), {"data": data})
  return str(path)


def _cfg(mat_path, **overrides):
  d = fatty_liver.get_config("tiny,byra_mat").data
  d.mat_path = mat_path
  d.num_folds = 2
  d.image_size = 16
  for k, v in overrides.items():
    d[k] = v
  return d


def test_layout_of_written_file_matches_public_dataset(tmp_path):
  raw = scipy.io.loadmat(_write_mat(tmp_path / "d.mat"))["data"]
  assert raw.shape == (1, 4) and raw.dtype.names == ("id", "class", "fat", "images")
  assert raw[0, 0]["images"].shape == (3, 40, 60)


def test_round_trip(tmp_path):
  ds = byra.load(_cfg(_write_mat(tmp_path / "d.mat")))
  assert ds.images.shape == (12, 16, 16, 1) and ds.images.dtype == np.uint8
  np.testing.assert_array_equal(ds.label, [0] * 6 + [1] * 6)
  np.testing.assert_array_equal(ds.subject_id, np.repeat(["1", "2", "3", "4"], 3))
  assert set(ds.device) == {"GE Vivid E9"}
  assert np.all(np.isnan(ds.cap)) and np.all(np.isnan(ds.true_cap))
  # Patient 3 (index 2), frame 1 was constant 21.
  assert np.all(ds.images[7] == 21)
  assert ds.num_subjects == 4


def test_grade_mode_uses_biopsy_fat(tmp_path):
  ds = byra.load(_cfg(_write_mat(tmp_path / "d.mat", fats=(0, 5, 34, 70)), label_mode="grade"))
  np.testing.assert_array_equal(ds.label, np.repeat([0, 1, 2, 3], 3))
  np.testing.assert_array_equal(byra.fat_to_grade([4.9, 5, 33, 33.5, 66, 66.1]), [0, 1, 1, 2, 2, 3])


def test_errors(tmp_path):
  with pytest.raises(UserInputError, match="not found"):
    byra.load(_cfg(str(tmp_path / "none.mat")))
  with pytest.raises(UserInputError, match=r"lacks field\(s\) \['fat'\]"):
    byra.load(_cfg(_write_mat(tmp_path / "a.mat", drop_field="fat")))
  with pytest.raises(UserInputError, match=r"data\(3\), field 'class': 2 is not 0 or 1"):
    byra.load(_cfg(_write_mat(tmp_path / "b.mat", classes=(0, 0, 2, 1))))
  with pytest.raises(UserInputError, match=r"data\(2\), field 'id': patient 1 repeats data\(1\)"):
    byra.load(_cfg(_write_mat(tmp_path / "c.mat", ids=(1, 1, 3, 4))))
  with pytest.raises(UserInputError, match="only one class"):
    byra.load(_cfg(_write_mat(tmp_path / "e.mat", classes=(1, 1, 1, 1))))
  with pytest.raises(UserInputError, match="fewer than config.data.num_folds=10"):
    byra.load(_cfg(_write_mat(tmp_path / "f.mat"), num_folds=10))
  scipy.io.savemat(str(tmp_path / "g.mat"), {"images": np.zeros((2, 2))})
  with pytest.raises(UserInputError, match=r"no variable 'data' \(found \['images'\]\)"):
    byra.load(_cfg(str(tmp_path / "g.mat")))
  (tmp_path / "h.mat").write_bytes(b"garbage" * 20)
  with pytest.raises(UserInputError, match="h.mat: cannot read"):
    byra.load(_cfg(str(tmp_path / "h.mat")))
