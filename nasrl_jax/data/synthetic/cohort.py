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


# ------------------------------------------------------------------------------ tissue laws
# Each per-subject tissue property is a function of the true CAP (the fat content) and of the
# subject's own random factor, drawn independently of the CAP. The laws are continuous and
# piecewise linear with gentle slopes (tests bound every step per 10 dB/m); none of them knows
# the label's cut-off, so the label comes only from the measured CAP.


def alpha0_of(true_cap, factor, physics: Physics = spec.PHYSICS) -> np.ndarray:
  """Liver attenuation slope (dB/cm/MHz): true CAP / 350 x factor (factor ~ U(0.85, 1))."""
  return np.asarray(true_cap, np.float64) * physics.alpha_per_cap * factor


def backscatter_db_of(true_cap, offset_db, physics: Physics = spec.PHYSICS) -> np.ndarray:
  """Parenchyma backscatter gain (dB re normal liver): clip(0.08 (CAP - 220), -2, 11) + offset.

  offset_db ~ N(0, 2) per subject: livers of equal fat differ in echogenicity.
  """
  slope, centre, lo, hi, _ = physics.backscatter
  return np.clip(slope * (np.asarray(true_cap, np.float64) - centre), lo, hi) + offset_db


def cells_of(true_cap, factor, physics: Physics = spec.PHYSICS) -> np.ndarray:
  """Scatterers per resolution cell: clip(7.5 + 0.15 (CAP - 220), 5, 30) x factor.

  factor ~ lognormal(0, 0.2) per subject. Sparse (< 10, partly developed speckle) in lean
  livers, denser as fat droplets add scatterers.
  """
  base, slope, centre, lo, hi, _ = physics.cells
  return np.clip(base + slope * (np.asarray(true_cap, np.float64) - centre), lo, hi) * factor


# The laws the tests check for smoothness, each with the neutral value of its random factor.
TISSUE_LAWS = {"alpha0": (alpha0_of, 1.0), "backscatter_db": (backscatter_db_of, 0.0),
               "cells": (cells_of, 1.0)}


