"""Calibrates the synthetic B-mode simulator: trivial cues vs the hepatorenal index vs a small CNN.

  python benchmarks/simulator_calibration.py            # about 6-9 min on a 2-core CPU

On the default cohort (310 images, 242 subjects, render 224) resized to 64 x 64 (and any other
--image_sizes), with 5-fold subject-grouped, label-stratified CV (StratifiedGroupKFold):
  (a) logistic regression on near-field and far-field mean brightness inside the fan -> AUROC;
  (b) the hepatorenal index (HRI: mean grey of the liver box / the renal-cortex box at the same
      depth, the boxes `simulate` returns, on the 224-px render as a sonographer reads it) on the
      images with the kidney in view -> AUROC (a fixed score: nothing is fitted);
  (c) a small Flax NNX CNN (4 conv + BN + ReLU, global average pool, Adam, 30 epochs, horizontal
      flips) -> AUROC, also on the kidney / no-kidney images separately.
The target (ULTRASOUND_PHYSICS.md): (a) <= 0.80, well below (c); (b) reported beside them;
(c) 0.85-0.95 and below the label-noise ceiling (AUROC of the true CAP for the measured-CAP
label). Also reported: HRI by class (the physics file: 1.14 +- 0.2 normal, 1.87 +- 0.6
steatotic) and simulator speed (images/s at render 224 and 96). Writes
benchmarks/results/simulator_calibration.json and docs/simulator_grid.png (rows = machines,
columns = 3 S0 and 3 S1-S3 renders, kidneys in some), and prints a short table last.
`--no_cnn` skips (c) (seconds instead of minutes, for tuning).
"""

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax
from flax import nnx
from sklearn import linear_model
from sklearn import metrics as sk_metrics
from sklearn import model_selection
from sklearn import pipeline as sk_pipeline
from sklearn import preprocessing as sk_preprocessing

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from configs import fatty_liver  # pylint: disable=g-import-not-at-top
from nasrl_jax import io_utils  # pylint: disable=g-import-not-at-top
from nasrl_jax.data import preprocess  # pylint: disable=g-import-not-at-top
from nasrl_jax.data import synthetic  # pylint: disable=g-import-not-at-top


# ------------------------------------------------------------------------------ features


def fan_masks(sim, image_size):
  """The fan mask of every render, resized like the images (bool[N, S, S])."""
  render = sim["images"].shape[1]
  cache = {}
  out = []
  for dev, depth in zip(sim["device"], sim["depth_cm"]):
    key = (str(dev), float(depth))
    if key not in cache:
      m = synthetic.fan_mask(key[0], key[1], render).astype(np.uint8) * 255
      cache[key] = preprocess.resize(m, image_size) > 127
    out.append(cache[key])
  return np.stack(out)


