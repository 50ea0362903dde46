"""Training a child: pure `make_train_fn(arch, spec, train_cfg, sizes) -> TrainFns(init, train, ...)`.

The architecture and every shape are static; a training run is `train(key, data, split)` where the
key, the device-resident dataset and the split's index arrays are data. So every split of a run
(CV folds, reward splits, re-scoring seeds, final trainings) of one architecture runs the same two
compiled programs:

  step      one minibatch: rows from the on-device epoch permutation (or class-balanced
            sampling), gather, optional rot90 (paper balancing) and label-independent
            augmentation, loss from logits, optax update;
  evaluate  forward pass over the split's evaluation indices: validation NLL and accuracy, and the
            best-validation-loss weights kept inside the train state; with `use_best` the same
            program predicts with the kept weights (test predictions) and changes nothing.

Programs are compiled ahead of time and cached run-wide by (architecture, spec, training config,
sizes, chunk, device) in `PROGRAMS`, so an architecture seen again (another outer fold,
re-scoring, the final training) never compiles again. Their names carry the cache key's hash
(`nasrl_child_step_<hash>`), which is how `compiles.py` counts them from JAX's own events.

A batch of splits trains either one after another with the single-split programs
(`split_batching = sequential`) or as a `jax.vmap` axis of them (`vmap`: state, optimizer state,
keys and index arrays carry a leading split axis; chunks of `vmap_chunk` members, a short last
chunk padded with copies). Which is faster is a per-backend measurement (BUILD_NOTES.md): on this
CPU a vmapped step lowers per-split kernels to grouped convolutions and ran ~5x slower per split.

No host<->device copy or host sync per step: the epoch's permutation, the minibatch gather, the
dropout and augmentation keys and the learning rate come from the step counter in the state; the
host reads every epoch's curves and validation probabilities once, at the end of the run.
Initial weights are host numpy seeded from the run's key (a jitted init compiled ~5 s per
architecture here).
"""

import dataclasses
import functools
import threading
import time
from typing import Any, NamedTuple, Optional, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from nasrl_jax import child as child_lib
from nasrl_jax import memory
from nasrl_jax import programs as programs_lib
from nasrl_jax import rng as rng_lib
from nasrl_jax import space as space_lib
# The split types are train's inputs: part of its API (train.Sizes, train.make_split, ...).
from nasrl_jax.splits import (DeviceData, Sizes, Split, make_split, pad_eval, pad_to,  # pylint: disable=unused-import
                              stack_splits)
from nasrl_jax.programs import PROGRAMS, Programs  # pylint: disable=unused-import
from nasrl_jax.recipe import Recipe, make_optimizer  # pylint: disable=unused-import


class ChildTrainingError(RuntimeError):
  """A child whose training diverged (non-finite loss) on some split."""


# ------------------------------------------------------------------------------ data and splits


# ------------------------------------------------------------------------------ state and result


@flax.struct.dataclass
class TrainState:
  """Everything that changes during one training run (a pytree; a leading split axis when vmapped)."""
  params: Any
  batch_stats: Any
  opt_state: Any
  step: jax.Array  # int32: minibatches done.
  key: jax.Array  # Typed PRNG key of the run; purposes are fold_in(key, rng.Purpose.X).
  loss_sum: jax.Array  # float32: training loss summed over this epoch's steps.
  best_params: Any  # Parameters at the lowest validation loss so far (the paper's weights rule).
  best_stats: Any
  best_loss: jax.Array  # float32
  best_epoch: jax.Array  # int32, -1 before the first evaluation.


