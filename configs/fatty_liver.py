"""NASRL for early fatty-liver detection from B-mode ultrasound: the experiment config.

Default (paper scale, a GPU job):
  python launch.py --config=configs/fatty_liver.py --workdir=runs/paper
  224x224 grayscale, full search space (16**16 architectures), the nested protocol over 5 outer
  folds: REINFORCE (NASRL), random search and regularized evolution, 100 children each per outer
  fold on 2 reward splits, top 3 re-scored with 2 more seeds, VGG19 through the same folds. The
  pre-flight estimates the device time first and stops above config.max_hours (BUILD_NOTES.md
  has the projection). `--config.eval.protocol=paper` is the paper's layout (one search on fold
  0, 10-fold CV of its winner), labelled optimistic in the report.

Quick (the README's first command; the same pipeline at smoke scale on a 2-core CPU):
  python launch.py --config=configs/fatty_liver.py:quick --workdir=runs/quick
  See QUICK_NOTE below for its budget and what it shows.

CPU (the real comparison for a user without a GPU, about an hour on 2 cores):
  python launch.py --config=configs/fatty_liver.py:cpu --workdir=runs/cpu

Variants are comma-separated words after the colon (e.g. `quick,manifest`); single fields are
overridden with flags such as `--config.train.epochs=3`.

Budget arithmetic on the 2-core development CPU (BUILD_NOTES.md): a child's two programs compile
in ~7-11 s once per run (every architecture compiles once: folds, reward splits, re-scoring seeds
and the test trainings share its programs), and train at 50-90 ms per step at 32 px (width x1/16,
batch 32) plus ~40 ms per validation pass. A run costs about
  distinct architectures x 8 s + trainings x epochs x (steps per epoch x 70 ms + 40 ms) + 40 s
(data, pre-flight, FPS, report). quick: 13-15 architectures, ~60 trainings of 10 x 4 steps:
~105 + ~140 + 40 s = ~5 minutes. cpu: ~28 architectures, ~200 trainings of 20 x 6 steps:
~280 s of compile + ~45 minutes of training (measured 52 minutes cold, BUILD_NOTES.md).
"""

import ml_collections

# Synthetic cohorts (data.synthetic.seed) on which recipes, budgets and balancing were chosen
# (benchmarks default to them; BUILD_NOTES.md lists each choice with its cohort). The default
# cohort 0 is the evaluation cohort: a report on one of these says `tuned_on_it: true`.
TUNING_COHORTS = (1,)

QUICK_NOTE = """quick: 32 px, widths x1/16, no batch norm, lr 1e-3, hflip + gain, 10 epochs;
nested over 2 outer folds; per fold and strategy 2 steps x 2 children, 1 reward split (val_nll),
top 2 re-scored with 1 more seed; VGG19 and three strategies. 13-15 distinct architectures and
~60 trainings: ~5.5 minutes cold on 2 cores. A smoke test of the whole protocol: its models start
to learn (AUROC ~0.6-0.77), its comparisons are not powered (BUILD_NOTES.md)."""

CPU_NOTE = """cpu: the quick recipe at 20 epochs, nested over 5 outer folds; per fold and strategy 8
children (4 steps x 2), 1 reward split (val_nll), top 2 re-scored with 1 more seed; 3 test
trainings per chosen model."""


# The CPU budgets' shared recipe (quick, cpu, tiny), measured on tuning cohort 1 (BUILD_NOTES.md,
# recipe tables): 32 px, widths x1/16 (filters 4-32) with no layer under 8 channels, GAP head, no
# batch norm at lr 1e-3, flips and gain jitter. The width floor is the reward-fidelity screen's
# choice (docs/reward_fidelity.md): the only lever whose Kendall tau CI excluded 0 (0.28 [0.02,
# 0.55] vs 0.05 [-0.33, 0.45]), sampled children 0.69 vs 0.66 AUROC, no slower.
CPU_RECIPE = {
    "data.image_size": 32,
    "data.synthetic.render_size": 96,
    "space.width_multiplier": 0.0625,
    "model.min_width": 8,
    "model.head": "gap",
    "model.batch_norm": False,
    "train.learning_rate": 1e-3,
    "train.epochs": 10,
    "data.augment": ("hflip", "gain"),
    "max_hours": 0.0,
    "eval.fps_iters": 20,
}

