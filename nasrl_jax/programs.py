"""Compiled child programs: ahead-of-time compiles of a training's step and evaluate functions,
cached run-wide by (architecture, spec, recipe, sizes, chunk, device).

An architecture seen again (another outer fold, re-scoring, a test training) never compiles
again while its programs are cached. The cache is bounded by the process's memory mappings, not by
RAM: every XLA:CPU executable is an LLVM JIT library holding ~900 mappings (measured 2026-12-03 on
12 cpu-recipe children: 537 -> 11,004; tests/test_programs.py measures a tiny child's share on
every run), and Linux refuses mappings past `vm.max_map_count` (65,530 by
default), after which XLA:CPU fails with "LLVM compilation error: Cannot allocate memory" and a
segfault: the cpu run died that way in outer fold 3, twice. So past half of that limit the least
recently used programs are dropped (their mappings go with them); one needed again is recompiled,
from the persistent compilation cache when it is on.

Program names carry the cache key's hash (`nasrl_child_step_<hash>`), which is how `compiles.py`
counts them from JAX's own events. `compile_programs` takes a training core (the pure
step/evaluate functions of `train._Core`) and lowers them with abstract, device-placed arguments.
"""

import collections
import dataclasses
import functools
import hashlib
import json
import threading
import time
from typing import Any, Callable, NamedTuple, Optional

from absl import logging
import jax
import jax.numpy as jnp

from nasrl_jax.splits import Split

PROGRAM_PREFIX = "nasrl_child_"  # compiles.py counts programs whose name starts with this.


class Programs(NamedTuple):
  step: Any  # Compiled executable.
  evaluate: Any
  key: str  # Hash of the cache key (in the program names).
  compile_seconds: float  # Spent compiling these two (0.0 when they came from the cache).
  memory_bytes: int  # Peak-memory estimate of the step program (compiled memory analysis).


def program_key(arch, spec, recipe, sizes, chunk, device) -> str:
  text = json.dumps([str(arch), spec.to_json(), dataclasses.asdict(recipe),
                     dataclasses.asdict(sizes), int(chunk), str(device)], sort_keys=True,
                    default=str)
  return hashlib.sha1(text.encode()).hexdigest()[:12]


MAPS_FRACTION = 0.5  # Share of vm.max_map_count the cached programs may fill (see above).


def process_maps() -> int:
  """Memory mappings of this process (Linux: lines of /proc/self/maps; elsewhere 0)."""
  try:
    with open("/proc/self/maps", "rb") as f:
      return sum(1 for _ in f)
  except OSError:
    return 0


def default_maps_limit() -> int:
  """MAPS_FRACTION of the kernel's per-process mapping limit (0 = unbounded: no such limit)."""
  try:
    with open("/proc/sys/vm/max_map_count", encoding="ascii") as f:
      return int(MAPS_FRACTION * int(f.read().strip()))
  except (OSError, ValueError):
    return 0


class ProgramCache:
  """Compiled (step, evaluate) programs of the run, by program key; thread-safe, bounded.

  One lock per key, so two threads asking for the same program compile it once and different
  programs compile concurrently (ahead-of-time compilation of the next children). After each new
  entry, while the process holds more than `maps_limit` memory mappings, the least recently used
  entries are dropped (never the newest); `evicted` counts them.
  """

  def __init__(self, maps_limit: Optional[int] = None,
               count_maps: Callable[[], int] = process_maps):
    self._lock = threading.Lock()
    self._entries = collections.OrderedDict()
    self._key_locks = {}
    self.archs = {}  # program key -> architecture string (distinct architectures of the run).
    self.maps_limit = default_maps_limit() if maps_limit is None else int(maps_limit)
    self._count_maps = count_maps
    self.evicted = 0

  def get(self, key, build):
    with self._lock:
      lock = self._key_locks.setdefault(key, threading.Lock())
    with lock:
      with self._lock:
        entry = self._entries.get(key)
        if entry is not None:
          self._entries.move_to_end(key)
          return entry._replace(compile_seconds=0.0)
      entry = build()
      with self._lock:
        self._entries[key] = entry
        self._evict(keep=key)
      return entry

  def _evict(self, keep):
    """Drops least recently used entries while the process is over its mapping budget."""
    if self.maps_limit <= 0:
      return
    maps, dropped = self._count_maps(), 0
    while maps > self.maps_limit and len(self._entries) > 1:
      oldest = next(iter(self._entries))
      if oldest == keep:
        break
      del self._entries[oldest]
      dropped += 1
      maps = self._count_maps()
    if dropped:
      if not self.evicted:
        logging.info("program cache: the process holds more than %d memory mappings (its "
                     "limit); least recently used programs are dropped from now on",
                     self.maps_limit)
      self.evicted += dropped

  def __contains__(self, key):
    with self._lock:
      return key in self._entries

  def __len__(self):
    return len(self._entries)

  def clear(self):
    with self._lock:
      self._entries.clear()
      self._key_locks.clear()
      self.archs.clear()
      self.evicted = 0


PROGRAMS = ProgramCache()


def named(fn, name):
  """`fn` under `name`: JAX reports compiles by the function's name (compiles.py)."""
  @functools.wraps(fn)
  def wrapper(*args):
    return fn(*args)
  wrapper.__name__ = wrapper.__qualname__ = name
  return wrapper


def compile_programs(core, chunk: int, device, key: str) -> Programs:
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
  options = compiler_options(core.recipe, device)
  step_exe = jax.jit(named(step, f"{PROGRAM_PREFIX}step_{key}"), donate_argnums=(0,)).lower(
      state, images, labels, split).compile(compiler_options=options)
  use_best = jax.ShapeDtypeStruct((), jnp.int32, sharding=sharding)
  eval_exe = jax.jit(named(evaluate, f"{PROGRAM_PREFIX}eval_{key}"), donate_argnums=(0,)).lower(
      state, images, labels, split.eval_idx, split.eval_w, split.class_weight, use_best).compile(
          compiler_options=options)
  memory = memory_bytes(step_exe)
  return Programs(step_exe, eval_exe, key, time.perf_counter() - t0, memory)


def compiler_options(recipe, device) -> Optional[dict]:
  """XLA options of a child's programs: the recipe's CPU settings (None: XLA's defaults)."""
  if device.platform != "cpu":
    return None
  options = {}
  if recipe.cpu_opt_level >= 0:
    options["xla_backend_optimization_level"] = recipe.cpu_opt_level
  if not recipe.cpu_fusion_emitters:
    options["xla_cpu_use_fusion_emitters"] = False
  return options or None


def memory_bytes(executable) -> int:
  """Peak device memory of a compiled program from XLA's memory analysis (0 if unavailable)."""
  try:
    m = executable.memory_analysis()
  except Exception:  # pylint: disable=broad-except  (not every backend implements it)
    return 0
  if m is None:
    return 0
  return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
             - m.alias_size_in_bytes)
