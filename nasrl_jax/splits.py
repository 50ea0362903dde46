"""The data side of a training run: the device-resident dataset and padded splits.

A split is index arrays into the dataset (never copies of images), padded to the run's `Sizes` so
every split of a run has the same shapes and every architecture compiles once (`programs.py`).
Padding rows repeat real training rows with weight 0: they flow through the network (and batch
statistics) but carry no loss.
"""

import dataclasses
from typing import NamedTuple, Sequence

import jax
import numpy as np


@dataclasses.dataclass(frozen=True)
class DeviceData:
  """The dataset on one device, put there once per run (labels also kept on the host)."""
  images: jax.Array  # uint8[N, H, W, C]
  labels: jax.Array  # int32[N]
  host_labels: np.ndarray  # int32[N], for scoring on the host without a device read.

  @classmethod
  def from_numpy(cls, images: np.ndarray, labels: np.ndarray, device=None):
    put = (lambda a: jax.device_put(a, device)) if device is not None else jax.device_put
    labels = np.asarray(labels, np.int32)
    return cls(put(np.asarray(images, np.uint8)), put(labels), labels)

  @property
  def device(self):
    return next(iter(self.images.devices()))

  @property
  def num_images(self) -> int:
    return int(self.images.shape[0])

  def to(self, device) -> "DeviceData":
    """A copy on another device (device-to-device, once per run)."""
    return DeviceData(jax.device_put(self.images, device), jax.device_put(self.labels, device),
                      self.host_labels)


class Split(NamedTuple):
  """Index arrays of one train/eval split, padded to the run's sizes (a pytree: stackable)."""
  train_idx: np.ndarray  # int32[num_train] dataset rows.
  train_rot: np.ndarray  # int32[num_train] quarter turns (rot90 balancing copies; else 0).
  train_w: np.ndarray  # float32[num_train] 1 for real rows, 0 for padding.
  train_p: np.ndarray  # float32[num_train] sampling probability (balanced sampling mode).
  class_weight: np.ndarray  # float32[num_classes] loss weight per class (loss_weight mode).
  eval_idx: np.ndarray  # int32[num_eval] dataset rows scored each epoch (validation part).
  eval_w: np.ndarray  # float32[num_eval] 1 real, 0 padding.

  @property
  def num_train_real(self) -> int:
    return int(np.sum(self.train_w))

  @property
  def num_eval_real(self) -> int:
    return int(np.sum(self.eval_w))

  def used_indices(self) -> set:
    """Every dataset row this split lets training or validation touch (for leakage checks)."""
    return set(np.asarray(self.train_idx).tolist()) | set(np.asarray(self.eval_idx).tolist())


@dataclasses.dataclass(frozen=True)
class Sizes:
  """Padded sizes shared by every split of a run, so each architecture compiles once."""
  num_train: int
  num_eval: int


def pad_to(n: int, multiple: int) -> int:
  return max(multiple, -(-n // multiple) * multiple)


def pad_eval(idx, num_eval: int):
  """(idx padded with its first entry, weights 1 real / 0 padding) of length num_eval."""
  idx = np.asarray(idx, np.int32)
  m = idx.size
  if m == 0 or m > num_eval:
    raise ValueError(f"{m} evaluation rows do not fit the padded size {num_eval}")
  return (np.concatenate([idx, np.full(num_eval - m, idx[0], np.int32)]),
          np.concatenate([np.ones(m, np.float32), np.zeros(num_eval - m, np.float32)]))


def make_split(train_idx, train_rot, eval_idx, sizes: Sizes, *, labels=None, num_classes=2,
               class_weighted=False, balanced_sampling=False, rng=None) -> Split:
  """Pads a split's index arrays to `sizes`; padding repeats real training rows with weight 0.

  Padding rows still flow through the network (and batch-norm statistics) but carry no loss, so
  every split of the same sizes trains the same number of steps with the same compiled code.

  Args:
    train_idx: training rows (with any balancing copies); train_rot: their quarter turns.
    eval_idx: validation rows.
    sizes: the run's padded sizes.
    labels: [N] dataset labels (needed for class weights / balanced sampling).
    num_classes: C.
    class_weighted: loss weight n / (C n_c) per class (the `loss_weight` balance mode).
    balanced_sampling: sampling probabilities giving every class the same share of draws (the
      `upright_sample` mode); otherwise uniform over real rows.
    rng: numpy Generator choosing the padding rows (the run's PADDING stream).
  """
  train_idx = np.asarray(train_idx, np.int32)
  train_rot = np.asarray(train_rot, np.int32)
  n = train_idx.size
  if n == 0:
    raise ValueError("a split needs at least one training row")
  if n > sizes.num_train:
    raise ValueError(f"split of {n} training rows exceeds the padded size {sizes.num_train}")
  rng = np.random.default_rng(0) if rng is None else rng
  fill = rng.integers(0, n, sizes.num_train - n)
  real = np.concatenate([np.ones(n, np.float32), np.zeros(sizes.num_train - n, np.float32)])
  idx = np.concatenate([train_idx, train_idx[fill]])
  rot = np.concatenate([train_rot, train_rot[fill]])
  class_weight = np.ones(num_classes, np.float32)
  p = real / n
  if class_weighted or balanced_sampling:
    if labels is None:
      raise ValueError("class weights and balanced sampling need the labels")
    y = np.asarray(labels)[train_idx]
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    present = counts > 0
    if class_weighted:
      class_weight = np.where(present, n / (present.sum() * np.maximum(counts, 1)), 0.0)
      class_weight = class_weight.astype(np.float32)
    if balanced_sampling:
      per_row = 1.0 / (present.sum() * counts[y])
      p = np.concatenate([per_row, np.zeros(sizes.num_train - n)])
      p = (p / p.sum()).astype(np.float32)
  eidx, ew = pad_eval(eval_idx, sizes.num_eval)
  return Split(idx, rot, real, p.astype(np.float32), class_weight, eidx, ew)


def stack_splits(splits: Sequence[Split]) -> Split:
  return Split(*[np.stack(parts) for parts in zip(*splits)])
