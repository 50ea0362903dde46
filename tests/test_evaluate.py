"""Tests of nasrl_jax.evaluate: balancing modes, padded sizes, winner choice, re-scoring records."""

import numpy as np
import pytest

from nasrl_jax import evaluate, search
from nasrl_jax import train as train_lib
from nasrl_jax.data import folds as folds_lib
from nasrl_jax.errors import UserInputError
from nasrl_jax.space import Architecture

LABELS = np.array([0] * 5 + [1] * 15 + [0] * 5 + [1] * 5)
TRAIN = np.arange(20)


@pytest.mark.parametrize("mode", ["none", "loss_weight", "upright_sample", "repeat"])
def test_no_default_balance_mode_rotates_anything(config_factory, mode):
  """Only the paper's rot90 turns images, and then only minority copies: the orientation cue."""
  c = config_factory("tiny")
  c.data.balance = mode
  idx, rot = evaluate.balanced_rows(TRAIN, LABELS, c.data, np.random.default_rng(0))
  assert not rot.any()
  if mode == "repeat":
    assert np.sum(LABELS[idx] == 0) == np.sum(LABELS[idx] == 1) == 15
  else:
    np.testing.assert_array_equal(idx, TRAIN)


def test_rot90_rotates_only_minority_copies(config_factory):
  c = config_factory("tiny")
  c.data.balance = "rot90"
  idx, rot = evaluate.balanced_rows(TRAIN, LABELS, c.data, np.random.default_rng(0))
  assert np.sum(LABELS[idx] == 0) == np.sum(LABELS[idx] == 1) == 15
  assert set(LABELS[idx[rot > 0]]) == {0}  # The confound the default modes avoid.
  c.data.balance = "flip"
  with pytest.raises(UserInputError, match="data.balance"):
    evaluate.balanced_rows(TRAIN, LABELS, c.data, np.random.default_rng(0))


def _folds(n_subjects=40, seed=0):
  rng = np.random.default_rng(seed)
  sid = np.array([f"s{i}" for i in np.concatenate([np.arange(n_subjects),
                                                   rng.integers(0, n_subjects, 20)])])
  lab = (np.array([int(s[1:]) for s in sid]) % 3 == 0).astype(int)
  return sid, lab, folds_lib.make_folds(sid, lab, 2, seed=0, inner=4)


def test_padded_sizes_cover_every_split_the_run_trains(config_factory):
  c = config_factory("tiny")
  sid, lab, folds = _folds()
  c.search.reward_splits = 3
  for mode in ("none", "repeat"):
    c.data.balance = mode
    sizes = evaluate.padded_sizes(c, folds, None, lab)
    for f in folds:
      for j in range(3):
        tr, va = folds_lib.split_indices(f, j)
        rows, _ = evaluate.balanced_rows(tr, lab, c.data, np.random.default_rng(1))
        assert rows.size <= sizes.num_train and va.size <= sizes.num_eval
    # Test parts do not pad the evaluation size (they are scored in chunks of it, train.py).
    largest_val = max(folds_lib.split_indices(f, j)[1].size for f in folds for j in range(3))
    assert sizes.num_eval == train_lib.pad_to(largest_val, c.train.eval_batch_size)
    assert sizes.num_train % c.train.batch_size == 0


def _rec(arch, reward, params, index):
  return search.ChildRecord(step=0, child=index, index=index, strategy="random", seed=0,
                            outer_fold=0, architecture=arch, actions=[], reward=reward,
                            split_rewards=[reward], metrics={}, best_val_loss=0.5, best_epoch=1,
                            val_acc=[reward], params=params, flops=0, compile_seconds=0.0,
                            train_seconds=0.0, status="ok")


A = Architecture((3,), (8,), (1,))
B = Architecture((5,), (8,), (1,))
C = Architecture((1,), (8,), (1,))


def test_the_best_rescored_mean_wins_not_the_search_maximum():
  records = [_rec(A, 0.90, 100, 0), _rec(B, 0.80, 50, 1), _rec(C, 0.70, 10, 2)]
  rows = [{"architecture": str(A), "search_reward": 0.9, "params": 100, "mean": 0.62},
          {"architecture": str(B), "search_reward": 0.8, "params": 50, "mean": 0.71},
          {"architecture": str(C), "search_reward": 0.7, "params": 10, "mean": 0.71}]
  arch, row = evaluate.choose_winner(records, rows)
  assert arch == C and row["mean"] == 0.71  # Tie on the mean: fewer parameters.
  arch, row = evaluate.choose_winner(records, [])
  assert arch == A and row["mean"] is None  # No re-scoring: the search's best.


def test_rescore_uses_fresh_seeds_and_records_mean_and_sd(tmp_path, tiny_run):
  """The session's run: every re-scored candidate was retrained on replicas 1.. only."""
  import json
  rows = [json.loads(l) for f in sorted((tiny_run.workdir / "search/rescore").glob("*.jsonl"))
          for l in f.read_text().splitlines()]
  assert rows
  q = tiny_run.config.search.rescore_seeds
  for r in rows:
    assert len(r["scores"]) == q and r["n"] == q
    assert r["mean"] == pytest.approx(np.mean(r["scores"]))
  rescores = [c for c in tiny_run.calls if c["tag"]["phase"] == "rescore"]
  assert len(rescores) == len(rows)

