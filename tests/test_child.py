import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasrl_jax import child
from nasrl_jax.space import Architecture, VGG19


def test_vgg19_param_count_is_the_papers():
  assert child.count_params(VGG19) == 139_577_282
  # Hand count: 16 conv layers (1 input channel) + 25088-4096-4096-2 head.
  conv = 0
  cin = 1
  for f in VGG19.filters:
    conv += 3 * 3 * cin * f + f
    cin = f
  head = 25088 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 2 + 2
  assert conv + head == 139_577_282


def test_batch_norm_and_gap_head_param_counts():
  bn = child.count_params(VGG19, batch_norm=True)
  assert bn - 139_577_282 == 2 * sum(VGG19.filters)  # scale + offset per channel
  gap = child.count_params(VGG19, head="gap")
  assert gap == 139_577_282 - (25088 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 2 + 2) + 512 * 2 + 2


def test_flops_by_hand_on_a_tiny_net():
  arch = Architecture((3, 1), (4, 8), (1, 1))
  spec = child.ChildSpec((8, 8, 1), 2, "gap", 16, 0.5, False, 1.0)
  # conv1 at 8x8: 2*64*9*1*4; pool -> 4x4; conv2: 2*16*1*4*8; pool -> 2x2; gap dense 2*8*2.
  assert child.count_flops(arch, spec) == 2 * 64 * 9 * 4 + 2 * 16 * 32 + 2 * 8 * 2
  assert child.count_flops(VGG19, child.ChildSpec()) > 39e9  # VGG19 at 224: ~39 GFLOPs (1 chan).


@pytest.mark.parametrize("head,bn,dtype", [("vgg", True, "float32"), ("gap", False, "bfloat16")])
def test_apply_shapes_determinism_and_batch_stats(head, bn, dtype):
  arch = Architecture((3, 5, 1, 3, 7), (64, 128, 64, 256, 512), (1, 1, 1, 1, 1))
  spec = child.ChildSpec((32, 32, 1), 2, head, 256, 0.5, bn, 0.125, dtype)
  g, p, s = child.init(arch, spec, seed=7)
  _, p2, _ = child.init(arch, spec, seed=7)
  _, p3, _ = child.init(arch, spec, seed=8)
  leaves = jax.tree.leaves(p)
  assert all(np.array_equal(a, b) for a, b in zip(leaves, jax.tree.leaves(p2)))
  assert not all(np.array_equal(a, b) for a, b in zip(leaves, jax.tree.leaves(p3)))
  assert sum(np.asarray(x).size for x in leaves) == child.count_params(
      arch, (32, 32, 1), 2, head, bn, 256, 0.125)
  x = jnp.asarray(np.random.default_rng(0).integers(0, 255, (4, 32, 32, 1)), jnp.uint8)
  logits, new_stats = child.apply(g, p, s, x, train=True, key=jax.random.key(0))
  assert logits.shape == (4, 2) and logits.dtype == jnp.float32
  assert np.all(np.isfinite(np.asarray(logits)))
  if bn:  # Training updates the running statistics; evaluation does not.
    assert not np.allclose(jax.tree.leaves(new_stats)[0], jax.tree.leaves(s)[0])
    _, eval_stats = child.apply(g, p, s, x, train=False)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(eval_stats), jax.tree.leaves(s)))
  e1, _ = child.apply(g, p, s, x, train=False)
  e2, _ = child.apply(g, p, s, x, train=False)
  np.testing.assert_array_equal(e1, e2)


def test_dropout_only_in_training():
  arch = Architecture((3,), (64,), (1,))
  spec = child.ChildSpec((4, 4, 1), 2, "vgg", 512, 0.5, False, 1.0)
  g, p, s = child.init(arch, spec, seed=0)
  x = jnp.full((2, 4, 4, 1), 200, jnp.uint8)
  a, _ = child.apply(g, p, s, x, train=True, key=jax.random.key(1))
  b, _ = child.apply(g, p, s, x, train=True, key=jax.random.key(2))
  assert not np.allclose(a, b)


def test_he_init_scale():
  spec = child.ChildSpec((32, 32, 1), 2, "gap", 16, 0.5, False, 1.0)
  _, p, _ = child.init(Architecture((3, 3), (64, 512), (1, 1)), spec, seed=0)
  k = np.asarray(p["convs"][1]["kernel"][...])
  assert k.shape == (3, 3, 64, 512)
  assert abs(k.std() - np.sqrt(2 / (9 * 64))) < 0.01 * np.sqrt(2 / (9 * 64)) * 10
  assert np.abs(k).max() <= 2 * np.sqrt(2 / (9 * 64)) / 0.87962566 + 1e-6


def test_too_small_input_is_refused():
  with pytest.raises(ValueError, match="too small"):
    child.init(VGG19, child.ChildSpec((16, 16, 1)), 0)


def test_width_floor_never_builds_a_narrower_layer():
  arch = Architecture((3, 3, 1, 3, 3), (64, 64, 128, 256, 512), (1, 1, 1, 1, 1))
  spec = child.ChildSpec((32, 32, 1), 2, "gap", 16, 0.5, False, 0.0625, min_width=8)
  _, params, _ = child.abstract_state(arch, spec)
  widths = [params["convs"][i]["kernel"].shape[-1] for i in range(5)]
  assert widths == [8, 8, 8, 16, 32]  # 64/16 = 4 -> 8; the others scale as before.
  no_floor = child.ChildSpec((32, 32, 1), 2, "gap", 16, 0.5, False, 0.0625)
  assert [no_floor.width(f) for f in arch.filters] == [4, 4, 8, 16, 32]
  assert child.count_params_for(arch, spec) > child.count_params_for(arch, no_floor)
  assert child.count_params(VGG19, min_width=8) == 139_577_282  # Full width: no layer below 8.