@dataclasses.dataclass
class TrainResult:
  """One training run, on the host except the kept weights."""
  val_acc: np.ndarray  # [epochs]
  val_loss: np.ndarray  # [epochs] validation NLL (from logits).
  train_loss: np.ndarray  # [epochs]
  val_probs: np.ndarray  # [epochs, n_val, classes] softmax of the real validation rows.
  val_labels: np.ndarray  # [n_val]
  best_epoch: int  # 0-based epoch of the lowest validation loss: its weights are kept.
  best_val_loss: float
  params: Any  # Kept parameters (device pytree; NNX State).
  batch_stats: Any
  test_probs: Optional[np.ndarray]  # [n_test, classes] with the kept weights, if asked for.
  train_seconds: float

  @property
  def best_val_acc(self) -> float:
    """Max over epochs: the paper's reward."""
    return float(np.max(self.val_acc))

  @property
  def finite(self) -> bool:
    return bool(np.all(np.isfinite(self.val_loss)) and np.all(np.isfinite(self.train_loss)))


def default_split_batching(backend: str) -> str:
  """`sequential` on CPU (measured: vmapped splits 5x slower per split); `vmap` on accelerators,
  where one launch for several small children amortises kernel-launch overhead (to be measured by
  benchmarks/gpu_check.sh; see BUILD_NOTES.md)."""
  return "sequential" if backend == "cpu" else "vmap"


# ------------------------------------------------------------------------------ the programs


@functools.lru_cache(maxsize=None)
def _abstract(arch, spec):
  """(graphdef, abstract params, abstract batch stats); cached, read-only."""
  return child_lib.abstract_state(arch, spec)


