"""The run context every stage shares (`Run`): config, data on device, folds, padded sizes, the
trainer factory, the root key; built once by the pipeline. Also the padded split of a fold's
parts (balancing copies and padding rows from the training's own streams)."""

import dataclasses
from typing import Any, Callable, Optional

import numpy as np

from nasrl_jax import child as child_lib
from nasrl_jax import rng as rng_lib
from nasrl_jax import search as search_lib
from nasrl_jax import train as train_lib
from nasrl_jax.data import balance
from nasrl_jax.data import folds as folds_lib
from nasrl_jax.errors import UserInputError

BALANCE_MODES = ("none", "loss_weight", "upright_sample", "repeat", "rot90")


def balanced_rows(train_idx, labels, data_cfg, rng: np.random.Generator):
  """(rows, quarter turns) of a training part under `config.data.balance`.

  none / loss_weight / upright_sample: the upright training images once each (the class weights
  or the sampling probabilities live in the split); repeat: minority copies, unrotated; rot90:
  minority copies turned by 90/180/270 degrees (the paper; orientation then tells the class).
  """
  mode = data_cfg.balance
  train_idx = np.asarray(train_idx, np.int64)
  if mode in ("none", "loss_weight", "upright_sample"):
    return train_idx.astype(np.int32), np.zeros(train_idx.size, np.int32)
  if mode not in ("repeat", "rot90"):
    raise UserInputError(f"config.data.balance={mode!r}: use one of {', '.join(BALANCE_MODES)}")
  idx, rot = balance.balance_indices(train_idx, labels, rng)
  return idx, (rot if mode == "rot90" else np.zeros_like(rot))


@dataclasses.dataclass(frozen=True)
class Run:
  """What every stage of a run shares: built once by `pipeline.prepare`, never changed after
  (a later stage that needs other settings gets a `dataclasses.replace` copy)."""
  config: Any
  workdir: str
  dataset: Any
  folds: list
  final_fold: Optional[dict]
  data: train_lib.DeviceData
  sizes: train_lib.Sizes
  spec: child_lib.ChildSpec
  factory: train_lib.TrainerFactory
  root: Any  # The run's root key.
  devices: list
  writer: bool  # This process writes files (process 0).
  memo: search_lib.Memo = dataclasses.field(default_factory=search_lib.Memo)
  on_record: Optional[Callable] = None  # Merged-ledger append (and, multi-process, `rows`).
  rows: list = dataclasses.field(default_factory=list)  # This process's history lines, for the
  #                                                       multi-process gather.
  fit_check: Optional[Callable] = None  # Memory pre-flight of a child.
  distribute_children: bool = False  # Multi-process search of one fold (paper protocol).
  fold_local: bool = False  # Multi-process nested run: this process owns the folds it runs.

  @property
  def labels(self) -> np.ndarray:
    return np.asarray(self.dataset.label)

  @property
  def num_classes(self) -> int:
    return int(self.config.model.num_classes)

  @property
  def val_parts(self) -> int:
    return int(self.config.data.val_parts)

  def split(self, train_idx, val_idx, key) -> train_lib.Split:
    """A padded split; balancing copies and padding rows from the run key's own streams."""
    c = self.config.data
    idx, rot = balanced_rows(train_idx, self.labels, c,
                             rng_lib.host_rng(rng_lib.purpose(key, rng_lib.Purpose.BALANCE)))
    return train_lib.make_split(
        idx, rot, val_idx, self.sizes, labels=self.labels, num_classes=self.num_classes,
        class_weighted=c.balance == "loss_weight", balanced_sampling=c.balance == "upright_sample",
        rng=rng_lib.host_rng(rng_lib.purpose(key, rng_lib.Purpose.PADDING)))

  def reward_splits(self, fold, outer: int, seed: int, replica: int):
    """(splits, keys) of the r reward splits of a fold for one replica."""
    splits, keys = [], []
    for j in range(int(self.config.search.reward_splits)):
      train_idx, val_idx = folds_lib.split_indices(fold, j, self.val_parts)
      key = rng_lib.train_key(self.root, seed=seed, outer=outer, split=j, replica=replica)
      splits.append(self.split(train_idx, val_idx, key))
      keys.append(key)
    return splits, keys


def padded_sizes(config, folds, final_fold, labels) -> train_lib.Sizes:
  """The largest training part (after balancing copies) and validation part of the run, padded.

  Every inner split any stage trains on counts, so every architecture compiles once. Test parts
  are scored in chunks of the validation size (`train.py`), so they do not pad every epoch's
  validation pass.
  """
  b, eb = int(config.train.batch_size), int(config.train.eval_batch_size)
  r = max(1, int(config.search.reward_splits))
  vp = int(config.data.val_parts)
  n_train, n_eval = 0, 0
  for fold in list(folds) + ([final_fold] if final_fold is not None else []):
    for j in range(min(r, folds_lib.max_splits(fold, vp))):
      tr, va = folds_lib.split_indices(fold, j, vp)
      rows, _ = balanced_rows(tr, labels, config.data, np.random.default_rng(0))
      n_train, n_eval = max(n_train, rows.size), max(n_eval, va.size)
  if config.train.max_train_examples:
    n_train = max(n_train, int(config.train.max_train_examples))
  return train_lib.Sizes(train_lib.pad_to(n_train, b), train_lib.pad_to(n_eval, eb))
