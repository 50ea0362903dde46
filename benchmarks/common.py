"""Shared helpers of the benchmarks: device facts, timing, peak FLOP/s, result files and tables.

Owns what every benchmark script repeats: which device and software ran it, the named
architectures they time, a synchronised median timer, the measured matmul peak that MFU is
relative to, the JAX persistent-compilation-cache switches, the JSON result record
(benchmarks/results/<name>.json, also $OUT/<name>.json when $OUT is set, as on a lent GPU) and the
plain-text table printed last.

Imports stay light on purpose (jax, numpy and this package's child/space modules): the GPU image
the benchmarks run on has no scikit-learn, Pillow or matplotlib (see fetch_wheels.sh).
"""

import datetime
import os
import platform
import shlex
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from nasrl_jax import space as space_lib  # pylint: disable=g-import-not-at-top
from nasrl_jax.errors import UserInputError  # pylint: disable=g-import-not-at-top

RESULTS_DIR = os.path.join(ROOT, "benchmarks", "results")

# A fixed stand-in for a NAS winner: mixed kernels, last conv 64 filters, 32.1M parameters at
# 224x224x1 with the VGG head (the paper's winner: 31,164,674; its exact layers are not published).
FOUND_EXAMPLE = space_lib.Architecture(
    (3, 3, 5, 3, 3, 5, 3, 1, 3, 5, 3, 1, 3, 3, 1, 3),
    (64, 64, 128, 128, 128, 256, 128, 64, 128, 128, 128, 64, 64, 128, 64, 64))

NAMED_ARCHS = {
    "vgg19": space_lib.VGG19,
    # The search space's extremes: every layer 1x1 with 64 filters / 7x7 with 512 filters.
    "smallest": space_lib.Architecture((1,) * 16, (64,) * 16),
    "largest": space_lib.Architecture((7,) * 16, (512,) * 16),
    "found": FOUND_EXAMPLE,
}

# Vendor dense peaks (FLOP/s, no sparsity), only to put the measured matmul peak in context;
# MFU itself is always against the matmul measured in the same script. float32 matmuls on
# Hopper run as TF32 under JAX's default precision, hence the TF32 figure.
NOMINAL_PEAK = {
    "H100 PCIe": {"bfloat16": 756e12, "float32": 378e12},
    "H100": {"bfloat16": 989e12, "float32": 494e12},  # SXM (80GB HBM3).
    "H200": {"bfloat16": 989e12, "float32": 494e12},
}


def parse_archs(text: str) -> Dict[str, space_lib.Architecture]:
  """'vgg19,largest' -> {name: Architecture}; also accepts an architecture string '3x64 ...|...'.

  Raises:
    UserInputError: an unknown name (one line listing the known ones).
  """
  out = {}
  for name in [w.strip() for w in text.split(",") if w.strip()]:
    if name in NAMED_ARCHS:
      out[name] = NAMED_ARCHS[name]
    elif "x" in name and "|" in name:
      try:
        out[name] = space_lib.Architecture.from_string(name)
      except ValueError as e:
        raise UserInputError(f"--archs: cannot read architecture {name!r}: {e}") from None
    else:
      raise UserInputError(f"--archs: unknown architecture {name!r}; choose from "
                           f"{', '.join(NAMED_ARCHS)} or give '3x64 3x64 | ...'")
  if not out:
    raise UserInputError("--archs is empty")
  return out


def check_choice(flag: str, value, choices: Sequence) -> None:
  """Raises UserInputError (one line) unless value is one of choices."""
  if value not in choices:
    raise UserInputError(f"--{flag}={value!r}: choose one of {', '.join(map(str, choices))}")


def check_name(name: str) -> None:
  """Raises UserInputError unless `name` is a plain file name (the results JSON's)."""
  if not name or not all(ch.isalnum() or ch in "._-" for ch in name) or name.startswith("."):
    raise UserInputError(f"--name={name!r}: use letters, digits, '.', '_' or '-' only")


