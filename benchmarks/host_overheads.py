"""Host-side costs around child training: strategy set-up, training-state pytrees, compile overlap.

  python benchmarks/host_overheads.py                 # quick config, 4 children, 300 calls
  python benchmarks/host_overheads.py --config=tiny --children=2 --calls=20   # smoke size

Three measurements, each cold (persistent compilation cache off) and in this one process:
  strategies  per strategy (`strategies.make`): seconds of `init` as shipped (the controller's Flax
              initialisers run op by op), of the first `ask` and `tell` under jax.jit (compile
              included) at XLA's default backend optimisation level and at level 0, and of `init`
              done instead as one jitted uniform draw cut into the parameter leaves (the
              alternative measured in BUILD_NOTES.md, not the library's code);
  pytree      milliseconds of one flatten + unflatten of a child's training state (`TrainState`:
              NNX State containers, what every step call pays on the host) against the same leaves
              in a plain dict, over --calls repetitions;
  compile     wall and process-CPU seconds of compiling --children sampled children's programs
              (`train.make_train_fn(...).programs`) one after the other, and two at a time in
              threads: process CPU above wall means XLA's compile already uses several cores.
Writes benchmarks/results/host_overheads.json and prints a table last.
"""

import argparse
import concurrent.futures
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from benchmarks import common  # pylint: disable=g-import-not-at-top
from nasrl_jax import child as child_lib  # pylint: disable=g-import-not-at-top
from nasrl_jax import controller as controller_lib  # pylint: disable=g-import-not-at-top
from nasrl_jax import space as space_lib  # pylint: disable=g-import-not-at-top
from nasrl_jax import programs  # pylint: disable=g-import-not-at-top
from nasrl_jax import strategies  # pylint: disable=g-import-not-at-top
from nasrl_jax import train  # pylint: disable=g-import-not-at-top
from nasrl_jax.errors import UserInputError  # pylint: disable=g-import-not-at-top

LEVEL0 = {"xla_backend_optimization_level": 0}


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", default="quick", help="Config variant: " + ", ".join(common.VARIANTS))
  p.add_argument("--children", type=int, default=4, help="Sampled children to compile per mode.")
  p.add_argument("--calls", type=int, default=300, help="Flatten + unflatten repetitions.")
  p.add_argument("--results_dir", default="", help="Where the JSON goes (default results/).")
  p.add_argument("--name", default="host_overheads", help="JSON file name (without .json).")
  args = p.parse_args(argv)
  common.check_choice("config", args.config, common.VARIANTS)
  if args.children < 2 or args.calls < 1:
    raise UserInputError(f"--children={args.children} (>= 2) and --calls={args.calls} (>= 1)")
  return args


def _seconds(fn):
  t0 = time.perf_counter()
  common.block(fn())
  return time.perf_counter() - t0


def _uniform_draw_init(config, space, key):
  """The alternative to Flax's op-by-op initialisers: one jitted uniform draw cut into leaves."""
  _, abstract, _ = controller_lib.abstract(config.controller, space)
  leaves, treedef = jax.tree.flatten(abstract)
  sizes = [int(np.prod(l.shape)) for l in leaves]
  scale = float(config.controller.init_scale)

  @jax.jit
  def draw(k):
    flat = jax.random.uniform(k, (sum(sizes),), jnp.float32, -scale, scale)
    parts = jnp.split(flat, np.cumsum(sizes)[:-1].tolist())
    return [p.reshape(l.shape) for p, l in zip(parts, leaves)]

  return jax.tree.unflatten(treedef, draw(key))


def strategy_rows(config, space):
  rows = []
  for name in strategies.names():
    row = {"strategy": name}
    s = strategies.make(name, config, space)
    row["init_s"] = _seconds(lambda: s.init(jax.random.key(0)))
    state = s.init(jax.random.key(0))
    for label, opts in (("default", None), ("level0", LEVEL0)):
      fresh = strategies.make(name, config, space)  # New jitted functions: compiled again.
      ask = jax.jit(fresh.ask, compiler_options=opts)
      tell = jax.jit(fresh.tell, compiler_options=opts)
      row[f"ask_s_{label}"] = _seconds(lambda: ask(state, jax.random.key(1)))
      actions = ask(state, jax.random.key(1))
      m = actions.shape[0]
      row[f"tell_s_{label}"] = _seconds(
          lambda: tell(state, actions, jnp.zeros(m), jnp.ones(m, bool)))
    if name == "reinforce":
      row["init_s_uniform_draw"] = _seconds(
          lambda: _uniform_draw_init(config, space, jax.random.key(0)))
    rows.append(row)
  return rows


