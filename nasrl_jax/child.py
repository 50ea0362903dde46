"""The child-network generator: Architecture -> Flax NNX module, plus parameter and FLOP counts.

A child is VGG19-shaped: conv layers (SAME padding, stride 1, ReLU, optional batch norm) in blocks
with a 2x2 max-pool after each block, then a head:
  vgg  flatten -> dense(4096) -> ReLU -> dropout -> dense(4096) -> ReLU -> dropout -> classes
       (VGG19's head; `dense_units` is scaled by the space's width multiplier);
  gap  global average pool -> dense(classes).
Input is uint8 [B, H, W, 1]; normalisation to [-1, 1] happens inside the model (inside jit).

Functional boundary (CONVENTIONS.md): callers `nnx.split` a built model once into
(graphdef, params, batch_stats) and call `apply(graphdef, params, batch_stats, x, train, key)`
inside their jitted functions.
"""

import dataclasses
import functools
import math

import jax
import numpy as np
import jax.numpy as jnp
from flax import nnx

from nasrl_jax import space as space_lib


@dataclasses.dataclass(frozen=True)
class ChildSpec:
  """Everything static that defines a child network besides its architecture."""
  input_shape: tuple = (224, 224, 1)
  num_classes: int = 2
  head: str = "vgg"
  dense_units: int = 4096
  dropout: float = 0.5
  batch_norm: bool = False
  width_multiplier: float = 1.0
  dtype: str = "float32"
  min_width: int = 0  # No conv layer narrower than this after scaling (0 = no floor).

  def __post_init__(self):
    object.__setattr__(self, "input_shape", tuple(int(v) for v in self.input_shape))
    if self.head not in ("vgg", "gap"):
      raise ValueError(f"model.head={self.head!r}: must be 'vgg' or 'gap'")
    if self.dtype not in ("float32", "bfloat16"):
      raise ValueError(f"train.dtype={self.dtype!r}: must be 'float32' or 'bfloat16'")

  @classmethod
  def from_config(cls, config, input_shape, num_classes) -> "ChildSpec":
    return cls(tuple(input_shape), int(num_classes), config.model.head,
               int(config.model.dense_units), float(config.model.dropout),
               bool(config.model.batch_norm), float(config.space.width_multiplier),
               config.train.dtype, int(config.model.min_width))

  def width(self, nominal: int) -> int:
    """Channels of a layer of `nominal` filters: scaled by the width multiplier, at least
    `min_width` (a scaled-down 64-filter layer of 4 channels is a bottleneck the paper's
    full-width space never has)."""
    return max(1, self.min_width, int(round(nominal * self.width_multiplier)))

  def to_json(self) -> dict:
    return dataclasses.asdict(self)


class BatchNorm(nnx.Module):
  """Batch norm over all but the channel axis, with few traced ops.

  `nnx.BatchNorm` is general (axes, masks, sharding) and took about 40 ms of Python tracing per
  call here, about a third of tracing a 16-layer child's train step; children are traced once each,
  so that is per-child overhead paid in every search.
  """

  def __init__(self, features: int, momentum: float = 0.9, epsilon: float = 1e-5, dtype=None):
    self.scale = nnx.Param(jnp.ones((features,), jnp.float32))
    self.bias = nnx.Param(jnp.zeros((features,), jnp.float32))
    self.mean = nnx.BatchStat(jnp.zeros((features,), jnp.float32))
    self.var = nnx.BatchStat(jnp.ones((features,), jnp.float32))
    self.momentum, self.epsilon, self.dtype = momentum, epsilon, dtype

  def __call__(self, x, *, train: bool):
    if train:
      xf = x.astype(jnp.float32)
      mean = xf.mean(axis=(0, 1, 2))
      # Two passes (mean of squared deviations): E[x^2] - E[x]^2 cancels catastrophically in
      # float32 when the mean is large against the spread.
      var = jnp.square(xf - mean).mean(axis=(0, 1, 2))
      m = self.momentum
      # set_value replaces the Variable's array (item assignment would write into the array
      # shared with the caller's State outside jit).
      self.mean.set_value(m * self.mean[...] + (1 - m) * mean)
      self.var.set_value(m * self.var[...] + (1 - m) * var)
    else:
      mean, var = self.mean[...], self.var[...]
    mul = self.scale[...] * jax.lax.rsqrt(var + self.epsilon)
    y = x * mul.astype(x.dtype) + (self.bias[...] - mean * mul).astype(x.dtype)
    return y if self.dtype is None else y.astype(self.dtype)


