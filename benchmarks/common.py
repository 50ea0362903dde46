"""Shared helpers of the benchmarks: device facts, timing, peak FLOP/s, configs, data, result files.

Owns what every benchmark script repeats: which device and software ran it, the named
architectures they time, the experiment config with benchmark defaults, a random-pixel cohort of
the paper's shapes with k-fold or search splits for the pure training functions (`train.py`), a
synchronised median timer, the measured matmul peak that MFU is relative to, the JAX
persistent-compilation-cache switches (`--compile_cache`), compile-phase timing per child program,
the JSON result record (benchmarks/results/<name>.json, also $OUT/<name>.json when $OUT is set, as
on a lent GPU) and the plain-text table printed last.

Imports stay light on purpose (numpy and this package's space module; jax where a helper uses it,
so a parent process that only starts workers never loads it: search_throughput's parent 2.9 ->
0.6 CPU-s to its config and record, measured 2026-12-03): the GPU image the benchmarks run on
has no Pillow or matplotlib (see fetch_wheels.sh).
"""

import datetime
import os
import platform
import shlex
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

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


# The default config's split sizes on the paper-sized cohort (310 images; `evaluate.padded_sizes`
# on the simulator's folds, 2026-12): at most 220 training rows (balance loss_weight: no copies)
# and 62 test rows (an outer fold of 5), padded to 224 / 64 at batch 32 / eval batch 64.
COHORT_IMAGES, TRAIN_EXAMPLES, EVAL_EXAMPLES = 310, 220, 62

# Config variants of configs/fatty_liver.py a benchmark accepts ("paper" = the default config).
VARIANTS = ("quick", "cpu", "tiny", "paper")


def get_config(variant: str = "paper"):
  """The experiment config of `variant`, with benchmark defaults: no persistent compilation cache
  of the config's own (benchmarks choose with `--compile_cache`), no periodic progress lines."""
  from configs import fatty_liver  # pylint: disable=g-import-not-at-top
  check_choice("config", variant, VARIANTS)
  c = fatty_liver.get_config(None if variant == "paper" else variant)
  c.compile_cache_dir = ""
  c.log_every_s = 1e9
  return c


def override(config, *, size=0, width=0.0, dtype="", epochs=0, batch=0, blocks=""):
  """Applies the benchmark flags that change the child setup (0 / '' = keep the config's)."""
  if size:
    config.data.image_size = int(size)
  if width:
    config.space.width_multiplier = float(width)
  if dtype:
    config.train.dtype = dtype
  if epochs:
    config.train.epochs = int(epochs)
  if batch:
    config.train.batch_size = int(batch)
  if blocks:
    config.space.blocks = parse_ints("blocks", blocks)
  return config


def parse_ints(flag: str, text: str, minimum: int = 1) -> tuple:
  """'2,5,10' -> (2, 5, 10); one UserInputError line for anything else."""
  try:
    values = tuple(int(w) for w in str(text).split(",") if w.strip())
  except ValueError:
    raise UserInputError(f"--{flag}={text!r}: give comma-separated integers") from None
  if not values or min(values) < minimum:
    raise UserInputError(f"--{flag}={text!r}: give comma-separated integers >= {minimum}")
  return values


def parse_words(flag: str, text: str, choices: Sequence[str]) -> tuple:
  """'a,b' -> ('a', 'b'), each one of `choices`; one UserInputError line otherwise."""
  words = tuple(w.strip() for w in str(text).split(",") if w.strip())
  bad = [w for w in words if w not in choices]
  if bad or not words:
    raise UserInputError(f"--{flag}={text!r}: choose from {', '.join(choices)}")
  return words


def check_size(size: int, flag: str = "size") -> None:
  """Image sizes must survive five 2x2 pools."""
  if size and (size < 32 or size % 32):
    raise UserInputError(f"--{flag}={size}: must be a multiple of 32 (five 2x2 pools), "
                         "e.g. 32, 64, 224")


