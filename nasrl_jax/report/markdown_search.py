"""report.md's search sections: winners and their agreement, re-scoring, exported models, search
cost and compute, and the NAS best-practice checklist. Reads only the JSON-safe report object."""

from nasrl_jax.report.text import (code, details, finite, flops_text, fmt, int_text, seconds_text,
                                   share_text, table)

STRATEGY_LABELS = {"reinforce": "REINFORCE controller", "random": "random search",
                   "evolution": "regularized evolution"}


def agreement_sentence(name, a):
  if a["winners"] == 0:
    return f"{name}: no winners recorded."
  if a["distinct"] == 1:
    return f"{name}: the search found one architecture: all {a['winners']} winners are the same."
  text = (f"{name}: the search does not settle on one architecture: its {a['winners']} winners "
          f"are {a['distinct']} distinct architectures (the most common one won "
          f"{a['modal_count']} time(s))")
  if finite(a.get("kernel_agreement")):
    text += (f"; per layer, on average {share_text(a['kernel_agreement'])} of the winners share "
             f"the most common kernel size and {share_text(a['filter_agreement'])} the most common "
             f"filter count")
    if finite(a.get("kernel_chance")) and finite(a.get("filter_chance")):
      text += (f" (uniform random choices would give {share_text(a['kernel_chance'])} and "
               f"{share_text(a['filter_chance'])})")
  return text + "."


def winners_section(report):
  agreement = report.get("winner_agreement") or {}
  winners = report.get("winners") or []
  if not winners:
    return ["## Winners", "", "No winners were recorded.", ""]
  title = ("## Winners of every outer fold" if report["protocol"] == "nested"
           else "## Winners of the search fold, per seed")
  lines = [title, ""]
  lines += [f"- {agreement_sentence(name, a)}" for name, a in agreement.items()]
  rows = [[name, a["winners"], a["distinct"],
           f"{share_text(a.get('kernel_agreement'))} (chance {share_text(a.get('kernel_chance'))})",
           f"{share_text(a.get('filter_agreement'))} (chance {share_text(a.get('filter_chance'))})"]
          for name, a in agreement.items()]
  lines += ["", table(["Model", "winners", "distinct", "kernel agreement", "filter agreement"],
                      rows), "",
            "Agreement: the share of winners with the most common choice at a layer, averaged over "
            "layers; chance: the same share if every winner chose uniformly among the values any "
            "winner took.", ""]
  body = [table(["fold", "group", "model", "seed", "architecture", "params", "FLOPs",
                 "search reward", "re-scored mean +- sd"],
                [[w.get("fold"), w.get("group") or "", w.get("model"), w.get("seed"),
                  code(w.get("architecture")), int_text(w.get("params")),
                  flops_text(w.get("flops")), fmt(w.get("search_reward"), 3),
                  f"{fmt(w.get('rescore_mean'), 3)} +- {fmt(w.get('rescore_std'), 3)}"]
                 for w in winners])]
  return lines + details(f"All {len(winners)} winners (architecture, parameters, FLOPs)", body)


def rescore_section(report):
  summary = report.get("rescore_summary") or {}
  rescore = report.get("rescore") or {}
  if not summary:
    return []
  lines = ["## Re-scoring", "",
           "A search's best reward is the maximum of many noisy validation scores, so it "
           "overstates the winner (the winner's curse). Each strategy's top children were "
           "retrained with further seeds and ranked by their mean; \"optimism\" = search reward - "
           "re-scored mean of the chosen child.", ""]
  rows = [[name, s["searches"], s["candidates"], f"{s['changed']} of {s['searches']}",
           fmt(s.get("mean_search_reward"), 3), fmt(s.get("mean_rescore"), 3),
           fmt(s.get("mean_optimism"), 3)] for name, s in summary.items()]
  lines += [table(["Model", "searches", "candidates", "re-scoring changed the winner",
                   "search reward (winners)", "re-scored mean (winners)", "optimism"], rows), ""]
  body = [table(["model", "fold", "seed", "architecture", "search reward", "re-scored mean +- sd",
                 "n", "chosen"],
                [[name, r.get("fold"), r.get("seed"), code(r.get("architecture")),
                  fmt(r.get("search_reward"), 3),
                  f"{fmt(r.get('mean'), 3)} +- {fmt(r.get('std'), 3)}",
                  r.get("n", "n/a"), "yes" if r.get("chosen") else ""]
                 for name, rows_ in rescore.items() for r in rows_])]
  return lines + details("Every re-scored candidate", body)


def architectures_section(models):
  rows = []
  for m in models:
    exported = m.get("exported") or {}
    source = exported.get("source", "n/a")
    if exported:
      source += (f" (fold {exported.get('fold', 'n/a')}, search seed "
                 f"{exported.get('seed') if exported.get('seed') is not None else 'none'}, "
                 f"training seed {exported.get('training_seed', 'n/a')})")
    rows.append([m["name"], code(m.get("architecture")), int_text(m.get("params")),
                 flops_text(m.get("flops")), fmt(m.get("fps"), 1),
                 fmt(m.get("latency_ms_median"), 1),
                 (f"{fmt(m.get('throughput'), 0)} (batch {m.get('throughput_batch')})"
                  if finite(m.get("throughput")) else "n/a"), source])
  return ["## Exported models", "",
          "The models under `models/<name>/` that `predict` uses: one test training each (the one "
          "with the best validation score, never chosen by test data). Under the nested protocol, "
          "Table 1 estimates the search procedure (each outer fold may pick another architecture, "
          "each is trained several times) and the exported model is the one named in "
          "\"exported from\".",
          "", table(["Model", "architecture", "Parameters", "FLOPs", "FPS (batch 1)",
                     "latency ms (median)", "images/s", "exported from"], rows), ""]


