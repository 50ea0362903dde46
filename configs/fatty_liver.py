"""NASRL for early fatty-liver detection from B-mode ultrasound.

Default (paper scale, for a GPU):
  python launch.py --config=configs/fatty_liver.py --workdir=runs/paper
  224x224 grayscale, full search space (16**16 architectures), 10-fold CV of the NAS winner,
  VGG19 and the random-search winner.

Quick (the same pipeline scaled down to a couple of minutes on a 2-core CPU):
  python launch.py --config=configs/fatty_liver.py:quick --workdir=runs/quick
  32x32 images, widths x1/16, 8 + 8 children, 10-fold CV, writes runs/quick/report.md; about
  10 minutes on a 2-core CPU with a cold compilation cache (compiling each child's train step is
  most of it, see BUILD_NOTES.md), less when rerun.

Variants are comma-separated words after the colon (e.g. `quick,manifest`); single fields are
overridden with flags such as `--config.train.epochs=3`.
"""

import ml_collections


def _parse_arg(arg):
  """'quick,manifest' -> {'quick': True, 'manifest': True} (big_vision's parse_arg idiom)."""
  words = [w.strip() for w in (arg or "").split(",") if w.strip()]
  known = {"quick", "manifest", "byra_mat", "dicom", "tiny"}
  unknown = sorted(set(words) - known)
  if unknown:
    raise ValueError(f"config variant(s) {unknown} unknown; choose from {sorted(known)}")
  return {w: True for w in words}


def get_config(arg=None):
  """Returns the experiment config; `arg` selects a variant (see module docstring)."""
  variant = _parse_arg(arg)
  c = ml_collections.ConfigDict()
  c.seed = 0  # Master seed: data simulation, folds, controller and children derive keys from it.
  c.variant = arg or ""  # The variant string, recorded in config.json and the report.

  # ---------------------------------------------------------------- data
  c.data = d = ml_collections.ConfigDict()
  d.source = "synthetic"  # One of synthetic | manifest | byra_mat | dicom.
  d.root = ""  # Folder the manifest paths / DICOM files live in ('' = the manifest's folder).
  d.manifest = ""  # CSV with path, subject_id, cap or label (manifest); labels CSV (dicom).
  d.mat_path = ""  # Byra et al. 2018 .mat file (byra_mat source).
  d.image_size = 224  # Images are resized to image_size x image_size, 1 channel (the paper).
  d.num_folds = 10  # k of the k-fold cross-validation (the paper: 10).
  d.val_parts = 1  # Train:val split of the non-test part is (num_folds-1-val_parts):val_parts
  #                  by subject, i.e. 8:1 with 10 folds (the paper's 8:1:1).
  d.label_mode = "binary"  # binary (S0 vs S1-S3) | grade (S0..S3, num_classes 4).
  d.cap_cutoff = 238.0  # dB/m: CAP >= cutoff is fatty (label 1) in binary mode (the paper).
  d.grade_cutoffs = (238.0, 260.0, 290.0)  # dB/m: S1/S2/S3 lower bounds in grade mode.
  d.crop = "none"  # none | box | sector: crop before resizing (sector = auto fan mask).
  d.crop_box = (0, 0, 0, 0)  # (top, left, height, width) in source pixels when crop == box.
  d.max_pixels = 60_000_000  # Refuse images with more pixels (decompression-bomb guard).
  d.balance = True  # Top up the training part's minority class with extra copies.
  d.balance_copies = "rot90"  # rot90: 90/180/270-degree copies (the paper) | repeat: unrotated.
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
  s.seed = 0  # Simulator seed: fixes the cohort, independent of config.seed (search seeds share data).

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

  # ---------------------------------------------------------------- child training
  c.train = t = ml_collections.ConfigDict()
  t.epochs = 30  # Epochs per child and per CV fold (same budget for all models).
  t.batch_size = 32  # Minibatch size.
  t.eval_batch_size = 64  # Batch size of validation/test passes.
  t.optimizer = "adam"  # adam | sgd (momentum 0.9).
  t.learning_rate = 1e-4  # Peak learning rate (cosine decay to 0 over the run).
  t.warmup_epochs = 1  # Linear warm-up epochs.
  t.weight_decay = 0.0  # Decoupled weight decay (adamw) when > 0.
  t.dtype = "float32"  # Compute dtype: float32 | bfloat16 (params stay float32).
  t.epoch_loop = "auto"  # steps (loop of jitted steps) | scan (one lax.scan per epoch) | auto.
  t.max_train_examples = 0  # Fixed padded train size (0 = derive from the data, all folds).

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
  ct.reward = "best_val_acc"  # best_val_acc (paper) | cubed_last5 (Zoph) | params_aware.
  ct.params_target = 31_164_674  # params_aware: target parameter count (the paper's winner).
  ct.params_weight = -0.07  # params_aware: exponent w in acc * (params / target)^w.

  # ---------------------------------------------------------------- search
  c.search = se = ml_collections.ConfigDict()
  se.strategy = "reinforce"  # reinforce | random (uniform sampling, same budget).
  se.num_steps = 25  # Controller steps.
  se.children_per_step = 8  # m architectures sampled per step (children = steps x m).
  se.fold = 0  # The fold whose train/val parts the search trains and scores children on.
  se.seeds = (0,)  # Search seeds; the report shows every seed, CV uses the first.
  se.random_search = True  # Also run random search with the same budget as a baseline.
  se.top_k = 5  # Children whose best weights are checkpointed (and considered as winner).
  se.max_failures_in_row = 5  # Stop the search after this many failed children in a row.
  se.failed_reward = 0.0  # Reward given to a child that failed (NaN, OOM, exception).
  se.memo = True  # Do not retrain an architecture already trained with the same setup.
  se.aot_compile = "auto"  # Compile upcoming children in threads: on | off | auto (cores>4).
  se.max_devices = 0  # Local devices training children concurrently (0 = all local devices).

  # ---------------------------------------------------------------- evaluation
  c.eval = ev = ml_collections.ConfigDict()
  ev.models = ("NASRL", "VGG19", "RandomSearch")  # Models cross-validated and reported.
  ev.fps_iters = 100  # Timed batch-1 calls for the FPS median.
  ev.throughput_batch = 64  # Batch size for the large-batch throughput figure.

  # ---------------------------------------------------------------- runtime
  c.compile_cache_dir = "~/.cache/nasrl_jax/jax_cache"  # JAX persistent compilation cache.
  c.log_every_s = 10.0  # Plain progress lines at most this often when not on a terminal.

  if variant.get("quick") or variant.get("tiny"):
    d.image_size = 32
    s.render_size = 96
    sp.width_multiplier = 0.0625  # Filters {4, 8, 16, 32}: a uniformly sampled child is 5x VGG19.
    m.dense_units = 4096  # x 1/16 = 256.
    t.epochs = 5
    t.batch_size = 32
    t.learning_rate = 2e-3
    se.num_steps = 2
    se.children_per_step = 4
    ev.fps_iters = 20
  if variant.get("tiny"):  # For tests: the whole pipeline in seconds.
    s.num_subjects = 40
    s.num_images = 60
    s.num_s0 = 20
    s.render_size = 64
    d.image_size = 32
    d.num_folds = 3
    t.epochs = 2
    se.num_steps = 1
    se.children_per_step = 2
  if variant.get("manifest"):
    d.source = "manifest"
  if variant.get("byra_mat"):
    d.source = "byra_mat"
  if variant.get("dicom"):
    d.source = "dicom"
  return c
