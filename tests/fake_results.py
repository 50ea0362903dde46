"""A realistic fake of the pipeline's `results` dict: the report's input contract, for tests.

`make_results()` builds what the pipeline passes to `nasrl_jax.report.write_report`: a cohort shaped
like the paper's (242 subjects, 310 images, 31 % S0, three machines), outer folds split by subject
(label-stratified) or by machine, every strategy's winners per outer fold and seed with their
re-scoring, and softmax test predictions whose quality is set per model by `skill` (0 = chance).
Deterministic for a given `seed`.
"""

import numpy as np

MACHINES = ("LOGIQ_S8", "Aplio300", "SSA-660A")
# Share of subjects per grade S0..S3: the paper's 96 S0 of 310 images, the rest spread over S1-S3.
GRADE_SHARE = (0.31, 0.30, 0.22, 0.17)
# Half the separation of the classes in logit units per model: AUROC about 0.8.
SKILL = {"NASRL": 0.65, "VGG19": 0.55, "RandomSearch": 0.6, "Evolution": 0.62}
STRATEGY_OF = {"NASRL": "reinforce", "RandomSearch": "random", "Evolution": "evolution"}
KERNELS = (1, 3, 5, 7)
FILTERS = (64, 128, 256, 512)
BLOCKS = (2, 2, 4, 4, 4)
VGG19_KERNELS = (3,) * 16
VGG19_FILTERS = (64, 64, 128, 128) + (256,) * 4 + (512,) * 8
COMMAND = "python launch.py --config=configs/fatty_liver.py:quick --workdir=W"
VERSIONS = {"python": "3.11.7", "jax": "0.7.2", "jaxlib": "0.7.2", "flax": "0.12.0",
            "optax": "0.2.5", "orbax-checkpoint": "0.11.20", "numpy": "2.4.6",
            "scikit-learn": "1.9.1", "statsmodels": "0.15.0"}


def arch_string(kernels, filters, blocks=BLOCKS):
  """The pipeline's Architecture string: '3x64 3x64 | 3x128 3x128 | ...'."""
  parts, i = [], 0
  for b in blocks:
    parts.append(" ".join(f"{k}x{f}" for k, f in zip(kernels[i:i + b], filters[i:i + b])))
    i += b
  return " | ".join(parts)


def _softmax(z):
  z = z - z.max(axis=-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=-1, keepdims=True)


# CAP (dB/m) ranges per grade S0..S3 (the paper's cut-offs 238 / 260 / 290).
CAP_RANGES = ((180.0, 237.0), (238.0, 259.0), (260.0, 289.0), (290.0, 350.0))


def _cohort(rng, subjects, images, label_mode):
  per_subject = np.ones(subjects, np.int64)
  per_subject[rng.choice(subjects, images - subjects, replace=False)] += 1
  grade = rng.choice(4, size=subjects, p=GRADE_SHARE)
  return {"id": np.array([f"P{i:03d}" for i in range(subjects)]),
          "images": per_subject,
          "cap": np.array([rng.uniform(*CAP_RANGES[g]) for g in grade]),
          "label": grade if label_mode == "grade" else (grade > 0).astype(np.int64),
          "machine": rng.integers(0, len(MACHINES), subjects),
          "latent": rng.normal(size=subjects)}


def _outer_folds(rng, cohort, outer_groups, k):
  if outer_groups == "device":
    return cohort["machine"].copy(), list(MACHINES)
  fold = np.empty(cohort["id"].size, np.int64)
  for label in np.unique(cohort["label"]):  # Label-stratified, as the pipeline's folds.
    members = rng.permutation(np.flatnonzero(cohort["label"] == label))
    fold[members] = (np.arange(members.size) + rng.integers(k)) % k
  return fold, [""] * k


def _predict(rng, cohort, members, skill, num_classes):
  """Softmax outputs per image of `members` (subject indices) for a model of the given skill."""
  sid, label, prob, cap = [], [], [], []
  for i in members:
    for _ in range(cohort["images"][i]):
      y = int(cohort["label"][i])
      noise = rng.normal(0.0, 0.7, num_classes) + 0.6 * cohort["latent"][i]
      if num_classes == 2:
        z = np.array([0.0, skill * (2 * y - 1) + noise[1]])
      else:  # Ordinal grades: the nearer a grade to the true one, the more mass it gets.
        z = -0.6 * skill * (np.arange(num_classes) - y) ** 2 + 1.5 * noise
      sid.append(str(cohort["id"][i]))
      label.append(y)
      prob.append([round(float(v), 6) for v in _softmax(z)])
      cap.append(round(float(cohort["cap"][i]), 1))
  return {"subject_id": sid, "label": label, "prob": prob, "cap": cap}