def search_section(report):
  search = report.get("search") or {}
  lines = ["## Search cost", ""]
  lines.append(f"- Reward: {search.get('reward_metric', 'n/a')} (transform "
               f"{search.get('reward_transform', 'n/a')}), mean over "
               f"{search.get('reward_splits', 'n/a')} inner splits; "
               f"{search.get('children_per_search', 'n/a')} children per search; top "
               f"{search.get('rescore_top_k', 'n/a')} re-scored over "
               f"{search.get('rescore_seeds', 'n/a')} seeds.")
  cost = report.get("search_cost") or []
  if cost:
    rows = [[STRATEGY_LABELS.get(r["strategy"], r["strategy"]), r.get("model") or "",
             r["runs"], int_text(r.get("children")), int_text(r.get("distinct")),
             int_text(r.get("distinct_in_run")),
             int_text(r.get("memo_hits")), int_text(r.get("failed")),
             int_text(r.get("does_not_fit")), seconds_text(r.get("wall_seconds")),
             share_text(r.get("compile_share"))] for r in cost]
    lines += ["", table(["strategy", "model", "searches", "children",
                         "distinct (summed per search)", "distinct in the run", "memo hits",
                         "failed", "does not fit", "wall s", "compile share"], rows), "",
              "Every outer fold searched with its own random stream: an architecture met by two "
              "searches counts once in \"distinct in the run\"."]
  else:
    lines += ["", "No search was recorded."]
  compute = report.get("compute") or {}
  comp = report.get("compile") or {}
  lines += ["",
            f"- Compute: {fmt(compute.get('device_hours'))} device-hours "
            f"({seconds_text(compute.get('wall_seconds'))} s wall), compile share "
            f"{share_text(compute.get('compile_share'))}, {compute.get('devices', 'n/a')} "
            f"device(s), {compute.get('processes', 'n/a')} process(es).",
            f"- Compiles: {comp.get('compiles', 'n/a')} (cache hits "
            f"{comp.get('cache_hits', 'n/a')}; distinct architectures "
            f"{comp.get('distinct_architectures', 'n/a')}, distinct programs "
            f"{comp.get('distinct_programs', 'n/a')})."]
  if comp.get("programs_evicted"):
    lines += [f"- {comp['programs_evicted']} compiled programs were dropped from memory to stay "
              "under half of the kernel's memory-mapping limit (vm.max_map_count) and recompiled "
              "when needed again, so compiles can exceed distinct programs."]
  lines += [""]
  return lines


def checklist_section(report):
  """The Lindauer & Hutter (2020) NAS best-practice checklist items this run can answer."""
  names = [m["name"] for m in report["models"]]
  cost = {r.get("model"): r for r in report.get("search_cost") or []}
  children = "; ".join(f"{name}: {int_text(r.get('children'))} children "
                       f"({int_text(r.get('distinct_in_run'))} distinct in the run, "
                       f"{int_text(r.get('memo_hits'))} memo hits) over {r['runs']} searches"
                       for name, r in cost.items()) or "n/a"
  versions = report.get("versions") or {}
  compute = report.get("compute") or {}
  per_search = {r.get("children") / r["runs"] for r in cost.values()
                if r.get("children") is not None and r.get("runs")}
  budget = ("the same number of children per search for every strategy" if len(per_search) == 1
            else "children per search differ between strategies: compare with care"
            if per_search else "children per search not recorded")
  baselines = [n for n in names if n != "NASRL"]
  return [
      "## NAS checklist (Lindauer & Hutter 2020)", "",
      f"- Evaluation protocol: {report['protocol']}"
      + (" (optimistic, see the protocol)" if report["protocol"] == "paper" else
         " (test subjects never used by search, re-scoring or selection)") + ".",
      f"- Baselines: {', '.join(baselines) or 'none'} (VGG19: fixed architecture, same folds); "
      f"random search {'included' if 'RandomSearch' in names else 'missing'}; {budget}.",
      f"- Seeds: search seeds {', '.join(str(s) for s in report.get('seeds') or [])} (every "
      f"strategy once per seed and outer fold, each outer fold with its own stream); "
      f"{report.get('test_seeds', 'n/a')} training seeds per chosen model and outer fold.",
      f"- Children per strategy: {children}.",
      f"- Compute: {fmt(compute.get('device_hours'))} device-hours on "
      f"{report.get('device') or 'n/a'}.",
      "- Versions: " + (", ".join(f"{k} {v}" for k, v in versions.items()) or "n/a") + ".",
      f"- Command: `{report.get('command') or 'n/a'}` (config variant "
      f"`{report.get('config_variant') or 'default'}`, {report.get('date') or 'n/a'}).", ""]


def final_search_section(report):
  if not report.get("final_search"):
    return []
  return ["## Final search", "", "A last search on all subjects produced the exported models; "
          "its rewards appear in no estimate above.", "",
          table(["Model", "architecture", "seed", "search reward"],
                [[name, code(v.get("architecture")), v.get("seed", "n/a"),
                  fmt(v.get("search_reward"), 3)] for name, v in report["final_search"].items()]),
          ""]
