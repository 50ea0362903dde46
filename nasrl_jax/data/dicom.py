"""The `dicom` source: a folder of ultrasound DICOM files plus a labels CSV.

This module owns reading B-mode DICOM files (pydicom 3) into a `Dataset`:

* Labels CSV (`config.data.manifest`): `subject_id`, `cap` or `label` (as in the manifest source),
  optional `device`, and a key column chosen by `config.data.dicom_label_key`:
  `sop_instance_uid` (files anywhere under `config.data.root` are matched by SOPInstanceUID),
  `file` (a path relative to the root, like the manifest's `path`), or `auto` (whichever column
  the CSV has; sop_instance_uid when it has both).
* Pixels to grayscale: MONOCHROME2 as is, MONOCHROME1 inverted, RGB through the ITU-R 601-2 luma,
  YBR_FULL / YBR_FULL_422 through `pydicom.pixels.convert_color_space` to RGB first, PALETTE COLOR
  through `apply_color_lut`. More than 8 bits keep their top 8 bits (no per-image stretching).
* Multi-frame files become one image per frame, all of the row's subject and label.
* Geometry: the frame is cropped to the first tissue region (RegionDataType 1, else the first
  region) of SequenceOfUltrasoundRegions, clipped to the frame, unless `crop == 'box'` (the box is
  then in source pixels). `crop == 'sector'` then runs inside that region.
* Files whose Modality is not 'US' are refused.

Privacy: files are read with `specific_tags` listing only pixel, geometry and matching attributes,
so PatientName, PatientID, birth date and the like are never even parsed into memory; nothing of
the header besides SOPInstanceUID (for matching), Manufacturer/ManufacturerModelName (for `device`)
and the pixel description is used, stored or put in messages.
"""

import os
from typing import Dict, List, Optional, Tuple

import numpy as np
import pydicom
from pydicom import pixels
from pydicom.errors import InvalidDicomError

from nasrl_jax.data import Dataset
from nasrl_jax.data import labels as labels_lib
from nasrl_jax.data import manifest
from nasrl_jax.data import preprocess
from nasrl_jax.errors import UserInputError

KEYS = ("sop_instance_uid", "file")
# The only attributes ever read from a file (besides the file meta group pydicom always reads).
_HEADER_TAGS = [
    "SOPInstanceUID", "Modality", "Manufacturer", "ManufacturerModelName",
    "SequenceOfUltrasoundRegions", "SamplesPerPixel", "PhotometricInterpretation",
    "PlanarConfiguration", "NumberOfFrames", "Rows", "Columns", "BitsAllocated", "BitsStored",
    "HighBit", "PixelRepresentation",
    "RedPaletteColorLookupTableDescriptor", "GreenPaletteColorLookupTableDescriptor",
    "BluePaletteColorLookupTableDescriptor", "RedPaletteColorLookupTableData",
    "GreenPaletteColorLookupTableData", "BluePaletteColorLookupTableData",
    "SegmentedRedPaletteColorLookupTableData", "SegmentedGreenPaletteColorLookupTableData",
    "SegmentedBluePaletteColorLookupTableData", "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
]
_PIXEL_TAGS = _HEADER_TAGS + ["PixelData"]
PHOTOMETRIC = ("MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "PALETTE COLOR",
               "YBR_RCT", "YBR_ICT")  # RCT/ICT: JPEG 2000 colour, decoded to RGB by pydicom.


def _one_line(text) -> str:
  return " ".join(str(text).split())


def read_header(path: str, where: str) -> pydicom.Dataset:
  """Reads the allowed header attributes of a DICOM file (no pixels, no patient fields).

  Args:
    path: DICOM file.
    where: what to name in errors (file or CSV row).

  Returns:
    A pydicom Dataset holding only `_HEADER_TAGS` (and the file meta group).
  """
  try:
    return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
  except InvalidDicomError:
    raise UserInputError(f"{where}: {os.path.basename(path)} is not a DICOM file "
                         "(no DICM preamble)") from None
  except Exception as e:  # pylint: disable=broad-except  # pydicom raises many types.
    raise UserInputError(f"{where}: {os.path.basename(path)} is a corrupt DICOM file "
                         f"({type(e).__name__}: {_one_line(e)})") from None


