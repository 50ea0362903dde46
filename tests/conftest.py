"""Shared test helpers: the project's config file (loaded by path as launch.py does) and a
temporary JAX compilation cache per test session, so tests never read or write the user's cache.
"""

import importlib.util
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

# Set by the session fixture below; tests and their subprocesses read it.
CACHE_ENV = "NASRL_TEST_COMPILE_CACHE"


def load_config(arg=None):
  spec = importlib.util.spec_from_file_location(
      "fatty_liver_config", os.path.join(ROOT, "configs", "fatty_liver.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  config = mod.get_config(arg)
  config.compile_cache_dir = os.environ.get(CACHE_ENV, "")
  return config


def compile_cache_flag():
  """The launch.py flag that points a subprocess at the session's compilation cache."""
  return f"--config.compile_cache_dir={os.environ.get(CACHE_ENV, '')}"


@pytest.fixture(scope="session", autouse=True)
def session_compile_cache(tmp_path_factory):
  """One empty compilation cache per test session (shared by the xdist workers of a session)."""
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent
  path = root / "jax_compile_cache"
  path.mkdir(exist_ok=True)
  os.environ[CACHE_ENV] = str(path)
  from nasrl_jax import io_utils
  io_utils.enable_compile_cache(str(path))
  return str(path)


@pytest.fixture(scope="session")
def tiny_data_cache(tmp_path_factory):
  """A simulator cache folder shared by the session's workers (renders are written atomically)."""
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent
  path = root / "data_cache"
  path.mkdir(exist_ok=True)
  return str(path)


@pytest.fixture
def config_factory():
  return load_config


class TinyRun:
  """The session's one in-process run of the tiny config (see `tiny_run`)."""

  def __init__(self, workdir, data_cache, config, results, calls):
    self.workdir, self.data_cache, self.config = workdir, data_cache, config
    self.results, self.calls = results, calls  # calls: one dict per training call (hooked).


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, session_compile_cache):
  """The whole pipeline on the tiny config, once per session, every training call recorded.

  Tests that use it carry `pytestmark = pytest.mark.xdist_group("tiny_run")`, so they share one
  xdist worker and the run happens once.
  """
  del session_compile_cache
  from nasrl_jax import pipeline, train
  base = tmp_path_factory.mktemp("tiny_run")
  config = load_config("tiny")
  config.data.cache_dir = str(base / "data_cache")
  calls = []

  def record(arch, splits, test_idx, tag):
    calls.append({"arch": str(arch), "used": set().union(*[s.used_indices() for s in splits]),
                  "val": set().union(*[set(np.asarray(s.eval_idx).tolist()) for s in splits]),
                  "test": None if test_idx is None else set(np.asarray(test_idx).tolist()),
                  "tag": dict(tag or {})})

  train.TRAIN_HOOKS.append(record)
  try:
    results = pipeline.run(config, str(base / "w"), command="tests/conftest.py tiny_run")
  finally:
    train.TRAIN_HOOKS.remove(record)
  return TinyRun(base / "w", str(base / "data_cache"), config, results, calls)