def near_far_features(images, masks):
  """Mean brightness of the top and bottom thirds (by row) of the fan: float[N, 2]."""
  feats = np.zeros((images.shape[0], 2))
  for i, (img, m) in enumerate(zip(images[..., 0].astype(np.float64), masks)):
    rows = np.flatnonzero(m.any(axis=1))
    top, bottom = rows[0], rows[-1] + 1
    third = max(1, (bottom - top) // 3)
    near, far = m.copy(), m.copy()
    near[top + third:] = False
    far[:bottom - third] = False
    feats[i] = img[near].mean(), img[far].mean()
  return feats


def hepatorenal_index(sim):
  """Liver / renal-cortex mean grey (ITU-R 601-2 luma of the render) per image; nan if no boxes."""
  hri = np.full(len(sim["cap"]), np.nan)
  for i in np.flatnonzero(sim["kidney_roi"][:, 0] >= 0):
    gray = preprocess.to_grayscale(sim["images"][i]).astype(np.float64)
    means = []
    for box in (sim["liver_roi"][i], sim["kidney_roi"][i]):
      r, c, h, w = box
      means.append(gray[r:r + h, c:c + w].mean())
    hri[i] = means[0] / max(means[1], 1.0)  # A black cortex box (1 grey level) caps the ratio.
  return hri


def describe(x):
  """mean, sd, median and quartiles of x (a heavy-tailed ratio: the quartiles say more)."""
  q1, med, q3 = np.percentile(x, [25, 50, 75])
  return {"n": int(x.size), "mean": float(x.mean()), "sd": float(x.std()), "median": float(med),
          "q1": float(q1), "q3": float(q3)}


# ------------------------------------------------------------------------------ small CNN


class SmallCNN(nnx.Module):
  """4 x (3x3 conv, BN, ReLU), 2x2 max-pool after the first three, global average pool, logit."""

  def __init__(self, widths, rngs):
    chans = (1,) + tuple(widths)
    self.convs = nnx.List([nnx.Conv(chans[k], chans[k + 1], (3, 3), use_bias=False, rngs=rngs)
                           for k in range(len(widths))])
    self.norms = nnx.List([nnx.BatchNorm(w, momentum=0.9, rngs=rngs) for w in widths])
    self.head = nnx.Linear(widths[-1], 1, rngs=rngs)

  def __call__(self, x, train: bool):
    x = x.astype(jnp.float32) / 255.0 - 0.5
    for k, (conv, norm) in enumerate(zip(self.convs, self.norms)):
      x = nnx.relu(norm(conv(x), use_running_average=not train))
      if k < len(self.convs) - 1:
        x = nnx.max_pool(x, (2, 2), (2, 2))
    return self.head(x.mean(axis=(1, 2)))[:, 0]


def train_cnn(x_train, y_train, x_test, seed, epochs, batch_size, lr, widths):
  """Trains SmallCNN on (x_train, y_train); returns sigmoid scores on x_test."""
  model = SmallCNN(widths, nnx.Rngs(seed))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  steps = epochs * int(np.ceil(len(x_train) / batch_size))
  tx = optax.adam(optax.cosine_decay_schedule(lr, steps))
  opt_state = tx.init(params)

  @jax.jit
  def train_step(params, rest, opt_state, x, y, w):
    def loss_fn(params, rest):
      m = nnx.merge(graphdef, params, rest, copy=True)
      logits = m(x, train=True)
      loss = jnp.sum(w * optax.sigmoid_binary_cross_entropy(logits, y)) / jnp.sum(w)
      return loss, nnx.split(m, nnx.Param, ...)[2]
    (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, rest)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), rest, opt_state, loss

  @jax.jit
  def predict(params, rest, x):
    return jax.nn.sigmoid(nnx.merge(graphdef, params, rest, copy=True)(x, train=False))

  rng = np.random.default_rng(seed)
  n = len(x_train)
  n_pad = int(np.ceil(n / batch_size)) * batch_size
  for _ in range(epochs):
    order = rng.permutation(n)
    order = np.concatenate([order, order[:n_pad - n]])
    weight = np.concatenate([np.ones(n), np.zeros(n_pad - n)]).astype(np.float32)
    for s in range(0, n_pad, batch_size):
      idx = order[s:s + batch_size]
      x = x_train[idx]
      flip = rng.random(len(idx)) < 0.5  # Mirror images are physically valid scans.
      x = np.where(flip[:, None, None, None], x[:, :, ::-1], x)
      params, rest, opt_state, _ = train_step(params, rest, opt_state, x,
                                              y_train[idx].astype(np.float32),
                                              weight[s:s + batch_size])
  return np.concatenate([np.asarray(predict(params, rest, x_test[s:s + 64]))
                         for s in range(0, len(x_test), 64)])


# ------------------------------------------------------------------------------ main


def auroc_summary(y, scores, folds, subset=None):
  """AUROC per test fold (mean, std) and pooled, optionally on a subset of the images only."""
  keep = np.ones(len(y), bool) if subset is None else subset
  per_fold = []
  for _, te in folds:
    te = te[keep[te]]
    if np.unique(y[te]).size == 2:
      per_fold.append(sk_metrics.roc_auc_score(y[te], scores[te]))
  return {"mean": float(np.mean(per_fold)), "std": float(np.std(per_fold)),
          "pooled": float(sk_metrics.roc_auc_score(y[keep], scores[keep])),
          "images": int(keep.sum()), "folds": [float(a) for a in per_fold]}


def speed(render_sizes, num_images=64):
  """Images/s of `synthetic.simulate` (wall clock and CPU ms per image) at each render size."""
  out = {}
  for r in render_sizes:
    cfg = fatty_liver.get_config().data.synthetic
    cfg.num_subjects, cfg.num_images, cfg.num_s0 = num_images * 3 // 4, num_images, num_images // 3
    synthetic.simulate(cfg, min(r, 64))  # Warm up imports and caches.
    t, c = time.perf_counter(), time.process_time()
    synthetic.simulate(cfg, r)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    out[str(r)] = {"images_per_s": num_images / wall, "cpu_ms_per_image": 1e3 * cpu / num_images,
                   "images": num_images}
  return out


