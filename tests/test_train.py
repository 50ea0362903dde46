"""Tests of nasrl_jax.train: pure training functions, one compile per program, vmap == sequential."""

import time

import jax
import numpy as np
import optax
import pytest

from nasrl_jax import child, compiles, rng, train
from nasrl_jax.data import balance
from nasrl_jax.space import Architecture

ARCH = Architecture((3, 3, 1, 3, 3), (64, 64, 128, 128, 256), (1, 1, 1, 1, 1))
N = 160


def _data(n=N, size=32, seed=0):
  """Separable toy images: class 1 is brighter in the top half."""
  r = np.random.default_rng(seed)
  y = r.integers(0, 2, n)
  x = r.integers(0, 120, (n, size, size, 1))
  x[:, : size // 2] += 100 * y[:, None, None, None]
  return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int32)


def _config(config_factory, **train_kw):
  c = config_factory("quick")
  c.model.head = "gap"
  c.train.epochs = 4
  c.train.learning_rate = 3e-3
  c.data.balance = "none"
  c.model.batch_norm = True  # The engine with batch-norm statistics, no augmentation.
  c.data.augment = ()
  c.train.cpu_opt_level, c.train.cpu_fusion_emitters = 0, False  # The tiny config's fast compiles.
  for k, v in train_kw.items():
    c.train[k] = v
  return c


def _fns(c, sizes, mode="sequential", chunk=0, arch=ARCH):
  spec = child.ChildSpec.from_config(c, (32, 32, 1), 2)
  return train.make_train_fn(arch, spec, train.Recipe.from_config(c), sizes, num_images=N,
                             split_batching=mode, vmap_chunk=chunk)


def _key(split=0, replica=0):
  return rng.train_key(rng.root_key(0), seed=0, outer=0, split=split, replica=replica)


SIZES = train.Sizes(128, 64)


@pytest.fixture(scope="module")
def setup():
  from tests.conftest import load_config
  c = _config(load_config)
  x, y = _data()
  data = train.DeviceData.from_numpy(x, y)
  return c, data, y, _fns(c, SIZES)


def _split(train_idx, eval_idx, sizes=SIZES, **kw):
  return train.make_split(train_idx, np.zeros(len(train_idx)), eval_idx, sizes, **kw)


def test_learns_and_keeps_the_best_validation_loss_weights(setup):
  c, data, y, fns = setup
  val = np.arange(100, 160)
  res = fns.train(_key(), data, _split(np.arange(100), val), test_idx=val)
  assert res.val_acc.shape == (4,) and res.val_probs.shape == (4, 60, 2)
  assert res.best_val_acc > 0.9
  assert res.best_epoch == int(np.argmin(res.val_loss))
  assert res.best_val_loss == pytest.approx(res.val_loss.min(), rel=1e-6)
  # The kept weights are the best epoch's: predicting the validation rows with them at the end
  # reproduces that epoch's validation loss and probabilities.
  nll = -np.mean(np.log(res.test_probs[np.arange(60), y[val]]))
  assert nll == pytest.approx(res.best_val_loss, rel=1e-4)
  np.testing.assert_allclose(res.test_probs, res.val_probs[res.best_epoch], atol=1e-5)
  np.testing.assert_array_equal(res.val_labels, y[val])
  # More test rows than the evaluation size: scored in chunks, padding dropped, order kept.
  big = np.concatenate([val, np.arange(0, 90)])
  again = fns.train(_key(), data, _split(np.arange(100), val), test_idx=big)
  assert again.test_probs.shape == (150, 2)
  np.testing.assert_allclose(again.test_probs[:60], res.test_probs, atol=1e-6)


def test_train_seconds_count_until_the_results_are_on_the_host(setup, monkeypatch):
  """Dispatch is asynchronous (a search's children were timed at 0.17 s of 8.6 s when counted
  before the sync): the seconds end after the one device-to-host copy. A sync slowed by 1 s here
  stands in for computation still running when the call returns from dispatch."""
  c, data, _, fns = setup
  split = _split(np.arange(100), np.arange(100, 160))
  fns.train(_key(), data, split)  # Compiled.
  get = jax.device_get
  monkeypatch.setattr(jax, "device_get", lambda x: (time.sleep(1.0), get(x))[1])
  t0 = time.perf_counter()
  res = fns.train(_key(), data, split)
  wall = time.perf_counter() - t0
  assert 1.0 <= res.train_seconds <= wall, (res.train_seconds, wall)


