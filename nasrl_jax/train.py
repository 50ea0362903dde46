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
import hashlib
import json
import threading
import time
from typing import Any, NamedTuple, Optional, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from nasrl_jax import child as child_lib
from nasrl_jax import rng as rng_lib
from nasrl_jax import space as space_lib

PROGRAM_PREFIX = "nasrl_child_"  # compiles.py counts programs whose name starts with this.
BALANCED_SAMPLING = "upright_sample"  # data.balance mode that samples rows instead of permuting.
VAL_WEIGHTINGS = ("none", "class")  # config.train.val_weighting.

class ChildTrainingError(RuntimeError):
  """A child whose training diverged (non-finite loss) on some split."""


# ------------------------------------------------------------------------------ data and splits


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


def default_epoch_loop(backend: str) -> str:
  """`steps` everywhere: a scanned epoch ran 7-47x slower on this CPU; GPU unmeasured."""
  del backend
  return "steps"


def default_split_batching(backend: str) -> str:
  """`sequential` on CPU (measured: vmapped splits 5x slower per split); `vmap` on accelerators,
  where one launch for several small children amortises kernel-launch overhead (to be measured by
  benchmarks/gpu_check.sh; see BUILD_NOTES.md)."""
  return "sequential" if backend == "cpu" else "vmap"


# ------------------------------------------------------------------------------ the programs


def _optimizer(train_cfg, total_steps: int, steps_per_epoch: int):
  c = train_cfg
  warmup = min(int(c.warmup_epochs * steps_per_epoch), max(total_steps - 1, 0))
  sched = optax.warmup_cosine_decay_schedule(0.0, float(c.learning_rate), warmup,
                                             max(total_steps, 1))
  if c.optimizer == "adam":
    if c.weight_decay > 0:
      return optax.adamw(sched, weight_decay=float(c.weight_decay))
    return optax.adam(sched)
  if c.optimizer == "sgd":
    return optax.chain(optax.add_decayed_weights(float(c.weight_decay)),
                       optax.sgd(sched, momentum=0.9, nesterov=True))
  raise ValueError(f"train.optimizer={c.optimizer!r}: use adam or sgd")


@dataclasses.dataclass(frozen=True)
class Recipe:
  """The static training setup a program depends on besides architecture and spec."""
  epochs: int
  batch_size: int
  eval_batch_size: int
  optimizer: str
  learning_rate: float
  warmup_epochs: float
  weight_decay: float
  rotations: bool  # rot90 balancing copies in the splits.
  sampling: str  # permute | balanced
  hflip: bool
  gain: float  # Multiplicative gain jitter half-width (0 = off).
  cpu_opt_level: int  # XLA:CPU backend optimisation level of child programs (-1 = XLA's default).
  min_epochs: int = 0  # Weights of epochs before this one are never kept (0 = any epoch).
  val_weighting: str = "none"  # none | class: the validation NLL weighted per class like the
  #                              training loss (the split's class weights).

  @classmethod
  def from_config(cls, config) -> "Recipe":
    t, d = config.train, config.data
    augment = tuple(d.augment)
    unknown = sorted(set(augment) - {"hflip", "gain"})
    if unknown:
      raise ValueError(f"config.data.augment has unknown entries {unknown}; use hflip, gain")
    if t.val_weighting not in VAL_WEIGHTINGS:
      raise ValueError(f"config.train.val_weighting={t.val_weighting!r}: use "
                       f"{' or '.join(VAL_WEIGHTINGS)}")
    if isinstance(t.min_epochs, bool) or not 0 <= int(t.min_epochs) < int(t.epochs):
      raise ValueError(f"config.train.min_epochs={t.min_epochs!r}: must be an integer in "
                       f"[0, train.epochs)")
    return cls(int(t.epochs), int(t.batch_size), int(t.eval_batch_size), str(t.optimizer),
               float(t.learning_rate), float(t.warmup_epochs), float(t.weight_decay),
               d.balance == "rot90", "balanced" if d.balance == BALANCED_SAMPLING else "permute",
               "hflip" in augment, float(d.gain_jitter) if "gain" in augment else 0.0,
               int(t.cpu_opt_level), int(t.min_epochs), str(t.val_weighting))


class Programs(NamedTuple):
  step: Any  # Compiled executable.
  evaluate: Any
  key: str  # Hash of the cache key (in the program names).
  compile_seconds: float  # Spent compiling these two (0.0 when they came from the cache).
  memory_bytes: int  # Peak-memory estimate of the step program (compiled memory analysis).