class _Core:
  """The single-split pure functions of one (architecture, spec, recipe, sizes, dataset size)."""

  def __init__(self, arch, spec, recipe: Recipe, sizes: Sizes, num_images: int):
    self.arch, self.spec, self.recipe, self.sizes = arch, spec, recipe, sizes
    self.num_images = int(num_images)
    b, eb = recipe.batch_size, recipe.eval_batch_size
    if sizes.num_train % b or sizes.num_eval % eb:
      raise ValueError(f"padded sizes {sizes} must be multiples of the batch sizes {b} / {eb}")
    self.steps_per_epoch = sizes.num_train // b
    self.total_steps = recipe.epochs * self.steps_per_epoch
    self.graphdef, self.abstract_params, self.abstract_stats = _abstract(arch, spec)
    self.optimizer = make_optimizer(recipe, self.total_steps, self.steps_per_epoch)

  def make_state(self, params, stats, key) -> TrainState:
    """The initial state (traceable; `host_state` builds the same values in numpy)."""
    copy = lambda t: jax.tree.map(jnp.copy, t)  # `best_*` must not alias the donated weights.
    return TrainState(params=params, batch_stats=stats, opt_state=self.optimizer.init(params),
                      step=jnp.zeros((), jnp.int32), key=key,
                      loss_sum=jnp.zeros((), jnp.float32), best_params=copy(params),
                      best_stats=copy(stats), best_loss=jnp.asarray(jnp.inf, jnp.float32),
                      best_epoch=jnp.asarray(-1, jnp.int32))

  def host_state(self, params, stats, key) -> TrainState:
    """`make_state` in host numpy: no eager JAX op (each would compile once per new shape).

    The optimizers used here (adam, adamw, sgd with momentum) start from all-zero states;
    `tests/test_train.py` checks this against `optimizer.init`.
    """
    zeros = lambda s: np.zeros(s.shape, s.dtype)
    opt_state = jax.tree.map(zeros, jax.eval_shape(self.optimizer.init, params))
    copy = lambda t: jax.tree.map(np.array, t)
    # A fresh key buffer: the state is donated, and the caller's key object may be reused.
    key = jax.random.wrap_key_data(np.asarray(jax.random.key_data(key)))
    return TrainState(params=params, batch_stats=stats, opt_state=opt_state,
                      step=np.zeros((), np.int32), key=key, loss_sum=np.zeros((), np.float32),
                      best_params=copy(params), best_stats=copy(stats),
                      best_loss=np.asarray(np.inf, np.float32),
                      best_epoch=np.asarray(-1, np.int32))

  def _augment(self, x, key):
    """Label-independent: the same transform distribution for every class; never a rotation."""
    r = self.recipe
    if r.hflip:
      flip = jax.random.bernoulli(jax.random.fold_in(key, 0), 0.5, (x.shape[0], 1, 1, 1))
      x = jnp.where(flip, x[:, :, ::-1, :], x)
    if r.gain > 0:
      g = jax.random.uniform(jax.random.fold_in(key, 1), (x.shape[0], 1, 1, 1),
                             minval=1.0 - r.gain, maxval=1.0 + r.gain)
      x = jnp.clip(x * g, 0.0, 255.0)
    return x

  def step(self, state: TrainState, images, labels, split: Split) -> TrainState:
    """One minibatch of the run."""
    from nasrl_jax.data import balance  # pylint: disable=g-import-not-at-top
    r, spe, b = self.recipe, self.steps_per_epoch, self.recipe.batch_size
    t = state.step
    epoch, row = t // spe, t % spe
    order = jax.random.fold_in(rng_lib.purpose(state.key, rng_lib.Purpose.ORDER), epoch)
    if r.sampling == "balanced":
      rows = jax.random.choice(jax.random.fold_in(order, row), self.sizes.num_train, (b,),
                               replace=True, p=split.train_p)
    else:
      perm = jax.random.permutation(order, self.sizes.num_train)
      rows = jax.lax.dynamic_slice(perm, (row * b,), (b,))
    idx = split.train_idx[rows]
    x = images[idx]
    if r.rotations:
      x = balance.rotate_batch(x, split.train_rot[rows])
    x = x.astype(jnp.float32)
    if r.hflip or r.gain > 0:
      x = self._augment(x, jax.random.fold_in(
          rng_lib.purpose(state.key, rng_lib.Purpose.AUGMENT), t))
    y = labels[idx]
    real = split.train_w[rows]
    w = real * split.class_weight[y]
    dkey = jax.random.fold_in(rng_lib.purpose(state.key, rng_lib.Purpose.DROPOUT), t)

    def loss_fn(params, batch_stats):
      logits, stats = child_lib.apply(self.graphdef, params, batch_stats, x, train=True, key=dkey)
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)  # log_softmax inside.
      return jnp.sum(ce * w) / jnp.maximum(jnp.sum(real), 1.0), stats

    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, state.batch_stats)
    updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
    return state.replace(params=optax.apply_updates(state.params, updates), batch_stats=stats,
                         opt_state=opt_state, step=t + 1, loss_sum=state.loss_sum + loss)

  def evaluate(self, state: TrainState, images, labels, idx, w, class_weight, use_best):
    """Scores rows `idx` (weights `w`). use_best=0: the current weights, validation bookkeeping
    (best weights, epoch loss reset); use_best=1: the kept weights, state unchanged.
    `class_weight` [classes] weighs the validation NLL when recipe.val_weighting is "class".

    Returns (state, probs float32[num_eval, classes], metrics [val_acc, val_nll, train_loss]).
    """
    eb = self.recipe.eval_batch_size
    params, stats = jax.lax.cond(use_best > 0, lambda: (state.best_params, state.best_stats),
                                 lambda: (state.params, state.batch_stats))

    def one(chunk):
      logits, _ = child_lib.apply(self.graphdef, params, stats, images[chunk], train=False)
      return jax.nn.log_softmax(logits)

    logp = jax.lax.map(one, idx.reshape(-1, eb)).reshape(idx.shape[0], -1)
    y = labels[idx]
    n = jnp.maximum(jnp.sum(w), 1.0)
    nll = -jnp.take_along_axis(logp, y[:, None], 1)[:, 0]
    # The loss that keeps weights (and makes the val_nll reward): weighted like the training loss
    # when asked, so a model the class weights push towards balance is not scored against the
    # prevalence. A weighted mean: the same scale as the unweighted NLL.
    lw = w * class_weight[y] if self.recipe.val_weighting == "class" else w
    val_loss = jnp.sum(nll * lw) / jnp.maximum(jnp.sum(lw), 1e-12)
    val_acc = jnp.sum((jnp.argmax(logp, -1) == y) * w) / n
    train_loss = state.loss_sum / self.steps_per_epoch
    evaluating = use_best == 0
    epoch = state.step // self.steps_per_epoch - 1
    # NaN never counts as better; epochs before min_epochs are never kept.
    better = evaluating & (epoch >= self.recipe.min_epochs) & (val_loss < state.best_loss)
    pick = lambda new, old: jax.tree.map(lambda a, b: jnp.where(better, a, b), new, old)
    new = state.replace(
        best_params=pick(state.params, state.best_params),
        best_stats=pick(state.batch_stats, state.best_stats),
        best_loss=jnp.where(better, val_loss, state.best_loss),
        best_epoch=jnp.where(better, epoch, state.best_epoch),
        loss_sum=jnp.where(evaluating, jnp.zeros_like(state.loss_sum), state.loss_sum))
    return new, jnp.exp(logp), jnp.stack([val_acc, val_loss, train_loss])


