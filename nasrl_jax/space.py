"""The search space: VGG19-shaped networks with a kernel size and a filter count per conv layer.

The paper's space: 16 conv layers in blocks of 2, 2, 4, 4, 4 with a 2x2 max-pool after each block;
every layer picks a kernel size from {1, 3, 5, 7} and a filter count from {64, 128, 256, 512}, so
the space holds (4 * 4) ** 16 = 16 ** 16 (about 1.8e19) architectures. The controller makes two
decisions per layer, kernel first then filters: action 2i is layer i's kernel index, action 2i+1 its
filter index.

JAX is imported only to sample: the architecture vocabulary (parsing, printing, counting) stays
light for processes that never train (benchmarks/search_throughput.py's parent;
tests/test_imports.py checks it).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
  import jax

VGG19_BLOCKS = (2, 2, 4, 4, 4)
VGG19_KERNELS = (3,) * 16
VGG19_FILTERS = (64, 64, 128, 128) + (256,) * 4 + (512,) * 8


@dataclasses.dataclass(frozen=True)
class Architecture:
  """One child network: kernel size and (nominal, before width multiplier) filters per conv layer.

  Immutable and hashable, so it can key the reward memo and the compile cache.
  """
  kernels: tuple
  filters: tuple
  blocks: tuple = VGG19_BLOCKS

  def __post_init__(self):
    object.__setattr__(self, "kernels", tuple(int(k) for k in self.kernels))
    object.__setattr__(self, "filters", tuple(int(f) for f in self.filters))
    object.__setattr__(self, "blocks", tuple(int(b) for b in self.blocks))
    if not len(self.kernels) == len(self.filters) == sum(self.blocks):
      raise ValueError(
          f"Architecture needs one kernel and one filter count per layer ({sum(self.blocks)}); "
          f"got {len(self.kernels)} kernels and {len(self.filters)} filters")

  @property
  def num_layers(self) -> int:
    return len(self.kernels)

  def __str__(self):
    """Readable form, blocks separated by '|': '3x64 3x64 | 3x128 3x128 | ...'."""
    parts, i = [], 0
    for b in self.blocks:
      parts.append(" ".join(f"{k}x{f}" for k, f in zip(self.kernels[i:i + b], self.filters[i:i + b])))
      i += b
    return " | ".join(parts)

  @classmethod
  def from_string(cls, text: str) -> "Architecture":
    """Inverse of `str(arch)`."""
    blocks, kernels, filters = [], [], []
    for part in text.split("|"):
      layers = part.split()
      blocks.append(len(layers))
      for layer in layers:
        k, f = layer.split("x")
        kernels.append(int(k))
        filters.append(int(f))
    return cls(tuple(kernels), tuple(filters), tuple(blocks))

  def to_json(self) -> dict:
    return {"kernels": list(self.kernels), "filters": list(self.filters),
            "blocks": list(self.blocks), "string": str(self)}

  @classmethod
  def from_json(cls, d: dict) -> "Architecture":
    return cls(tuple(d["kernels"]), tuple(d["filters"]), tuple(d["blocks"]))


VGG19 = Architecture(VGG19_KERNELS, VGG19_FILTERS, VGG19_BLOCKS)


@dataclasses.dataclass(frozen=True)
class SearchSpace:
  """Per-layer choices and the block pattern; converts between Architecture and actions."""
  kernels: tuple = (1, 3, 5, 7)
  filters: tuple = (64, 128, 256, 512)
  blocks: tuple = VGG19_BLOCKS
  width_multiplier: float = 1.0

  def __post_init__(self):
    for name in ("kernels", "filters", "blocks"):
      object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
    if not self.kernels or not self.filters or not self.blocks:
      raise ValueError("SearchSpace needs non-empty kernels, filters and blocks")
    if any(k < 1 or k % 2 == 0 for k in self.kernels):
      raise ValueError(f"kernel sizes must be odd and >= 1 (SAME padding); got {self.kernels}")
    if any(f < 1 for f in self.filters) or any(b < 1 for b in self.blocks):
      raise ValueError(f"filters and blocks must be >= 1; got {self.filters}, {self.blocks}")
    if not self.width_multiplier > 0:
      raise ValueError(f"width_multiplier must be > 0; got {self.width_multiplier}")

  @classmethod
  def from_config(cls, space_cfg) -> "SearchSpace":
    return cls(tuple(space_cfg.kernels), tuple(space_cfg.filters), tuple(space_cfg.blocks),
               float(space_cfg.width_multiplier))

  @property
  def num_layers(self) -> int:
    return sum(self.blocks)

  @property
  def num_decisions(self) -> int:
    return 2 * self.num_layers

  @property
  def choices_per_decision(self) -> tuple:
    """(len(kernels), len(filters)) repeated per layer."""
    return (len(self.kernels), len(self.filters)) * self.num_layers

  @property
  def size(self) -> int:
    """Number of distinct architectures: (|kernels| * |filters|) ** layers (16**16 by default)."""
    return (len(self.kernels) * len(self.filters)) ** self.num_layers

  @property
  def vgg19(self) -> Architecture:
    """The VGG19 baseline: the paper's VGG19 for the VGG19 block pattern (2, 2, 4, 4, 4).

    For another block pattern (shallow test-only spaces) it is the same recipe on that pattern:
    3x3 kernels, filters 64, 128, 256, 512, 512 by block, as in VGG19's blocks.
    """
    if self.blocks == VGG19_BLOCKS:
      return VGG19
    widths = (64, 128, 256, 512, 512)
    filters = tuple(widths[min(b, len(widths) - 1)] for b, n in enumerate(self.blocks)
                    for _ in range(n))
    return Architecture((3,) * len(filters), filters, self.blocks)

  def width(self, nominal_filters: int) -> int:
    """Actual channel count of a layer after the width multiplier (at least 1)."""
    return max(1, int(round(nominal_filters * self.width_multiplier)))

  def encode(self, arch: Architecture) -> np.ndarray:
    """Architecture -> int32[num_decisions] actions (kernel index, filter index per layer)."""
    if arch.blocks != self.blocks:
      raise ValueError(f"architecture blocks {arch.blocks} differ from the space's {self.blocks}")
    try:
      acts = [(self.kernels.index(k), self.filters.index(f))
              for k, f in zip(arch.kernels, arch.filters)]
    except ValueError as e:
      raise ValueError(f"architecture {arch} is outside the search space: {e}") from None
    return np.asarray(acts, np.int32).reshape(-1)

  def decode(self, actions: Sequence[int]) -> Architecture:
    """int[num_decisions] actions -> Architecture."""
    a = np.asarray(actions, np.int64).reshape(-1)
    if a.shape[0] != self.num_decisions:
      raise ValueError(f"expected {self.num_decisions} actions, got {a.shape[0]}")
    kernels = tuple(self.kernels[i] for i in a[0::2])
    filters = tuple(self.filters[i] for i in a[1::2])
    return Architecture(kernels, filters, self.blocks)

  def sample_actions(self, key: jax.Array) -> np.ndarray:
    """Uniform actions for random search (deterministic per key)."""
    import jax  # pylint: disable=g-import-not-at-top
    k_key, f_key = jax.random.split(key)
    ks = jax.random.randint(k_key, (self.num_layers,), 0, len(self.kernels))
    fs = jax.random.randint(f_key, (self.num_layers,), 0, len(self.filters))
    return np.asarray(jax.device_get(jax.numpy.stack([ks, fs], 1).reshape(-1)), np.int32)

  def sample(self, key: jax.Array) -> Architecture:
    """A uniformly random architecture of the space."""
    return self.decode(self.sample_actions(key))
