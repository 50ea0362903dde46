"""The search side of the report: winners and their agreement, re-scoring, search cost and curves.

Reads the results' `outer_folds` winners, `rescore` rows and `search` summaries; nothing here
touches test predictions. Moved out of `aggregate` (which owns the models' test metrics).
"""

import collections
import math

import numpy as np

# Monte Carlo draws for the chance level of the winners' agreement (standard error < 0.002).
CHANCE_DRAWS = 20_000
# The chance level's generator seed: fixed, so the same winners always give the same report.
CHANCE_SEED = 0


def _nanmean(values):
  v = np.asarray(values, np.float64)
  v = v[np.isfinite(v)]
  return float(v.mean()) if v.size else math.nan


def _num(x):
  return math.nan if x is None else float(x)


# --------------------------------------------------------------------------- winners


def parse_architecture(text):
  """('3x64 3x64 | 3x128 ...') -> (kernels, filters) lists, or None if it is not that form."""
  try:
    layers = [layer.split("x") for layer in str(text).replace("|", " ").split()]
    return [int(k) for k, _ in layers], [int(f) for _, f in layers]
  except ValueError:
    return None


def layer_choices(winner):
  """A winner's (kernels, filters) lists, from its fields or its architecture string."""
  kernels, filters = winner.get("kernels"), winner.get("filters")
  if kernels and filters:
    return list(kernels), list(filters)
  return parse_architecture(winner.get("architecture", "")) or (None, None)


def winner_rows(results):
  """One row per winner: nested from outer_folds; paper from the models' folds (one per seed)."""
  rows = []
  for entry in results.get("outer_folds") or []:
    for name, winners in entry["winners"].items():
      for w in winners:
        rows.append(dict(w, fold=entry["fold"], group=entry.get("group", ""), model=name))
  if rows or results["protocol"] == "nested":
    return rows
  searched = set((results.get("rescore") or {}).keys()) | {
      s.get("model") for s in ((results.get("search") or {}).get("strategies") or {}).values()}
  for model in results["models"]:
    if model["name"] not in searched:
      continue
    seen = {}
    for fold in model["folds"]:
      seen.setdefault(fold["seed"], fold)
    for s, fold in sorted(seen.items()):
      rows.append({"model": model["name"], "fold": results["data"]["search_fold"], "seed": s,
                   "group": "", "architecture": fold.get("architecture"),
                   "params": fold.get("params"), "flops": fold.get("flops")})
  return rows


def chance_agreement(n_winners, n_choices, draws=CHANCE_DRAWS, seed=CHANCE_SEED):
  """Expected share of the most common choice when n_winners pick uniformly among n_choices.

  The scale against which a layer's agreement reads: 30 winners choosing uniformly among 4
  kernel sizes already share the modal one 35 % of the time, 3 winners 56 %. Monte Carlo with a
  fixed seed (exact enough at CHANCE_DRAWS, and deterministic).
  """
  if n_winners < 1 or n_choices < 1:
    return None
  rng = np.random.default_rng(seed)
  counts = rng.multinomial(n_winners, np.full(n_choices, 1.0 / n_choices), size=draws)
  return float(np.mean(counts.max(axis=1)) / n_winners)


def agreement(winners, kernel_choices=None, filter_choices=None):
  """How much a model's winners agree, per layer and overall.

  Args:
    winners: rows of `winner_rows` for one model (each with kernels/filters or an architecture
      string).
    kernel_choices, filter_choices: how many values a layer can take, for the chance level
      (None: no chance level).

  Returns:
    {"winners", "distinct", "modal_architecture", "modal_count", "kernel_agreement",
     "filter_agreement", "kernel_chance", "filter_chance", "per_layer"}: a layer's agreement is
    the share of winners that took the most common choice at that layer; the two agreements
    average it over layers (1.0: every winner chose alike); the chance values are that share
    under uniform random choices (`chance_agreement`). None where winners have no per-layer
    choices or differ in depth.
  """
  archs = collections.Counter(str(w.get("architecture")) for w in winners)
  modal, modal_count = archs.most_common(1)[0] if archs else (None, 0)
  out = {"winners": len(winners), "distinct": len(archs), "modal_architecture": modal,
         "modal_count": modal_count, "kernel_agreement": None, "filter_agreement": None,
         "kernel_chance": None, "filter_chance": None, "per_layer": []}
  choices = [layer_choices(w) for w in winners]
  if not choices or any(k is None for k, _ in choices) or len({len(k) for k, _ in choices}) != 1:
    return out
  kernels = np.array([k for k, _ in choices])
  filters = np.array([f for _, f in choices])
  shares = []
  for layer in range(kernels.shape[1]):
    row = {"layer": layer + 1}
    for key, values in (("kernel", kernels[:, layer]), ("filter", filters[:, layer])):
      value, count = collections.Counter(values.tolist()).most_common(1)[0]
      row[f"{key}_mode"], row[f"{key}_share"] = int(value), count / len(values)
    shares.append((row["kernel_share"], row["filter_share"]))
    out["per_layer"].append(row)
  out["kernel_agreement"] = float(np.mean([k for k, _ in shares]))
  out["filter_agreement"] = float(np.mean([f for _, f in shares]))
  if kernel_choices:
    out["kernel_chance"] = chance_agreement(len(winners), kernel_choices)
  if filter_choices:
    out["filter_chance"] = chance_agreement(len(winners), filter_choices)
  return out