# ------------------------------------------------------------------------------ the training fns


class TrainerFactory:
  """arch -> TrainFns with a run's fixed settings (spec, recipe, sizes, batching); `.spec`."""

  def __init__(self, spec: child_lib.ChildSpec, recipe: Recipe, sizes: Sizes, num_images: int,
               split_batching: str = "auto", vmap_chunk: int = 0):
    self.spec, self.recipe, self.sizes = spec, recipe, sizes
    self.num_images, self.split_batching, self.vmap_chunk = num_images, split_batching, vmap_chunk
    self._fns = {}
    self._chunk = {}  # arch -> a smaller vmap chunk chosen by the memory pre-flight.
    self._lock = threading.Lock()

  @classmethod
  def from_config(cls, config, spec, sizes: Sizes, num_images: int) -> "TrainerFactory":
    return cls(spec, Recipe.from_config(config), sizes, num_images, config.train.split_batching,
               int(config.train.vmap_chunk))

  def __call__(self, arch) -> "TrainFns":
    with self._lock:
      chunk = self._chunk.get(arch, self.vmap_chunk)
      fns = self._fns.get((arch, chunk))
      if fns is None:
        fns = make_train_fn(arch, self.spec, self.recipe, self.sizes,
                            num_images=self.num_images, split_batching=self.split_batching,
                            vmap_chunk=chunk)
        self._fns[(arch, chunk)] = fns
      return fns

  def limit_chunk(self, arch, chunk: int) -> None:
    """Every later TrainFns of `arch` batches at most `chunk` splits (memory pre-flight)."""
    with self._lock:
      self._chunk[arch] = int(chunk)


class TrainFns(NamedTuple):
  """What `make_train_fn` returns: pure functions of one architecture (see the module docstring)."""
  init: Any  # init(key, device=None) -> TrainState on the device.
  train: Any  # train(key, data, split, test_idx=None) -> TrainResult.
  train_many: Any  # train_many(keys, data, splits, test_idx=None) -> [TrainResult].
  programs: Any  # programs(device, chunk=1) -> Programs (compiling on first use).
  chunk: int  # Members per vmapped call (1: sequential).
  steps_per_epoch: int


