"""Tests for nasrl_jax.data.dicom: photometric variants, multi-frame, region crop, refusal, privacy.

Uses only DICOM files that pydicom ships inside its wheel (no download) plus files written here.
"""

import os
import shutil

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom import pixels
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset as DicomDataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, UltrasoundMultiFrameImageStorage

from configs import fatty_liver
from nasrl_jax.data import dicom
from nasrl_jax.errors import UserInputError

PHI = {"PatientName": "DOE^JANE", "PatientID": "SECRET123", "PatientBirthDate": "19700101"}


def _shipped(name):
  """A pydicom test file that is inside the installed package (never downloaded)."""
  path = get_testdata_file(name, download=False)
  assert path and os.path.dirname(pydicom.__file__) in path, name
  return path


def _write_us(path, frames, photometric="MONOCHROME2", bits=8, region=None, modality="US"):
  """Writes an ultrasound DICOM with patient fields set, maybe multi-frame and with a region."""
  ds = DicomDataset()
  ds.file_meta = FileMetaDataset()
  ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
  ds.file_meta.MediaStorageSOPClassUID = UltrasoundMultiFrameImageStorage
  ds.SOPClassUID = UltrasoundMultiFrameImageStorage
  for k, v in PHI.items():
    setattr(ds, k, v)
  ds.Modality = modality
  ds.Manufacturer = "GE"
  ds.ManufacturerModelName = "LOGIQ S8"
  ds.set_pixel_data(frames, photometric, bits)  # Also sets a fresh SOPInstanceUID.
  ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
  if region is not None:
    r = DicomDataset()
    r.RegionSpatialFormat, r.RegionDataType, r.RegionFlags = 1, 1, 0
    (r.RegionLocationMinX0, r.RegionLocationMinY0, r.RegionLocationMaxX1,
     r.RegionLocationMaxY1) = region
    ds.SequenceOfUltrasoundRegions = [r]
  ds.save_as(path, enforce_file_format=True)
  return str(ds.SOPInstanceUID)


def _luma(rgb):
  return np.asarray(Image.fromarray(np.ascontiguousarray(rgb, np.uint8)).convert("L"))


def _read(path):
  return dicom.read_frames(str(path), "test")[0]


def test_monochrome_variants(tmp_path):
  img = np.arange(40 * 60, dtype=np.uint16).reshape(40, 60) % 256
  _write_us(tmp_path / "m2.dcm", img.astype(np.uint8))
  np.testing.assert_array_equal(_read(tmp_path / "m2.dcm"), img[None])
  _write_us(tmp_path / "m1.dcm", img.astype(np.uint8), photometric="MONOCHROME1")
  np.testing.assert_array_equal(_read(tmp_path / "m1.dcm"), 255 - img[None])  # Inverted.
  twelve = (img * 16).astype(np.uint16)  # 12-bit data: keep the top 8 bits.
  _write_us(tmp_path / "m12.dcm", twelve, bits=12)
  np.testing.assert_array_equal(_read(tmp_path / "m12.dcm"), img[None])


def test_rgb_ybr_palette_to_gray():
  rgb_path = _shipped("examples_rgb_color.dcm")  # US, RGB.
  ref = pydicom.dcmread(rgb_path).pixel_array
  np.testing.assert_array_equal(_read(rgb_path), _luma(ref)[None])

  ybr_path = _shipped("SC_ybr_full_422_uncompressed.dcm")  # YBR_FULL_422, uncompressed.
  raw = pydicom.dcmread(ybr_path)
  assert raw.PhotometricInterpretation == "YBR_FULL_422"
  ref = _luma(pixels.pixel_array(raw))  # pydicom's own YBR -> RGB.
  got = _read(ybr_path)[0]
  assert np.abs(got.astype(int) - ref).max() <= 1
  # Without the colour conversion the luma of raw YBR samples would be far off.
  naive = _luma(pixels.pixel_array(raw, raw=True))
  assert np.abs(naive.astype(int) - ref).mean() > 10

  pal_path = _shipped("examples_palette.dcm")  # US, PALETTE COLOR with 16-bit LUT entries.
  raw = pydicom.dcmread(pal_path)
  rgb16 = pixels.apply_color_lut(raw.pixel_array, raw)
  np.testing.assert_array_equal(_read(pal_path)[0], _luma((rgb16 >> 8).astype(np.uint8)))


def test_multiframe_jpeg_ybr():
  path = _shipped("examples_ybr_color.dcm")  # US, 30 frames, YBR_FULL_422 in JPEG baseline.
  frames = _read(path)
  assert frames.shape == (30, 240, 320) and frames.dtype == np.uint8
  ref = _luma(pydicom.dcmread(path).pixel_array[7])
  assert np.abs(frames[7].astype(int) - ref).max() <= 1


