"""Training one child: data resident on device, jitted steps, best-by-validation-loss weights.

The pattern is `Trainer(arch, ...)` once per architecture (it compiles), then `fit(seed, split)` for
every split it is trained on (the search split, then each CV fold) without compiling again: every
array shape is fixed by the padded sizes `num_train` and `num_eval`, not by the split.

- The whole dataset (uint8 images, labels) goes to the device once (`DeviceData`). A split is three
  small index arrays: training (image index, quarter-turn rotation for balancing copies, weight 1
  for real examples and 0 for padding), and evaluation (index, weight).
- No host<->device copy or host sync per step: the epoch's permutation, the minibatch gather, the
  rot90 of balancing copies, the dropout key and the learning rate are computed on device from the
  step counter in the train state; the best-validation-loss parameters are tracked on device. The
  host reads the per-epoch curves once, at the end of `fit`.
- Epoch loop form: `steps` (a Python loop of jitted steps) or `scan` (one `lax.scan` per epoch);
  `auto` picks per backend what measured faster (BUILD_NOTES.md).
- Reward = best validation accuracy over epochs; parameters kept at the best validation loss.
"""

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nasrl_jax import child as child_lib
from nasrl_jax import space as space_lib
from nasrl_jax.data import balance


class ChildTrainingError(RuntimeError):
  """A child whose training diverged (non-finite loss)."""


@dataclasses.dataclass
class DeviceData:
  """The dataset on device, put there once."""
  images: jax.Array  # uint8[N, H, W, C]
  labels: jax.Array  # int32[N]

  @classmethod
  def from_numpy(cls, images: np.ndarray, labels: np.ndarray, device=None):
    put = (lambda a: jax.device_put(a, device)) if device is not None else jax.device_put
    return cls(put(np.asarray(images, np.uint8)), put(np.asarray(labels, np.int32)))

  def to(self, device) -> "DeviceData":
    """A copy on another device (device-to-device, once per run)."""
    return DeviceData(jax.device_put(self.images, device), jax.device_put(self.labels, device))


@dataclasses.dataclass
class Split:
  """Index arrays of one train/eval split, padded to fixed sizes (host numpy)."""
  train_idx: np.ndarray  # int32[num_train]
  train_rot: np.ndarray  # int32[num_train], quarter turns 0..3
  train_w: np.ndarray  # float32[num_train], 1 real, 0 padding
  eval_idx: np.ndarray  # int32[num_eval]
  eval_w: np.ndarray  # float32[num_eval]

  @property
  def num_train_real(self) -> int:
    return int(self.train_w.sum())