def make_train_fn(arch: space_lib.Architecture, spec: child_lib.ChildSpec, recipe: Recipe,
                  sizes: Sizes, *, num_images: int, split_batching: str = "auto",
                  vmap_chunk: int = 0, backend: Optional[str] = None,
                  cache: programs_lib.ProgramCache = PROGRAMS) -> TrainFns:
  """Pure training functions of one architecture; programs come from the run-wide cache.

  Args:
    arch, spec: the child.
    recipe: `Recipe.from_config(config)`.
    sizes: the run's padded sizes.
    num_images: N of the device-resident dataset (a static shape of the programs).
    split_batching: sequential | vmap | auto (per backend, `default_split_batching`).
    vmap_chunk: members per vmapped call (0 = auto: `memory.auto_chunk`); ignored when
      sequential.
    backend: platform name for `auto` (default: jax.default_backend()).
    cache: the program cache (tests may pass their own).
  """
  mode = (default_split_batching(backend or jax.default_backend()) if split_batching == "auto"
          else split_batching)
  if mode not in ("sequential", "vmap"):
    raise ValueError(f"train.split_batching={split_batching!r}: use sequential, vmap or auto")
  chunk = 1 if mode == "sequential" else int(
      vmap_chunk or memory.auto_chunk(arch, spec, recipe, sizes))
  t = _Trainer(_Core(arch, spec, recipe, sizes, num_images), chunk, cache)
  return TrainFns(t.init, t.train, t.train_many, t.programs, chunk, t.core.steps_per_epoch)


class _Trainer:
  """The training functions of one architecture (`make_train_fn` hands out its bound methods)."""

  def __init__(self, core: _Core, chunk: int, cache):
    self.core, self.chunk, self.cache = core, chunk, cache

  def programs(self, device, chunk_size=None) -> Programs:
    """The compiled step and evaluate programs for `device` (compiled on first use)."""
    c, core = (self.chunk if chunk_size is None else int(chunk_size)), self.core
    key = programs_lib.program_key(core.arch, core.spec, core.recipe, core.sizes, c, device)
    entry = self.cache.get(key, lambda: programs_lib.compile_programs(core, c, device, key))
    self.cache.archs[key] = str(core.arch)
    return entry

  def init(self, key, device=None) -> TrainState:
    """A fresh run's state: host numpy weights from the key's INIT stream, one transfer."""
    _, params, stats = child_lib.init(self.core.arch, self.core.spec, rng_lib.host_rng(
        rng_lib.purpose(key, rng_lib.Purpose.INIT)))
    state = self.core.host_state(params, stats, key)
    return jax.device_put(state, device) if device is not None else state

  def train_many(self, keys, data: DeviceData, splits: Sequence[Split], test_idx=None,
                 tag=None) -> list:
    """Trains one run per (key, split); test_idx: rows scored with the kept weights at the end.

    `tag` says what the call is for ({"phase", "outer", ...}); the training ignores it (the tests'
    leakage checks read it by wrapping the trainer factory).
    """
    del tag
    if len(keys) != len(splits):
      raise ValueError(f"{len(keys)} keys for {len(splits)} splits")
    n_test, ne = (0 if test_idx is None else len(test_idx)), self.core.sizes.num_eval
    test_parts = [pad_eval(np.asarray(test_idx)[i:i + ne], ne) for i in range(0, n_test, ne)]
    test_keep = np.concatenate([w > 0 for _, w in test_parts]) if test_parts else None
    if self.chunk == 1:
      return self._sequential(keys, data, splits, test_parts, test_keep)
    return self._vmapped(keys, data, splits, test_parts, test_keep)

  def train(self, key, data: DeviceData, split: Split, test_idx=None, tag=None) -> TrainResult:
    return self.train_many([key], data, [split], test_idx, tag)[0]

  def _sequential(self, keys, data, splits, test_parts, test_keep) -> list:
    device, out = data.device, []
    progs = self.programs(device, 1)
    test_chunks = jax.device_put(test_parts, device)
    for key, split in zip(keys, splits):
      t0 = time.perf_counter()
      state = self.init(key, device)
      loop = _epoch_loop(progs, state, data, jax.device_put(split, device), test_chunks,
                         self.core.recipe.epochs, self.core.steps_per_epoch)
      out += _host_results(*loop, [split], test_keep, data.host_labels, t0)
    return out

  def _vmapped(self, keys, data, splits, test_parts, test_keep) -> list:
    """Chunks of `chunk` splits as one vmapped call; a short last chunk padded with copies."""
    device, chunk, out = data.device, self.chunk, []
    progs = self.programs(device, chunk)
    stack = lambda *a: jnp.stack(a) if isinstance(a[0], jax.Array) else np.stack(a)
    test_chunks = jax.device_put([(np.stack([i] * chunk), np.stack([w] * chunk))
                                  for i, w in test_parts], device)
    for start in range(0, len(splits), chunk):
      t0 = time.perf_counter()
      members = list(range(start, min(start + chunk, len(splits))))
      padded = members + [members[0]] * (chunk - len(members))  # Masked (discarded) copies.
      state = jax.device_put(jax.tree.map(stack, *[self.init(keys[i]) for i in padded]), device)
      split_dev = jax.device_put(stack_splits([splits[i] for i in padded]), device)
      loop = _epoch_loop(progs, state, data, split_dev, test_chunks, self.core.recipe.epochs,
                         self.core.steps_per_epoch)
      res = _host_results(*loop, [splits[i] for i in padded], test_keep, data.host_labels, t0)
      out += res[:len(members)]
    return out