def space_archs(text: str, space, seed: int = 0) -> Dict[str, space_lib.Architecture]:
  """Architectures of a search space by name: vgg19 (the space's VGG19), sampled, sampled2, ...
  (uniform samples of the space, key `seed`), smallest, largest, or an architecture string.

  Raises:
    UserInputError: an unknown name or an architecture outside the space's block pattern.
  """
  out = {}
  for name in [w.strip() for w in text.split(",") if w.strip()]:
    if name == "vgg19":
      out[name] = space.vgg19
    elif name.startswith("sampled") and (name[7:].isdigit() or not name[7:]):
      i = int(name[7:] or 1) - 1
      import jax  # pylint: disable=g-import-not-at-top
      out[name] = space.sample(jax.random.fold_in(jax.random.key(int(seed)), i))
    elif name in ("smallest", "largest"):
      k, f = (min(space.kernels), min(space.filters)) if name == "smallest" else (
          max(space.kernels), max(space.filters))
      out[name] = space_lib.Architecture((k,) * space.num_layers, (f,) * space.num_layers,
                                         space.blocks)
    elif "x" in name and "|" in name:
      try:
        arch = space_lib.Architecture.from_string(name)
      except ValueError as e:
        raise UserInputError(f"--archs: cannot read architecture {name!r}: {e}") from None
      if arch.blocks != space.blocks:
        raise UserInputError(f"--archs: {name!r} has blocks {arch.blocks}, the space "
                             f"{space.blocks}")
      out[name] = arch
    else:
      raise UserInputError(f"--archs: unknown architecture {name!r}; choose from vgg19, "
                           "sampled, sampled2, ..., smallest, largest or give '3x64 | ...'")
  if not out:
    raise UserInputError("--archs is empty")
  return out


