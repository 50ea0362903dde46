"""Labels from FibroScan CAP values (dB/m), with the cut-offs from the config."""

import numpy as np

from nasrl_jax.errors import UserInputError


def num_classes(data_cfg) -> int:
  """2 in binary mode (S0 vs S1-S3), 1 + len(grade_cutoffs) in grade mode."""
  if data_cfg.label_mode == "binary":
    return 2
  if data_cfg.label_mode == "grade":
    return 1 + len(data_cfg.grade_cutoffs)
  raise UserInputError(
      f"config.data.label_mode={data_cfg.label_mode!r}: must be 'binary' or 'grade'")


def cap_to_label(cap, data_cfg) -> np.ndarray:
  """Maps measured CAP to labels.

  Args:
    cap: float array of CAP values in dB/m (no NaN: callers validate first).
    data_cfg: `config.data`; uses label_mode, cap_cutoff, grade_cutoffs.

  Returns:
    int32 array: binary 1 where cap >= cap_cutoff (fatty); grade = number of grade cut-offs <= cap.
  """
  cap = np.asarray(cap, np.float64)
  num_classes(data_cfg)  # Validates label_mode.
  if data_cfg.label_mode == "binary":
    return (cap >= float(data_cfg.cap_cutoff)).astype(np.int32)
  cuts = np.asarray(data_cfg.grade_cutoffs, np.float64)
  if cuts.size == 0 or np.any(np.diff(cuts) <= 0):
    raise UserInputError(
        f"config.data.grade_cutoffs={tuple(cuts)}: must be strictly increasing and non-empty")
  return np.searchsorted(cuts, cap, side="right").astype(np.int32)