def device_info() -> dict:
  """Which device and software ran the benchmark (for the JSON record)."""
  d = jax.devices()[0]
  kind = getattr(d, "device_kind", d.platform)
  if d.platform == "cpu":
    desc = f"cpu ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"
  else:
    desc = f"{kind} ({d.platform})"
  return {"device": desc, "platform": d.platform, "device_kind": kind,
          "device_count": jax.device_count(), "host_cpus": os.cpu_count(),
          "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
          "jax": jax.__version__, "python": platform.python_version()}


def nominal_peak(device_kind: str, dtype: str) -> Optional[float]:
  """Vendor dense peak FLOP/s for a known GPU kind, else None."""
  for name, peaks in NOMINAL_PEAK.items():  # 'H100 PCIe' is listed before 'H100'.
    if name in device_kind:
      return peaks.get(dtype)
  return None


def block(tree):
  """Waits for every array in a pytree (jax.block_until_ready) and returns it."""
  return jax.block_until_ready(tree)


def median_seconds(fn: Callable[[], object], iters: int, warmup: int = 2) -> List[float]:
  """Runs fn() `warmup` times, then `iters` timed times, each synchronised; returns the times."""
  for _ in range(warmup):
    block(fn())
  times = []
  for _ in range(iters):
    t0 = time.perf_counter()
    block(fn())
    times.append(time.perf_counter() - t0)
  return times


def matmul_peak(dtype: str, n: Optional[int] = None, iters: Optional[int] = None) -> dict:
  """Measured dense-matmul FLOP/s in `dtype`: the denominator of MFU.

  An n x n x n matmul (4096 on accelerators, 2048 on CPU), 2 n^3 FLOPs per call, median of warm
  synchronised calls. Under JAX's default precision, as the models use.

  Returns:
    {"flops_per_s", "n", "dtype", "median_s"}.
  """
  on_cpu = jax.default_backend() == "cpu"
  n = n or (2048 if on_cpu else 4096)
  iters = iters or (5 if on_cpu else 50)
  dt = jnp.bfloat16 if dtype == "bfloat16" else jnp.float32
  ka, kb = jax.random.split(jax.random.key(0))
  a = jax.random.normal(ka, (n, n), dt)
  b = jax.random.normal(kb, (n, n), dt)
  f = jax.jit(jnp.matmul)
  times = median_seconds(lambda: f(a, b), iters, warmup=2)
  med = statistics.median(times)
  return {"flops_per_s": 2.0 * n ** 3 / med, "n": n, "dtype": dtype, "median_s": med}


def enable_compile_cache(path: str) -> None:
  """Turns on JAX's persistent compilation cache at `path`, caching every entry."""
  from nasrl_jax import io_utils  # Light: no scikit-learn / matplotlib.
  io_utils.enable_compile_cache(path)


def disable_compile_cache() -> None:
  """Turns the persistent compilation cache off, so every compile is cold."""
  jax.config.update("jax_enable_compilation_cache", False)


class CacheCounter:
  """Counts persistent-compilation-cache hits and misses (jax.monitoring events) while alive."""

  HIT = "/jax/compilation_cache/cache_hits"
  MISS = "/jax/compilation_cache/cache_misses"

  def __init__(self):
    self.hits = 0
    self.misses = 0
    jax.monitoring.register_event_listener(self._on_event)

  def _on_event(self, event, **kwargs):
    del kwargs
    if event == self.HIT:
      self.hits += 1
    elif event == self.MISS:
      self.misses += 1

  def close(self):
    jax.monitoring.unregister_event_listener(self._on_event)

  def as_dict(self) -> dict:
    return {"cache_hits": self.hits, "cache_misses": self.misses}


