"""Tests for nasrl_jax.rng: every stream distinct, searches independent per outer fold, test
trainings independent of the search seed."""

import itertools

import jax
import numpy as np

from nasrl_jax import rng


def _data(key):
  return tuple(np.asarray(jax.random.key_data(key)).tolist())


def test_search_keys_differ_by_outer_fold_strategy_and_seed():
  root = rng.root_key(0)
  keys = {(seed, s, outer): _data(rng.search_key(root, seed, s, outer))
          for seed, s, outer in itertools.product((0, 1), (1, 2, 3), (0, 1, 4, rng.FINAL_FOLD))}
  assert len(set(keys.values())) == len(keys)
  # And so do the samples: the ask keys of step 0 of two outer folds.
  a = rng.ask_key(rng.search_key(root, 0, 2, 0), 0)
  b = rng.ask_key(rng.search_key(root, 0, 2, 1), 0)
  assert _data(a) != _data(b)


def test_training_keys_do_not_depend_on_the_search_seed_and_never_equal_search_streams():
  root = rng.root_key(0)
  # `training_key` has no search-seed argument: a winner found by any search seed trains with
  # the same stream per (outer fold, training seed).
  assert _data(rng.training_key(root, outer=1, training_seed=2)) == _data(
      rng.training_key(rng.root_key(0), outer=1, training_seed=2))
  tests = {_data(rng.training_key(root, outer=o, training_seed=t))
           for o in (0, 1, rng.FINAL_FOLD) for t in range(3)}
  assert len(tests) == 9
  search = {_data(rng.train_key(root, seed=s, outer=o, split=j, replica=r))
            for s in (0, 1) for o in (0, 1, rng.FINAL_FOLD) for j in range(3) for r in range(4)}
  assert not tests & search  # Never a reward split's or a re-scoring replica's stream.
  assert rng.bootstrap_seed(root) != rng.bootstrap_seed(rng.root_key(1))