class ChildNet(nnx.Module):
  """A VGG-style CNN built from an Architecture."""

  def __init__(self, arch: space_lib.Architecture, spec: ChildSpec, *, rngs: nnx.Rngs):
    dtype = jnp.bfloat16 if spec.dtype == "bfloat16" else jnp.float32
    self.blocks = tuple(arch.blocks)
    self.head = spec.head
    self.dropout_rate = spec.dropout
    convs, norms = [], []
    cin = spec.input_shape[-1]
    for k, f in zip(arch.kernels, arch.filters):
      cout = spec.width(f)
      convs.append(nnx.Conv(cin, cout, (k, k), padding="SAME", dtype=dtype, rngs=rngs))
      if spec.batch_norm:
        norms.append(BatchNorm(cout, momentum=0.9, dtype=dtype))
      cin = cout
    self.convs = nnx.List(convs)
    self.norms = nnx.List(norms)
    h, w = spec.input_shape[0], spec.input_shape[1]
    for _ in arch.blocks:
      h, w = h // 2, w // 2
    if h < 1 or w < 1:
      raise ValueError(f"input {spec.input_shape[:2]} is too small for {len(arch.blocks)} pools")
    if spec.head == "vgg":
      units = spec.width(spec.dense_units)
      self.fc1 = nnx.Linear(h * w * cin, units, dtype=dtype, rngs=rngs)
      self.fc2 = nnx.Linear(units, units, dtype=dtype, rngs=rngs)
      self.out = nnx.Linear(units, spec.num_classes, dtype=dtype, rngs=rngs)
    else:
      self.out = nnx.Linear(cin, spec.num_classes, dtype=dtype, rngs=rngs)
    self.dropout = nnx.Dropout(spec.dropout)

  def features(self, x, *, train: bool = False):
    """The last conv layer's activations (after BN and ReLU, before the last pool).

    Split out of `__call__` so saliency (Grad-CAM) differentiates the very model that predicts.
    """
    x = x.astype(jnp.float32) / 127.5 - 1.0
    i = 0
    for bi, b in enumerate(self.blocks):
      if bi:
        x = _max_pool(x)
      for _ in range(b):
        x = self.convs[i](x)
        if len(self.norms):
          x = self.norms[i](x, train=train)
        x = jax.nn.relu(x)
        i += 1
    return x

  def head_logits(self, x, *, train: bool = False, key=None):
    """Last pool and head: `features` output -> float32 logits [B, classes]."""
    x = _max_pool(x)
    if self.head == "vgg":
      x = x.reshape(x.shape[0], -1)
      k1, k2 = jax.random.split(key) if train else (None, None)
      x = jax.nn.relu(self.fc1(x))
      x = self.dropout(x, deterministic=not train, rngs=k1)
      x = jax.nn.relu(self.fc2(x))
      x = self.dropout(x, deterministic=not train, rngs=k2)
    else:
      x = x.mean(axis=(1, 2))
    return self.out(x).astype(jnp.float32)

  def __call__(self, x, *, train: bool = False, key=None):
    """uint8 or float [B, H, W, C] -> float32 logits [B, classes]."""
    return self.head_logits(self.features(x, train=train), train=train, key=key)


def _max_pool(x):
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def init(arch: space_lib.Architecture, spec: ChildSpec, seed):
  """(graphdef, params, batch_stats) of a freshly initialised child, without compiling anything.

  Flax's own initialisers run as one small XLA computation per parameter shape: measured here, an
  eager 16-layer init took over 20 s on this CPU and `jit(init)` about 5 s of compile per
  architecture. So the structure comes from `jax.eval_shape` and the values from a seeded numpy
  Generator: He-normal (truncated at 2 sd, fan-in, gain 2 for ReLU) kernels, zero biases, BN scale 1.
  Deterministic per (arch, spec, seed).

  Args:
    arch, spec: the child.
    seed: an int or a `np.random.Generator` (e.g. `rng.host_rng(init_key)`).
  """
  graphdef, params, stats = abstract_state(arch, spec)
  rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)

  def fill(path, leaf):
    name = [str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey)][-1]
    shape, dtype = leaf.shape, np.dtype(leaf.dtype)
    if name == "kernel":
      fan_in = math.prod(shape[:-1])
      # sd of a standard normal truncated to +-2 is 0.87962566.
      std = math.sqrt(2.0 / fan_in) / 0.87962566
      x = rng.standard_normal(shape, dtype=np.float32)
      bad = np.abs(x) > 2
      while bad.any():  # Resample outside +-2 (truncated normal).
        x[bad] = rng.standard_normal(int(bad.sum()), dtype=np.float32)
        bad = np.abs(x) > 2
      return (x * std).astype(dtype)
    if name in ("scale", "var"):
      return np.ones(shape, dtype)
    return np.zeros(shape, dtype)

  params = jax.tree_util.tree_map_with_path(fill, params)
  stats = jax.tree_util.tree_map_with_path(fill, stats)
  return graphdef, params, stats


