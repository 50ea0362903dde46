"""The `byra_mat` source: the public "Dataset of B-mode fatty liver ultrasound images".

Byra et al., "Transfer learning with deep convolutional neural network for liver steatosis
assessment in ultrasound images", IJCARS 2018; data on Zenodo (doi:10.5281/zenodo.1009146) as
`dataset_liver_bmodes_steatosis_assessment_IJCARS.mat` (MATLAB v5, readable by scipy.io.loadmat).

Layout (checked against the dataset description and public loaders): one variable `data`, a 1 x 55
struct array, one element per patient, with fields
  id      patient number (scalar);
  class   0 normal, 1 fatty (more than 5 % of hepatocytes with steatosis, by biopsy);
  fat     steatosis percentage from the biopsy (0..100);
  images  uint8 [10, 434, 636]: ten B-mode frames of the liver (GE Vivid E9, 2.5 MHz sector probe).

This module owns reading that file into a `Dataset`: label = class in binary mode; in grade mode the
histological grade from `fat` (S0 < 5 %, S1 5-33 %, S2 > 33-66 %, S3 > 66 %, the usual Brunt/Kleiner
bands, because the file has no CAP); subject_id = patient id; cap = nan; device = "GE Vivid E9".
Everything in the struct is validated before any frame is preprocessed.
"""

import math
import os
from typing import List, Tuple

import numpy as np
import scipy.io

from nasrl_jax.data import Dataset
from nasrl_jax.data import labels as labels_lib
from nasrl_jax.data import manifest
from nasrl_jax.data import preprocess
from nasrl_jax.errors import UserInputError

DEVICE = "GE Vivid E9"  # The scanner of the Byra et al. 2018 acquisitions.
FIELDS = ("id", "class", "fat", "images")
# Histological steatosis grade lower bounds (% hepatocytes): S1 from 5, S2 above 33, S3 above 66.
FAT_GRADE_BOUNDS = (5.0, 33.0, 66.0)


def fat_to_grade(fat: np.ndarray) -> np.ndarray:
  """Biopsy steatosis percentage -> grade 0..3 (S0 < 5 % <= S1 <= 33 % < S2 <= 66 % < S3)."""
  fat = np.asarray(fat, np.float64)
  return ((fat >= FAT_GRADE_BOUNDS[0]).astype(np.int32) + (fat > FAT_GRADE_BOUNDS[1])
          + (fat > FAT_GRADE_BOUNDS[2])).astype(np.int32)


def _scalar(value, where: str, field: str) -> float:
  arr = np.asarray(value)
  if arr.size != 1 or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
    raise UserInputError(f"{where}, field '{field}': expected one number, got {arr.dtype} of "
                         f"shape {arr.shape}")
  return float(arr.reshape(()))


def _read_struct(mat_path: str) -> np.ndarray:
  if not mat_path:
    raise UserInputError("config.data.mat_path is empty: give the Byra et al. 2018 .mat file")
  if not os.path.isfile(mat_path):
    raise UserInputError(f"{mat_path}: .mat file not found (config.data.mat_path)")
  try:
    mat = scipy.io.loadmat(mat_path, squeeze_me=False, struct_as_record=True)
  except NotImplementedError:  # scipy's answer to MATLAB v7.3 (HDF5) files.
    raise UserInputError(
        f"{mat_path}: MATLAB v7.3 (HDF5) file; re-save it with save(..., '-v7') so "
        "scipy.io.loadmat can read it") from None
  except Exception as e:  # pylint: disable=broad-except  # scipy raises many types on bad files.
    raise UserInputError(
        f"{mat_path}: cannot read the .mat file ({type(e).__name__}: "
        f"{' '.join(str(e).split())})") from None
  if "data" not in mat:
    found = sorted(k for k in mat if not k.startswith("__"))
    raise UserInputError(f"{mat_path}: no variable 'data' (found {found})")
  data = mat["data"]
  names = data.dtype.names or ()
  missing = [f for f in FIELDS if f not in names]
  if missing:
    raise UserInputError(
        f"{mat_path}: variable 'data' lacks field(s) {missing} (has {list(names)}); expected the "
        "Byra et al. 2018 layout")
  if data.size == 0:
    raise UserInputError(f"{mat_path}: variable 'data' has no patients")
  return data.ravel()


