"""Tests for nasrl_jax.data.manifest: loading a CSV + image folder, and every bad-input case."""

import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from configs import fatty_liver
from nasrl_jax.data import manifest
from nasrl_jax.errors import UserInputError

HEADER = "path,subject_id,cap,device,site"


def _cfg(csv_path, **overrides):
  d = fatty_liver.get_config("tiny,manifest").data
  d.manifest = str(csv_path)
  d.num_folds = 3
  d.image_size = 16
  for k, v in overrides.items():
    d[k] = v
  return d


@pytest.fixture
def study(tmp_path):
  """6 subjects x 2 PNG images; s0-s2 normal (CAP 200), s3-s5 fatty (CAP 280)."""
  rng = np.random.default_rng(0)
  lines = [HEADER]
  for s in range(6):
    os.makedirs(tmp_path / f"s{s}")
    for k in range(2):
      rel = f"s{s}/img{k}.png"
      Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(tmp_path / rel)
      lines.append(f"{rel},s{s},{200 if s < 3 else 280},LOGIQ S8,A")
  return tmp_path, lines


def _write(tmp_path, lines, name="manifest.csv"):
  path = tmp_path / name
  path.write_text("\n".join(lines) + "\n")
  return path


def _error(cfg):
  with pytest.raises(UserInputError) as info:
    manifest.load(cfg)
  msg = str(info.value)
  assert "\n" not in msg  # One line.
  return msg


def test_load_happy_path(study):
  tmp_path, lines = study
  ds = manifest.load(_cfg(_write(tmp_path, lines)))
  assert ds.images.shape == (12, 16, 16, 1) and ds.images.dtype == np.uint8
  np.testing.assert_array_equal(ds.label, [0] * 6 + [1] * 6)
  assert ds.label.dtype == np.int32
  np.testing.assert_allclose(ds.cap, [200] * 6 + [280] * 6)
  assert list(ds.subject_id[:3]) == ["s0", "s0", "s1"]
  assert set(ds.device) == {"LOGIQ S8"}
  assert np.all(np.isnan(ds.true_cap))
  # Pixels really come from the files (RGB -> L, resized).
  first = np.asarray(Image.open(tmp_path / "s0/img0.png").convert("L").resize((16, 16),
                                                                              Image.BILINEAR))
  np.testing.assert_array_equal(ds.images[0, ..., 0], first)


def test_label_column_root_and_grade_mode(study, tmp_path_factory):
  tmp_path, lines = study
  other = tmp_path_factory.mktemp("csvs")
  rows = ["path,subject_id,label"] + [
      f"{l.split(',')[0]},{l.split(',')[1]},{i % 4}" for i, l in enumerate(lines[1:])]
  cfg = _cfg(_write(other, rows), root=str(tmp_path), label_mode="grade")
  ds = manifest.load(cfg)
  np.testing.assert_array_equal(ds.label, [i % 4 for i in range(12)])
  assert np.all(np.isnan(ds.cap)) and set(ds.device) == {""}


def test_missing_manifest(tmp_path):
  assert "not found" in _error(_cfg(tmp_path / "nope.csv"))
  assert "config.data.manifest is empty" in _error(_cfg(""))


def test_unreadable_manifest(tmp_path):
  path = tmp_path / "bad.csv"
  path.write_bytes(b"path,subject_id,cap\n\xff\xfe\xfa,1,2\n")
  assert "bad.csv: cannot read" in _error(_cfg(path))


def test_missing_columns(study):
  tmp_path, lines = study
  rows = [l.split(",")[0] + "," + l.split(",")[2] for l in lines]  # Drops subject_id.
  assert "missing column(s) ['subject_id']" in _error(_cfg(_write(tmp_path, rows)))
  rows = [",".join(l.split(",")[:2]) for l in lines]  # No cap or label.
  assert "needs a 'cap' or 'label' column" in _error(_cfg(_write(tmp_path, rows)))


def test_empty_row(study):
  tmp_path, lines = study
  msg = _error(_cfg(_write(tmp_path, lines[:3] + [",,,,"] + lines[3:])))
  assert "row 4 is empty" in msg
  msg = _error(_cfg(_write(tmp_path, lines[:3] + [""] + lines[3:])))
  assert "row 4 is empty" in msg


def test_empty_required_cells(study):
  tmp_path, lines = study
  bad = list(lines)
  bad[2] = "s0/img1.png,,200,LOGIQ S8,A"
  assert "row 3, field 'subject_id' is empty" in _error(_cfg(_write(tmp_path, bad)))
  bad = list(lines)
  bad[5] = ",s2,200,LOGIQ S8,A"
  assert "row 6, field 'path' is empty" in _error(_cfg(_write(tmp_path, bad)))
  bad = list(lines)
  bad[4] = "s1/img1.png,s1,,LOGIQ S8,A"
  assert "row 5, field 'cap' is empty" in _error(_cfg(_write(tmp_path, bad)))


def test_ragged_row(study):
  tmp_path, lines = study
  bad = list(lines)
  bad[3] += ",extra"
  assert "row 4 has 6 cells but the header has 5" in _error(_cfg(_write(tmp_path, bad)))


@pytest.mark.parametrize("value,problem", [("nan", "NaN"), ("-3", "negative"),
                                           ("2380", "absurd"), ("abc", "not a number")])
