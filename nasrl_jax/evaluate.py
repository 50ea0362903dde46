"""k-fold cross-validation of an architecture, test metrics, and inference speed.

Every model (NAS winner, VGG19, random-search winner) goes through the same code: for each fold,
train on the fold's training part (minority class topped up with rot90 copies), keep the weights of
the best validation loss, score the untouched test part per image and per subject. One `Trainer`
(one compilation) serves all folds, since every split is padded to the same sizes.
"""

import dataclasses
import logging
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from nasrl_jax import child as child_lib
from nasrl_jax import metrics as metrics_lib
from nasrl_jax import train as train_lib
from nasrl_jax.data import balance
from nasrl_jax.errors import UserInputError


@dataclasses.dataclass(frozen=True)
class Sizes:
  """Padded sizes shared by every split of a run (so each architecture compiles once)."""
  num_train: int
  num_eval: int


def training_indices(fold: dict, labels: np.ndarray, data_cfg, seed: int):
  """(idx, rot) of a fold's training part, balanced with extra minority copies if configured.

  `data_cfg.balance_copies`: `rot90` rotates the copies (the paper's only augmentation). Every
  rotated image is then a minority-class image while all val/test scans are upright, so the fan's
  orientation itself carries label information; `repeat` adds the same copies unrotated.
  """
  train = np.asarray(fold["train"], np.int64)
  if data_cfg.balance:
    idx, rot = balance.balance_indices(train, labels, seed)
    if data_cfg.balance_copies == "repeat":
      rot = np.zeros_like(rot)
    elif data_cfg.balance_copies != "rot90":
      raise UserInputError(f"config.data.balance_copies={data_cfg.balance_copies!r}: use rot90 "
                           "or repeat")
    return idx, rot
  return train.astype(np.int32), np.zeros(len(train), np.int32)


def padded_sizes(folds, labels, config) -> Sizes:
  """The largest balanced training part and the largest val/test part over all folds, padded."""
  b, eb = int(config.train.batch_size), int(config.train.eval_batch_size)
  n_train = max(len(training_indices(f, labels, config.data, config.seed)[0]) for f in folds)
  if config.train.max_train_examples:
    n_train = max(n_train, int(config.train.max_train_examples))
  n_eval = max(max(len(f["val"]), len(f["test"])) for f in folds)
  return Sizes(train_lib.pad_to(n_train, b), train_lib.pad_to(n_eval, eb))


def fold_split(fold: dict, labels, config, sizes: Sizes) -> train_lib.Split:
  """The train (balanced) / val split of a fold, padded to `sizes`."""
  idx, rot = training_indices(fold, labels, config.data, config.seed)
  return train_lib.make_split(idx, rot, fold["val"], sizes.num_train, sizes.num_eval,
                              seed=config.seed)


def score(y_true, prob, subject_id, threshold=0.5) -> dict:
  """Image-level and subject-level (mean probability per subject) binary metrics."""
  image = metrics_lib.binary_metrics(y_true, prob, threshold)
  subjects, y_s, p_s = metrics_lib.subject_level(subject_id, y_true, prob)
  subject = metrics_lib.binary_metrics(y_s, p_s, threshold)
  return {"image": image, "subject": subject}