def _program_key(arch, spec, recipe, sizes, chunk, device) -> str:
  text = json.dumps([str(arch), spec.to_json(), dataclasses.asdict(recipe),
                     dataclasses.asdict(sizes), int(chunk), str(device)], sort_keys=True,
                    default=str)
  return hashlib.sha1(text.encode()).hexdigest()[:12]


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
    self.optimizer = _optimizer(recipe, self.total_steps, self.steps_per_epoch)

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


class _ProgramCache:
  """Compiled (step, evaluate) programs of the run, by program key; thread-safe.

  One lock per key, so two threads asking for the same program compile it once and different
  programs compile concurrently (ahead-of-time compilation of the next children).
  """

  def __init__(self):
    self._lock = threading.Lock()
    self._entries = {}
    self._key_locks = {}
    self.archs = {}  # program key -> architecture string (distinct architectures of the run).

  def get(self, key, build):
    with self._lock:
      lock = self._key_locks.setdefault(key, threading.Lock())
    with lock:
      entry = self._entries.get(key)
      if entry is not None:
        return entry._replace(compile_seconds=0.0)
      entry = build()
      with self._lock:
        self._entries[key] = entry
      return entry

  def __len__(self):
    return len(self._entries)

  def clear(self):
    with self._lock:
      self._entries.clear()
      self._key_locks.clear()
      self.archs.clear()


PROGRAMS = _ProgramCache()


def _named(fn, name):
  """`fn` under `name`: JAX reports compiles by the function's name (compiles.py)."""
  @functools.wraps(fn)
  def wrapper(*args):
    return fn(*args)
  wrapper.__name__ = wrapper.__qualname__ = name
  return wrapper


def _compile(core: _Core, chunk: int, device, key: str) -> Programs:
  """Lowers and compiles the step and evaluate programs for one device (and chunk)."""
  t0 = time.perf_counter()
  sharding = jax.sharding.SingleDeviceSharding(device)
  keydata = jax.ShapeDtypeStruct((), jax.random.key(0).dtype)
  state = jax.eval_shape(core.make_state, core.abstract_params, core.abstract_stats, keydata)
  nt, ne, c = core.sizes.num_train, core.sizes.num_eval, core.spec.num_classes
  split = Split(jax.ShapeDtypeStruct((nt,), jnp.int32), jax.ShapeDtypeStruct((nt,), jnp.int32),
                jax.ShapeDtypeStruct((nt,), jnp.float32), jax.ShapeDtypeStruct((nt,), jnp.float32),
                jax.ShapeDtypeStruct((c,), jnp.float32), jax.ShapeDtypeStruct((ne,), jnp.int32),
                jax.ShapeDtypeStruct((ne,), jnp.float32))
  step, evaluate = core.step, core.evaluate
  if chunk > 1:
    step = jax.vmap(step, in_axes=(0, None, None, 0))
    evaluate = jax.vmap(evaluate, in_axes=(0, None, None, 0, 0, 0, None))
    grow = lambda x: jax.ShapeDtypeStruct((chunk,) + tuple(x.shape), x.dtype)
    state = jax.tree.map(grow, state)
    split = jax.tree.map(grow, split)
  place = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
  state, split = jax.tree.map(place, (state, split))
  images = jax.ShapeDtypeStruct((core.num_images,) + tuple(core.spec.input_shape), jnp.uint8,
                                sharding=sharding)
  labels = jax.ShapeDtypeStruct((core.num_images,), jnp.int32, sharding=sharding)
  options = None
  if device.platform == "cpu" and core.recipe.cpu_opt_level >= 0:
    options = {"xla_backend_optimization_level": core.recipe.cpu_opt_level}
  step_exe = jax.jit(_named(step, f"{PROGRAM_PREFIX}step_{key}"), donate_argnums=(0,)).lower(
      state, images, labels, split).compile(compiler_options=options)
  use_best = jax.ShapeDtypeStruct((), jnp.int32, sharding=sharding)
  eval_exe = jax.jit(_named(evaluate, f"{PROGRAM_PREFIX}eval_{key}"), donate_argnums=(0,)).lower(
      state, images, labels, split.eval_idx, split.eval_w, split.class_weight, use_best).compile(
          compiler_options=options)
  memory = _memory_bytes(step_exe)
  return Programs(step_exe, eval_exe, key, time.perf_counter() - t0, memory)


