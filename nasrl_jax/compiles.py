"""Counting compilations from JAX's own events (`jax.monitoring`), not from our cache's bookkeeping.

JAX records `/jax/core/compile/backend_compile_duration` (with the jitted function's name) for
every executable it builds or fetches from the persistent compilation cache, and
`/jax/compilation_cache/cache_hits` (in the same thread, just before) when it fetched it. Child
programs are named `nasrl_child_{step,eval}_<hash of their cache key>` (`train.py`), so from the
events alone:

  compiles              backend compiles of child programs (not served by the persistent cache)
  cache_hits            child programs served by JAX's persistent compilation cache
  distinct_programs     distinct child program names seen (compiled or served)
  compile_seconds       time spent in those compiles
  other_compiles        every other backend compile (controller, eager ops, inference timing)

so `compiles <= distinct_programs` says no child program was compiled twice in the run (unless the
program cache dropped programs to stay under the memory-mapping limit: `programs_evicted`).
"""

import collections
import threading

from jax import monitoring

PREFIX = "nasrl_child_"
_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_HIT_EVENT = "/jax/compilation_cache/cache_hits"


class CompileLog:
  """Thread-safe counters fed by jax.monitoring listeners (installed once per process)."""

  def __init__(self):
    self._lock = threading.Lock()
    self._local = threading.local()
    self.reset()

  def reset(self):
    with self._lock:
      self.compiled = collections.Counter()  # name -> backend compiles
      self.served = collections.Counter()  # name -> persistent-cache hits
      self.seconds = 0.0
      self.other = 0
      self.other_seconds = 0.0
      self.other_names = collections.Counter()  # name -> seconds (what the other compiles are)

  def _on_event(self, event, **kwargs):
    del kwargs
    if event == _HIT_EVENT:
      self._local.hit = True

  def _on_duration(self, event, duration, **kwargs):
    if event != _COMPILE_EVENT:
      return
    hit = getattr(self._local, "hit", False)
    self._local.hit = False
    name = str(kwargs.get("fun_name", ""))
    if name.startswith("jit(") and name.endswith(")"):
      name = name[4:-1]
    with self._lock:
      if name.startswith(PREFIX):
        (self.served if hit else self.compiled)[name] += 1
        if not hit:
          self.seconds += float(duration)
      elif not hit:
        self.other += 1
        self.other_seconds += float(duration)
        self.other_names[name] += float(duration)

  def snapshot(self) -> dict:
    with self._lock:
      names = set(self.compiled) | set(self.served)
      return {"compiles": int(sum(self.compiled.values())),
              "cache_hits": int(sum(self.served.values())),
              "distinct_programs": len(names),
              "compile_seconds": round(self.seconds, 3),
              "recompiled_programs": sorted(n for n, c in self.compiled.items() if c > 1),
              "other_compiles": int(self.other),
              "other_compile_seconds": round(self.other_seconds, 3),
              "other_slowest": {k: round(v, 2) for k, v in self.other_names.most_common(5)}}


LOG = CompileLog()
_installed = False
_install_lock = threading.Lock()


def install() -> CompileLog:
  """Registers the listeners (idempotent) and returns the process-wide log."""
  global _installed
  with _install_lock:
    if not _installed:
      monitoring.register_event_listener(LOG._on_event)  # pylint: disable=protected-access
      monitoring.register_event_duration_secs_listener(LOG._on_duration)  # pylint: disable=protected-access
      _installed = True
  return LOG
