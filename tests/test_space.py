import jax
import numpy as np
import pytest

from nasrl_jax import space as space_lib
from nasrl_jax.space import Architecture, SearchSpace, VGG19


def test_vgg19_is_the_paper_network():
  assert VGG19.blocks == (2, 2, 4, 4, 4)
  assert VGG19.kernels == (3,) * 16
  assert VGG19.filters == (64, 64, 128, 128) + (256,) * 4 + (512,) * 8
  assert str(VGG19).startswith("3x64 3x64 | 3x128 3x128 | 3x256")
  assert str(VGG19).count("|") == 4


def test_size_is_16_to_the_16():
  assert SearchSpace().size == 16 ** 16
  assert SearchSpace(kernels=(1, 3), filters=(8,), blocks=(1, 1)).size == 4


def test_encode_decode_round_trip_and_string_form():
  sp = SearchSpace()
  actions = sp.encode(VGG19)
  assert actions.shape == (32,)
  assert list(actions[:4]) == [1, 0, 1, 0]  # kernel 3 = index 1, filters 64 = index 0.
  assert sp.decode(actions) == VGG19
  arch = sp.sample(jax.random.key(3))
  assert sp.decode(sp.encode(arch)) == arch
  assert Architecture.from_string(str(arch)) == arch
  assert Architecture.from_json(arch.to_json()) == arch


def test_architecture_is_hashable_and_immutable():
  a = Architecture((3,) * 16, (64,) * 16)
  b = Architecture([3] * 16, [64] * 16)
  assert a == b and hash(a) == hash(b) and len({a, b}) == 1
  with pytest.raises(Exception):
    a.kernels = (1,) * 16


def test_uniform_sampling_is_deterministic_per_key_and_covers_choices():
  sp = SearchSpace()
  assert sp.sample(jax.random.key(0)) == sp.sample(jax.random.key(0))
  archs = [sp.sample(jax.random.key(i)) for i in range(40)]
  assert len(set(archs)) == 40
  ks = np.concatenate([a.kernels for a in archs])
  assert set(ks) == {1, 3, 5, 7}
  # Roughly uniform: each kernel size about a quarter of 640 draws.
  counts = np.array([np.sum(ks == k) for k in (1, 3, 5, 7)])
  assert counts.min() > 110 and counts.max() < 210


def test_out_of_space_architecture_and_bad_lengths_are_refused():
  sp = SearchSpace()
  with pytest.raises(ValueError, match="outside the search space"):
    sp.encode(Architecture((2,) * 16, (64,) * 16))
  with pytest.raises(ValueError, match="one kernel and one filter"):
    Architecture((3,) * 15, (64,) * 16)
  with pytest.raises(ValueError):
    sp.decode([0] * 31)
  with pytest.raises(ValueError, match="odd"):
    SearchSpace(kernels=(2, 3))


def test_width_multiplier():
  sp = SearchSpace(width_multiplier=0.125)
  assert sp.width(64) == 8 and sp.width(512) == 64
  assert SearchSpace(width_multiplier=0.001).width(64) == 1
  assert space_lib.SearchSpace.from_config(
      type("C", (), dict(kernels=(1, 3), filters=(4,), blocks=(1,), width_multiplier=2.0))
  ).width(4) == 8