def random_cohort(size: int, num_images: int = COHORT_IMAGES, seed: int = 0):
  """(uint8 images [N, size, size, 1], int32 labels [N]) of random pixels with a weak cue.

  Class 1 is a little brighter in the top half, so training moves the loss (a timing or an
  agreement check on pure noise would only see a flat loss). The shapes are the paper cohort's;
  no simulator, Pillow or scikit-learn is needed.
  """
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 2, num_images).astype(np.int32)
  images = rng.integers(0, 200, (num_images, size, size, 1))
  images[:, : size // 2] += 30 * labels[:, None, None, None]
  return images.astype(np.uint8), labels


def split_kwargs(config, labels) -> dict:
  """`train.make_split` keyword arguments of the config's balance mode (no copies: the rows a
  benchmark passes are used once each, so repeat/rot90 only switch the step's rotation on)."""
  return {"labels": labels, "num_classes": int(config.model.num_classes),
          "class_weighted": config.data.balance == "loss_weight",
          "balanced_sampling": config.data.balance == "upright_sample"}


def kfold_splits(config, labels, k: int, seed: int = 0):
  """(splits, keys, sizes) of k-fold CV over every image: fold j validates, the rest train.

  Keys are `rng.training_key(root, outer=j, training_seed=0)`, the stream the first test training
  of outer fold j draws.
  """
  from nasrl_jax import rng as rng_lib  # pylint: disable=g-import-not-at-top
  from nasrl_jax import train as train_lib  # pylint: disable=g-import-not-at-top
  n = len(labels)
  if not 2 <= k <= n:
    raise UserInputError(f"--folds={k}: need 2 <= folds <= {n} images")
  parts = np.array_split(np.random.default_rng(seed).permutation(n), k)
  b, eb = int(config.train.batch_size), int(config.train.eval_batch_size)
  sizes = train_lib.Sizes(train_lib.pad_to(n - min(map(len, parts)), b),
                          train_lib.pad_to(max(map(len, parts)), eb))
  root = rng_lib.root_key(config.seed)
  splits, keys = [], []
  for j in range(k):
    train_idx = np.sort(np.concatenate([p for i, p in enumerate(parts) if i != j]))
    key = rng_lib.training_key(root, outer=j, training_seed=0)
    splits.append(train_lib.make_split(
        train_idx, np.zeros(train_idx.size), np.sort(parts[j]), sizes,
        rng=rng_lib.host_rng(rng_lib.purpose(key, rng_lib.Purpose.PADDING)),
        **split_kwargs(config, labels)))
    keys.append(key)
  return splits, keys, sizes


def cohort_splits(config, labels, r: int, seed: int = 0):
  """(splits, keys, sizes) of r search reward splits of the cohort's shapes (random rows).

  TRAIN_EXAMPLES training and EVAL_EXAMPLES validation rows each, padded as the pipeline pads the
  default config's splits; keys are the search replica's `rng.train_key(..., split=j)`.
  """
  from nasrl_jax import rng as rng_lib  # pylint: disable=g-import-not-at-top
  from nasrl_jax import train as train_lib  # pylint: disable=g-import-not-at-top
  n = len(labels)
  b, eb = int(config.train.batch_size), int(config.train.eval_batch_size)
  sizes = train_lib.Sizes(train_lib.pad_to(TRAIN_EXAMPLES, b), train_lib.pad_to(EVAL_EXAMPLES, eb))
  rng = np.random.default_rng(seed)
  root = rng_lib.root_key(config.seed)
  splits, keys = [], []
  for j in range(r):
    perm = rng.permutation(n)
    val, tr = np.sort(perm[:EVAL_EXAMPLES]), np.sort(perm[EVAL_EXAMPLES:][:TRAIN_EXAMPLES])
    key = rng_lib.train_key(root, seed=0, outer=0, split=j, replica=rng_lib.SEARCH_REPLICA)
    splits.append(train_lib.make_split(tr, np.zeros(tr.size), val, sizes,
                                       **split_kwargs(config, labels)))
    keys.append(key)
  return splits, keys, sizes


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
  import jax  # pylint: disable=g-import-not-at-top
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
  import jax  # pylint: disable=g-import-not-at-top
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
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
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
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_enable_compilation_cache", False)


class CacheCounter:
  """Counts persistent-compilation-cache hits and misses (jax.monitoring events) while alive."""

  HIT = "/jax/compilation_cache/cache_hits"
  MISS = "/jax/compilation_cache/cache_misses"

  def __init__(self):
    import jax  # pylint: disable=g-import-not-at-top
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
    import jax  # pylint: disable=g-import-not-at-top
    jax.monitoring.unregister_event_listener(self._on_event)

  def as_dict(self) -> dict:
    return {"cache_hits": self.hits, "cache_misses": self.misses}


class CompilePhases:
  """Sums JAX's own compile-phase durations (jax.monitoring) while alive: where compile time goes.

  trace: Python tracing to a jaxpr; lower: jaxpr -> StableHLO; backend: XLA compilation, or the
  persistent-cache lookup that replaces it on a hit. Trace and lower run Python under the GIL,
  which matters for compiling in a background thread; a cache hit still pays both. Every event
  names its function, so the sums are also kept per child program (`train.py` names them
  `nasrl_child_step_<hash>` and `nasrl_child_eval_<hash>`): `programs["step"]["backend"]`.
  """

  EVENTS = {"/jax/core/compile/jaxpr_trace_duration": "trace",
            "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
            "/jax/core/compile/backend_compile_duration": "backend"}
  PROGRAMS = {"nasrl_child_step_": "step", "nasrl_child_eval_": "eval"}

  def __init__(self):
    self.seconds = self._zero()
    self.programs = {p: self._zero() for p in self.PROGRAMS.values()}
    import jax  # pylint: disable=g-import-not-at-top
    jax.monitoring.register_event_duration_secs_listener(self._on_duration)

  def _zero(self):
    return {v: 0.0 for v in self.EVENTS.values()}

  def _on_duration(self, event, duration, **kwargs):
    phase = self.EVENTS.get(event)
    if phase is None:
      return
    self.seconds[phase] += float(duration)
    name = str(kwargs.get("fun_name", ""))
    name = name[4:-1] if name.startswith("jit(") and name.endswith(")") else name
    for prefix, program in self.PROGRAMS.items():
      if name.startswith(prefix):
        self.programs[program][phase] += float(duration)

  def reset(self) -> dict:
    """Returns the sums so far (all functions) and starts again from zero."""
    out = dict(self.seconds)
    self.seconds = self._zero()
    return out

  def reset_programs(self) -> dict:
    """Returns {program: {phase: seconds}} so far and starts those sums again from zero."""
    out = {p: dict(v) for p, v in self.programs.items()}
    self.programs = {p: self._zero() for p in self.PROGRAMS.values()}
    return out

  def close(self):
    import jax  # pylint: disable=g-import-not-at-top
    jax.monitoring.unregister_event_duration_listener(self._on_duration)


COMPILE_CACHE_HELP = ("JAX persistent compilation cache: off (cold compiles, what a never-seen "
                      "child costs; the default) | keep (leave this process's setting, e.g. a "
                      "test session's cache) | a folder to use")


def apply_compile_cache(value: str) -> str:
  """Applies a `--compile_cache` value (see COMPILE_CACHE_HELP); returns what was done."""
  if value == "off":
    disable_compile_cache()
    return "off"
  if value == "keep":
    import jax  # pylint: disable=g-import-not-at-top
    return "kept (" + ("on" if jax.config.jax_enable_compilation_cache else "off") + ")"
  enable_compile_cache(value)
  return f"on ({value})"


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


def json_safe(obj):
  """A plain-JSON copy (NaN -> None, numpy -> Python): `io_utils.to_json_safe`."""
  from nasrl_jax import io_utils  # pylint: disable=g-import-not-at-top
  return io_utils.to_json_safe(obj)


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