def test_bad_cap(study, value, problem):
  tmp_path, lines = study
  bad = list(lines)
  bad[6] = f"s2/img1.png,s2,{value},LOGIQ S8,A"
  msg = _error(_cfg(_write(tmp_path, bad)))
  assert "manifest.csv: row 7, field 'cap'" in msg and problem in msg


def test_label_outside_binary(study):
  tmp_path, lines = study
  rows = ["path,subject_id,label"] + [
      f"{l.split(',')[0]},{l.split(',')[1]},{1 if i else 2}" for i, l in enumerate(lines[1:])]
  msg = _error(_cfg(_write(tmp_path, rows)))
  assert "row 2, field 'label': '2' is not 0 or 1 (binary mode)" in msg


def test_label_disagreeing_with_cap(study):
  tmp_path, lines = study
  rows = ["path,subject_id,cap,label"] + [
      ",".join(l.split(",")[:3]) + ",0" for l in lines[1:]]
  assert "row 8, field 'label': 0 disagrees with cap 280" in _error(_cfg(_write(tmp_path, rows)))


def test_duplicate_paths(study):
  tmp_path, lines = study
  bad = list(lines)
  bad[4] = "./s0/img0.png,s1,200,LOGIQ S8,A"
  assert "row 5, field 'path': './s0/img0.png' duplicates row 2" in _error(
      _cfg(_write(tmp_path, bad)))


def test_missing_image(study):
  tmp_path, lines = study
  bad = list(lines)
  bad[3] = "s1/nothere.png,s1,200,LOGIQ S8,A"
  assert "row 4, field 'path': 's1/nothere.png' does not exist" in _error(
      _cfg(_write(tmp_path, bad)))


def test_path_escaping_root(study, tmp_path_factory):
  tmp_path, lines = study
  outside = tmp_path_factory.mktemp("elsewhere") / "x.png"
  Image.new("L", (8, 8)).save(outside)
  for cell in ("../" + outside.parent.name + "/x.png", str(outside), "s0/../../x.png"):
    bad = list(lines)
    bad[2] = f"{cell},s0,200,LOGIQ S8,A"
    assert "row 3, field 'path'" in (msg := _error(_cfg(_write(tmp_path, bad))))
    assert "outside the data root" in msg


def test_absolute_path_inside_root_is_fine(study):
  tmp_path, lines = study
  good = list(lines)
  good[2] = f"{tmp_path / 's0/img1.png'},s0,200,LOGIQ S8,A"
  assert len(manifest.load(_cfg(_write(tmp_path, good)))) == 12


def test_corrupt_image(study):
  tmp_path, lines = study
  (tmp_path / "s2/img0.png").write_bytes(b"definitely not a png" * 10)
  msg = _error(_cfg(_write(tmp_path, lines)))
  assert "row 6: image img0.png is corrupt" in msg


def test_truncated_png(study):
  tmp_path, lines = study
  data = (tmp_path / "s3/img1.png").read_bytes()
  (tmp_path / "s3/img1.png").write_bytes(data[: len(data) // 2])
  assert "row 9: image img1.png is corrupt" in _error(_cfg(_write(tmp_path, lines)))


def test_truncated_jpeg(study):
  tmp_path, lines = study
  buf = io.BytesIO()
  Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64), np.uint8)).save(
      buf, "JPEG", quality=95)
  (tmp_path / "s4/img0.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
  bad = list(lines)
  bad[9] = "s4/img0.jpg,s4,280,LOGIQ S8,A"
  # The header and verify() pass; full decoding finds the truncation.
  assert "row 10: image img0.jpg is corrupt or truncated" in _error(_cfg(_write(tmp_path, bad)))


def test_image_over_max_pixels(study):
  tmp_path, lines = study
  msg = _error(_cfg(_write(tmp_path, lines), max_pixels=400))
  assert "row 2: image img0.png is 24x20 = 480 pixels, over config.data.max_pixels=400" in msg


def test_pillow_decompression_bomb(study):
  tmp_path, lines = study
  png = bytearray((tmp_path / "s5/img1.png").read_bytes())
  # Rewrite IHDR to claim 20000 x 20000 (400 M pixels, past Pillow's own hard limit).
  png[16:24] = struct.pack(">II", 20000, 20000)
  png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])) & 0xFFFFFFFF)
  (tmp_path / "s5/img1.png").write_bytes(bytes(png))
  msg = _error(_cfg(_write(tmp_path, lines), max_pixels=10**12))
  assert "row 13: image img1.png refused as a decompression bomb" in msg


def test_only_one_class(study):
  tmp_path, lines = study
  rows = [HEADER] + [l.replace(",280,", ",200,") for l in lines[1:]]
  assert "only one class present" in _error(_cfg(_write(tmp_path, rows)))


def test_fewer_subjects_than_folds(study):
  tmp_path, lines = study
  msg = _error(_cfg(_write(tmp_path, lines), num_folds=10))
  assert "manifest.csv: 6 subjects, fewer than config.data.num_folds=10" in msg


def test_crop_box_checked_against_headers(study):
  tmp_path, lines = study
  msg = _error(_cfg(_write(tmp_path, lines), crop="box", crop_box=(0, 0, 30, 10)))
  assert "row 2: image img0.png: config.data.crop_box" in msg
