"""Every random stream of a run, derived from one root key by named integers.

One root key per run, `jax.random.key(config.seed)`. Every stream is `fold_in`ed from it by
(kind, search seed, strategy or outer fold, inner split, replica, purpose), the names below, so no
two streams share a key and none is a hand-picked salt:

  search streams    (seed, strategy, outer fold)      -> controller / population init, and the
                                                          ask keys `fold_in(., step)`. Every outer
                                                          fold (and the final search) has its own,
                                                          so the searches of different folds are
                                                          independent replicates; architectures
                                                          that recur still share compiled programs.
  search trainings  (seed, outer fold, split, replica) -> a child's reward split (replica 0) or a
                                                          re-scoring seed (replica 1..q).
  test trainings    (outer fold, training seed)       -> a chosen model's training on the fold's
                                                          train part; independent of the search
                                                          seed (`training_key`): training noise and
                                                          search noise can be told apart; never a
                                                          search training's stream.
  fold streams      (purpose FOLDS)                    -> the outer/inner fold assignment.
  bootstrap stream  (purpose BOOTSTRAP)                -> the report's resampling.

A training run's purposes (init, epoch order, dropout, augmentation, padding, balancing copies)
are `fold_in(., Purpose.X)` of its key.

Host-side generators (numpy initialisation, padding and balancing choices, scikit-learn's fold
shuffles) are seeded from a stream's key data, so they follow the same derivation.
"""

import enum

import jax
import numpy as np


class Purpose(enum.IntEnum):
  """What a stream is used for: the last `fold_in` of every key."""
  FOLDS = 1
  SEARCH = 2  # A strategy's own streams (init, ask).
  TRAIN = 3  # A training run (children, re-scoring, final training).
  INIT = 4  # Initial child weights (host numpy).
  ORDER = 5  # Epoch permutation / balanced sampling of training rows (device).
  DROPOUT = 6  # Dropout masks (device).
  AUGMENT = 7  # Label-independent augmentation (device).
  PADDING = 8  # Which real rows repeat as zero-weight padding (host).
  BALANCE = 9  # Which originals get balancing copies, and their rotations (host).
  BOOTSTRAP = 10  # The report's subject bootstrap.
  STRATEGY_INIT = 11
  ASK = 12
  TEST_TRAIN = 13  # A test training (outer fold, training seed): `training_key`.


# Outer fold index of the optional final search on all subjects (no test part).
FINAL_FOLD = -1

# Replica numbers of a search training: the search's children train as replica 0; re-scoring
# uses 1..rescore_seeds. Test trainings have streams of their own (`training_key`).
SEARCH_REPLICA = 0


def root_key(seed: int) -> jax.Array:
  """The run's root key (a typed PRNG key) from `config.seed`."""
  return jax.random.key(int(seed))


def _fold(key, *values) -> jax.Array:
  for v in values:
    key = jax.random.fold_in(key, int(v) % 2**32)  # FINAL_FOLD = -1 -> 2**32 - 1.
  return key


def search_key(root, seed: int, stream_id: int, outer: int) -> jax.Array:
  """The stream of one search: search seed, the strategy's stream id (`strategies.entry(name)
  .stream_id`: append-only) and outer fold (FINAL_FOLD for the final search on all subjects).
  Searches of different outer folds never share samples by construction."""
  return _fold(root, Purpose.SEARCH, seed, stream_id, outer)


def strategy_init_key(search: jax.Array) -> jax.Array:
  return _fold(search, Purpose.STRATEGY_INIT)


def ask_key(search: jax.Array, step: int) -> jax.Array:
  """The key a strategy samples step `step`'s children with."""
  return _fold(search, Purpose.ASK, step)


def train_key(root, *, seed: int, outer: int, split: int, replica: int) -> jax.Array:
  """One search training: search seed, outer fold (FINAL_FOLD for the final search), inner split,
  and replica (SEARCH_REPLICA or a re-scoring seed)."""
  return _fold(root, Purpose.TRAIN, seed, outer, split, replica)


def training_key(root, *, outer: int, training_seed: int) -> jax.Array:
  """One test training of a chosen model: outer fold (FINAL_FOLD for the final search's models)
  and training seed. It does not depend on the search seed: two search seeds that chose the same
  architecture get the same trainings (duplicates, not replicates)."""
  return _fold(root, Purpose.TEST_TRAIN, outer, training_seed)


def purpose(key: jax.Array, p: Purpose) -> jax.Array:
  """The stream of one purpose inside a training run's key."""
  return jax.random.fold_in(key, int(p))


def host_rng(key: jax.Array) -> np.random.Generator:
  """A numpy Generator seeded from a key's data (host-side randomness of the same stream)."""
  return np.random.default_rng(np.asarray(jax.random.key_data(key), np.uint32).tolist())


def host_seed(key: jax.Array) -> int:
  """A 32-bit integer from a key (for libraries that take an int, e.g. scikit-learn)."""
  return int(host_rng(key).integers(0, 2**31 - 1))


def folds_seed(root) -> int:
  """The integer seed of the outer/inner fold assignment."""
  return host_seed(jax.random.fold_in(root, int(Purpose.FOLDS)))


def bootstrap_seed(root) -> int:
  """The integer seed of the report's bootstrap (from the run's root key)."""
  return host_seed(jax.random.fold_in(root, int(Purpose.BOOTSTRAP)))