def _memory_bytes(executable) -> int:
  """Peak device memory of a compiled program from XLA's memory analysis (0 if unavailable)."""
  try:
    m = executable.memory_analysis()
  except Exception:  # pylint: disable=broad-except  (not every backend implements it)
    return 0
  if m is None:
    return 0
  return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
             - m.alias_size_in_bytes)


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
                  cache: _ProgramCache = PROGRAMS) -> TrainFns:
  """Pure training functions of one architecture; programs come from the run-wide cache.

  Args:
    arch, spec: the child.
    recipe: `Recipe.from_config(config)`.
    sizes: the run's padded sizes.
    num_images: N of the device-resident dataset (a static shape of the programs).
    split_batching: sequential | vmap | auto (per backend, `default_split_batching`).
    vmap_chunk: members per vmapped call (0 = auto: `auto_chunk`); ignored when sequential.
    backend: platform name for `auto` (default: jax.default_backend()).
    cache: the program cache (tests may pass their own).
  """
  core = _Core(arch, spec, recipe, sizes, num_images)
  backend = backend or jax.default_backend()
  mode = default_split_batching(backend) if split_batching == "auto" else split_batching
  if mode not in ("sequential", "vmap"):
    raise ValueError(f"train.split_batching={split_batching!r}: use sequential, vmap or auto")
  chunk = 1 if mode == "sequential" else int(vmap_chunk or auto_chunk(arch, spec, recipe, sizes))

  def programs(device, chunk_size=None):
    c = chunk if chunk_size is None else int(chunk_size)
    key = _program_key(arch, spec, recipe, sizes, c, device)
    entry = cache.get(key, lambda: _compile(core, c, device, key))
    cache.archs[key] = str(arch)
    return entry

  def init(key, device=None):
    """A fresh run's state: host numpy weights from the key's INIT stream, one transfer."""
    _, params, stats = child_lib.init(arch, spec, rng_lib.host_rng(
        rng_lib.purpose(key, rng_lib.Purpose.INIT)))
    state = core.host_state(params, stats, key)
    return jax.device_put(state, device) if device is not None else state

  def _run(progs, state, data, split_dev, test_chunks):
    """The epoch loop; returns (state, curves [E, (c,) 3], val probs [E, (c,) ne, C], test).

    Test rows (any number) are scored with the kept weights in chunks of the evaluation size, by
    the same evaluate program (use_best=1).
    """
    curves, probs = [], []
    zero, one = jax.device_put((jnp.zeros((), jnp.int32), jnp.ones((), jnp.int32)), data.device)
    for _ in range(recipe.epochs):
      for _ in range(core.steps_per_epoch):
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

  def _results(state, curves, probs, test, splits, test_keep, labels_np, seconds):
    # pylint: disable=too-many-locals
    """Host results of the members of one call (one sync)."""
    curves, probs, best_epoch, best_loss, test = jax.device_get(
        (curves, probs, state.best_epoch, state.best_loss, test))
    out = []
    batched = curves.ndim == 3
    for j, split in enumerate(splits):
      sel = (lambda a: a[:, j]) if batched else (lambda a: a)
      c = np.asarray(sel(curves), np.float64)
      real = np.asarray(split.eval_w) > 0
      p = np.asarray(sel(probs))[:, real]
      pick = (lambda t: jax.tree.map(lambda a: a[j], t)) if batched else (lambda t: t)
      tp = None
      if test is not None:  # Drop each chunk's padding rows.
        tp = np.asarray(test[j] if batched else test)[test_keep]
      be = int(best_epoch[j] if batched else best_epoch)
      bl = float(best_loss[j] if batched else best_loss)
      out.append(TrainResult(
          val_acc=c[:, 0], val_loss=c[:, 1], train_loss=c[:, 2], val_probs=p,
          val_labels=labels_np[np.asarray(split.eval_idx)[real]], best_epoch=be,
          best_val_loss=bl, params=pick(state.best_params), batch_stats=pick(state.best_stats),
          test_probs=tp, train_seconds=seconds / len(splits)))
    return out

  def train_many(keys, data: DeviceData, splits: Sequence[Split], test_idx=None, tag=None):
    """Trains one run per (key, split); test_idx: rows scored with the kept weights at the end.

    `tag` says what the call is for ({"phase", "outer", ...}); the training ignores it (the tests'
    leakage checks read it by wrapping the trainer factory).
    """
    del tag
    if len(keys) != len(splits):
      raise ValueError(f"{len(keys)} keys for {len(splits)} splits")
    device = data.device
    labels_np = data.host_labels
    n_test = 0 if test_idx is None else len(test_idx)
    ne = sizes.num_eval
    test_parts = [pad_eval(np.asarray(test_idx)[i:i + ne], ne) for i in range(0, n_test, ne)]
    test_keep = np.concatenate([w > 0 for _, w in test_parts]) if test_parts else None
    out = []
    if chunk == 1:
      progs = programs(device, 1)
      test_chunks = jax.device_put(test_parts, device)
      for key, split in zip(keys, splits):
        t0 = time.perf_counter()
        state = init(key, device)
        split_dev = jax.device_put(split, device)
        state, curves, probs, test = _run(progs, state, data, split_dev, test_chunks)
        out += _results(state, curves, probs, test, [split], test_keep, labels_np,
                        time.perf_counter() - t0)
      return out
    progs = programs(device, chunk)
    for start in range(0, len(splits), chunk):
      t0 = time.perf_counter()
      members = list(range(start, min(start + chunk, len(splits))))
      padded = members + [members[0]] * (chunk - len(members))  # Masked (discarded) copies.
      states = [init(keys[i]) for i in padded]
      stack = lambda *a: jnp.stack(a) if isinstance(a[0], jax.Array) else np.stack(a)
      state = jax.device_put(jax.tree.map(stack, *states), device)
      split_dev = jax.device_put(stack_splits([splits[i] for i in padded]), device)
      test_chunks = jax.device_put([(np.stack([i] * chunk), np.stack([w] * chunk))
                                    for i, w in test_parts], device)
      state, curves, probs, test = _run(progs, state, data, split_dev, test_chunks)
      res = _results(state, curves, probs, test, [splits[i] for i in padded], test_keep,
                     labels_np, time.perf_counter() - t0)
      out += res[:len(members)]
    return out

  def train(key, data: DeviceData, split: Split, test_idx=None, tag=None) -> TrainResult:
    return train_many([key], data, [split], test_idx, tag)[0]

  return TrainFns(init, train, train_many, programs, chunk, core.steps_per_epoch)