def cross_validate(arch, dataset, folds, config, *, data: train_lib.DeviceData = None,
                   sizes: Sizes = None, on_fold=None, done: dict = None) -> dict:
  """Trains and tests `arch` on every fold.

  Args:
    arch: the Architecture.
    dataset: the Dataset (labels and subject ids are read on the host).
    folds: list of {"train", "val", "test"} index arrays.
    config: the experiment config.
    data: the dataset already on device (put there once per run); made here if None.
    sizes: padded sizes shared by the run; computed here if None.
    on_fold: optional callback(fold_index, fold_result, (params, batch_stats)) after each fold,
      e.g. to checkpoint the fold's model and its result (resume).
    done: {fold_index: fold_result} already computed (resume): those folds are not retrained.

  Returns:
    {"folds": [per-fold dicts with image/subject metrics, best_epoch, seconds], "compile_seconds",
     "last_weights": (params, batch_stats) of the last fold trained}.
  """
  labels = np.asarray(dataset.label)
  if data is None:
    data = train_lib.DeviceData.from_numpy(dataset.images, labels)
  if sizes is None:
    sizes = padded_sizes(folds, labels, config)
  spec = child_lib.ChildSpec.from_config(config, dataset.images.shape[1:], config.model.num_classes)
  trainer = train_lib.Trainer(arch, spec, config.train, sizes.num_train, sizes.num_eval, data)
  done = dict(done or {})
  results, weights = [], None
  for i, fold in enumerate(folds):
    if i in done:
      results.append(done[i])
      continue
    res = trainer.fit(int(config.seed), fold_split(fold, labels, config, sizes))
    test = np.asarray(fold["test"], np.int64)
    probs = trainer.predict(res.params, res.batch_stats, test)
    prob1 = probs[:, 1] if probs.shape[1] == 2 else 1.0 - probs[:, 0]
    fold_result = score(labels[test], prob1, np.asarray(dataset.subject_id)[test])
    # The threshold an exported model uses for new images: chosen on this fold's validation part
    # (Youden's J), never on its test part. Table 1 itself is reported at 0.5, as in the paper.
    val = np.asarray(fold["val"], np.int64)
    pv = trainer.predict(res.params, res.batch_stats, val)
    val_threshold = metrics_lib.youden_threshold(labels[val] > 0, 1.0 - pv[:, 0])
    fold_result.update(fold=i, val_threshold=val_threshold, best_epoch=res.best_epoch,
                       best_val_loss=res.best_val_loss,
                       best_val_acc=res.best_val_acc, train_seconds=res.train_seconds,
                       compile_seconds=res.compile_seconds,  # Non-zero for the first fold only.
                       train_images=int(len(fold["train"])), val_images=int(len(fold["val"])),
                       test_images=int(len(test)))
    weights = (res.params, res.batch_stats)
    if on_fold is not None:
      on_fold(i, fold_result, weights)
    results.append(fold_result)
    logging.info("  %s fold %d/%d: acc %.3f auroc %.3f (%.1fs)", "CV", i + 1, len(folds),
                 fold_result["image"]["accuracy"], fold_result["image"]["auroc"],
                 res.train_seconds)
  return {"folds": results, "compile_seconds": trainer.compile_seconds, "last_weights": weights}


def inference_speed(arch, spec: child_lib.ChildSpec, weights, *, iters=100,
                    throughput_batch=64, seed=0) -> dict:
  """FPS at batch 1 (median latency of warm, jitted, synchronised calls) and large-batch throughput.

  Args:
    arch, spec: the model.
    weights: (params, batch_stats) on device, or None for freshly initialised weights (speed does
      not depend on the values).
    iters: timed batch-1 calls.
    throughput_batch: batch size of the throughput figure.

  Returns:
    {"fps": 1 / median latency, "latency_ms_median", "latency_ms_p90", "throughput",
     "throughput_batch", "device"}.
  """
  graphdef, _, _ = child_lib.abstract_state(arch, spec)
  if weights is None:
    _, params, stats = child_lib.init(arch, spec, seed)
    params, stats = jax.device_put((params, stats))
  else:
    params, stats = weights

  @jax.jit
  def predict(params, stats, x):
    logits, _ = child_lib.apply(graphdef, params, stats, x, train=False)
    return jax.nn.softmax(logits)

  def timed(batch, n):
    x = jnp.zeros((batch,) + tuple(spec.input_shape), jnp.uint8)
    predict(params, stats, x).block_until_ready()  # Compile + warm up.
    predict(params, stats, x).block_until_ready()
    out = []
    for _ in range(n):
      t0 = time.perf_counter()
      predict(params, stats, x).block_until_ready()
      out.append(time.perf_counter() - t0)
    return out

  lat = timed(1, max(int(iters), 3))
  big = timed(int(throughput_batch), max(3, int(iters) // 10))
  med = statistics.median(lat)
  return {"fps": 1.0 / med, "latency_ms_median": 1e3 * med,
          "latency_ms_p90": 1e3 * float(np.percentile(lat, 90)),
          "throughput": int(throughput_batch) / statistics.median(big),
          "throughput_batch": int(throughput_batch), "device": describe_device()}


def describe_device() -> str:
  """E.g. 'NVIDIA H100 80GB HBM3 (gpu)' or 'cpu (2 cores)'."""
  import os
  d = jax.devices()[0]
  if d.platform == "cpu":
    return f"cpu ({os.cpu_count()} cores)"
  return f"{getattr(d, 'device_kind', d.platform)} ({d.platform})"