def test_one_compile_serves_every_split_and_key(setup):
  c, data, _, fns = setup
  log = compiles.install()
  fns.train(_key(), data, _split(np.arange(100), np.arange(100, 160)))
  before = log.snapshot()["compiles"]
  a = fns.train(_key(), data, _split(np.arange(100), np.arange(100, 160)))
  b = fns.train(_key(), data, _split(np.arange(100), np.arange(100, 160)))
  d = fns.train(_key(split=1), data, _split(np.arange(60, 150), np.arange(0, 50)))
  e = fns.train(_key(replica=1), data, _split(np.arange(100), np.arange(100, 160)))
  assert log.snapshot()["compiles"] == before  # Other splits, sizes and keys: no compile.
  np.testing.assert_array_equal(a.val_loss, b.val_loss)  # Same key and split: same run.
  assert not np.array_equal(a.val_loss, d.val_loss)
  assert not np.array_equal(a.train_loss, e.train_loss)  # Another replica: another stream.
  # A second TrainFns of the same architecture and settings reuses the cached programs.
  again = _fns(c, SIZES)
  again.train(_key(), data, _split(np.arange(100), np.arange(100, 160)))
  assert log.snapshot()["compiles"] == before


def test_vmapped_and_sequential_training_agree(config_factory):
  """20 steps (one per epoch) on three splits: losses to 1e-4, the same test metrics.

  SGD: Adam's normalised update turns float-rounding differences of near-zero gradients into
  visible ones (measured 2e-4 after 8 steps), which would test Adam, not the batching.
  """
  c = _config(config_factory, epochs=20, batch_size=16, learning_rate=1e-2, optimizer="sgd")
  sizes = train.Sizes(16, 64)
  x, y = _data()
  data = train.DeviceData.from_numpy(x, y)
  splits = [_split(np.arange(j * 10, j * 10 + 16), np.arange(100, 160), sizes) for j in range(3)]
  keys = [_key(split=j) for j in range(3)]
  test = np.arange(100, 130)
  seq = _fns(c, sizes, "sequential").train_many(keys, data, splits, test_idx=test)
  vm = _fns(c, sizes, "vmap", chunk=2).train_many(keys, data, splits, test_idx=test)  # 2 + 1 padded.
  for a, b in zip(seq, vm):
    np.testing.assert_allclose(a.train_loss, b.train_loss, atol=1e-4)
    np.testing.assert_allclose(a.val_loss, b.val_loss, atol=1e-4)
    assert a.best_epoch == b.best_epoch
    np.testing.assert_array_equal(np.argmax(a.test_probs, 1), np.argmax(b.test_probs, 1))
    np.testing.assert_allclose(a.test_probs, b.test_probs, atol=1e-4)


@pytest.mark.parametrize("optimizer,weight_decay", [("adam", 0.0), ("adam", 1e-4), ("sgd", 0.0)])
def test_host_initial_state_matches_optax_init(config_factory, optimizer, weight_decay):
  c = _config(config_factory, optimizer=optimizer, weight_decay=weight_decay)
  spec = child.ChildSpec.from_config(c, (32, 32, 1), 2)
  core = train._Core(ARCH, spec, train.Recipe.from_config(c), SIZES, N)  # pylint: disable=protected-access
  _, params, stats = child.init(ARCH, spec, 0)
  host = core.host_state(params, stats, _key())
  ref = core.optimizer.init(params)
  for a, b in zip(jax.tree.leaves(host.opt_state), jax.tree.leaves(ref)):
    np.testing.assert_array_equal(a, b)
    assert np.asarray(a).dtype == np.asarray(b).dtype
  assert jax.tree.structure(host.opt_state) == jax.tree.structure(ref)


def test_padding_class_weights_and_balanced_sampling():
  labels = np.array([0, 0, 1, 1, 1, 1, 0, 1])
  sizes = train.Sizes(8, 4)
  s = train.make_split([0, 2, 3, 4], [0, 0, 0, 0], [6], sizes, labels=labels,
                       class_weighted=True, balanced_sampling=True)
  assert s.train_w.tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
  assert set(s.train_idx[4:].tolist()) <= {0, 2, 3, 4}
  assert s.eval_w.tolist() == [1, 0, 0, 0]
  # One S0 and three S1 images: weight n / (C n_c) = 2 and 2/3; sampling gives each class 1/2.
  np.testing.assert_allclose(s.class_weight, [2.0, 2.0 / 3.0], rtol=1e-6)
  np.testing.assert_allclose(s.train_p[:4], [0.5, 1 / 6, 1 / 6, 1 / 6], rtol=1e-6)
  assert s.train_p[4:].sum() == 0
  with pytest.raises(ValueError, match="exceeds"):
    train.make_split(np.arange(9), np.zeros(9), [0], sizes)


def test_diverging_child_is_not_finite(config_factory):
  c = _config(config_factory, epochs=2, learning_rate=1e12)
  x, y = _data()
  fns = _fns(c, SIZES)
  res = fns.train(_key(), train.DeviceData.from_numpy(x, y), _split(np.arange(100),
                                                                  np.arange(100, 160)))
  assert not res.finite