def sample_cohort(synth_cfg, physics: Physics = spec.PHYSICS) -> Dict[str, np.ndarray]:
  """Draws the subjects and assigns images to them (no rendering).

  Subjects are S0 or S1-S3 by measured CAP; the number of S0 subjects is proportional to the
  requested S0 image share, and the extra images (num_images - num_subjects) go to random
  subjects of the right class so that exactly `num_s0` images have measured CAP < 238 dB/m.
  Subject-level tissue (alpha0, backscatter gain, scatterer density) follows the true CAP
  through the smooth laws above (`TISSUE_LAWS`), never the label; the abdominal wall and the
  device are independent of both.

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
  # The subjects' random factors are drawn for everyone alike, whatever their CAP.
  alpha0 = alpha0_of(true_cap, rng.uniform(*physics.alpha_factor, n_subj), physics)
  backscatter = backscatter_db_of(true_cap, rng.normal(0.0, physics.backscatter[-1], n_subj),
                                  physics)
  cells = cells_of(true_cap, rng.lognormal(0.0, physics.cells[-1], n_subj), physics)
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


def sample_kidneys(seed: int, num_images: int, prob: float,
                   physics: Physics = spec.PHYSICS) -> Dict[str, np.ndarray]:
  """Whether the right kidney is in view on each image, and its shape (unit-free draws).

  Each image has its own stream (`Stream.KIDNEY`), and this function is given no CAP, label or
  subject: kidney presence is independent of fat by construction, as in a clinic where whether
  the kidney is in the picture depends on the view, not on the liver.

  Args:
    seed: simulator seed.
    num_images: images in the cohort.
    prob: probability that the kidney is in view (config.data.synthetic.kidney_prob).
    physics: constants (the kidney's ranges).

  Returns:
    dict of float64[N]: kidney (0/1), k_side (-1 or 1), k_theta_frac, k_top_frac, k_long_mm,
    k_short_mm, k_tilt (rad), k_cortex_mm, k_db (cortex dB re normal parenchyma), k_pyramids,
    k_phase (rad), k_muscle_mm (posterior muscle behind it).
  """
  ph = physics
  keys = ("kidney", "k_side", "k_theta_frac", "k_top_frac", "k_long_mm", "k_short_mm", "k_tilt",
          "k_cortex_mm", "k_db", "k_pyramids", "k_phase", "k_muscle_mm")
  out = {k: np.zeros(num_images, np.float64) for k in keys}
  tilt = np.deg2rad(ph.kidney_tilt_deg)
  for i in range(num_images):
    rng = spec.rng(seed, Stream.KIDNEY, i)
    # Every image draws the same sequence whether or not its kidney is in view.
    out["kidney"][i] = rng.random() < float(prob)
    out["k_side"][i] = 1.0 if rng.random() < 0.5 else -1.0
    out["k_theta_frac"][i] = rng.uniform(*ph.kidney_theta_frac)
    out["k_top_frac"][i] = rng.uniform(*ph.kidney_top_frac)
    out["k_long_mm"][i] = rng.uniform(*ph.kidney_long_mm)
    out["k_short_mm"][i] = rng.uniform(*ph.kidney_short_mm)
    out["k_tilt"][i] = rng.uniform(-tilt, tilt)
    out["k_cortex_mm"][i] = rng.uniform(*ph.kidney_cortex_mm)
    out["k_db"][i] = ph.kidney_cortex_db + rng.normal(0.0, ph.kidney_cortex_sd_db)
    out["k_pyramids"][i] = rng.integers(ph.kidney_pyramids[0], ph.kidney_pyramids[1] + 1)
    out["k_phase"][i] = rng.uniform(0.0, 2 * np.pi)
    out["k_muscle_mm"][i] = rng.uniform(*ph.behind_kidney_mm)
  return out


def sample_image_params(synth_cfg, cohort, physics: Physics) -> Dict[str, np.ndarray]:
  """Per-image acquisition, anatomy and display parameters (one RNG stream per image).

  Args:
    synth_cfg: `config.data.synthetic` (validated).
    cohort: `sample_cohort`'s dict.
    physics: constants.

  Returns:
    dict of float64 arrays [N] (and [N, knots], [N, vessels] for the TGC knots and vessels),
    including the kidney's (`sample_kidneys`) with its position in mm and rad: k_depth_mm (depth
    of its centre along the beam k_theta).
  """
  ph = physics
  n = cohort["cap"].shape[0]
  keys = ("f0", "bandwidth", "f_number", "dynamic_range", "smoothing", "gamma", "depth_mm",
          "focus_mm", "gain_db", "tgc_alpha", "recentre", "noise_db", "wall_mm", "fat_frac",
          "wall_phase", "diaphragm_mm", "diaphragm_x", "diaphragm_curv", "diaphragm_tilt",
          "rib", "rib_theta", "rib_width", "rib_depth", "rib_db", "overlay", "jpeg", "jpeg_q",
          "k_theta", "k_depth_mm")
  p = {k: np.zeros(n, np.float64) for k in keys}
  p["tgc_knots"] = np.zeros((n, ph.tgc_knots))
  nv = ph.vessels[1]
  for k in ("v_on", "v_depth", "v_theta", "v_radius", "v_ratio", "v_angle", "v_portal"):
    p[k] = np.zeros((n, nv))
  p.update(sample_kidneys(synth_cfg.seed, n, synth_cfg.kidney_prob, ph))
  for i in range(n):
    rng = spec.rng(synth_cfg.seed, Stream.IMAGE, i)
    prof = PROFILES[int(cohort["device"][i])]
    p["f0"][i] = rng.uniform(*prof.f0_mhz)
    p["bandwidth"][i] = rng.uniform(*prof.bandwidth)
    p["f_number"][i] = rng.uniform(*prof.f_number)
    p["dynamic_range"][i] = rng.uniform(*prof.dynamic_range_db)
    p["smoothing"][i] = rng.uniform(*prof.smoothing_px)
    p["gamma"][i] = rng.uniform(*prof.gamma)
    depth_cm = rng.integers(ph.depth_cm[0], ph.depth_cm[1] + 1)
    p["depth_mm"][i] = 10.0 * depth_cm
    p["focus_mm"][i] = rng.uniform(*ph.focus_mm)
    p["gain_db"][i] = rng.uniform(-ph.gain_db, ph.gain_db)
    p["tgc_alpha"][i] = rng.uniform(*ph.tgc_alpha)
    p["tgc_knots"][i] = rng.normal(0.0, ph.tgc_knot_sd_db, ph.tgc_knots)
    p["recentre"][i] = rng.uniform(*ph.recentre)
    p["noise_db"][i] = rng.uniform(*ph.noise_db)
    p["wall_mm"][i] = cohort["wall_mm"][i] * rng.uniform(*ph.wall_jitter)
    p["fat_frac"][i] = rng.uniform(*ph.wall_fat_frac)
    p["wall_phase"][i] = rng.uniform(0, 2 * np.pi)
    p["diaphragm_mm"][i] = rng.uniform(*ph.diaphragm_mm)
    p["diaphragm_x"][i] = rng.uniform(-ph.diaphragm_x_mm, ph.diaphragm_x_mm)
    p["diaphragm_curv"][i] = 1.0 / (2.0 * rng.uniform(*ph.diaphragm_radius_mm))
    p["diaphragm_tilt"][i] = rng.uniform(-ph.diaphragm_tilt, ph.diaphragm_tilt)
    half_fan = np.deg2rad(prof.fan_deg) / 2
    depth_mm = p["depth_mm"][i]
    liver_top = p["wall_mm"][i] + ph.liver_inset_mm[0]
    liver_bottom = max(liver_top + ph.liver_min_mm,
                       min(p["diaphragm_mm"][i], depth_mm) - ph.liver_inset_mm[1])
    count = rng.integers(ph.vessels[0], ph.vessels[1] + 1)
    for v in range(nv):
      p["v_on"][i, v] = v < count
      p["v_depth"][i, v] = rng.uniform(liver_top, liver_bottom)
      p["v_theta"][i, v] = rng.uniform(-ph.vessel_theta_frac, ph.vessel_theta_frac) * half_fan
      p["v_radius"][i, v] = rng.uniform(*ph.vessel_radius_mm)
      along = rng.random() < ph.vessel_along_prob
      p["v_ratio"][i, v] = rng.uniform(*(ph.vessel_ratio_along if along
                                         else ph.vessel_ratio_across))
      p["v_angle"][i, v] = rng.uniform(0.0, np.pi)
      p["v_portal"][i, v] = rng.random() < ph.portal_prob
    p["rib"][i] = rng.random() < float(synth_cfg.rib_shadow_prob)
    p["rib_theta"][i] = rng.uniform(-ph.rib_theta_frac, ph.rib_theta_frac) * half_fan
    p["rib_width"][i] = rng.uniform(*ph.rib_width_mm)
    p["rib_depth"][i] = p["wall_mm"][i] * rng.uniform(*ph.rib_depth_frac)
    p["rib_db"][i] = rng.uniform(*ph.rib_atten_db)
    p["overlay"][i] = rng.random() < float(synth_cfg.overlay_prob)
    p["jpeg"][i] = rng.random() < prof.jpeg_prob
    p["jpeg_q"][i] = rng.integers(prof.jpeg_quality[0], prof.jpeg_quality[1] + 1)
    # The kidney sits in the deep liver on one side: its top between the liver's top and
    # bottom, so renal cortex and liver meet at similar depths (where the HRI is read).
    p["k_theta"][i] = p["k_side"][i] * p["k_theta_frac"][i] * half_fan
    top = liver_top + p["k_top_frac"][i] * (liver_bottom - liver_top)
    a, b, tilt = p["k_long_mm"][i], p["k_short_mm"][i], p["k_tilt"][i]
    p["k_depth_mm"][i] = top + np.hypot(a * np.sin(tilt), b * np.cos(tilt))  # Half height.
  return p