def _random_arch(rng, base=None):
  if base is None:
    kernels = rng.choice(KERNELS, 16)
    filters = rng.choice(FILTERS, 16)
  else:  # A few layers differ from `base`: winners that partly agree, as real searches give.
    kernels, filters = np.array(base[0]), np.array(base[1])
    for layer in rng.choice(16, 4, replace=False):
      kernels[layer] = rng.choice(KERNELS)
      filters[layer] = rng.choice(FILTERS)
  kernels, filters = [int(k) for k in kernels], [int(f) for f in filters]
  params = int(2_000_000 + 40_000 * sum(filters) + 100_000 * sum(kernels))
  return {"architecture": arch_string(kernels, filters), "kernels": kernels, "filters": filters,
          "params": params, "flops": int(params * 350)}


def _vgg19():
  return {"architecture": arch_string(VGG19_KERNELS, VGG19_FILTERS), "kernels": list(VGG19_KERNELS),
          "filters": list(VGG19_FILTERS), "params": 139_577_282, "flops": 19_600_000_000}


def _search_run(rng, fold, seed, children=16, steps=4):
  rewards = np.clip(rng.normal(0.72, 0.07, children) + np.repeat(np.linspace(0, 0.05, steps),
                                                                 children // steps), 0, 1)
  per_step, best = [], 0.0
  for s in range(steps):
    chunk = rewards[s * (children // steps):(s + 1) * (children // steps)]
    best = max(best, float(chunk.max()))
    per_step.append({"step": s, "mean_reward": float(chunk.mean()),
                     "max_reward": float(chunk.max()), "best_so_far": best, "baseline": None,
                     "entropy": None})
  return {"fold": fold, "seed": seed, "children": children, "distinct": children - 1,
          "memo_hits": 1, "failed": 0, "does_not_fit": 0, "wall_seconds": 120.0,
          "compile_seconds": 40.0, "train_seconds": 70.0, "best_reward": best,
          "best_architecture": arch_string([3] * 16, [64] * 16), "per_step": per_step,
          "rewards": [float(r) for r in rewards]}


def make_results(*, protocol="nested", label_mode="binary", outer_groups="subject",
                 outer_folds=10, seeds=(0, 1, 2), models=("NASRL", "VGG19", "RandomSearch",
                                                          "Evolution"),
                 skill=None, subjects=242, images=310, seed=0, test_seeds=2):
  """The results dict of a finished run (schema of docs/notes_report.md).

  Args:
    protocol: "nested" or "paper".
    label_mode: "binary" (S0 vs S1-S3) or "grade" (S0..S3).
    outer_groups: "subject" (label-stratified folds) or "device" (leave one machine out: 3 folds).
    outer_folds: k for subject folds.
    seeds: search seeds.
    test_seeds: test trainings per chosen model, fold and search seed (VGG19: per fold).
    models: model names; VGG19 is not searched, the others are strategies' winners.
    skill: {name: separation} overriding SKILL (0 = a model that learned nothing).
    subjects, images: cohort size (images >= subjects).
    seed: seeds the fake.
  """
  rng = np.random.default_rng(seed)
  skill = {**SKILL, **(skill or {})}
  num_classes = 4 if label_mode == "grade" else 2
  class_names = ["S0", "S1", "S2", "S3"] if label_mode == "grade" else ["S0", "S1-S3"]
  cohort = _cohort(rng, subjects, images, label_mode)
  fold_of, groups = _outer_folds(rng, cohort, outer_groups, outer_folds)
  k = len(groups)
  search_fold = 0
  searched = [m for m in models if m != "VGG19"]
  base = _random_arch(rng)
  base = (base["kernels"], base["filters"])

  # Winners: per (model, fold, seed) in nested; per (model, seed) on the search fold in paper.
  winner, rescore = {}, {m: [] for m in searched}
  search_folds = range(k) if protocol == "nested" else [search_fold]
  for m in searched:
    for f in search_folds:
      for s in seeds:
        candidates = [_random_arch(rng, base) for _ in range(5)]
        rewards = np.sort(rng.uniform(0.75, 0.9, 5))[::-1]
        means = rewards - rng.uniform(0.05, 0.2, 5)  # Re-scoring shrinks the lucky maxima.
        chosen = int(np.argmax(means))
        for c, (cand, r, mu) in enumerate(zip(candidates, rewards, means)):
          rescore[m].append({"fold": f, "seed": s, "architecture": cand["architecture"],
                             "search_reward": float(r), "mean": float(mu),
                             "std": float(rng.uniform(0.01, 0.05)), "n": 3, "chosen": c == chosen})
        winner[m, f, s] = dict(candidates[chosen], search_reward=float(rewards[chosen]),
                               rescore_mean=float(means[chosen]),
                               rescore_std=rescore[m][-5 + chosen]["std"])

  model_entries = []
  for m in models:
    folds = []
    for f in range(k):
      members = np.flatnonzero(fold_of == f)
      n_test = int(cohort["images"][members].sum())
      rest = images - n_test
      for s in ([None] if m == "VGG19" else seeds):
        searched_on = f if protocol == "nested" else search_fold
        arch = _vgg19() if m == "VGG19" else winner[m, searched_on, s]
        for t in range(test_seeds):
          folds.append({
              "fold": f, "seed": s, "training_seed": t, "group": groups[f],
              "architecture": arch["architecture"],
              "params": arch["params"], "flops": arch["flops"],
              "test": _predict(rng, cohort, members, skill[m], num_classes),
              "n_train": int(round(rest * 8 / 9)), "n_val": rest - int(round(rest * 8 / 9)),
              "n_test": n_test, "val_threshold": float(rng.uniform(0.35, 0.65)),
              "best_epoch": int(rng.integers(3, 30)), "best_val_loss": float(rng.uniform(0.4, 0.7)),
              "val_score": float(rng.uniform(-0.7, -0.4)), "train_seconds": 12.5})
    exported = _vgg19() if m == "VGG19" else winner[m, search_folds[0] if protocol == "paper"
                                                    else 0, seeds[0]]
    model_entries.append({
        "name": m, "architecture": exported["architecture"], "kernels": exported["kernels"],
        "filters": exported["filters"], "blocks": list(BLOCKS), "params": exported["params"],
        "flops": exported["flops"], "fps": 41.0 if m != "VGG19" else 38.0,
        "latency_ms_median": 24.0, "throughput": 900.0, "throughput_batch": 64,
        "exported": {"fold": 0, "seed": None if m == "VGG19" else seeds[0], "training_seed": 0,
                     "source": "search_fold" if protocol == "paper"
                     else "best_validation_outer_fold"},
        "folds": folds})

  outer = []
  if protocol == "nested":
    for f in range(k):
      members = np.flatnonzero(fold_of == f)
      outer.append({"fold": f, "group": groups[f],
                    "test_images": int(cohort["images"][members].sum()),
                    "test_subjects": int(members.size),
                    "winners": {m: [dict(winner[m, f, s], seed=s) for s in seeds]
                                for m in searched}})

  strategies = {}
  for m in searched:
    strategies[STRATEGY_OF.get(m, m.lower())] = {
        "model": m, "runs": [_search_run(rng, f, s) for f in search_folds for s in seeds]}
  labels = np.repeat(cohort["label"], cohort["images"])
  machines = np.repeat(cohort["machine"], cohort["images"])
  data = {"name": "synthetic", "images": images, "subjects": subjects, "image_shape": [32, 32, 1],
          "labels": {str(c): int(np.sum(labels == c)) for c in range(num_classes)},
          "devices": {name: int(np.sum(machines == i)) for i, name in enumerate(MACHINES)},
          "outer_groups": outer_groups, "outer_folds": k, "reward_splits": 3, "inner_parts": 9}
  if protocol == "paper":
    data["search_fold"] = search_fold
  return {
      "command": COMMAND, "config_variant": "quick", "date": "2026-12-02T10:00:00Z",
      "device": "cpu (2 cores)", "protocol": protocol, "label_mode": label_mode,
      "class_names": class_names, "seeds": list(seeds), "test_seeds": test_seeds, "data": data,
      "models": model_entries, "bootstrap_seed": 12345,
      "cohort": {"source": "synthetic", "seed": 0, "tuned_on_it": False, "tuning_cohorts": [1]},
      "primary_spec": ["NASRL vs VGG19", "NASRL vs RandomSearch", "subject.auroc"],
      "outer_folds": outer, "rescore": rescore,
      "search": {"reward_metric": "val_accuracy", "reward_transform": "none", "reward_splits": 3,
                 "children_per_search": 16, "rescore_top_k": 5, "rescore_seeds": 3,
                 "strategies": strategies},
      "final_search": None,
      "compute": {"wall_seconds": 5400.0, "device_hours": 1.5, "compile_seconds": 1600.0,
                  "compile_share": 0.30, "devices": 1, "processes": 1},
      "compile": {"compiles": 60, "cache_hits": 240, "distinct_architectures": 45,
                  "distinct_programs": 62},
      "versions": dict(VERSIONS, git_commit="0123abc"),
  }
