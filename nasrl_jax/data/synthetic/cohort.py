"""The simulated study: subjects, FibroScan CAP, per-subject tissue, per-image scan settings.

This module owns every random draw of the simulator except the speckle itself: which subjects
exist and how many images each has, their measured and true CAP, the tissue properties that
follow from the true CAP, the machine each subject was scanned on, and each image's acquisition
(frequency, depth, focus, gain, TGC) and anatomy layout (wall, vessels, diaphragm, rib).
The physics and render modules turn these parameters into pixels deterministically.
"""

from typing import Dict

import numpy as np
from scipy import stats

from nasrl_jax.data.synthetic import spec
from nasrl_jax.data.synthetic.spec import PROFILES, Physics, Stream


def _truncnorm(rng, mean, sd, lo, hi, size) -> np.ndarray:
  a, b = (lo - mean) / sd, (hi - mean) / sd
  return stats.truncnorm.rvs(a, b, loc=mean, scale=sd, size=size, random_state=rng)


def sample_cohort(synth_cfg, physics: Physics = spec.PHYSICS) -> Dict[str, np.ndarray]:
  """Draws the subjects and assigns images to them (no rendering).

  Subjects are S0 or S1-S3 by measured CAP; the number of S0 subjects is proportional to the
  requested S0 image share, and the extra images (num_images - num_subjects) go to random
  subjects of the right class so that exactly `num_s0` images have measured CAP < 238 dB/m.
  Subject-level physics (true CAP, alpha0, backscatter gain, scatterer density, abdominal wall)
  depends on the true CAP, never on the label.

  Args:
    synth_cfg: `config.data.synthetic` (validated).
    physics: cohort constants.

  Returns:
    dict of per-image arrays: subject (int index), subject_id, device (int), cap, true_cap,
    alpha0, backscatter_db, cells, wall_mm.
  """
  spec.validate(synth_cfg)
  rng = spec.rng(synth_cfg.seed, Stream.COHORT)
  n_img, n_subj, n_s0 = synth_cfg.num_images, synth_cfg.num_subjects, synth_cfg.num_s0
  n_s1 = n_img - n_s0
  lo = max(int(n_s0 > 0), n_subj - n_s1)
  hi = min(n_s0, n_subj - int(n_s1 > 0))
  subj_s0 = int(np.clip(round(n_subj * n_s0 / n_img), lo, hi))
  is_s0 = np.zeros(n_subj, bool)
  is_s0[:subj_s0] = True
  is_s0 = rng.permutation(is_s0)

  counts = np.ones(n_subj, np.int64)
  for cls_mask, cls_images in ((is_s0, n_s0), (~is_s0, n_s1)):
    members = np.flatnonzero(cls_mask)
    extra = cls_images - members.size
    if extra > 0:
      np.add.at(counts, rng.choice(members, size=extra, replace=True), 1)

  cap_lo, cap_hi = physics.cap_range
  cap = np.empty(n_subj)
  cap[is_s0] = _truncnorm(rng, *physics.cap_s0, cap_lo, spec.S0_CUTOFF - 1e-3,
                          int(is_s0.sum()))
  cap[~is_s0] = _truncnorm(rng, *physics.cap_s1, spec.S0_CUTOFF, cap_hi, int((~is_s0).sum()))
  true_cap = cap - rng.normal(0.0, float(synth_cfg.cap_noise_sd), n_subj)
  alpha0 = true_cap * physics.alpha_per_cap * rng.uniform(*physics.alpha_factor, n_subj)
  slope, centre, g_lo, g_hi, g_sd = physics.backscatter
  backscatter = (np.clip(slope * (true_cap - centre), g_lo, g_hi)
                 + rng.normal(0.0, g_sd, n_subj))
  base, per_cap, c_lo, c_hi, c_sd = physics.cells_s1
  cells_fatty = (np.clip(base + per_cap * (true_cap - centre), c_lo, c_hi)
                 * rng.lognormal(0.0, c_sd, n_subj))
  cells = np.where(true_cap < spec.S0_CUTOFF, rng.uniform(*physics.cells_s0, n_subj),
                   cells_fatty)
  shares = np.array([p.share for p in PROFILES])
  device = rng.choice(len(PROFILES), size=n_subj, p=shares / shares.sum())
  wall_mm = rng.uniform(*physics.wall_mm, n_subj)

  subject = np.repeat(np.arange(n_subj), counts)
  width = max(4, len(str(n_subj)))
  ids = np.array([f"sim-{i + 1:0{width}d}" for i in range(n_subj)])
  per_subject = dict(cap=cap, true_cap=true_cap, alpha0=alpha0, backscatter_db=backscatter,
                     cells=cells, wall_mm=wall_mm)
  out = {k: v[subject].astype(np.float32) for k, v in per_subject.items()}
  out.update(subject=subject, subject_id=ids[subject], device=device[subject].astype(np.int64))
  return out


