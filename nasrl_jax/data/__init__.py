"""The data layer: sources -> preprocessing -> Dataset; subject folds; class balancing.

`load(config.data)` returns a `Dataset` (host numpy, loaded once) whatever the source:
  synthetic  the embedded B-mode simulator (ULTRASOUND_PHYSICS.md), cached on disk;
  manifest   a folder of PNG/JPEG/BMP/TIFF images + CSV (path, subject_id, cap|label, ...);
  byra_mat   the public Byra et al. 2018 .mat dataset;
  dicom      a folder of DICOM files + a labels CSV.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Dataset:
  """All images of a study, preprocessed, in host memory.

  Attributes:
    images: uint8[N, H, W, 1] grayscale, already cropped and resized to image_size.
    label: int32[N]; 0 normal (S0), 1 fatty (binary) or grade 0..3 (grade mode).
    cap: float32[N] measured CAP in dB/m (nan where unknown).
    subject_id: str[N] (numpy unicode array); splits are grouped by it.
    device: str[N] (numpy unicode array); '' where unknown.
    true_cap: float32[N] simulator ground truth (nan for real data).
    name: short description of the source for reports.
    site: str[N] (numpy unicode array); '' where unknown (None is read as all unknown).
  """
  images: np.ndarray
  label: np.ndarray
  cap: np.ndarray
  subject_id: np.ndarray
  device: np.ndarray
  true_cap: np.ndarray
  name: str = ""
  site: np.ndarray = None

  def __post_init__(self):
    if self.site is None:
      object.__setattr__(self, "site", np.full(len(self.label), "", dtype="<U1"))

  def __len__(self):
    return int(self.images.shape[0])

  @property
  def num_subjects(self) -> int:
    return int(np.unique(self.subject_id).size)

  def summary(self) -> dict:
    """Counts for reports: images, subjects, per-label and per-device image counts."""
    labels, counts = np.unique(self.label, return_counts=True)
    devices, dcounts = np.unique(self.device, return_counts=True)
    sites, scounts = np.unique(self.site, return_counts=True)
    return {
        "name": self.name,
        "images": len(self),
        "subjects": self.num_subjects,
        "image_shape": list(self.images.shape[1:]),
        "labels": {str(int(l)): int(c) for l, c in zip(labels, counts)},
        "devices": {str(d): int(c) for d, c in zip(devices, dcounts)},
        "sites": {str(d): int(c) for d, c in zip(sites, scounts) if str(d)},
    }


SOURCES = ("synthetic", "manifest", "byra_mat", "dicom")


def load(data_cfg) -> Dataset:
  """Loads the dataset named by `data_cfg.source` (see the module docstring).

  Raises:
    UserInputError: an unknown source or bad input (one line naming what is wrong).
  """
  from nasrl_jax.errors import UserInputError
  source = data_cfg.source
  if source == "synthetic":
    from nasrl_jax.data import synthetic as mod
  elif source == "manifest":
    from nasrl_jax.data import manifest as mod
  elif source == "byra_mat":
    from nasrl_jax.data import byra as mod
  elif source == "dicom":
    from nasrl_jax.data import dicom as mod
  else:
    raise UserInputError(f"config.data.source={source!r}: choose one of {', '.join(SOURCES)}")
  return mod.load(data_cfg)
