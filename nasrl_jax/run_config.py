"""Checking a run's config before any work: one clear line for a value that cannot work, and the
refusal to resume a workdir that holds another experiment (or an older workdir layout)."""

import json
import os

from nasrl_jax import evaluate
from nasrl_jax import io_utils
from nasrl_jax import reinforce
from nasrl_jax import strategies as strategies_lib
from nasrl_jax import train as train_lib
from nasrl_jax.errors import UserInputError
from nasrl_jax.report import primary as primary_lib

# Config fields that may change between a run and its resume without changing the experiment.
HARMLESS_FIELDS = ("variant", "log_every_s", "compile_cache_dir", "data.cache_dir",
                   "eval.fps_iters", "eval.throughput_batch", "search.aot_compile",
                   "search.max_devices", "max_hours",
                   # Turning the final search on after a run adds it; the estimate is untouched.
                   "eval.final_search")
# Fields added after FORMAT 3 was written, with the value an older config.json meant.
ADDED_FIELDS = {"train.cpu_fusion_emitters": True}
PROTOCOLS = ("nested", "paper")
OUTER_GROUPS = ("subject", "device", "site")
# Workdir layout version, in config.json's sibling run.json: 1 = before nested CV; 2 = search keys
# shared by outer folds, one test training per model; 3 = independent searches per outer fold,
# test trainings per training seed.
FORMAT = 3


def _flatten(d, prefix=""):
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(_flatten(v, key + "."))
    else:
      out[key] = v
  return out


def check_resume(config, workdir) -> None:
  """Refuses to resume a workdir whose config.json describes another experiment.

  Raises:
    UserInputError naming the differing fields (harmless ones, see HARMLESS_FIELDS, are allowed),
    or saying the workdir was written by an earlier version of nasrl_jax.
  """
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  run_json = os.path.join(workdir, "run.json")
  fmt = io_utils.read_json(run_json).get("format") if os.path.exists(run_json) else 1
  if fmt != FORMAT:
    raise UserInputError(
        f"{workdir} holds a run of an earlier nasrl_jax layout (format {fmt}, this version "
        f"writes {FORMAT}: independent searches per outer fold, several test trainings); it "
        "cannot be resumed. Use a new --workdir (the old results stay readable where they are).")
  old = dict(ADDED_FIELDS, **_flatten(io_utils.read_json(path)))
  new = _flatten(json.loads(config.to_json()))
  diff = sorted(k for k in set(old) | set(new)
                if k not in HARMLESS_FIELDS and old.get(k) != new.get(k))
  if diff:
    shown = ", ".join(f"{k} ({old.get(k)!r} -> {new.get(k)!r})" for k in diff[:6])
    raise UserInputError(
        f"{workdir} holds a run of another experiment; differing config fields: {shown}"
        f"{' ...' if len(diff) > 6 else ''}. Use a new --workdir or the original config.")


def validate_config(config) -> None:
  """One clear line for a config value that cannot work, before any data is read."""
  ev, se = config.eval, config.search
  if ev.protocol not in PROTOCOLS:
    raise UserInputError(f"config.eval.protocol={ev.protocol!r}: use nested or paper")
  if ev.outer_groups not in OUTER_GROUPS:
    raise UserInputError(f"config.eval.outer_groups={ev.outer_groups!r}: use subject, device or "
                         "site")
  if ev.outer_groups != "subject" and ev.protocol != "nested":
    raise UserInputError("config.eval.outer_groups=device/site needs eval.protocol=nested")
  if config.data.balance not in evaluate.BALANCE_MODES:
    raise UserInputError(f"config.data.balance={config.data.balance!r}: use one of "
                         f"{', '.join(evaluate.BALANCE_MODES)}")
  try:
    train_lib.Recipe.from_config(config)
  except ValueError as e:
    raise UserInputError(str(e)) from None
  evaluate._strategies(config)  # pylint: disable=protected-access
  evaluate._seeds(config)  # pylint: disable=protected-access
  evaluate.test_seeds(config)
  primary_lib.parse(config.eval.primary, strategies_lib.model_names())
  reinforce.check_reward_config(config.controller)
  for name, v, lo in (("search.reward_splits", se.reward_splits, 1),
                      ("search.rescore_top_k", se.rescore_top_k, 0),
                      ("search.rescore_seeds", se.rescore_seeds, 0),
                      ("search.num_steps", se.num_steps, 1),
                      ("search.children_per_step", se.children_per_step, 1),
                      ("evolution.population", config.evolution.population, 2),
                      ("evolution.tournament", config.evolution.tournament, 1)):
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
      raise UserInputError(f"config.{name}={v!r}: must be an integer >= {lo}")
  if config.evolution.tournament > config.evolution.population:
    raise UserInputError(f"config.evolution.tournament={config.evolution.tournament} exceeds "
                         f"evolution.population={config.evolution.population}")
  outer = int(ev.outer_folds or config.data.num_folds)
  if outer < 2:
    raise UserInputError(f"config.eval.outer_folds={ev.outer_folds}: need at least 2")
  inner = int(config.data.num_folds) - 1
  if se.reward_splits * int(config.data.val_parts) > inner:
    raise UserInputError(
        f"config.search.reward_splits={se.reward_splits} needs {se.reward_splits} disjoint "
        f"validation parts of val_parts={config.data.val_parts} inner parts each, but an outer "
        f"fold has {inner} inner parts (data.num_folds - 1)")