def validate(data_cfg) -> Tuple[np.ndarray, List[np.ndarray], np.ndarray, np.ndarray]:
  """Reads and checks the .mat file; no frame is preprocessed yet.

  Args:
    data_cfg: `config.data` (mat_path, label_mode, num_folds, crop, crop_box, image_size,
      max_pixels).

  Returns:
    (patient ids str[P], frames per patient (each [F, H, W] or [F, H, W, C]), label int32[P],
    fat float64[P]).
  """
  preprocess.validate_config(data_cfg)
  mode = data_cfg.label_mode
  labels_lib.num_classes(data_cfg)
  mat_path = data_cfg.mat_path
  records = _read_struct(mat_path)
  ids, frames, labels, fats, seen = [], [], [], [], {}
  for i, rec in enumerate(records):
    where = f"{mat_path}: data({i + 1})"  # MATLAB's 1-based index, as users see it there.
    pid = _scalar(rec["id"], where, "id")
    if not math.isfinite(pid):
      raise UserInputError(f"{where}, field 'id': {pid} is not a patient number")
    pid_text = str(int(pid)) if pid == int(pid) else str(pid)
    if pid_text in seen:
      raise UserInputError(
          f"{where}, field 'id': patient {pid_text} repeats data({seen[pid_text]})")
    seen[pid_text] = i + 1
    cls = _scalar(rec["class"], where, "class")
    if cls not in (0.0, 1.0):
      raise UserInputError(f"{where}, field 'class': {cls:g} is not 0 or 1")
    fat = _scalar(rec["fat"], where, "fat")
    if not (math.isfinite(fat) and 0.0 <= fat <= 100.0):
      raise UserInputError(f"{where}, field 'fat': {fat:g} is not a percentage in 0..100")
    img = np.asarray(rec["images"])
    if img.ndim == 2 or (img.ndim == 3 and img.shape[-1] in (3, 4) and img.shape[0] > 4):
      img = img[None]  # A single frame (gray, or RGB stored H x W x C).
    if img.ndim not in (3, 4) or img.size == 0 or not np.issubdtype(img.dtype, np.number):
      raise UserInputError(
          f"{where}, field 'images': expected frames x height x width numbers, got {img.dtype} "
          f"of shape {img.shape}")
    height, width = img.shape[1], img.shape[2]
    if height * width > int(data_cfg.max_pixels):
      raise UserInputError(
          f"{where}, field 'images': {height}x{width} frames exceed config.data.max_pixels")
    preprocess.check_box_fits(height, width, data_cfg, where=f"{where}, field 'images'")
    ids.append(pid_text)
    frames.append(img)
    labels.append(int(cls) if mode == "binary" else int(fat_to_grade(fat)))
    fats.append(fat)
  ids = np.asarray(ids, str)
  labels = np.asarray(labels, np.int32)
  counts = [f.shape[0] for f in frames]
  manifest.check_cohort(np.repeat(labels, counts), np.repeat(ids, counts), data_cfg, mat_path)
  return ids, frames, labels, np.asarray(fats, np.float64)


def load(data_cfg) -> Dataset:
  """Loads the Byra et al. 2018 .mat file into a `Dataset` (one image per frame).

  Args:
    data_cfg: `config.data` (mat_path, image_size, crop, crop_box, label_mode, num_folds,
      max_pixels).

  Returns:
    Dataset with images uint8[N, S, S, 1], patients in file order, frames in order.
  """
  ids, frames, labels, _ = validate(data_cfg)
  size = int(data_cfg.image_size)
  counts = [f.shape[0] for f in frames]
  images = np.empty((sum(counts), size, size, 1), np.uint8)
  k = 0
  for stack in frames:
    for frame in stack:
      images[k, ..., 0] = preprocess.preprocess(frame, data_cfg)
      k += 1
  n = images.shape[0]
  return Dataset(
      images=images, label=np.repeat(labels, counts), cap=np.full(n, np.nan, np.float32),
      subject_id=np.repeat(ids, counts), device=np.full(n, DEVICE),
      true_cap=np.full(n, np.nan, np.float32),
      name=f"byra_mat:{os.path.basename(data_cfg.mat_path)}")
