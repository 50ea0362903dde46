"""A pytest plugin for measuring the suite: CPU seconds and wall seconds of every test.

  PYTHONPATH=benchmarks CPU_LOG=/tmp/cpu.tsv python3 -m pytest -q -n 2 tests -p pytest_cpu_per_test

Appends one tab-separated line per test (setup, call and teardown together) to $CPU_LOG
(default /tmp/cpu_per_test.tsv): CPU seconds of the test's process, CPU seconds of the child
processes it waited for (subprocess.run / communicate), wall seconds, node id, start time (Unix
seconds) and xdist worker ("gw0", ...; empty without xdist): the last two show when a worker sat
idle. Under xdist each worker appends its own lines. The suite is CPU-bound on 2 cores, so these sums, not --durations,
say where a cut would help (docs/suite.md).
"""

import os
import resource
import time

import pytest


def _cpu():
  own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
  return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
  del nextitem
  own, kids, t0 = *_cpu(), time.time()
  yield
  own2, kids2 = _cpu()
  with open(os.environ.get("CPU_LOG", "/tmp/cpu_per_test.tsv"), "a", encoding="utf-8") as f:
    f.write(f"{own2 - own:.1f}\t{kids2 - kids:.1f}\t{time.time() - t0:.1f}\t{item.nodeid}\t"
            f"{t0:.1f}\t{os.environ.get('PYTEST_XDIST_WORKER', '')}\n")
