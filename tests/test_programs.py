"""The run-wide program cache stays under the kernel's memory-mapping limit.

Every XLA:CPU executable holds ~900 memory mappings; past vm.max_map_count XLA:CPU fails with
"LLVM compilation error: Cannot allocate memory" and a segfault (the cpu run, outer fold 3). The
cache drops its least recently used programs once the process holds more than its limit.
"""

import dataclasses

import jax
import numpy as np
import pytest

from nasrl_jax import child, programs, rng, train
from nasrl_jax.space import Architecture


def test_least_recently_used_entries_go_first_and_the_newest_stays():
  built = []
  holder = {}
  # A fake process: one mapping per cached entry, released when the entry is dropped.
  cache = programs.ProgramCache(maps_limit=3, count_maps=lambda: len(holder["cache"]))
  holder["cache"] = cache

  def build(name):
    def make():
      built.append(name)
      return programs.Programs(name, name, name, 1.0, 0)
    return make

  for k in ("a", "b", "c"):
    cache.get(k, build(k))
  assert cache.get("a", build("a")).compile_seconds == 0.0  # A hit; "a" is now the newest.
  assert cache.evicted == 0 and len(cache) == 3
  cache.get("d", build("d"))  # 4 > 3: the least recently used ("b") goes.
  assert len(cache) == 3 and cache.evicted == 1
  assert "b" not in cache and all(k in cache for k in "acd")
  cache.get("b", build("b"))  # Needed again: rebuilt (and "c", now the oldest, goes).
  assert built == ["a", "b", "c", "d", "b"] and "c" not in cache and cache.evicted == 2


def test_the_newest_entry_is_kept_even_over_the_limit():
  cache = programs.ProgramCache(maps_limit=1, count_maps=lambda: 10)
  for k in "abc":
    cache.get(k, lambda k=k: programs.Programs(k, k, k, 1.0, 0))
  assert len(cache) == 1 and "c" in cache and cache.evicted == 2


def test_unbounded_without_a_limit():
  cache = programs.ProgramCache(maps_limit=0, count_maps=lambda: 10**9)
  for k in "abc":
    cache.get(k, lambda k=k: programs.Programs(k, k, k, 1.0, 0))
  assert len(cache) == 3 and cache.evicted == 0


def test_compiler_options_follow_the_recipe(config_factory):
  """CPU child programs get the recipe's opt level and emitter choice; other platforms nothing."""
  recipe = train.Recipe.from_config(config_factory("quick"))
  cpu, gpu = jax.local_devices()[0], type("Gpu", (), {"platform": "gpu"})()
  assert recipe.cpu_fusion_emitters and recipe.cpu_opt_level == 1
  assert programs.compiler_options(recipe, cpu) == {"xla_backend_optimization_level": 1}
  legacy = dataclasses.replace(recipe, cpu_opt_level=0, cpu_fusion_emitters=False)
  assert programs.compiler_options(legacy, cpu) == {"xla_backend_optimization_level": 0,
                                                     "xla_cpu_use_fusion_emitters": False}
  assert programs.compiler_options(dataclasses.replace(recipe, cpu_opt_level=-1), cpu) is None
  assert programs.compiler_options(legacy, gpu) is None
  tiny = train.Recipe.from_config(config_factory("tiny"))
  assert not tiny.cpu_fusion_emitters and tiny.cpu_opt_level == 0


def test_older_emitters_train_the_same_child(config_factory):
  """The emitter choice is a compile-speed setting: the same child, key and split give the same
  losses whichever emitters XLA:CPU uses, up to float rounding grown by 2 epochs of training
  (measured: 0.09 % apart; the scale-out tests allow the same 0.5 %)."""
  c = config_factory("tiny")
  spec = child.ChildSpec.from_config(c, (32, 32, 1), 2)
  recipe = train.Recipe.from_config(c)
  sizes = train.Sizes(16, 16)
  r = np.random.default_rng(1)
  y = (np.arange(32) % 2).astype(np.int32)
  x = (r.integers(0, 150, (32, 32, 32, 1)) + 60 * y[:, None, None, None]).astype(np.uint8)
  data = train.DeviceData.from_numpy(x, y, jax.local_devices()[0])
  split = train.make_split(np.arange(16), np.zeros(16), np.arange(16, 32), sizes)
  arch = Architecture((3, 5, 1, 3, 7), (64, 128, 64, 256, 64), (1, 1, 1, 1, 1))
  key = rng.train_key(rng.root_key(0), seed=0, outer=0, split=0, replica=0)
  results = []
  for emitters in (True, False):
    fns = train.make_train_fn(arch, spec, dataclasses.replace(recipe, cpu_fusion_emitters=emitters),
                              sizes, num_images=32, cache=programs.ProgramCache(maps_limit=0))
    results.append(fns.train(key, data, split))
  a, b = results
  assert a.best_epoch == b.best_epoch
  np.testing.assert_allclose(a.best_val_loss, b.best_val_loss, rtol=5e-3)
  np.testing.assert_allclose(a.val_acc, b.val_acc)


@pytest.mark.slow(cpu_s=16)
def test_real_programs_release_their_mappings_and_evicted_ones_still_train(config_factory):
  """Compiled children on XLA:CPU: the process's mappings stay near the limit, not N x ~900."""
  c = config_factory("tiny")
  spec = child.ChildSpec.from_config(c, (32, 32, 1), 2)
  # XLA:CPU's fusion emitters (the default): their programs hold the ~900 mappings each; with the
  # older emitters (the tiny config's) a child holds almost none (measured: 3 fewer).
  recipe = dataclasses.replace(train.Recipe.from_config(c), cpu_fusion_emitters=True)
  sizes = train.Sizes(16, 16)
  r = np.random.default_rng(0)
  x = r.integers(0, 255, (32, 32, 32, 1)).astype(np.uint8)
  y = (np.arange(32) % 2).astype(np.int32)
  data = train.DeviceData.from_numpy(x, y, jax.local_devices()[0])
  split = train.make_split(np.arange(16), np.zeros(16), np.arange(16, 32), sizes)
  dev = jax.local_devices()[0]
  archs = [Architecture((k, 3, 1, 3, 1), (64, f, 64, 128, 64), (1, 1, 1, 1, 1))
           for k, f in ((1, 64), (3, 128), (5, 256))]

  probe = programs.ProgramCache(maps_limit=0)
  before = programs.process_maps()
  train.make_train_fn(archs[0], spec, recipe, sizes, num_images=32, cache=probe).programs(dev)
  one = programs.process_maps() - before
  assert one > 100, one  # A compiled child really holds many mappings (else the test is moot).
  probe.clear()

  base = programs.process_maps()
  cache = programs.ProgramCache(maps_limit=base + int(1.5 * one))
  for arch in archs:
    train.make_train_fn(arch, spec, recipe, sizes, num_images=32, cache=cache).programs(dev)
  assert cache.evicted >= 2 and len(cache) <= 2, (cache.evicted, len(cache))
  assert programs.process_maps() <= base + 2.5 * one  # Not 3 programs' worth and growing.

  fns = train.make_train_fn(archs[0], spec, recipe, sizes, num_images=32, cache=cache)
  res = fns.train(rng.train_key(rng.root_key(0), seed=0, outer=0, split=0, replica=0), data,
                  split)
  assert np.isfinite(res.best_val_loss)