def test_region_box_clipped():
  ds = pydicom.dcmread(_shipped("examples_palette.dcm"), stop_before_pixels=True)
  # The file's region (x 120..800, y 60..518) is larger than its 350 x 800 frame: clipped.
  assert dicom.region_box(ds) == (60, 120, 290, 680)


def _cohort(root):
  """Five US subjects from written and shipped files; returns the labels-CSV lines by key."""
  root.mkdir(exist_ok=True)
  frames = np.full((3, 40, 60), 255, np.uint8)  # 255 outside the region: burned-in overlay.
  for f in range(3):
    frames[f, 5:35, 10:50] = 100 + f
  uids = {"mf.dcm": _write_us(root / "mf.dcm", frames, region=(10, 5, 49, 34))}
  uids["mono1.dcm"] = _write_us(root / "mono1.dcm", np.full((30, 30), 55, np.uint8),
                                photometric="MONOCHROME1")
  os.makedirs(root / "sub")
  for name in ("examples_rgb_color.dcm", "examples_palette.dcm", "examples_ybr_color.dcm"):
    shutil.copy(_shipped(name), root / "sub" / name)
    uids["sub/" + name] = str(pydicom.dcmread(root / "sub" / name).SOPInstanceUID)
  (root / "README.txt").write_text("not dicom")
  targets = {"mf.dcm": ("A", "cap", "200"), "mono1.dcm": ("B", "cap", "300"),
             "sub/examples_rgb_color.dcm": ("C", "label", "1"),
             "sub/examples_palette.dcm": ("D", "label", "0"),
             "sub/examples_ybr_color.dcm": ("E", "cap", "250")}
  by_file = ["file,subject_id,cap,label"]
  by_uid = ["sop_instance_uid,subject_id,cap,label"]
  for rel, (subject, col, value) in targets.items():
    cells = f"{subject},{value if col == 'cap' else ''},{value if col == 'label' else ''}"
    by_file.append(f"{rel},{cells}")
    by_uid.append(f"{uids[rel]},{cells}")
  return by_file, by_uid


def _cfg(root, csv_path, **overrides):
  d = fatty_liver.get_config("tiny,dicom").data
  d.root, d.manifest, d.num_folds, d.image_size = str(root), str(csv_path), 2, 16
  for k, v in overrides.items():
    d[k] = v
  return d


def test_load_by_file_and_by_uid(tmp_path):
  root = tmp_path / "dcm"
  by_file, by_uid = _cohort(root)
  (tmp_path / "by_file.csv").write_text("\n".join(by_file) + "\n")
  (tmp_path / "by_uid.csv").write_text("\n".join(by_uid) + "\n")
  ds = dicom.load(_cfg(root, tmp_path / "by_file.csv"))
  assert ds.images.shape == (3 + 1 + 1 + 1 + 30, 16, 16, 1)
  np.testing.assert_array_equal(ds.subject_id, ["A"] * 3 + ["B", "C", "D"] + ["E"] * 30)
  np.testing.assert_array_equal(ds.label, [0] * 3 + [1, 1, 0] + [1] * 30)
  np.testing.assert_allclose(ds.cap[:4], [200, 200, 200, 300])
  assert np.isnan(ds.cap[4]) and np.isnan(ds.cap[5])
  # Multi-frame split, and the region crop removed the 255 overlay around the region.
  for f in range(3):
    assert np.all(ds.images[f] == 100 + f)
  assert np.all(ds.images[3] == 200)  # MONOCHROME1 55 -> 200.
  assert ds.device[0] == "GE LOGIQ S8"
  by_uid_ds = dicom.load(_cfg(root, tmp_path / "by_uid.csv"))  # auto -> sop_instance_uid.
  np.testing.assert_array_equal(by_uid_ds.images, ds.images)
  np.testing.assert_array_equal(by_uid_ds.label, ds.label)

  # No patient-identifying value of any source file reaches the Dataset.
  phi = set(PHI.values())
  for path in root.rglob("*.dcm"):
    full = pydicom.dcmread(path, stop_before_pixels=True)
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "InstitutionName",
                    "ReferringPhysicianName"):
      value = str(full.get(keyword, "") or "")
      if len(value) >= 3:
        phi.add(value)
    assert "PatientName" not in dicom.read_header(str(path), "test")  # Never even parsed.
  assert len(phi) > 3
  stored = " ".join(list(ds.subject_id) + list(ds.device) + [ds.name, repr(ds.summary())])
  for value in phi:
    assert value not in stored, value