def sample_image_params(synth_cfg, cohort, physics: Physics) -> Dict[str, np.ndarray]:
  """Per-image acquisition, anatomy and display parameters (one RNG stream per image).

  Args:
    synth_cfg: `config.data.synthetic` (validated).
    cohort: `sample_cohort`'s dict.
    physics: constants.

  Returns:
    dict of float64 arrays [N] (and [N, knots], [N, vessels] for the TGC knots and vessels).
  """
  n = cohort["cap"].shape[0]
  keys = ("f0", "bandwidth", "f_number", "dynamic_range", "smoothing", "gamma", "depth_mm",
          "focus_mm", "gain_db", "tgc_alpha", "recentre", "noise_db", "wall_mm", "fat_frac",
          "wall_phase", "diaphragm_mm", "diaphragm_x", "diaphragm_curv", "diaphragm_tilt",
          "rib", "rib_theta", "rib_width", "rib_depth", "rib_db", "overlay", "jpeg", "jpeg_q")
  p = {k: np.zeros(n, np.float64) for k in keys}
  p["tgc_knots"] = np.zeros((n, physics.tgc_knots))
  nv = physics.vessels[1]
  for k in ("v_on", "v_depth", "v_theta", "v_radius", "v_ratio", "v_angle", "v_portal"):
    p[k] = np.zeros((n, nv))
  for i in range(n):
    rng = spec.rng(synth_cfg.seed, Stream.IMAGE, i)
    prof = PROFILES[int(cohort["device"][i])]
    p["f0"][i] = rng.uniform(*prof.f0_mhz)
    p["bandwidth"][i] = rng.uniform(*prof.bandwidth)
    p["f_number"][i] = rng.uniform(*prof.f_number)
    p["dynamic_range"][i] = rng.uniform(*prof.dynamic_range_db)
    p["smoothing"][i] = rng.uniform(*prof.smoothing_px)
    p["gamma"][i] = rng.uniform(*prof.gamma)
    depth_cm = rng.integers(physics.depth_cm[0], physics.depth_cm[1] + 1)
    p["depth_mm"][i] = 10.0 * depth_cm
    p["focus_mm"][i] = rng.uniform(*physics.focus_mm)
    p["gain_db"][i] = rng.uniform(-physics.gain_db, physics.gain_db)
    p["tgc_alpha"][i] = rng.uniform(*physics.tgc_alpha)
    p["tgc_knots"][i] = rng.normal(0.0, physics.tgc_knot_sd_db, physics.tgc_knots)
    p["recentre"][i] = rng.uniform(*physics.recentre)
    p["noise_db"][i] = rng.uniform(*physics.noise_db)
    # Probe pressure and angle change the wall seen on each image a little.
    p["wall_mm"][i] = cohort["wall_mm"][i] * rng.uniform(0.9, 1.1)
    p["fat_frac"][i] = rng.uniform(*physics.wall_fat_frac)
    p["wall_phase"][i] = rng.uniform(0, 2 * np.pi)
    p["diaphragm_mm"][i] = rng.uniform(*physics.diaphragm_mm)
    p["diaphragm_x"][i] = rng.uniform(-40.0, 40.0)
    p["diaphragm_curv"][i] = 1.0 / (2.0 * rng.uniform(120.0, 250.0))  # Dome radius 12-25 cm.
    p["diaphragm_tilt"][i] = rng.uniform(-0.3, 0.3)
    half_fan = np.deg2rad(prof.fan_deg) / 2
    depth_mm = p["depth_mm"][i]
    liver_top = p["wall_mm"][i] + 8.0
    liver_bottom = max(liver_top + 5.0, min(p["diaphragm_mm"][i], depth_mm) - 12.0)
    count = rng.integers(physics.vessels[0], physics.vessels[1] + 1)
    for v in range(nv):
      p["v_on"][i, v] = v < count
      p["v_depth"][i, v] = rng.uniform(liver_top, liver_bottom)
      p["v_theta"][i, v] = rng.uniform(-0.8, 0.8) * half_fan
      p["v_radius"][i, v] = rng.uniform(*physics.vessel_radius_mm)
      # Most vessels are cut across (round/oval); some along their length (a tube).
      p["v_ratio"][i, v] = rng.uniform(3.0, 6.0) if rng.random() < 0.2 else rng.uniform(1.0, 2.0)
      p["v_angle"][i, v] = rng.uniform(0.0, np.pi)
      p["v_portal"][i, v] = rng.random() < physics.portal_prob
    p["rib"][i] = rng.random() < float(synth_cfg.rib_shadow_prob)
    p["rib_theta"][i] = rng.uniform(-0.75, 0.75) * half_fan
    p["rib_width"][i] = rng.uniform(*physics.rib_width_mm)
    p["rib_depth"][i] = p["wall_mm"][i] * rng.uniform(0.4, 0.8)
    p["rib_db"][i] = rng.uniform(*physics.rib_atten_db)
    p["overlay"][i] = rng.random() < float(synth_cfg.overlay_prob)
    p["jpeg"][i] = rng.random() < prof.jpeg_prob
    p["jpeg_q"][i] = rng.integers(prof.jpeg_quality[0], prof.jpeg_quality[1] + 1)
  return p