VARIANTS = {
    "quick": {  # QUICK_NOTE.
        "eval.outer_folds": 2,
        "eval.test_seeds": 2,
        "search.num_steps": 2,
        "search.children_per_step": 2,
        "search.reward_splits": 1,
        "search.rescore_top_k": 2,
        "search.rescore_seeds": 1,
        "search.top_k": 0,  # The exported models are the best-validation test trainings.
        "evolution.population": 2,
        "evolution.tournament": 2,
    },
    "cpu": {  # CPU_NOTE.
        "eval.outer_folds": 5,
        # 20 epochs (~120 steps per training): on cohort 1 sampled children went 0.59 -> 0.64
        # AUROC from 15 to 20 epochs (0.66 at 25, which does not fit the hour), VGG19 unchanged.
        "train.epochs": 20,
        "search.num_steps": 4,
        "search.children_per_step": 2,
        # One reward split: val_nll's between/within ratio was highest at r = 1 (reward-noise
        # table). Re-scoring retrains the top 2 with 1 more seed (2 before the independent
        # per-fold searches and 3 test trainings per model: the hour would not hold both).
        "search.reward_splits": 1,
        "search.rescore_top_k": 2,
        "search.rescore_seeds": 1,
        "evolution.population": 4,
        "evolution.tournament": 2,
    },
    "tiny": {  # For tests: the whole pipeline in well under a minute.
        "data.synthetic.num_subjects": 40,
        "data.synthetic.num_images": 60,
        "data.synthetic.num_s0": 20,
        "data.synthetic.render_size": 64,
        "data.num_folds": 4,
        "model.batch_norm": True,  # The tests also cover batch-norm statistics (export, resume).
        "train.learning_rate": 3e-3,
        "data.augment": (),
        "train.epochs": 2,
        "train.batch_size": 16,
        "train.eval_batch_size": 16,
        "space.blocks": (1, 1, 1, 1, 1),  # A shallow test-only space: a child compiles in ~2 s.
        # Half the CPU recipe's width and a floor of 2 channels: filters 64/128/256/512 -> 2/4/8/16
        # channels, still four distinct widths, and a cold tiny run costs ~16 % less CPU (measured,
        # docs/suite.md); the tests check plumbing, not what a child learns.
        "space.width_multiplier": 0.03125,
        "model.min_width": 2,
        # XLA:CPU opt level 0 compiles ~40 % faster and trains 2-3x slower (measured): the tiny
        # runs are all compile, the quick/cpu runs mostly training (they keep level 1).
        "train.cpu_opt_level": 0,
        # And without XLA:CPU's fusion emitters: a tiny child compiles in ~1.1 s instead of ~2.2 s
        # (benchmarks/child_training.py, BUILD_NOTES.md); the tiny runs check plumbing.
        "train.cpu_fusion_emitters": False,
        "eval.outer_folds": 2,
        "eval.test_seeds": 2,
        # One step of 2 children per search (tell() still runs); every outer fold searches with
        # its own keys, so the test run compiles up to 13 architectures of ~2 s each.
        "search.num_steps": 1,
        "search.children_per_step": 2,
        "search.reward_splits": 2,
        "search.rescore_top_k": 2,
        "search.rescore_seeds": 1,
        "search.top_k": 1,
        "evolution.population": 2,
        "evolution.tournament": 2,
    },
}
SOURCES = ("manifest", "byra_mat", "dicom")  # Variant words that pick config.data.source.


def _parse_arg(arg):
  """'quick,manifest' -> ['quick', 'manifest'] (big_vision's parse_arg idiom), checked."""
  words = [w.strip() for w in (arg or "").split(",") if w.strip()]
  unknown = sorted(set(words) - set(VARIANTS) - set(SOURCES))
  if unknown:
    raise ValueError(f"config variant(s) {unknown} unknown; choose from "
                     f"{sorted(set(VARIANTS) | set(SOURCES))}")
  sizes = [w for w in words if w in VARIANTS]
  if len(sizes) > 1:
    raise ValueError(f"config variants {sizes} are alternative budgets; choose one")
  return words