def region_box(ds: pydicom.Dataset) -> Optional[Tuple[int, int, int, int]]:
  """The ultrasound region to crop to, as (top, left, height, width), clipped to the frame.

  Args:
    ds: header with SequenceOfUltrasoundRegions, Rows, Columns.

  Returns:
    The first tissue region (RegionDataType 1), else the first region; None when the file has no
    regions or the region lies outside the frame.
  """
  regions = list(ds.get("SequenceOfUltrasoundRegions", None) or [])
  if not regions:
    return None
  tissue = [r for r in regions if r.get("RegionDataType", None) == 1]
  r = (tissue or regions)[0]
  try:
    x0, y0 = int(r.RegionLocationMinX0), int(r.RegionLocationMinY0)
    x1, y1 = int(r.RegionLocationMaxX1), int(r.RegionLocationMaxY1)
  except AttributeError:
    return None
  # Max coordinates are inclusive; some files carry regions larger than the frame: clip.
  x0, y0 = max(0, x0), max(0, y0)
  x1, y1 = min(int(ds.Columns) - 1, x1), min(int(ds.Rows) - 1, y1)
  if x1 < x0 or y1 < y0:
    return None
  return (y0, x0, y1 - y0 + 1, x1 - x0 + 1)


def check_header(ds: pydicom.Dataset, data_cfg, where: str) -> None:
  """Refuses a file before its pixels are decoded: what the training source and prediction refuse.

  Args:
    ds: the header from `read_header`.
    data_cfg: `config.data`-like (max_pixels, crop, crop_box).
    where: what to name in errors.

  Raises:
    UserInputError: Modality is not US, no image attributes, an unsupported photometric
      interpretation, no (installed) pixel decoder, frames over max_pixels, or a crop box that
      does not fit.
  """
  modality = str(ds.get("Modality", "") or "")
  if modality != "US":
    raise UserInputError(
        f"{where}: Modality is {modality or 'missing'!r}, not 'US' (only ultrasound is accepted)")
  for attr in ("Rows", "Columns", "PhotometricInterpretation", "BitsAllocated"):
    if attr not in ds:
      raise UserInputError(f"{where}: no {attr}; not an image DICOM")
  pi = str(ds.PhotometricInterpretation)
  if pi not in PHOTOMETRIC:
    raise UserInputError(f"{where}: PhotometricInterpretation {pi!r} is not supported "
                         f"({', '.join(PHOTOMETRIC)})")
  syntax = ds.file_meta.get("TransferSyntaxUID", None) if hasattr(ds, "file_meta") else None
  if syntax is None:
    raise UserInputError(f"{where}: no TransferSyntaxUID in the file meta information")
  try:
    decoder = pixels.get_decoder(syntax)
  except NotImplementedError:
    raise UserInputError(f"{where}: no pixel decoder exists for transfer syntax "
                         f"{syntax}") from None
  if not decoder.is_available:  # Found now, not after decoding hundreds of other files.
    raise UserInputError(
        f"{where}: cannot decode {getattr(syntax, 'name', syntax)} pixel data here; install one "
        f"of the plugins pydicom names: {'; '.join(decoder.missing_dependencies)}")
  rows, cols = int(ds.Rows), int(ds.Columns)
  if rows * cols > int(data_cfg.max_pixels):
    raise UserInputError(f"{where}: {rows}x{cols} frames are over config.data.max_pixels="
                         f"{int(data_cfg.max_pixels)}")
  preprocess.check_box_fits(rows, cols, data_cfg, where=where)


def _top_8_bits(arr: np.ndarray, bits: int, signed: bool) -> np.ndarray:
  """Integer samples of `bits` bits -> uint8 by keeping the top 8 bits."""
  a = arr.astype(np.int64)
  if signed:
    a = a + (1 << (bits - 1))
  a = np.clip(a, 0, (1 << bits) - 1)
  return (a >> max(0, bits - 8)).astype(np.uint8)


