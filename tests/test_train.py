import numpy as np
import pytest

from nasrl_jax import child, train
from nasrl_jax.space import Architecture

ARCH = Architecture((3, 3, 1, 3, 3), (64, 64, 128, 128, 256), (1, 1, 1, 1, 1))


def _data(n=160, size=32, seed=0):
  """Separable toy images: class 1 is brighter in the top half."""
  rng = np.random.default_rng(seed)
  y = rng.integers(0, 2, n)
  x = rng.integers(0, 120, (n, size, size, 1))
  x[:, : size // 2] += 100 * y[:, None, None, None]
  return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int32)


def _trainer(config_factory, epochs=4, lr=3e-3, num_train=128, num_eval=64, **kw):
  c = config_factory("quick")
  c.train.epochs = epochs
  c.train.learning_rate = lr
  c.model.head = "gap"
  for k, v in kw.items():
    c.train[k] = v
  x, y = _data()
  data = train.DeviceData.from_numpy(x, y)
  spec = child.ChildSpec.from_config(c, (32, 32, 1), 2)
  return train.Trainer(ARCH, spec, c.train, num_train, num_eval, data), y


def _split(train_idx, eval_idx, num_train=128, num_eval=64):
  return train.make_split(train_idx, np.zeros(len(train_idx)), eval_idx, num_train, num_eval)


def test_learns_separable_data_and_keeps_best_val_loss_weights(config_factory):
  tr, y = _trainer(config_factory)
  res = tr.fit(0, _split(np.arange(100), np.arange(100, 160)))
  assert res.val_acc.shape == (4,)
  assert res.best_val_acc > 0.9
  assert res.best_epoch == int(np.argmin(res.val_loss))
  assert res.best_val_loss == pytest.approx(res.val_loss.min(), rel=1e-5)
  # The kept weights are those of the best epoch: re-scoring reproduces its validation loss.
  probs = tr.predict(res.params, res.batch_stats, np.arange(100, 160))
  nll = -np.mean(np.log(probs[np.arange(60), y[100:160]]))
  assert nll == pytest.approx(res.best_val_loss, rel=1e-4)
  assert res.compile_seconds > 0 and res.train_seconds > 0


def test_deterministic_and_one_compilation_for_all_splits(config_factory):
  tr, _ = _trainer(config_factory, epochs=2)
  a = tr.fit(0, _split(np.arange(100), np.arange(100, 160)))
  b = tr.fit(0, _split(np.arange(100), np.arange(100, 160)))
  np.testing.assert_array_equal(a.val_loss, b.val_loss)
  np.testing.assert_array_equal(a.train_loss, b.train_loss)
  compiled = tr._compiled
  c = tr.fit(0, _split(np.arange(60, 150), np.arange(0, 50)))  # Another split, other sizes.
  assert tr._compiled is compiled and c.compile_seconds == 0.0
  assert not np.array_equal(a.val_loss, c.val_loss)
  d = tr.fit(1, _split(np.arange(100), np.arange(100, 160)))
  assert not np.array_equal(a.train_loss, d.train_loss)


def test_padding_examples_carry_no_weight():
  s = train.make_split([5, 6, 7], [0, 1, 2], [9], num_train=8, num_eval=4)
  assert s.train_w.tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
  assert set(s.train_idx[3:]) <= {5, 6, 7}
  assert s.eval_w.tolist() == [1, 0, 0, 0]
  with pytest.raises(ValueError, match="exceeds"):
    train.make_split(np.arange(9), np.zeros(9), [0], num_train=8, num_eval=4)


def test_diverging_child_raises(config_factory):
  tr, _ = _trainer(config_factory, epochs=2, lr=1e12)
  with pytest.raises(train.ChildTrainingError, match="non-finite"):
    tr.fit(0, _split(np.arange(100), np.arange(100, 160)))


def test_scan_epoch_loop_matches_steps(config_factory):
  a, _ = _trainer(config_factory, epochs=2, epoch_loop="steps")
  b, _ = _trainer(config_factory, epochs=2, epoch_loop="scan")
  ra = a.fit(0, _split(np.arange(100), np.arange(100, 160)))
  rb = b.fit(0, _split(np.arange(100), np.arange(100, 160)))
  # Same maths; XLA fuses the scanned loop differently, so only float rounding differs.
  np.testing.assert_allclose(ra.val_loss, rb.val_loss, rtol=2e-2)


def test_balancing_rotations_reach_the_model(config_factory):
  """A split of rot90 copies trains on rotated images: results differ from the unrotated split."""
  tr, _ = _trainer(config_factory, epochs=1)
  idx = np.arange(100)
  plain = tr.fit(0, train.make_split(idx, np.zeros(100), np.arange(100, 160), 128, 64))
  rotated = tr.fit(0, train.make_split(idx, np.full(100, 2), np.arange(100, 160), 128, 64))
  assert not np.allclose(plain.train_loss, rotated.train_loss)