def _set(config, dotted, value):
  *path, last = dotted.split(".")
  node = config
  for part in path:
    node = node[part]
  if last not in node:
    raise KeyError(f"{dotted}: no such config field")
  node[last] = value


def get_config(arg=None):
  """Returns the experiment config; `arg` selects variants (see the module docstring)."""
  c = base_config()
  c.variant = arg or ""
  for word in _parse_arg(arg):
    if word in SOURCES:
      c.data.source = word
    else:
      for key, value in {**CPU_RECIPE, **VARIANTS[word]}.items():
        _set(c, key, value)
  return c


def base_config():
  """The paper-scale defaults: every field, each with its one comment."""
  c = ml_collections.ConfigDict()
  c.seed = 0  # Root of every random stream (nasrl_jax/rng.py): folds, searches, trainings.
  c.variant = ""  # The variant string, recorded in config.json and the report.
  c.max_hours = 72.0  # Pre-flight: stop before training when the estimated device time exceeds
  #                     this (a long weekend on one GPU; 0 = no limit).

  # ---------------------------------------------------------------- data
  c.data = d = ml_collections.ConfigDict()
  d.source = "synthetic"  # One of synthetic | manifest | byra_mat | dicom.
  d.root = ""  # Folder the manifest paths / DICOM files live in ('' = the manifest's folder).
  d.manifest = ""  # CSV with path, subject_id, cap or label (manifest); labels CSV (dicom).
  d.mat_path = ""  # Byra et al. 2018 .mat file (byra_mat source).
  d.image_size = 224  # Images are resized to image_size x image_size, 1 channel (the paper).
  d.num_folds = 10  # k of the paper's k-fold CV; an outer fold's non-test part has k - 1 inner
  #                   parts (train:val 8:1 with 10), its reward splits validate on those parts.
  d.val_parts = 1  # Inner parts per validation part (train:val = (k-1-val_parts):val_parts).
  d.label_mode = "binary"  # binary (S0 vs S1-S3) | grade (S0..S3, num_classes 4).
  d.cap_cutoff = 238.0  # dB/m: CAP >= cutoff is fatty (label 1) in binary mode (the paper).
  d.grade_cutoffs = (238.0, 260.0, 290.0)  # dB/m: S1/S2/S3 lower bounds in grade mode.
  d.crop = "none"  # none | box | sector: crop before resizing (sector = auto fan mask).
  d.crop_box = (0, 0, 0, 0)  # (top, left, height, width) in source pixels when crop == box.
  d.max_pixels = 60_000_000  # Refuse images with more pixels (decompression-bomb guard).
  d.balance = "loss_weight"  # none | loss_weight | upright_sample | repeat | rot90. rot90 is the
  #                            paper's (minority copies turned by 90/180/270 degrees: orientation
  #                            then tells the class); the default is measured in BUILD_NOTES.md.
  d.augment = ()  # Label-independent augmentations, the same for every class: hflip, gain.
  d.gain_jitter = 0.1  # augment=gain: pixel values x U(1 - g, 1 + g).
  d.cache_dir = ""  # Where generated/preprocessed data is cached ('' = ~/.cache/nasrl_jax).
  d.dicom_label_key = "auto"  # DICOM labels CSV key: sop_instance_uid | file | auto.

  # The simulator (ULTRASOUND_PHYSICS.md); the defaults reproduce the paper's cohort.
  d.synthetic = s = ml_collections.ConfigDict()
  s.num_subjects = 242  # Subjects (the paper: 242).
  s.num_images = 310  # Images; several per subject (the paper: 310).
  s.num_s0 = 96  # Images with measured CAP < 238 dB/m (the paper: 96 S0, 214 S1-S3).
  s.render_size = 224  # Pixels of the simulated scan-converted image before resizing.
  s.rib_shadow_prob = 0.3  # Probability of a rib shadow per image.
  s.overlay_prob = 0.3  # Probability of a machine-specific RGB tint / burned-in text.
  s.kidney_prob = 0.5  # Probability per image that the right kidney is in view (not tied to CAP).
  s.cap_noise_sd = 18.0  # dB/m: FibroScan measurement noise (true = measured - N(0, sd)).
  s.seed = 0  # Simulator seed: fixes the cohort, independent of config.seed. 0 = the evaluation
  #             cohort; choices are tuned on TUNING_COHORTS only.
  s.tuning_cohorts = TUNING_COHORTS  # The report's cohort.tuned_on_it is seed in this tuple.

  # ---------------------------------------------------------------- search space
  c.space = sp = ml_collections.ConfigDict()
  sp.kernels = (1, 3, 5, 7)  # Kernel-size choices per conv layer (the paper).
  sp.filters = (64, 128, 256, 512)  # Filter choices per conv layer (the paper).
  sp.blocks = (2, 2, 4, 4, 4)  # Conv layers per block; 2x2 max-pool after each (VGG19).
  sp.width_multiplier = 1.0  # Scales every filter count (and the vgg head) for cheap runs.

  # ---------------------------------------------------------------- child network
  c.model = m = ml_collections.ConfigDict()
  m.head = "vgg"  # vgg (flatten-4096-4096-classes, dropout, as VGG19) | gap (avg pool + dense).
  m.dense_units = 4096  # Width of the vgg head's two hidden layers (x width_multiplier).
  m.dropout = 0.5  # Dropout in the vgg head (VGG19's).
  m.batch_norm = True  # BN after each conv: trains from scratch reliably (BUILD_NOTES.md).
  m.num_classes = 2  # Output classes (set to 4 automatically in grade mode).
  m.min_width = 0  # No scaled conv layer narrower than this many channels (0 = no floor).

  # ---------------------------------------------------------------- child training
  c.train = t = ml_collections.ConfigDict()
  t.epochs = 30  # Epochs per training run (same budget for every child and model).
  t.batch_size = 32  # Minibatch size.
  t.eval_batch_size = 64  # Batch size of validation/test passes.
  t.optimizer = "adam"  # adam | sgd (momentum 0.9).
  t.learning_rate = 1e-4  # Peak learning rate (cosine decay to 0 over the run).
  t.warmup_epochs = 1  # Linear warm-up epochs.
  t.min_epochs = 0  # The kept (best-validation) weights come from this epoch or later.
  t.val_weighting = "none"  # none | class: the validation NLL that keeps weights and makes the
  #                           val_nll reward, weighted per class like the training loss.
  t.weight_decay = 0.0  # Decoupled weight decay (adamw) when > 0.
  t.dtype = "float32"  # Compute dtype: float32 | bfloat16 (params stay float32).
  t.max_train_examples = 0  # Fixed padded train size (0 = derive from the data, all folds).
  t.split_batching = "auto"  # sequential | vmap | auto (CPU: sequential, measured; GPU: vmap).
  t.vmap_chunk = 0  # Splits per vmapped call (0 = auto from a memory estimate).
  t.cpu_opt_level = 1  # XLA:CPU backend optimisation level of child programs (1: ~20 % faster
  #                      compile than XLA's default at equal step time, measured; -1 = default).
  t.cpu_fusion_emitters = True  # XLA:CPU's fusion emitters for child programs (False: the older
  #                               emitters: at level 0, 2x faster compiles and ~20 % slower steps;
  #                               at level 1, 5-20 % faster compiles at equal steps; measured).

  # ---------------------------------------------------------------- controller + REINFORCE
  c.controller = ct = ml_collections.ConfigDict()
  ct.lstm_layers = 2  # Stacked LSTM layers (Zoph & Le).
  ct.hidden_size = 35  # LSTM units per layer (Zoph & Le).
  ct.init_scale = 0.08  # Parameters initialised uniform in [-init_scale, init_scale].
  ct.temperature = 1.0  # Softmax temperature of every decision.
  ct.tanh_constant = 0.0  # If > 0, logits = tanh_constant * tanh(logits) (ENAS); 0 = off.
  ct.learning_rate = 4e-3  # Adam lr; calibrated for a few hundred children (DESIGN.md).
  ct.baseline_decay = 0.8  # EMA baseline b <- decay b + (1 - decay) mean(R).
  ct.entropy_weight = 1e-3  # Entropy bonus added to the REINFORCE objective.
  ct.max_grad_norm = 0.0  # Global-norm gradient clipping (0 = off).
  ct.reward_metric = "val_nll"  # val_nll (minus the kept weights' validation NLL) | val_auroc |
  #                               val_accuracy (the paper's): each reward split's score. val_nll
  #                               separates architectures best and moves least under float noise
  #                               (BUILD_NOTES.md: reward-noise table).
  ct.reward = "best"  # Transform: best (the metric's value; best epoch for accuracy, the kept
  #                     weights otherwise) | cubed_last5 (Zoph) | params_aware (MnasNet-style).
  ct.params_target = 31_164_674  # params_aware: target parameter count (the paper's winner).
  ct.params_weight = -0.07  # params_aware: exponent w in value * (params / target)^w.

  # ---------------------------------------------------------------- regularized evolution
  c.evolution = e = ml_collections.ConfigDict()
  e.population = 20  # Members kept (the newest valid children; the oldest leaves).
  e.tournament = 5  # Members drawn per child; the best of them is mutated.

  # ---------------------------------------------------------------- search
  c.search = se = ml_collections.ConfigDict()
  se.strategies = ("reinforce", "random", "evolution")  # Every strategy runs in every fold/seed.
  se.strategy = "reinforce"  # run_search's strategy when called alone (library use).
  se.num_steps = 20  # Steps per search.
  se.children_per_step = 5  # Children per step (children per search = steps x this).
  se.seeds = (0,)  # Search seeds: every strategy runs once per seed; each seed's winner is tested.
  se.reward_splits = 2  # r inner train/val splits per child; the reward is their mean.
  se.rescore_top_k = 3  # Distinct top children of each search retrained before choosing.
  se.rescore_seeds = 2  # Other seeds each candidate is retrained with; best mean wins.
  se.top_k = 3  # Children whose best weights are checkpointed per search (0 = none).
  se.fold = 0  # paper protocol only: the fold the searches run on.
  se.memo = True  # Do not retrain an architecture already trained on the same splits.
  se.failed_reward = 0.0  # Recorded reward of a failed child (it never steers a strategy).
  se.max_failures_in_row = 5  # Stop a search after this many failed children in a row.
  se.aot_compile = "auto"  # Compile upcoming children in threads: on | off | auto (cores > 4).
  se.max_devices = 0  # Local devices training children concurrently (0 = all local devices).

  # ---------------------------------------------------------------- evaluation
  c.eval = ev = ml_collections.ConfigDict()
  ev.protocol = "nested"  # nested (the estimate) | paper (one search, k-fold CV; optimistic).
  ev.outer_folds = 5  # Outer folds of the nested protocol (0 = data.num_folds).
  ev.outer_groups = "subject"  # subject | device | site: what an outer test part holds out.
  ev.final_search = False  # After the estimate, one search on all subjects exports the models.
  ev.test_seeds = 3  # Test trainings per chosen model, outer fold and search seed (VGG19: per
  #                    outer fold), each with its own training seed (rng.training_key, not the
  #                    search seed). A fold's score is the mean of their metrics.
  ev.primary = ("NASRL vs VGG19", "NASRL vs RandomSearch", "subject.auroc")  # The pre-specified
  #            primary family: "A vs B" comparisons and one metric ([image.|subject.]name). The
  #            verdict and Holm's adjustment use these alone; every other comparison is
  #            exploratory. Fixed for a run: resuming with another primary is refused.
  ev.fps_iters = 100  # Timed batch-1 calls for the FPS median.
  ev.throughput_batch = 64  # Batch size for the large-batch throughput figure.

  # ---------------------------------------------------------------- runtime
  c.compile_cache_dir = "~/.cache/nasrl_jax/jax_cache"  # JAX persistent compilation cache.
  c.log_every_s = 10.0  # Plain progress lines at most this often when not on a terminal.
  return c
