"""Shared test helpers: the project's config file (loaded by path as launch.py does) and a
temporary JAX compilation cache per test session, so tests never read or write the user's cache.
"""

import contextlib
import importlib.util
import json
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

# Set by the session fixture below; tests and their subprocesses read it.
CACHE_ENV = "NASRL_TEST_COMPILE_CACHE"

# Every program the tests compile (in these processes and in the subprocesses they start, which
# inherit the environment) is compiled by XLA:CPU at optimization level 0 with its older emitters,
# as the tiny config already compiles its children: the tests check the package's logic, and none
# compares a number with one from a default-compiled program. The suite then costs 15 % less CPU
# (A/B back to back, docs/suite.md). Set here, before any test makes JAX create its CPU client (it
# reads XLA_FLAGS then); a flag the caller already set wins. The gpu_check dry run clears them and
# compiles its inference stage under XLA's defaults, so a default-compiled program still runs in
# every suite run. And each program is one LLVM module (no parallel codegen split): with 2 workers
# on 2 cores the split's threads only cost CPU (a tiny child compiles with 10 % less CPU, measured
# in concurrent pairs, docs/suite.md).
TEST_XLA_FLAGS = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false",
                  "--xla_cpu_parallel_codegen_split_count=1")


def _with_test_xla_flags(flags: str) -> str:
  given = flags.split()
  names = {f.split("=")[0] for f in given}
  return " ".join(given + [f for f in TEST_XLA_FLAGS if f.split("=")[0] not in names])


os.environ["XLA_FLAGS"] = _with_test_xla_flags(os.environ.get("XLA_FLAGS", ""))


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


@contextlib.contextmanager
def hooked_trainings(hook):
  """Calls hook(arch, splits, test_idx, tag) before every training of the code under test.

  A test-only hook: it wraps `train.TrainerFactory.__call__` so that every `TrainFns.train` and
  `train_many` it hands out reports first (the leakage checks, the kill points of the resume
  tests); the package itself has no hook list.
  """
  from nasrl_jax import train  # pylint: disable=g-import-not-at-top
  original = train.TrainerFactory.__call__

  def call(self, arch):
    fns = original(self, arch)

    def train_many(keys, data, splits, test_idx=None, tag=None):
      hook(arch, splits, test_idx, tag)
      return fns.train_many(keys, data, splits, test_idx, tag)

    def train_one(key, data, split, test_idx=None, tag=None):
      return train_many([key], data, [split], test_idx, tag)[0]

    return fns._replace(train_many=train_many, train=train_one)

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(train.TrainerFactory, "__call__", call)
    yield


def _cpu_s(item) -> float:
  mark = item.get_closest_marker("slow")
  return float(mark.kwargs.get("cpu_s", 10)) if mark else 0.0


def pytest_collection_modifyitems(config, items):
  """The longest tests first, and the shared tiny run's users away from the other slow tests.

  The suite is CPU-bound on 2 cores, so its time is its CPU over 2 plus the tail where one worker
  has nothing left. xdist's worksteal first hands each of the 2 workers one contiguous half of
  this order, then moves tests from the back of a busy worker's queue. So: the first half opens
  with the `tiny_run` users (the first one runs it, the rest wait for nothing after it), the
  second half with the other slow tests, longest first; the short tests follow in file order and
  fill the tail. Without xdist the order changes nothing but the sequence.
  """
  del config
  uses_tiny = lambda i: "tiny_run" in i.fixturenames
  tiny = sorted(filter(uses_tiny, items), key=lambda i: -_cpu_s(i))
  slow = sorted((i for i in items if _cpu_s(i) and not uses_tiny(i)), key=lambda i: -_cpu_s(i))
  rest = [i for i in items if not _cpu_s(i) and not uses_tiny(i)]
  fill = max(len(items) // 2 - len(tiny), 0)
  items[:] = tiny + rest[:fill] + slow + rest[fill:]


@pytest.fixture(scope="session", autouse=True)
def session_compile_cache(tmp_path_factory):
  """One empty compilation cache per test session (shared by the xdist workers of a session)."""
  path = _session_root(tmp_path_factory) / "jax_compile_cache"
  path.mkdir(exist_ok=True)
  os.environ[CACHE_ENV] = str(path)
  from nasrl_jax import io_utils
  io_utils.enable_compile_cache(str(path))
  return str(path)


@pytest.fixture(scope="session")
def tiny_data_cache(tmp_path_factory):
  """A simulator cache folder shared by the session's workers (renders are written atomically)."""
  path = _session_root(tmp_path_factory) / "data_cache"
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


def _session_root(tmp_path_factory):
  """The folder every xdist worker of this session shares (the workers' common parent)."""
  root = tmp_path_factory.getbasetemp()
  return root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, session_compile_cache, tiny_data_cache):
  """The whole pipeline on the tiny config, once per session for all xdist workers.

  The first worker to ask runs it (every training call recorded) under a file lock in the
  session's shared folder and writes the results and the recorded calls there; the others wait
  for the lock and read them. So the tests that use it spread over the workers instead of being
  pinned to one. Tests must not write into `tiny_run.workdir` (copy it first).
  """
  del session_compile_cache
  import fcntl  # pylint: disable=g-import-not-at-top  (POSIX; the suite runs on Linux)
  base = _session_root(tmp_path_factory) / "tiny_run"
  base.mkdir(exist_ok=True)
  config = load_config("tiny")
  config.data.cache_dir = tiny_data_cache
  done = base / "done.json"
  with open(base / "lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not done.exists():
      _run_tiny(config, base / "w", done)
    saved = json.loads(done.read_text())
  calls = [dict(c, used=set(c["used"]), val=set(c["val"]),
                test=None if c["test"] is None else set(c["test"])) for c in saved["calls"]]
  return TinyRun(base / "w", tiny_data_cache, config, saved["results"], calls)


def _run_tiny(config, workdir, done):
  from nasrl_jax import io_utils, pipeline  # pylint: disable=g-import-not-at-top
  calls = []

  def record(arch, splits, test_idx, tag):
    calls.append({"arch": str(arch),
                  "used": sorted(set().union(*[s.used_indices() for s in splits])),
                  "val": sorted(set().union(*[set(np.asarray(s.eval_idx).tolist())
                                              for s in splits])),
                  "test": None if test_idx is None else sorted(np.asarray(test_idx).tolist()),
                  "tag": dict(tag or {})})

  with hooked_trainings(record):
    results = pipeline.run(config, str(workdir), command="tests/conftest.py tiny_run")
  io_utils.atomic_write_json(str(done), io_utils.to_json_safe({"results": results,
                                                                "calls": calls}))