def frames_to_gray(arr: np.ndarray, meta: Dict, ds: pydicom.Dataset) -> np.ndarray:
  """Decoded pixel data -> uint8 grayscale frames.

  Args:
    arr: from a pydicom decoder with raw=True: [H, W], [F, H, W], [H, W, 3] or [F, H, W, 3].
    meta: the decoder's description of `arr` (photometric_interpretation, bits_stored, ...).
    ds: the header (palette LUTs).

  Returns:
    uint8[F, H, W].
  """
  pi = str(meta["photometric_interpretation"])
  n_frames = int(meta.get("number_of_frames", 1) or 1)
  if pi in ("MONOCHROME1", "MONOCHROME2"):
    if arr.ndim == 2:
      arr = arr[None]
    bits = int(meta.get("bits_stored", 8) or 8)
    gray = arr if arr.dtype == np.uint8 else _top_8_bits(
        arr, bits, int(meta.get("pixel_representation", 0)) == 1)
    return 255 - gray if pi == "MONOCHROME1" else gray
  if pi == "PALETTE COLOR":
    rgb = pixels.apply_color_lut(arr, ds)
    if rgb.dtype != np.uint8:  # 16-bit LUT entries: keep the top 8 bits.
      rgb = (rgb.astype(np.uint32) >> 8).astype(np.uint8)
  elif pi in ("YBR_FULL", "YBR_FULL_422"):
    rgb = pixels.convert_color_space(arr, pi, "RGB")
  elif pi == "RGB":
    rgb = arr
  else:
    raise ValueError(f"decoded photometric interpretation {pi!r} is not supported")
  if rgb.ndim == 3:
    rgb = rgb[None]
  if rgb.shape[0] != n_frames:
    raise ValueError(f"decoded {rgb.shape[0]} frames, header says {n_frames}")
  return np.stack([preprocess.to_grayscale(f) for f in rgb])


def read_frames(path: str, where: str) -> Tuple[np.ndarray, pydicom.Dataset]:
  """Decodes every frame of a DICOM file to uint8 grayscale.

  Args:
    path: DICOM file (already validated by its header).
    where: what to name in errors.

  Returns:
    (uint8[F, H, W], the header dataset).
  """
  name = os.path.basename(path)
  try:
    ds = pydicom.dcmread(path, specific_tags=_PIXEL_TAGS)
    decoder = pixels.get_decoder(ds.file_meta.TransferSyntaxUID)
    arr, meta = decoder.as_array(ds, raw=True)
    return frames_to_gray(arr, meta, ds), ds
  except UserInputError:
    raise
  except Exception as e:  # pylint: disable=broad-except  # Missing plugin, truncated data, ...
    raise UserInputError(f"{where}: cannot decode the pixels of {name} ({type(e).__name__}: "
                         f"{_one_line(e)})") from None


def preprocess_frames(frames: np.ndarray, ds: pydicom.Dataset, data_cfg) -> np.ndarray:
  """The training preprocessing of one file's frames (used by `load` and by prediction).

  Each frame is cropped to the ultrasound region (`region_box`; not when `crop == 'box'`, whose
  box is in source pixels), then goes through `preprocess.crop` and the resize.

  Args:
    frames: uint8[F, H, W] from `read_frames`.
    ds: the file's header (its SequenceOfUltrasoundRegions).
    data_cfg: `config.data`-like (image_size, crop, crop_box).

  Returns:
    uint8[F, S, S] with S = image_size.
  """
  size = int(data_cfg.image_size)
  box = None if data_cfg.crop == "box" else region_box(ds)
  out = []
  for frame in frames:
    if box is not None:
      top, left, h, w = box
      frame = frame[top:top + h, left:left + w]
    out.append(preprocess.resize(preprocess.crop(frame, data_cfg), size))
  return np.stack(out)


def _choose_key(table: manifest.Table, data_cfg) -> str:
  key = data_cfg.dicom_label_key
  if key not in KEYS + ("auto",):
    raise UserInputError(f"config.data.dicom_label_key={key!r}: must be sop_instance_uid, file "
                         "or auto")
  if key == "auto":
    present = [k for k in KEYS if k in table.header]
    if not present:
      raise UserInputError(f"{table.path}: needs a 'sop_instance_uid' or 'file' column; the "
                           f"header has {list(table.header)}")
    return present[0]
  if key not in table.header:
    raise UserInputError(f"{table.path}: missing column {key!r} (config.data.dicom_label_key); "
                         f"the header has {list(table.header)}")
  return key