def test_non_us_refused(tmp_path):
  root = tmp_path / "dcm"
  by_file, _ = _cohort(root)
  shutil.copy(_shipped("CT_small.dcm"), root / "ct.dcm")
  (tmp_path / "l.csv").write_text("\n".join(by_file + ["ct.dcm,F,,1"]) + "\n")
  with pytest.raises(UserInputError, match=r"l.csv: row 7: ct.dcm: Modality is 'CT', not 'US'"):
    dicom.load(_cfg(root, tmp_path / "l.csv"))


def test_label_csv_errors(tmp_path):
  root = tmp_path / "dcm"
  by_file, by_uid = _cohort(root)
  bad = by_uid[:2] + ["1.2.3.4,X,200,"] + by_uid[2:]
  (tmp_path / "a.csv").write_text("\n".join(bad) + "\n")
  with pytest.raises(UserInputError, match=r"row 3, field 'sop_instance_uid': no DICOM file"):
    dicom.load(_cfg(root, tmp_path / "a.csv"))
  (tmp_path / "b.csv").write_text("\n".join(by_file + ["README.txt,F,,1"]) + "\n")
  with pytest.raises(UserInputError, match=r"row 7: README.txt: README.txt is not a DICOM file"):
    dicom.load(_cfg(root, tmp_path / "b.csv"))
  (tmp_path / "c.csv").write_text("\n".join(by_file + ["./mf.dcm,F,,1"]) + "\n")
  with pytest.raises(UserInputError, match=r"row 7, field 'file': './mf.dcm' duplicates row 2"):
    dicom.load(_cfg(root, tmp_path / "c.csv"))
  with pytest.raises(UserInputError, match=r"missing column 'sop_instance_uid'"):
    dicom.load(_cfg(root, tmp_path / "c.csv", dicom_label_key="sop_instance_uid"))
  with pytest.raises(UserInputError, match=r"dicom_label_key='uid'"):
    dicom.load(_cfg(root, tmp_path / "c.csv", dicom_label_key="uid"))


def _as_us(src_name, dst):
  """A shipped non-US file relabelled as ultrasound (its pixel data left as it is)."""
  ds = pydicom.dcmread(_shipped(src_name))
  ds.Modality = "US"
  ds.save_as(dst)


class _Unavailable:
  is_available = False
  missing_dependencies = ["pylibjpeg - requires pylibjpeg>=2.0"]


def test_undecodable_and_truncated_files(tmp_path, monkeypatch):
  root = tmp_path / "dcm"
  by_file, _ = _cohort(root)
  _as_us("JPEGLSNearLossless_08.dcm", root / "jls.dcm")
  real = pixels.get_decoder
  # As on a machine without a JPEG-LS plugin, whatever this one has installed.
  monkeypatch.setattr(pixels, "get_decoder", lambda uid: _Unavailable()
                      if uid == pydicom.uid.JPEGLSNearLossless else real(uid))
  (tmp_path / "a.csv").write_text("\n".join(by_file + ["jls.dcm,F,,1"]) + "\n")
  with pytest.raises(UserInputError, match=r"row 7: jls.dcm: cannot decode JPEG-LS"):
    dicom.validate(_cfg(root, tmp_path / "a.csv"))  # Refused while validating headers.
  _as_us("MR_truncated.dcm", root / "trunc.dcm")
  (tmp_path / "b.csv").write_text("\n".join(by_file + ["trunc.dcm,F,,1"]) + "\n")
  with pytest.raises(UserInputError, match=r"row 7: cannot decode the pixels of trunc.dcm"):
    dicom.load(_cfg(root, tmp_path / "b.csv"))


def test_preprocess_frames_crops_to_the_region_unless_a_box_is_given(tmp_path):
  frames = np.full((2, 40, 60), 255, np.uint8)  # 255 outside the region: burned-in overlay.
  frames[:, 5:35, 10:50] = [[[100]], [[150]]]
  _write_us(tmp_path / "mf.dcm", frames, region=(10, 5, 49, 34))
  ds = dicom.read_header(str(tmp_path / "mf.dcm"), "test")
  dicom.check_header(ds, _cfg(tmp_path, tmp_path / "x.csv"), "test")
  gray, ds = dicom.read_frames(str(tmp_path / "mf.dcm"), "test")
  out = dicom.preprocess_frames(gray, ds, _cfg(tmp_path, tmp_path / "x.csv"))
  assert out.shape == (2, 16, 16) and out.dtype == np.uint8
  assert set(np.unique(out[0])) == {100} and set(np.unique(out[1])) == {150}
  boxed = dicom.preprocess_frames(gray, ds, _cfg(tmp_path, tmp_path / "x.csv", crop="box",
                                                 crop_box=(0, 0, 40, 60)))
  assert boxed.max() == 255  # The box is in source pixels: the overlay is kept.