def pytree_row(space, spec, recipe, sizes, calls):
  arch = space.sample(jax.random.key(0))
  fns = train.make_train_fn(arch, spec, recipe, sizes, num_images=8,
                            cache=programs.ProgramCache())
  state = fns.init(jax.random.key(0))  # Host numpy: no device work.
  with_paths, _ = jax.tree_util.tree_flatten_with_path(state)
  plain = {jax.tree_util.keystr(p): leaf for p, leaf in with_paths}
  row = {"leaves": len(with_paths)}
  for label, tree in (("nnx_state", state), ("plain_dict", plain)):
    t0 = time.perf_counter()
    for _ in range(calls):
      leaves, treedef = jax.tree.flatten(tree)
      jax.tree.unflatten(treedef, leaves)
    row[f"ms_{label}"] = 1e3 * (time.perf_counter() - t0) / calls
  return row


def compile_rows(config, space, spec, recipe, sizes, n):
  device = jax.devices()[0]
  archs = [space.sample(jax.random.key(2000 + k)) for k in range(n)]

  def build(arch):
    fns = train.make_train_fn(arch, spec, recipe, sizes, num_images=common.COHORT_IMAGES,
                              cache=programs.ProgramCache())
    return fns.programs(device)

  rows = []
  for mode in ("one after the other", "two at a time"):
    t0, c0 = time.perf_counter(), time.process_time()
    if mode == "two at a time":
      with concurrent.futures.ThreadPoolExecutor(2) as pool:
        list(pool.map(build, archs))
    else:
      for arch in archs:
        build(arch)
    rows.append({"mode": mode, "children": n, "wall_s": time.perf_counter() - t0,
                 "process_cpu_s": time.process_time() - c0})
  return rows


def main(argv):
  args = parse_args(argv[1:])
  common.disable_compile_cache()
  config = common.get_config(args.config)
  space = space_lib.SearchSpace.from_config(config.space)
  size = int(config.data.image_size)
  spec = child_lib.ChildSpec.from_config(config, (size, size, 1), 2)
  recipe = train.Recipe.from_config(config)
  sizes = train.Sizes(train.pad_to(common.TRAIN_EXAMPLES, int(config.train.batch_size)),
                      train.pad_to(common.EVAL_EXAMPLES, int(config.train.eval_batch_size)))
  rec = common.record("host_overheads", argv, config=args.config, children=args.children,
                      calls=args.calls)
  rec["strategies"] = strategy_rows(config, space)
  rec["pytree"] = pytree_row(space, spec, recipe, sizes, args.calls)
  rec["compile"] = compile_rows(config, space, spec, recipe, sizes, args.children)
  common.write_results(args.name, rec, args.results_dir or None)
  f = common.fmt
  print(f"\nhost overheads, config {args.config}; {rec['date']}")
  print(common.table(
      [[r["strategy"], f(r["init_s"]), f(r.get("init_s_uniform_draw")), f(r["ask_s_default"]),
        f(r["ask_s_level0"]), f(r["tell_s_default"]), f(r["tell_s_level0"])]
       for r in rec["strategies"]],
      ["strategy", "init s", "init s (one draw)", "ask s", "ask s (lvl 0)", "tell s",
       "tell s (lvl 0)"]))
  p = rec["pytree"]
  print(f"\ntraining-state flatten+unflatten ({p['leaves']} leaves): NNX State "
        f"{p['ms_nnx_state']:.3f} ms, plain dict {p['ms_plain_dict']:.3f} ms")
  print(common.table([[r["mode"], str(r["children"]), f(r["wall_s"]), f(r["process_cpu_s"])]
                      for r in rec["compile"]],
                     ["compile", "children", "wall s", "process CPU s"]))
  return rec


if __name__ == "__main__":
  try:
    main(sys.argv)
  except UserInputError as e:
    sys.exit(f"error: {e}")