def auto_chunk(arch, spec, recipe: Recipe, sizes: Sizes, budget_bytes: Optional[int] = None,
               max_chunk: int = 16) -> int:
  """Members per vmapped call that fit a memory budget, from `jax.eval_shape` sizes.

  Per member: the train state (weights, Adam moments, kept weights) plus the activations of one
  minibatch kept for the backward pass (conv outputs before and after batch norm and ReLU).
  Budget: half of the device's free memory (GPU `memory_stats`), else 4 GiB.
  """
  per = member_bytes(arch, spec, recipe.batch_size)
  if budget_bytes is None:
    budget_bytes = 4 << 30
    try:
      stats = jax.devices()[0].memory_stats() or {}
      if "bytes_limit" in stats:
        budget_bytes = (stats["bytes_limit"] - stats.get("bytes_in_use", 0)) // 2
    except Exception:  # pylint: disable=broad-except
      pass
  return int(max(1, min(max_chunk, budget_bytes // max(per, 1))))


def member_bytes(arch, spec, batch_size: int) -> int:
  """Estimated device bytes of one training run: state (x5 weights) + one batch's activations."""
  _, params, stats = _abstract(arch, spec)
  n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
  n_stats = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(stats))
  state = 4 * (5 * n_params + 2 * n_stats)  # params, 2 Adam moments, kept params, grads.
  act = child_lib.activation_elements(arch, spec) * batch_size
  itemsize = 2 if spec.dtype == "bfloat16" else 4
  return int(state + 3 * act * itemsize)


def reward_metrics(result: TrainResult, num_classes: int) -> dict:
  """The three reward metrics of one run (`config.controller.reward_metric`).

  val_accuracy: the best validation accuracy over epochs (the paper); val_auroc: AUROC (macro
  one-vs-rest in grade mode) of the kept weights (the best-validation-loss epoch); val_nll: minus
  the validation NLL of the kept weights. NaN where undefined (one-class validation part).
  """
  best = result.best_epoch if result.best_epoch >= 0 else int(np.argmin(result.val_loss))
  return {"val_accuracy": float(np.max(result.val_acc)),
          "val_auroc": auroc(result.val_labels, result.val_probs[best], num_classes),
          "val_nll": -float(result.best_val_loss)}


def auroc(labels, probs, num_classes: int) -> float:
  """scikit-learn's AUROC of softmax outputs (binary: P(class 1); grade: macro one-vs-rest);
  NaN when a class is missing. Imported lazily: the search must not import scikit-learn."""
  from sklearn import metrics as skm  # pylint: disable=g-import-not-at-top
  y = np.asarray(labels)
  p = np.asarray(probs, np.float64)
  if np.unique(y).size < min(2, num_classes) or not np.all(np.isfinite(p)):
    return float("nan")
  if num_classes == 2:
    return float(skm.roc_auc_score(y, p[:, 1]))
  if np.unique(y).size < num_classes:
    return float("nan")
  p = p / p.sum(axis=1, keepdims=True)
  return float(skm.roc_auc_score(y, p, multi_class="ovr", average="macro",
                                 labels=list(range(num_classes))))