def _epoch_loop(progs, state, data, split_dev, test_chunks, epochs: int, steps_per_epoch: int):
  """The epoch loop; returns (state, curves [E, (c,) 3], val probs [E, (c,) ne, C], test).

  No host sync inside: steps and evaluations are dispatched back to back. Test rows (any number)
  are scored with the kept weights in chunks of the evaluation size, by the same evaluate program
  (use_best=1).
  """
  curves, probs = [], []
  zero, one = jax.device_put((jnp.zeros((), jnp.int32), jnp.ones((), jnp.int32)), data.device)
  for _ in range(epochs):
    for _ in range(steps_per_epoch):
      state = progs.step(state, data.images, data.labels, split_dev)
    state, p, m = progs.evaluate(state, data.images, data.labels, split_dev.eval_idx,
                                 split_dev.eval_w, split_dev.class_weight, zero)
    curves.append(m)
    probs.append(p)
  test = None
  if test_chunks:
    parts = []
    for idx, w in test_chunks:
      state, p, _ = progs.evaluate(state, data.images, data.labels, idx, w,
                                   split_dev.class_weight, one)
      parts.append(p)
    test = jnp.concatenate(parts, axis=-2)
  return state, jnp.stack(curves), jnp.stack(probs), test


def _host_results(state, curves, probs, test, splits, test_keep, labels_np, t0) -> list:
  """Host results of the members of one call (one device-to-host sync).

  `t0`: when the call started; its seconds are counted after the sync (dispatch is asynchronous:
  counted before it, a training's seconds were only its dispatch, measured 0.17 s of 8.6 s).
  """
  curves, probs, best_epoch, best_loss, test = jax.device_get(
      (curves, probs, state.best_epoch, state.best_loss, test))
  seconds = time.perf_counter() - t0
  out = []
  batched = curves.ndim == 3
  member = (lambda a, j: a[j]) if batched else (lambda a, j: a)
  for j, split in enumerate(splits):
    c = np.asarray(curves[:, j] if batched else curves, np.float64)
    real = np.asarray(split.eval_w) > 0
    p = np.asarray(probs[:, j] if batched else probs)[:, real]
    tp = None if test is None else np.asarray(member(test, j))[test_keep]  # Chunks' padding out.
    out.append(TrainResult(
        val_acc=c[:, 0], val_loss=c[:, 1], train_loss=c[:, 2], val_probs=p,
        val_labels=labels_np[np.asarray(split.eval_idx)[real]],
        best_epoch=int(member(best_epoch, j)), best_val_loss=float(member(best_loss, j)),
        params=jax.tree.map(lambda a, j=j: member(a, j), state.best_params),
        batch_stats=jax.tree.map(lambda a, j=j: member(a, j), state.best_stats),
        test_probs=tp, train_seconds=seconds / len(splits)))
  return out
