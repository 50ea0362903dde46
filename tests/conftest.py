"""Shared test helpers: the project's config file (loaded by path as launch.py does) and a
temporary JAX compilation cache per test session, so tests never read or write the user's cache.
"""

import importlib.util
import os
import sys

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


@pytest.fixture
def config_factory():
  return load_config
