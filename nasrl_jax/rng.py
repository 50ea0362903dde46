"""Every random stream of a run, derived from one root key by named integers.

One root key per run, `jax.random.key(config.seed)`. Every stream is `fold_in`ed from it by
(kind, search seed, strategy or outer fold, inner split, replica, purpose), the names below, so no
two streams share a key and none is a hand-picked salt:

  search streams    (seed, strategy)                  -> controller / population init, and the
                                                          ask keys `fold_in(., step)`. They do not
                                                          depend on the outer fold, so the first
                                                          controller step and random search's
                                                          samples recur in every outer fold and
                                                          share compiled executables.
  training streams  (seed, outer fold, split, replica) -> one training run; its purposes (init,
                                                          epoch order, dropout, augmentation,
                                                          padding, balancing copies) are
                                                          `fold_in(., Purpose.X)`.
  fold streams      (purpose FOLDS)                    -> the outer/inner fold assignment.
  bootstrap stream  (purpose BOOTSTRAP)                -> the report's resampling.

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


# Strategy names -> integers folded into their search streams. Append only: changing a number
# changes every sample of that strategy.
STRATEGY_IDS = {"reinforce": 1, "random": 2, "evolution": 3}

# Outer fold index of the optional final search on all subjects (no test part).
FINAL_FOLD = -1

# Replica numbers of a training run: the search's children train as replica 0; re-scoring uses
# 1..rescore_seeds; the final (test) training of a chosen model uses FINAL_REPLICA.
SEARCH_REPLICA = 0
FINAL_REPLICA = 1000


def root_key(seed: int) -> jax.Array:
  """The run's root key (a typed PRNG key) from `config.seed`."""
  return jax.random.key(int(seed))


def _fold(key, *values) -> jax.Array:
  for v in values:
    key = jax.random.fold_in(key, int(v) % 2**32)  # FINAL_FOLD = -1 -> 2**32 - 1.
  return key


def search_key(root, seed: int, strategy: str) -> jax.Array:
  """A strategy's stream for search seed `seed` (independent of the outer fold)."""
  return _fold(root, Purpose.SEARCH, seed, STRATEGY_IDS[strategy])


def strategy_init_key(search: jax.Array) -> jax.Array:
  return _fold(search, Purpose.STRATEGY_INIT)


def ask_key(search: jax.Array, step: int) -> jax.Array:
  """The key a strategy samples step `step`'s children with."""
  return _fold(search, Purpose.ASK, step)


def train_key(root, *, seed: int, outer: int, split: int, replica: int) -> jax.Array:
  """One training run: search seed, outer fold (FINAL_FOLD for the final search), inner split or
  CV fold, and replica (SEARCH_REPLICA, a re-scoring seed, or FINAL_REPLICA)."""
  return _fold(root, Purpose.TRAIN, seed, outer, split, replica)


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
  return host_seed(jax.random.fold_in(root, int(Purpose.BOOTSTRAP)))