def pad_to(n: int, multiple: int) -> int:
  return max(multiple, -(-n // multiple) * multiple)


def make_split(train_idx, train_rot, eval_idx, num_train, num_eval, seed=0) -> Split:
  """Pads index arrays to fixed sizes; padding repeats real training examples with weight 0.

  Padding entries still flow through the network (and batch-norm statistics) but carry no loss,
  so every split of the same sizes trains the same number of steps with the same compiled code.
  """
  train_idx = np.asarray(train_idx, np.int32)
  train_rot = np.asarray(train_rot, np.int32)
  eval_idx = np.asarray(eval_idx, np.int32)
  n, m = len(train_idx), len(eval_idx)
  if n == 0 or m == 0:
    raise ValueError("a split needs at least one training and one evaluation example")
  if n > num_train or m > num_eval:
    raise ValueError(f"split of {n} train / {m} eval examples exceeds the padded sizes "
                     f"{num_train} / {num_eval}")
  rng = np.random.default_rng(seed)
  fill = rng.integers(0, n, num_train - n)
  tw = np.concatenate([np.ones(n, np.float32), np.zeros(num_train - n, np.float32)])
  ew = np.concatenate([np.ones(m, np.float32), np.zeros(num_eval - m, np.float32)])
  return Split(np.concatenate([train_idx, train_idx[fill]]),
               np.concatenate([train_rot, train_rot[fill]]), tw,
               np.concatenate([eval_idx, np.full(num_eval - m, eval_idx[0], np.int32)]), ew)


@dataclasses.dataclass
class TrainResult:
  """What training one child on one split produced."""
  val_acc: np.ndarray  # [epochs]
  val_loss: np.ndarray  # [epochs]
  train_loss: np.ndarray  # [epochs]
  best_epoch: int  # Epoch (0-based) of the lowest validation loss: its weights are kept.
  best_val_loss: float
  best_val_acc: float  # Max over epochs: the paper's reward.
  params: object  # Parameters at the best validation loss (device pytree).
  batch_stats: object
  compile_seconds: float
  train_seconds: float


def default_epoch_loop(backend: str) -> str:
  """`steps` on CPU (a scanned epoch ran 7-47x slower there); `steps` elsewhere until measured."""
  del backend
  return "steps"


class Trainer:
  """Compiles the training and evaluation functions of one architecture once; fits any split."""

  def __init__(self, arch: space_lib.Architecture, spec: child_lib.ChildSpec, train_cfg,
               num_train: int, num_eval: int, data: DeviceData):
    self.arch, self.spec, self.cfg, self.data = arch, spec, train_cfg, data
    # Everything runs on the device holding the data (one child per device when scaling out).
    self.device = next(iter(data.images.devices()))
    self._sharding = jax.sharding.SingleDeviceSharding(self.device)
    self.batch_size = int(train_cfg.batch_size)
    self.eval_batch = int(train_cfg.eval_batch_size)
    if num_train % self.batch_size or num_eval % self.eval_batch:
      raise ValueError("num_train / num_eval must be multiples of the (eval) batch size")
    self.num_train, self.num_eval = num_train, num_eval
    self.steps_per_epoch = num_train // self.batch_size
    self.epochs = int(train_cfg.epochs)
    loop = train_cfg.epoch_loop
    self.loop = default_epoch_loop(jax.default_backend()) if loop == "auto" else loop
    if self.loop not in ("steps", "scan"):
      raise ValueError(f"train.epoch_loop={loop!r}: use steps, scan or auto")
    self.graphdef, _, _ = child_lib.abstract_state(arch, spec)
    self.optimizer = self._make_optimizer()
    self._compiled = None
    self._predict_exe = None
    self.compile_seconds = 0.0

  # ---------------------------------------------------------------- pure functions

  def _make_optimizer(self):
    c = self.cfg
    total = self.epochs * self.steps_per_epoch
    warmup = min(int(c.warmup_epochs * self.steps_per_epoch), max(total - 1, 0))
    sched = optax.warmup_cosine_decay_schedule(0.0, float(c.learning_rate), warmup, max(total, 1))
    if c.optimizer == "adam":
      if c.weight_decay > 0:
        return optax.adamw(sched, weight_decay=float(c.weight_decay))
      return optax.adam(sched)
    if c.optimizer == "sgd":
      return optax.chain(optax.add_decayed_weights(float(c.weight_decay)),
                         optax.sgd(sched, momentum=0.9, nesterov=True))
    raise ValueError(f"train.optimizer={c.optimizer!r}: use adam or sgd")

  def _train_step(self, state, images, labels, tidx, trot, tw):
    """One minibatch; the batch rows come from the on-device epoch permutation."""
    step = state["step"]
    spe = self.steps_per_epoch
    epoch, row = step // spe, step % spe
    perm = jax.random.permutation(jax.random.fold_in(state["key"], epoch), self.num_train)
    rows = jax.lax.dynamic_slice(perm, (row * self.batch_size,), (self.batch_size,))
    idx = tidx[rows]
    x = balance.rotate_batch(images[idx], trot[rows])
    y = labels[idx]
    w = tw[rows]
    dkey = jax.random.fold_in(jax.random.fold_in(state["key"], 1_000_003), step)

    def loss_fn(params, batch_stats):
      logits, stats = child_lib.apply(self.graphdef, params, batch_stats, x, train=True, key=dkey)
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
      return jnp.sum(ce * w) / jnp.maximum(jnp.sum(w), 1.0), stats

    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state["params"], state["batch_stats"])
    updates, opt_state = self.optimizer.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    return dict(params=params, batch_stats=stats, opt_state=opt_state, step=step + 1,
                key=state["key"], loss_sum=state["loss_sum"] + loss)

  def _train_epoch(self, state, images, labels, tidx, trot, tw):
    def body(s, _):
      return self._train_step(s, images, labels, tidx, trot, tw), None
    state, _ = jax.lax.scan(body, state, None, length=self.steps_per_epoch)
    return state

  def _predict_fn(self, params, batch_stats, images, eidx):
    """Softmax probabilities [num_eval, classes] of the images at eidx, in eval batches."""
    def one(idx):
      logits, _ = child_lib.apply(self.graphdef, params, batch_stats, images[idx], train=False)
      return jax.nn.softmax(logits)
    probs = jax.lax.map(one, eidx.reshape(-1, self.eval_batch))
    return probs.reshape(self.num_eval, -1)

  def _end_epoch(self, state, best, images, labels, eidx, ew):
    """Validation loss/accuracy; keeps the parameters of the lowest validation loss so far."""
    probs = self._predict_fn(state["params"], state["batch_stats"], images, eidx)
    y = labels[eidx]
    nll = -jnp.log(jnp.clip(jnp.take_along_axis(probs, y[:, None], 1)[:, 0], 1e-12, 1.0))
    n = jnp.maximum(jnp.sum(ew), 1.0)
    val_loss = jnp.sum(nll * ew) / n
    val_acc = jnp.sum((jnp.argmax(probs, -1) == y) * ew) / n
    train_loss = state["loss_sum"] / self.steps_per_epoch
    better = val_loss < best["loss"]
    pick = lambda new, old: jax.tree.map(lambda a, b: jnp.where(better, a, b), new, old)
    epoch = state["step"] // self.steps_per_epoch - 1
    best = dict(params=pick(state["params"], best["params"]),
                batch_stats=pick(state["batch_stats"], best["batch_stats"]),
                loss=jnp.where(better, val_loss, best["loss"]),
                epoch=jnp.where(better, epoch, best["epoch"]))
    state = dict(state, loss_sum=jnp.zeros_like(state["loss_sum"]))
    return state, best, jnp.stack([val_acc, val_loss, train_loss])

  # ---------------------------------------------------------------- compile and run

  def _make_state(self, params, stats, key):
    state = dict(params=params, batch_stats=stats, opt_state=self.optimizer.init(params),
                 step=jnp.zeros((), jnp.int32), key=key, loss_sum=jnp.zeros((), jnp.float32))
    # Copies: the train state is donated to the step, so `best` must not share its buffers.
    best = dict(params=jax.tree.map(jnp.copy, params), batch_stats=jax.tree.map(jnp.copy, stats),
                loss=jnp.asarray(jnp.inf, jnp.float32),
                epoch=jnp.asarray(-1, jnp.int32))
    return state, best

  def initial_state(self, seed: int):
    """(train state, best-so-far state) of a fresh child on this trainer's device."""
    _, params, stats = child_lib.init(self.arch, self.spec, seed)
    key = jax.random.key_data(jax.random.key(seed))
    return self._make_state(*jax.device_put((params, stats, key), self.device))

  def compile(self) -> float:
    """Lowers and compiles the train and eval functions (ahead of time); returns seconds."""
    if self._compiled is not None:
      return 0.0
    t0 = time.perf_counter()
    _, params, stats = child_lib.abstract_state(self.arch, self.spec)
    key = jax.ShapeDtypeStruct((2,), jnp.uint32)
    on_device = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=self._sharding)
    state, best = jax.tree.map(on_device, jax.eval_shape(self._make_state, params, stats, key))
    d = self.data
    i32 = jax.ShapeDtypeStruct((self.num_train,), jnp.int32, sharding=self._sharding)
    f32 = jax.ShapeDtypeStruct((self.num_train,), jnp.float32, sharding=self._sharding)
    ei = jax.ShapeDtypeStruct((self.num_eval,), jnp.int32, sharding=self._sharding)
    ef = jax.ShapeDtypeStruct((self.num_eval,), jnp.float32, sharding=self._sharding)
    fn = self._train_epoch if self.loop == "scan" else self._train_step
    train = jax.jit(fn, donate_argnums=(0,)).lower(state, d.images, d.labels, i32, i32, f32).compile()
    end = jax.jit(self._end_epoch, donate_argnums=(0, 1)).lower(
        state, best, d.images, d.labels, ei, ef).compile()
    self._compiled = (train, end)
    self._abstract_best, self._abstract_eidx = best, ei
    self.compile_seconds = time.perf_counter() - t0
    return self.compile_seconds

  def compiled_functions(self):
    """(train step or epoch, end of epoch) executables, compiling them if needed (benchmarks)."""
    self.compile()
    return self._compiled

  def _compiled_predict(self):
    """The test-time predict function, compiled on first use (search children never need it)."""
    if self._predict_exe is None:
      self.compile()
      t0 = time.perf_counter()
      best, ei = self._abstract_best, self._abstract_eidx
      self._predict_exe = jax.jit(self._predict_fn).lower(
          best["params"], best["batch_stats"], self.data.images, ei).compile()
      self.compile_seconds += time.perf_counter() - t0
    return self._predict_exe

  def fit(self, seed: int, split: Split) -> TrainResult:
    """Trains from scratch on split's training part, validating on its eval part every epoch."""
    compile_s = self.compile()
    train, end = self._compiled
    t0 = time.perf_counter()
    state, best = self.initial_state(seed)
    tidx, trot, tw, eidx, ew = jax.device_put(
        (split.train_idx, split.train_rot, split.train_w, split.eval_idx, split.eval_w),
        self.device)
    d = self.data
    curves = []
    for _ in range(self.epochs):
      if self.loop == "scan":
        state = train(state, d.images, d.labels, tidx, trot, tw)
      else:
        for _ in range(self.steps_per_epoch):
          state = train(state, d.images, d.labels, tidx, trot, tw)
      state, best, metrics = end(state, best, d.images, d.labels, eidx, ew)
      curves.append(metrics)
    curves = np.asarray(jax.device_get(jnp.stack(curves)), np.float64)  # One sync per fit.
    train_s = time.perf_counter() - t0
    val_acc, val_loss, train_loss = curves[:, 0], curves[:, 1], curves[:, 2]
    if not (np.all(np.isfinite(val_loss)) and np.all(np.isfinite(train_loss))):
      raise ChildTrainingError(f"non-finite loss while training {self.arch}")
    return TrainResult(val_acc, val_loss, train_loss, int(best["epoch"]),
                       float(best["loss"]), float(val_acc.max()), best["params"],
                       best["batch_stats"], compile_s, train_s)

  def predict(self, params, batch_stats, eval_idx) -> np.ndarray:
    """Probabilities [len(eval_idx), classes] for up to num_eval images (padded internally)."""
    predict = self._compiled_predict()
    eval_idx = np.asarray(eval_idx, np.int32)
    n = len(eval_idx)
    if n > self.num_eval:
      raise ValueError(f"{n} images exceed the padded eval size {self.num_eval}")
    padded = np.concatenate([eval_idx, np.full(self.num_eval - n, eval_idx[0], np.int32)])
    probs = predict(params, batch_stats, self.data.images,
                                 jax.device_put(padded, self.device))
    return np.asarray(jax.device_get(probs))[:n]