class CompilePhases:
  """Sums JAX's own compile-phase durations (jax.monitoring) while alive: where compile time goes.

  trace: Python tracing to a jaxpr; lower: jaxpr -> StableHLO; backend: XLA compilation, or the
  persistent-cache lookup that replaces it on a hit. Trace and lower run Python under the GIL,
  which matters for compiling in a background thread; a cache hit still pays both.
  """

  EVENTS = {"/jax/core/compile/jaxpr_trace_duration": "trace",
            "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
            "/jax/core/compile/backend_compile_duration": "backend"}

  def __init__(self):
    self.seconds = {v: 0.0 for v in self.EVENTS.values()}
    jax.monitoring.register_event_duration_secs_listener(self._on_duration)

  def _on_duration(self, event, duration, **kwargs):
    del kwargs
    phase = self.EVENTS.get(event)
    if phase is not None:
      self.seconds[phase] += float(duration)

  def reset(self) -> dict:
    """Returns the sums so far and starts again from zero."""
    out = dict(self.seconds)
    self.seconds = {k: 0.0 for k in self.seconds}
    return out

  def close(self):
    jax.monitoring.unregister_event_duration_listener(self._on_duration)


def record(name: str, argv: Sequence[str], device: Optional[dict] = None, **payload) -> dict:
  """The JSON record of a benchmark: device, date, command, versions, then `payload`.

  Args:
    name: the benchmark's name (and results file name).
    argv: sys.argv of the run (the command is recorded).
    device: device facts; None = `device_info()` of this process (initialises the backend).
    **payload: the benchmark's own fields.
  """
  rec = {"benchmark": name,
         "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
         "command": " ".join(shlex.quote(a) for a in ["python"] + list(argv))}
  rec.update(device_info() if device is None else device)
  rec.update(payload)
  return rec


def run_rows(bench: str, rec: dict, arch_map: dict, measure, name: str,
             results_dir: Optional[str] = None) -> None:
  """Measures each architecture with `measure(name, arch) -> row`, keeping going on errors.

  A failing architecture (e.g. out of memory) becomes a row with its error; the results file is
  rewritten after every row, so a benchmark cut off by a timeout keeps what it measured.
  """
  for arch_name, arch in arch_map.items():
    t0 = time.perf_counter()
    try:
      row = measure(arch_name, arch)
    except Exception as e:  # pylint: disable=broad-except  (keep the other architectures)
      row = {"arch": arch_name, "architecture": str(arch),
             "error": f"{type(e).__name__}: {str(e)[:300]}"}
    row["wall_seconds"] = time.perf_counter() - t0
    rec["rows"].append(row)
    write_results(name, rec, results_dir or None)
    print(f"[{bench}] {arch_name}: done in {row['wall_seconds']:.1f}s", flush=True)


def write_results(name: str, rec: dict, results_dir: Optional[str] = None) -> List[str]:
  """Writes rec as <results_dir or benchmarks/results>/<name>.json, and to $OUT/ if $OUT is set.

  Called after every finished row, so a benchmark cut off by a timeout keeps what it measured.

  Returns:
    The paths written.
  """
  from nasrl_jax import io_utils  # Stdlib only.
  dirs = [results_dir or RESULTS_DIR]
  if os.environ.get("OUT"):
    dirs.append(os.environ["OUT"])
  paths = []
  for d in dict.fromkeys(dirs):
    path = os.path.join(d, f"{name}.json")
    io_utils.atomic_write_json(path, io_utils.to_json_safe(rec))
    paths.append(path)
  return paths


def fmt(value, spec: str = ".3g") -> str:
  """A table cell: numbers with `spec`, None as '-'."""
  if value is None:
    return "-"
  if isinstance(value, str):
    return value
  if isinstance(value, float) and not np.isfinite(value):
    return "-"
  return format(value, spec)


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
  """A plain aligned text table (first column left-aligned, the others right-aligned)."""
  cells = [list(map(str, header))] + [list(map(str, r)) for r in rows]
  widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

  def line(r):
    return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                     for i, (c, w) in enumerate(zip(r, widths)))

  sep = "  ".join("-" * w for w in widths)
  return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])