def test_augmentations_never_rotate_and_ignore_the_label(config_factory):
  """hflip mirrors the lateral axis only (depth stays vertical); gain scales; no label enters."""
  c = _config(config_factory)
  c.data.augment = ("hflip", "gain")
  c.data.gain_jitter = 0.2
  spec = child.ChildSpec.from_config(c, (32, 32, 1), 2)
  core = train._Core(ARCH, spec, train.Recipe.from_config(c), SIZES, N)  # pylint: disable=protected-access
  x = np.asarray(_data(16)[0], np.float32)
  out = np.asarray(core._augment(x, jax.random.key(3)))  # pylint: disable=protected-access
  for a, b in zip(x, out):
    flipped = a[:, ::-1]
    cand = [a, flipped]
    # b = g * candidate (clipped): the ratio to the right candidate is one constant per image.
    ok = False
    for cnd in cand:
      m = cnd > 5
      ratio = b[m] / cnd[m]
      if np.allclose(ratio[b[m] < 254], ratio[b[m] < 254].mean(), rtol=1e-4):
        ok = True
    assert ok
  c.data.augment = ("rot90",)
  with pytest.raises(ValueError, match="augment"):
    train.Recipe.from_config(c)


def test_rot90_recipe_rotates_the_copies(setup):
  """With data.balance=rot90 the split's quarter turns reach the model: results change."""
  c, data, _, _ = setup
  c = c.copy_and_resolve_references()
  c.data.balance = "rot90"
  c.train.epochs = 1
  fns = _fns(c, SIZES)
  idx = np.arange(100)
  plain = fns.train(_key(), data, train.make_split(idx, np.zeros(100), np.arange(100, 160),
                                                   SIZES))
  turned = fns.train(_key(), data, train.make_split(idx, np.full(100, 2), np.arange(100, 160),
                                                    SIZES))
  assert not np.allclose(plain.train_loss, turned.train_loss)
  np.testing.assert_array_equal(balance.rotate_batch(data.images[:2], np.array([2, 0]))[0],
                                np.rot90(np.asarray(data.images[0]), 2))


def test_reward_metrics_follow_the_weights_rule(setup):
  from nasrl_jax import reinforce
  c, data, y, fns = setup
  val = np.arange(100, 160)
  res = fns.train(_key(), data, _split(np.arange(100), val))
  acc = reinforce.metric_value(res, "val_accuracy", 2)
  auc = reinforce.metric_value(res, "val_auroc", 2)
  nll = reinforce.metric_value(res, "val_nll", 2)
  assert acc == pytest.approx(res.val_acc.max())  # The paper: the best epoch's accuracy.
  assert nll == pytest.approx(-res.best_val_loss)  # The kept weights' NLL.
  from sklearn.metrics import roc_auc_score
  assert auc == pytest.approx(roc_auc_score(y[val], res.val_probs[res.best_epoch][:, 1]))


def test_min_epochs_never_keeps_an_earlier_epoch(setup):
  """min_epochs = 2: epochs 0 and 1 are never kept, whatever their validation loss."""
  c, data, _, fns = setup
  plain = fns.train(_key(), data, _split(np.arange(100), np.arange(100, 160)))
  c2 = c.copy_and_resolve_references()
  c2.train.min_epochs = 2
  res = _fns(c2, SIZES).train(_key(), data, _split(np.arange(100), np.arange(100, 160)))
  np.testing.assert_allclose(res.val_loss, plain.val_loss, rtol=1e-6)  # Same training.
  assert res.best_epoch >= 2
  assert res.best_epoch == 2 + int(np.argmin(res.val_loss[2:]))
  assert res.best_val_loss == pytest.approx(res.val_loss[2:].min(), rel=1e-6)
  c2.train.min_epochs = c2.train.epochs
  with pytest.raises(ValueError, match="min_epochs"):
    train.Recipe.from_config(c2)


def test_class_weighted_validation_loss_weighs_like_the_training_loss(setup):
  """val_weighting=class: the validation NLL is the class-weighted mean of the per-image NLL,
  with the split's class weights (those of the training loss)."""
  c, data, y, _ = setup
  c2 = c.copy_and_resolve_references()
  c2.train.val_weighting = "class"
  val = np.arange(100, 160)
  split = _split(np.arange(100), val, labels=y, class_weighted=True)
  res = _fns(c2, SIZES).train(_key(), data, split)
  plain = _fns(c, SIZES).train(_key(), data, split)
  np.testing.assert_allclose(res.train_loss, plain.train_loss, rtol=1e-6)  # Training unchanged.
  w = np.asarray(split.class_weight)[y[val]]
  for e in range(c.train.epochs):
    nll = -np.log(res.val_probs[e][np.arange(60), y[val]])
    assert res.val_loss[e] == pytest.approx(np.sum(w * nll) / np.sum(w), rel=1e-4)
    assert plain.val_loss[e] == pytest.approx(np.mean(nll), rel=1e-4)
  c2.train.val_weighting = "balanced"
  with pytest.raises(ValueError, match="val_weighting"):
    train.Recipe.from_config(c2)