# --------------------------------------------------------------------------- re-scoring, search


def rescore_summary(rows):
  """Search reward vs re-scored mean of one model's candidates, per search (fold, seed).

  Returns:
    {"searches", "candidates", "changed", "mean_search_reward", "mean_rescore", "mean_optimism"}
    for the chosen candidates: `changed` counts searches where re-scoring picked another child than
    the highest search reward; optimism is search reward - re-scored mean (the winner's curse).
  """
  by_search = collections.defaultdict(list)
  for row in rows:
    by_search[row["fold"], row["seed"]].append(row)
  chosen, changed = [], 0
  for cands in by_search.values():
    flagged = [c for c in cands if c.get("chosen")]
    pick = flagged[0] if flagged else max(cands, key=lambda c: _num(c.get("mean")))
    top = max(cands, key=lambda c: _num(c.get("search_reward")))
    changed += int(pick["architecture"] != top["architecture"])
    chosen.append(pick)
  rewards = [_num(c.get("search_reward")) for c in chosen]
  means = [_num(c.get("mean")) for c in chosen]
  return {"searches": len(by_search), "candidates": len(rows), "changed": changed,
          "mean_search_reward": _nanmean(rewards), "mean_rescore": _nanmean(means),
          "mean_optimism": _nanmean(np.subtract(rewards, means))}


def _total(runs, key):
  values = [r.get(key) for r in runs if r.get(key) is not None]
  return sum(values) if values else None


def search_cost(search):
  """One row per strategy: its runs' children, memo hits, failures and seconds, summed; distinct
  architectures per search (`distinct`: summed over searches) and over the whole run
  (`distinct_in_run`: an architecture met by two searches counts once)."""
  rows = []
  for key, strategy in (search.get("strategies") or {}).items():
    runs = strategy.get("runs") or []
    row = {"strategy": key, "model": strategy.get("model"), "runs": len(runs)}
    for field in ("children", "distinct", "memo_hits", "failed", "does_not_fit", "wall_seconds",
                  "compile_seconds", "train_seconds"):
      row[field] = _total(runs, field)
    listed = [r["architectures"] for r in runs if r.get("architectures") is not None]
    row["distinct_in_run"] = (len(set().union(*map(set, listed))) if len(listed) == len(runs)
                              and runs else None)
    wall, comp = row["wall_seconds"], row["compile_seconds"]
    row["compile_share"] = comp / wall if wall and comp is not None else None
    row["best_reward_mean"] = _nanmean([_num(r.get("best_reward")) for r in runs])
    rows.append(row)
  return rows


def search_curves(search):
  """Per strategy: mean over its runs of the per-step mean reward and best-so-far, and every
  child's reward placed at its step (children are sampled step by step)."""
  out = {}
  for key, strategy in (search.get("strategies") or {}).items():
    by_step = collections.defaultdict(lambda: {"mean": [], "best": []})
    dots_x, dots_y = [], []
    for run in strategy.get("runs") or []:
      steps = run.get("per_step") or []
      for i, row in enumerate(steps):
        step = row.get("step", i)
        by_step[step]["mean"].append(_num(row.get("mean_reward")))
        by_step[step]["best"].append(_num(row.get("best_so_far")))
      rewards = [_num(r) for r in run.get("rewards") or []]
      if rewards and steps:
        per = max(1, math.ceil(len(rewards) / len(steps)))
        dots_x += [i // per for i in range(len(rewards))]
        dots_y += rewards
    steps = sorted(by_step)
    out[key] = {"model": strategy.get("model"), "steps": steps,
                "mean_reward": [_nanmean(by_step[s]["mean"]) for s in steps],
                "best_so_far": [_nanmean(by_step[s]["best"]) for s in steps],
                "child_step": dots_x, "child_reward": dots_y,
                "runs": len(strategy.get("runs") or [])}
  return out