def split(model: ChildNet):
  """Model -> (graphdef, params, batch_stats): the functional boundary."""
  return nnx.split(model, nnx.Param, nnx.BatchStat)


def apply(graphdef, params, batch_stats, x, *, train: bool, key=None):
  """Functional forward pass. Returns (logits, new_batch_stats)."""
  model = nnx.merge(graphdef, params, batch_stats, copy=True)
  logits = model(x, train=train, key=key)
  _, _, new_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  return logits, new_stats


@functools.lru_cache(maxsize=4096)
def abstract_state(arch: space_lib.Architecture, spec: ChildSpec):
  """(graphdef, params, batch_stats) as shapes only, via jax.eval_shape: nothing is allocated.

  Cached (read-only results): tracing the 16-layer model costs 0.4-1 s on a CPU, and every
  training's `init` and every parameter count needs it (it was a quarter of a re-scoring's time).
  """
  model = nnx.eval_shape(lambda: ChildNet(arch, spec, rngs=nnx.Rngs(0)))
  return split(model)


def count_params(arch: space_lib.Architecture, input_shape=(224, 224, 1), num_classes=2,
                 head="vgg", batch_norm=False, dense_units=4096, width_multiplier=1.0,
                 min_width=0) -> int:
  """Trainable parameters (weights + biases, BN scale/offset), computed from shapes only.

  `count_params(VGG19)` is 139,577,282, the paper's Table 1 figure.
  """
  return count_params_for(arch, ChildSpec(tuple(input_shape), num_classes, head, dense_units, 0.5,
                                          batch_norm, width_multiplier, min_width=min_width))


def count_params_for(arch: space_lib.Architecture, spec: ChildSpec) -> int:
  """`count_params` with every setting taken from a ChildSpec: the run's own spec, so the cached
  abstract state is the one its training reads (a spec rebuilt with another dropout or dtype
  would trace the child a second time)."""
  _, params, _ = abstract_state(arch, spec)
  return int(sum(math.prod(p.shape) for p in jax.tree.leaves(params)))


def activation_elements(arch: space_lib.Architecture, spec: ChildSpec) -> int:
  """Elements per image of the conv activations a training step keeps for the backward pass.

  Each conv layer's output is stored about three times (conv, batch norm, ReLU), the pools once;
  a memory estimate's activation term (`memory.member_bytes`).
  """
  h, w, _ = spec.input_shape
  total, i = h * w, 0
  per_layer = 3 if spec.batch_norm else 2
  for b in arch.blocks:
    for _ in range(b):
      total += per_layer * h * w * spec.width(arch.filters[i])
      i += 1
    h, w = h // 2, w // 2
    total += h * w * spec.width(arch.filters[i - 1])
  return int(total)


def count_flops(arch: space_lib.Architecture, spec: ChildSpec) -> int:
  """Forward-pass FLOPs per image (multiply-adds x 2) of convs and dense layers.

  Conv with SAME padding, stride 1: 2 * H * W * k * k * C_in * C_out. Pools, ReLU, BN and biases are
  not counted (they are a fraction of a percent for these networks).
  """
  h, w, cin = spec.input_shape
  flops, i = 0, 0
  for b in arch.blocks:
    for _ in range(b):
      k, cout = arch.kernels[i], spec.width(arch.filters[i])
      flops += 2 * h * w * k * k * cin * cout
      cin = cout
      i += 1
    h, w = h // 2, w // 2
  if spec.head == "vgg":
    units = spec.width(spec.dense_units)
    flops += 2 * (h * w * cin * units + units * units + units * spec.num_classes)
  else:
    flops += 2 * cin * spec.num_classes
  return int(flops)