def _index_by_uid(root: str) -> Dict[str, str]:
  """SOPInstanceUID -> file for every DICOM file under root (other files are skipped)."""
  index = {}
  for folder, dirs, files in os.walk(root):
    dirs.sort()
    for fname in sorted(files):
      path = os.path.join(folder, fname)
      try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
      except InvalidDicomError:
        continue  # Not DICOM (README, CSV, DICOMDIR without preamble...).
      except Exception as e:  # pylint: disable=broad-except
        raise UserInputError(f"{path}: corrupt DICOM file ({type(e).__name__}: "
                             f"{_one_line(e)})") from None
      uid = str(ds.get("SOPInstanceUID", "") or "")
      if not uid:
        continue  # DICOMDIR and other non-instance files.
      if uid in index:
        raise UserInputError(f"{path}: SOPInstanceUID {uid} is also in {index[uid]}")
      index[uid] = path
  return index


def validate(data_cfg) -> Tuple[manifest.Table, List[str], Tuple[np.ndarray, np.ndarray,
                                                                   np.ndarray]]:
  """Everything but pixel decoding: CSV, matching, headers (Modality, size, photometric).

  Args:
    data_cfg: `config.data`.

  Returns:
    (table, DICOM path per row, (cap, label, subject_id) per row).
  """
  preprocess.validate_config(data_cfg)
  labels_lib.num_classes(data_cfg)
  table = manifest.read_table(data_cfg.manifest, required=("subject_id",), one_of=("cap", "label"))
  key = _choose_key(table, data_cfg)
  root = manifest.data_root(data_cfg, table.path)
  targets = manifest.parse_targets(table, data_cfg)
  index = _index_by_uid(root) if key == "sop_instance_uid" else None
  paths, seen = [], {}
  for row, line in zip(table.rows, table.row_numbers):
    where = f"{table.path}: row {line}"
    value = row[key]
    if not value:
      raise UserInputError(f"{where}, field '{key}' is empty")
    if key == "file":
      path = manifest.resolve_in_root(root, value, where, field="file")
      ident = os.path.normcase(os.path.realpath(path))
    else:
      if value not in index:
        raise UserInputError(f"{where}, field 'sop_instance_uid': no DICOM file under {root} has "
                             f"SOPInstanceUID {value}")
      path, ident = index[value], value
    if ident in seen:
      raise UserInputError(f"{where}, field '{key}': {value!r} duplicates row {seen[ident]}")
    seen[ident] = line
    paths.append(path)
  manifest.check_cohort(targets[1], targets[2], data_cfg, table.path)
  for path, line in zip(paths, table.row_numbers):
    where = f"{table.path}: row {line}: {os.path.basename(path)}"
    check_header(read_header(path, where), data_cfg, where)
  return table, paths, targets


def load(data_cfg) -> Dataset:
  """Loads the DICOM source into a `Dataset` (one image per frame).

  Args:
    data_cfg: `config.data` (root, manifest, dicom_label_key, image_size, crop, crop_box,
      max_pixels, label_mode, cap_cutoff, grade_cutoffs, num_folds).

  Returns:
    Dataset with images uint8[N, S, S, 1] in CSV row order, frames in file order.
  """
  table, paths, (cap, label, subject_id) = validate(data_cfg)
  images, counts, devices = [], [], []
  for path, row, line in zip(paths, table.rows, table.row_numbers):
    frames, ds = read_frames(path, f"{table.path}: row {line}")
    images.extend(preprocess_frames(frames, ds, data_cfg))
    counts.append(frames.shape[0])
    devices.append(row.get("device", "") or " ".join(
        str(ds.get(k, "") or "") for k in ("Manufacturer", "ManufacturerModelName")).strip())
  n = len(images)
  return Dataset(
      images=np.stack(images)[..., None].astype(np.uint8),
      label=np.repeat(label, counts).astype(np.int32),
      cap=np.repeat(cap, counts).astype(np.float32),
      subject_id=np.repeat(subject_id, counts),
      device=np.repeat(np.asarray(devices, str), counts),
      true_cap=np.full(n, np.nan, np.float32),
      name=f"dicom:{os.path.basename(table.path)}")