def _grid_picks(sim, rows):
  """The first image with the kidney in view, then the first two without (cohort order)."""
  with_k = [i for i in rows if sim["kidney"][i]][:1]
  without = [i for i in rows if not sim["kidney"][i]][:3 - len(with_k)]
  picks = with_k + without
  return picks + [i for i in rows if i not in picks][:3 - len(picks)]


def save_grid(sim, hri, path):
  """Rows = machines, columns = 3 S0 and 3 S1-S3 renders (one with the kidney in view each)."""
  fig, axes = plt.subplots(3, 6, figsize=(18, 9.6))
  for row, dev in enumerate(synthetic.DEVICE_NAMES):
    s0 = np.flatnonzero((sim["device"] == dev) & (sim["cap"] < synthetic.S0_CUTOFF))
    s1 = np.flatnonzero((sim["device"] == dev) & (sim["cap"] >= synthetic.S0_CUTOFF))
    for col, i in enumerate(_grid_picks(sim, list(s0)) + _grid_picks(sim, list(s1))):
      ax = axes[row, col]
      ax.imshow(sim["images"][i])
      grade = "S0" if sim["cap"][i] < synthetic.S0_CUTOFF else "S1-S3"
      kidney = f", HRI {hri[i]:.2f}" if np.isfinite(hri[i]) else ""
      ax.set_title(f"{dev} {grade}: CAP {sim['cap'][i]:.0f}{kidney}", fontsize=10)
    for ax in axes[row]:
      ax.axis("off")
  fig.suptitle("Synthetic B-mode liver renders (224 px): rows = machine profiles, "
               "columns = 3 S0 then 3 S1-S3 (the first of each with the right kidney in view)",
               fontsize=12)
  fig.tight_layout()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.savefig(path, dpi=80)
  plt.close(fig)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--image_sizes", type=int, nargs="+", default=[64])
  parser.add_argument("--folds", type=int, default=5)
  parser.add_argument("--epochs", type=int, default=30)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--lr", type=float, default=3e-3)
  parser.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64, 64])
  parser.add_argument("--seed", type=int, default=0, help="Seed of the CV split and CNN inits.")
  parser.add_argument("--cohort_seed", type=int, default=0,
                      help="data.synthetic.seed (0: the evaluation cohort; 1: the tuning cohort).")
  parser.add_argument("--no_cnn", action="store_true", help="skip the CNN (for tuning)")
  parser.add_argument("--cache_dir", default="", help="'' = ~/.cache/nasrl_jax")
  parser.add_argument("--speed_sizes", type=int, nargs="*", default=[224, 96])
  parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results",
                                                    "simulator_calibration.json"))
  parser.add_argument("--grid", default=os.path.join(ROOT, "docs", "simulator_grid.png"))
  args = parser.parse_args()

  config = fatty_liver.get_config()
  data_cfg = config.data
  data_cfg.cache_dir = args.cache_dir
  data_cfg.synthetic.seed = args.cohort_seed
  t0 = time.perf_counter()
  sim, hit = synthetic.simulate_cached(data_cfg.synthetic, synthetic.cache_dir_of(data_cfg))
  sim_s = time.perf_counter() - t0
  print(f"cohort: {len(sim['cap'])} images, {len(np.unique(sim['subject_id']))} subjects, "
        f"{'cache hit' if hit else f'simulated in {sim_s:.1f}s'}", flush=True)
  hri = hepatorenal_index(sim)
  if args.grid:
    save_grid(sim, hri, args.grid)

  labels = (sim["cap"] >= data_cfg.cap_cutoff).astype(np.int32)
  groups = sim["subject_id"]
  splitter = model_selection.StratifiedGroupKFold(args.folds, shuffle=True,
                                                  random_state=args.seed)
  folds = list(splitter.split(np.zeros(len(labels)), labels, groups))
  results = {
      "command": "python benchmarks/simulator_calibration.py " + " ".join(sys.argv[1:]),
      "simulator_version": synthetic.SIMULATOR_VERSION,
      "date": time.strftime("%Y-%m-%d"),
      "device": f"{os.cpu_count()}-core CPU, jax {jax.__version__} ({jax.default_backend()})",
      "images": int(len(labels)), "subjects": int(len(np.unique(groups))),
      "s0": int((labels == 0).sum()), "s1_s3": int(labels.sum()),
      "ceiling_true_cap_auroc": float(sk_metrics.roc_auc_score(labels, sim["true_cap"])),
      "sizes": {},
  }
  has_hri = np.isfinite(hri)
  results["hri"] = {
      "kidney_in_view": int(sim["kidney"].sum()), "with_rois": int(has_hri.sum()),
      "auroc": auroc_summary(labels, np.nan_to_num(hri), folds, has_hri),
      "ceiling_true_cap_auroc_same_images": float(
          sk_metrics.roc_auc_score(labels[has_hri], sim["true_cap"][has_hri])),
      "s0": describe(hri[has_hri & (labels == 0)]),
      "s1_s3": describe(hri[has_hri & (labels == 1)]),
  }
  for size in args.image_sizes:
    data_cfg.image_size = size
    ds = synthetic.load(data_cfg)
    masks = fan_masks(sim, size)
    feats = near_far_features(ds.images, masks)
    lr_scores = np.zeros(len(labels))
    cnn_scores = np.zeros(len(labels))
    t = time.perf_counter()
    for k, (tr, te) in enumerate(folds):
      lr_model = sk_pipeline.make_pipeline(sk_preprocessing.StandardScaler(),
                                           linear_model.LogisticRegression())
      lr_model.fit(feats[tr], labels[tr])
      lr_scores[te] = lr_model.predict_proba(feats[te])[:, 1]
      if not args.no_cnn:
        cnn_scores[te] = train_cnn(ds.images[tr], labels[tr], ds.images[te], args.seed + k,
                                   args.epochs, args.batch_size, args.lr, tuple(args.widths))
      cnn = ("" if args.no_cnn else
             f" CNN {sk_metrics.roc_auc_score(labels[te], cnn_scores[te]):.3f}")
      print(f"  size {size} fold {k}: LR {sk_metrics.roc_auc_score(labels[te], lr_scores[te]):.3f}"
            f"{cnn} ({time.perf_counter() - t:.0f}s)", flush=True)
    row = {
        "lr_near_far": auroc_summary(labels, lr_scores, folds),
        "lr_near_far_hri_images": auroc_summary(labels, lr_scores, folds, has_hri),
        "lr_near_only": float(sk_metrics.roc_auc_score(labels, feats[:, 0])),
        "lr_far_minus_near": float(sk_metrics.roc_auc_score(labels, feats[:, 0] - feats[:, 1])),
    }
    if not args.no_cnn:
      row.update(cnn=auroc_summary(labels, cnn_scores, folds),
                 cnn_hri_images=auroc_summary(labels, cnn_scores, folds, has_hri),
                 cnn_no_kidney=auroc_summary(labels, cnn_scores, folds, ~sim["kidney"]),
                 cnn_seconds=time.perf_counter() - t)
    results["sizes"][str(size)] = row
  if args.speed_sizes:
    results["speed"] = speed(args.speed_sizes)
  io_utils.atomic_write_json(args.out, results)

  print(f"\nwrote {args.out}" + (f" and {args.grid}" if args.grid else ""))
  print("label-noise ceiling (true CAP -> measured label) AUROC "
        f"{results['ceiling_true_cap_auroc']:.3f}")
  h = results["hri"]
  print(f"hepatorenal index on {h['with_rois']} images with the kidney in view: AUROC "
        f"{h['auroc']['mean']:.3f} +- {h['auroc']['std']:.3f} ({h['auroc']['pooled']:.3f}); "
        f"S0 {h['s0']['mean']:.2f} +- {h['s0']['sd']:.2f} (median {h['s0']['median']:.2f}), "
        f"S1-S3 {h['s1_s3']['mean']:.2f} +- {h['s1_s3']['sd']:.2f} "
        f"(median {h['s1_s3']['median']:.2f})")
  print(f"{'size':>5} | {'LR near/far AUROC':>20} | {'CNN AUROC':>20} | "
        "target: LR <= 0.80, CNN 0.85-0.95")
  for size, r in results["sizes"].items():
    a = r["lr_near_far"]
    c = r.get("cnn")
    cnn = f"{c['mean']:.3f} +- {c['std']:.3f} ({c['pooled']:.3f})" if c else "skipped"
    print(f"{size:>5} | {a['mean']:.3f} +- {a['std']:.3f} ({a['pooled']:.3f}) | {cnn:>20}")
  for r, s in results.get("speed", {}).items():
    print(f"speed render {r}: {s['images_per_s']:.1f} images/s, {s['cpu_ms_per_image']:.1f} "
          "CPU ms/image")


if __name__ == "__main__":
  main()
