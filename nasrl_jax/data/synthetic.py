"""The embedded default dataset: a physically grounded B-mode liver ultrasound simulator.

This module owns the `synthetic` source of `nasrl_jax.data.load`: the simulated cohort (subjects,
FibroScan CAP, devices), the per-image physics and anatomy, the machine "look", and the on-disk
cache of the rendered RGB images. The recipe and every range come from
/work/shared/ULTRASOUND_PHYSICS.md (the paper's clinical data is private).

One image, as computed (vectorised over a chunk of images, on a polar beam grid of depth samples x
beam lines; chunks run in threads):

  scatterers   complex Gaussian x sqrt(Poisson count) x 10^(G/20), the count from the scatterers
               per resolution cell; G = backscatter gain map (parenchyma from the true CAP,
               abdominal wall layers, vessel lumen / portal walls, diaphragm, rib and its shadow)
  PSF          FFT convolution: axial Gaussian pulse envelope x exp(j 2 k0 z) (from f0, bandwidth),
               lateral Gaussian sigma_x = lambda F# / 2.355 widening away from the transmit focus
  attenuation  x 10^(-2 f0 int(alpha dz) / 20) along each beam (liver alpha0 from the true CAP)
  receiver     + electronic noise (at the receiver input, so TGC amplifies it with depth), then
               x 10^((TGC(z) + operator gain) / 20)
  display      envelope -> dB -> the operator's partial re-centring of liver brightness -> TGC
               slider noise -> dynamic range and gamma -> curvilinear scan conversion ->
               smoothing -> machine tint and burned-in text (RGB) -> optional JPEG round trip.

`simulate(synth_cfg)` returns the RGB renders; `load(data_cfg)` caches them under
`<cache_dir>/synthetic/<hash>.npz` and preprocesses them like any other source (RGB -> ITU-R 601-2
luma, resize) into a `Dataset`. Everything is deterministic from `synth_cfg.seed`; every image
draws from its own `SeedSequence([seed, stream, index])`, so results do not depend on chunking or
threads.
"""

import concurrent.futures
import dataclasses
import hashlib
import io
import json
import math
import os
import zipfile
from typing import Dict, Optional, Tuple

import numpy as np
import scipy.fft
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont
from scipy import ndimage
from scipy import stats

from nasrl_jax import io_utils
from nasrl_jax.data import Dataset
from nasrl_jax.data import labels as labels_lib
from nasrl_jax.data import preprocess as preprocess_lib
from nasrl_jax.errors import UserInputError

# Bump whenever the rendered pixels change for the same config: it is part of the cache key.
SIMULATOR_VERSION = "2"

SPEED_OF_SOUND_MM_PER_US = 1.54  # c = 1540 m/s.
S0_CUTOFF = 238.0  # dB/m: `num_s0` counts images with measured CAP below this (the paper).


@dataclasses.dataclass(frozen=True)
class MachineProfile:
  """One scanner's acquisition and display ranges (ULTRASOUND_PHYSICS.md table) and look.

  Ranges are (low, high) and sampled uniformly per image. Geometry and colours are engineering
  choices that create a realistic domain shift between machines, not vendor specifications.
  """
  name: str
  f0_mhz: Tuple[float, float]
  bandwidth: Tuple[float, float]  # Fractional -6 dB bandwidth.
  f_number: Tuple[float, float]
  dynamic_range_db: Tuple[float, float]
  smoothing_px: Tuple[float, float]  # Gaussian sigma in pixels of a 224-pixel render.
  gamma: Tuple[float, float]
  share: float  # Fraction of subjects scanned on this machine.
  probe_radius_mm: float  # Curvilinear probe radius (virtual apex above the skin).
  fan_deg: float  # Sector opening angle.
  margins: Tuple[float, float, float]  # (top, sides, bottom) blank margins, fractions of R.
  tint_gamma: Tuple[float, float, float]  # Per-channel exponent of the RGB tint map.
  text_rgb: Tuple[int, int, int]  # Colour of burned-in text.
  jpeg_prob: float  # Probability that an image went through a lossy JPEG export.
  jpeg_quality: Tuple[int, int]


PROFILES = (
    MachineProfile("LOGIQ_S8", (3.5, 4.5), (0.6, 0.8), (1.5, 2.2), (60.0, 72.0), (0.6, 1.2),
                   (0.9, 1.1), share=0.40, probe_radius_mm=50.0, fan_deg=70.0,
                   margins=(0.06, 0.04, 0.04), tint_gamma=(0.92, 1.0, 1.25),
                   text_rgb=(230, 230, 230), jpeg_prob=0.3, jpeg_quality=(88, 96)),
    MachineProfile("Aplio300", (3.0, 4.0), (0.6, 0.8), (1.8, 2.5), (55.0, 65.0), (0.3, 0.9),
                   (0.8, 1.0), share=0.35, probe_radius_mm=45.0, fan_deg=66.0,
                   margins=(0.10, 0.07, 0.04), tint_gamma=(1.2, 1.05, 0.9),
                   text_rgb=(240, 225, 110), jpeg_prob=0.5, jpeg_quality=(80, 92)),
    MachineProfile("SSA-660A", (2.5, 3.5), (0.5, 0.7), (2.0, 3.0), (50.0, 60.0), (0.0, 0.5),
                   (1.0, 1.3), share=0.25, probe_radius_mm=40.0, fan_deg=60.0,
                   margins=(0.08, 0.12, 0.06), tint_gamma=(1.1, 0.95, 1.1),
                   text_rgb=(150, 235, 150), jpeg_prob=0.7, jpeg_quality=(70, 88)),
)
DEVICE_NAMES = tuple(p.name for p in PROFILES)


@dataclasses.dataclass(frozen=True)
class Physics:
  """Cohort, anatomy and acquisition constants (ULTRASOUND_PHYSICS.md); part of the cache key."""
  # Measured CAP (dB/m): S0 ~ N(205, 22) truncated below 238, S1-S3 ~ N(292, 38) from 238.
  cap_s0: Tuple[float, float] = (205.0, 22.0)
  cap_s1: Tuple[float, float] = (292.0, 38.0)
  cap_range: Tuple[float, float] = (100.0, 400.0)  # FibroScan's reporting range.
  alpha_per_cap: float = 1.0 / 350.0  # alpha0 [dB/cm/MHz] ~= CAP / 350.
  alpha_factor: Tuple[float, float] = (0.85, 1.0)
  # Backscatter gain (dB) = clip(0.08 (CAP - 220), -2, 11) + N(0, 2): (slope, centre, lo, hi, sd).
  backscatter: Tuple[float, float, float, float, float] = (0.08, 220.0, -2.0, 11.0, 2.0)
  # Scatterers per resolution cell: U(5, 10) below 238 dB/m (true CAP), else
  # clip(8 + 0.15 (CAP - 220), 8, 30) x lognormal(0, 0.2).
  cells_s0: Tuple[float, float] = (5.0, 10.0)
  cells_s1: Tuple[float, float, float, float, float] = (8.0, 0.15, 8.0, 30.0, 0.2)
  cells_specular: float = 30.0  # Capsule, fascia, vessel walls, diaphragm: dense.
  cells_wall: float = 12.0  # Subcutaneous fat and muscle.
  depth_cm: Tuple[int, int] = (14, 20)  # Depth setting, whole centimetres (scanner steps).
  focus_mm: Tuple[float, float] = (50.0, 90.0)
  gain_db: float = 6.0  # Operator gain U(-6, 6).
  tgc_alpha: Tuple[float, float] = (0.45, 0.75)  # TGC compensating alpha (dB/cm/MHz).
  tgc_knots: int = 8  # TGC sliders, evenly spaced over the depth.
  tgc_knot_sd_db: float = 3.0  # Slider imprecision N(0, 3 dB) per knot.
  recentre: Tuple[float, float] = (0.0, 0.7)  # Fraction of liver brightness re-centred, U(lo, hi).
  recentre_band: Tuple[float, float] = (0.35, 0.6)  # Depth fractions of the mid-liver band.
  recentre_mode: str = "tgc"  # mid (overall gain only) | tgc (per TGC knot); see _recentre.
  noise_db: Tuple[float, float] = (-95.0, -78.0)  # Receiver noise re normal parenchyma echo.
  wall_mm: Tuple[float, float] = (12.0, 35.0)  # Abdominal wall thickness (per subject).
  wall_fat_frac: Tuple[float, float] = (0.3, 0.6)  # Subcutaneous fat share of the wall.
  wall_db: Tuple[float, float, float, float] = (6.0, -10.0, 8.0, -4.0)  # skin, fat, fascia, muscle
  capsule_db: float = 6.0
  alpha_wall: float = 0.6  # dB/cm/MHz, fat and muscle.
  alpha_blood: float = 0.18
  vessels: Tuple[int, int] = (1, 4)
  vessel_radius_mm: Tuple[float, float] = (2.0, 7.0)
  vessel_wall_db: float = 10.0  # Portal-vein wall, fixed (not scaled with fat).
  vessel_wall_mm: float = 1.8
  portal_prob: float = 0.6  # Otherwise a hepatic vein: no bright wall.
  lumen_db: float = -40.0
  diaphragm_mm: Tuple[float, float] = (110.0, 150.0)
  diaphragm_db: float = 20.0
  diaphragm_thickness_mm: float = 3.0
  below_diaphragm_db: float = -8.0  # Lung / mirror image, relative to the parenchyma.
  rib_atten_db: Tuple[float, float] = (20.0, 40.0)
  rib_width_mm: Tuple[float, float] = (10.0, 20.0)
  rib_db: float = 15.0
  display_ref_frac: float = 0.6  # ref = this x DR above normal parenchyma: mid-grey liver.
  recentre_target_db: float = -2.5  # Mean of 20 log10 of Rayleigh speckle re its rms.
  lateral_growth_cap: float = 4.0  # Dynamic receive focusing bounds the far-field widening.
  grid_axial: float = 1.0  # Depth samples = grid_axial x R (the fan is ~0.65 R tall).
  grid_lines: float = 1.0  # Beam lines = grid_lines x R.
  chunk: int = 16  # Images rendered together (about 4 MB each at R = 224).


PHYSICS = Physics()


# ------------------------------------------------------------------------------ validation


def _is_int(v) -> bool:
  return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_num(v) -> bool:
  return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def validate(synth_cfg, render_size: Optional[int] = None) -> None:
  """Checks `config.data.synthetic` before any work.

  Args:
    synth_cfg: `config.data.synthetic`.
    render_size: overrides synth_cfg.render_size when given.

  Raises:
    UserInputError: naming the bad field and what is wrong.
  """
  f = "config.data.synthetic."
  for name in ("num_subjects", "num_images", "num_s0", "render_size", "seed"):
    v = getattr(synth_cfg, name)
    if not _is_int(v):
      raise UserInputError(f"{f}{name}={v!r}: must be an integer")
  n_img, n_subj, n_s0 = synth_cfg.num_images, synth_cfg.num_subjects, synth_cfg.num_s0
  if n_img < 1:
    raise UserInputError(f"{f}num_images={n_img}: must be >= 1")
  if not 1 <= n_subj <= n_img:
    raise UserInputError(
        f"{f}num_subjects={n_subj}: must be between 1 and num_images ({n_img})")
  if not 0 <= n_s0 <= n_img:
    raise UserInputError(f"{f}num_s0={n_s0}: must be between 0 and num_images ({n_img})")
  classes = int(n_s0 > 0) + int(n_s0 < n_img)
  if n_subj < classes:
    raise UserInputError(
        f"{f}num_subjects={n_subj}: need one subject per class present (S0 and S1-S3)")
  size = synth_cfg.render_size if render_size is None else render_size
  if not _is_int(size) or not 16 <= size <= 2048:
    raise UserInputError(f"{f}render_size={size!r}: must be an integer in [16, 2048]")
  for name in ("rib_shadow_prob", "overlay_prob"):
    v = getattr(synth_cfg, name)
    if not _is_num(v) or not 0.0 <= float(v) <= 1.0:
      raise UserInputError(f"{f}{name}={v!r}: must be a probability in [0, 1]")
  sd = synth_cfg.cap_noise_sd
  if not _is_num(sd) or not 0.0 <= float(sd) <= 100.0:
    raise UserInputError(f"{f}cap_noise_sd={sd!r}: must be a number of dB/m in [0, 100]")
  if synth_cfg.seed < 0:
    raise UserInputError(f"{f}seed={synth_cfg.seed}: must be >= 0")


# ------------------------------------------------------------------------------ cohort


def _rng(seed: int, stream: int, index: int = 0) -> np.random.Generator:
  return np.random.default_rng(np.random.SeedSequence([int(seed), stream, index]))


def _truncnorm(rng, mean, sd, lo, hi, size) -> np.ndarray:
  a, b = (lo - mean) / sd, (hi - mean) / sd
  return stats.truncnorm.rvs(a, b, loc=mean, scale=sd, size=size, random_state=rng)


def sample_cohort(synth_cfg, physics: Physics = PHYSICS) -> Dict[str, np.ndarray]:
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
  validate(synth_cfg)
  rng = _rng(synth_cfg.seed, 0)
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
  cap[is_s0] = _truncnorm(rng, *physics.cap_s0, cap_lo, S0_CUTOFF - 1e-3, int(is_s0.sum()))
  cap[~is_s0] = _truncnorm(rng, *physics.cap_s1, S0_CUTOFF, cap_hi, int((~is_s0).sum()))
  true_cap = cap - rng.normal(0.0, float(synth_cfg.cap_noise_sd), n_subj)
  alpha0 = true_cap * physics.alpha_per_cap * rng.uniform(*physics.alpha_factor, n_subj)
  slope, centre, g_lo, g_hi, g_sd = physics.backscatter
  backscatter = (np.clip(slope * (true_cap - centre), g_lo, g_hi)
                 + rng.normal(0.0, g_sd, n_subj))
  base, per_cap, c_lo, c_hi, c_sd = physics.cells_s1
  cells_fatty = (np.clip(base + per_cap * (true_cap - centre), c_lo, c_hi)
                 * rng.lognormal(0.0, c_sd, n_subj))
  cells = np.where(true_cap < S0_CUTOFF, rng.uniform(*physics.cells_s0, n_subj), cells_fatty)
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


def _sample_image_params(synth_cfg, cohort, physics: Physics) -> Dict[str, np.ndarray]:
  """Per-image acquisition, anatomy and display parameters (one RNG stream per image)."""
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
    rng = _rng(synth_cfg.seed, 1, i)
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


# ------------------------------------------------------------------------------ geometry


def _grid_shape(render_size: int, physics: Physics) -> Tuple[int, int]:
  return (max(16, int(round(physics.grid_axial * render_size))),
          max(16, int(round(physics.grid_lines * render_size))))


def _fan_layout(profile: MachineProfile, depth_mm: float, render_size: int):
  """Pixels per mm and the apex position (pixels) that fit the fan into the square render."""
  r0, half = profile.probe_radius_mm, np.deg2rad(profile.fan_deg) / 2
  top, side, bottom = profile.margins
  width_mm = 2 * (r0 + depth_mm) * np.sin(half)
  height_mm = r0 + depth_mm - r0 * np.cos(half)
  scale = min((1 - 2 * side) * render_size / width_mm,
              (1 - top - bottom) * render_size / height_mm)
  apex_x = render_size / 2
  apex_y = top * render_size - scale * r0 * np.cos(half)
  return scale, apex_x, apex_y


def _pixel_polar(profile: MachineProfile, depth_mm: float, render_size: int):
  """Radius (mm) and angle (rad) of every render pixel centre, and the fan mask."""
  scale, ax, ay = _fan_layout(profile, depth_mm, render_size)
  idx = np.arange(render_size) + 0.5
  x_mm = (idx[None, :] - ax) / scale
  y_mm = (idx[:, None] - ay) / scale
  r = np.hypot(x_mm, y_mm)
  theta = np.arctan2(x_mm, y_mm)
  r0, half = profile.probe_radius_mm, np.deg2rad(profile.fan_deg) / 2
  mask = (r >= r0) & (r <= r0 + depth_mm) & (np.abs(theta) <= half)
  return r, theta, mask


def fan_mask(device: str, depth_cm: float, render_size: int) -> np.ndarray:
  """The sector (fan) of one simulated image: True inside, where the scan has echoes.

  Args:
    device: profile name (one of DEVICE_NAMES).
    depth_cm: the image's depth setting (`simulate(...)["depth_cm"]`).
    render_size: side of the render.

  Returns:
    bool[render_size, render_size].
  """
  if device not in DEVICE_NAMES:
    raise UserInputError(f"device {device!r}: must be one of {', '.join(DEVICE_NAMES)}")
  return _pixel_polar(PROFILES[DEVICE_NAMES.index(device)], 10.0 * float(depth_cm),
                      int(render_size))[2]


def _scan_geometry(profile: MachineProfile, depth_mm: float, render_size: int,
                   grid: Tuple[int, int]):
  """map_coordinates indices into the (depth sample, beam line) grid for every render pixel."""
  nz, nx = grid
  r, theta, mask = _pixel_polar(profile, depth_mm, render_size)
  half = np.deg2rad(profile.fan_deg) / 2
  k = (r - profile.probe_radius_mm) / (depth_mm / nz) - 0.5
  l = (theta + half) / (2 * half / nx) - 0.5
  coords = np.stack([k[mask], l[mask]]).astype(np.float32)  # Only pixels inside the fan.
  return coords, mask


# ------------------------------------------------------------------------------ physics


def _anatomy(p, sl, z, theta, r0, physics: Physics, cohort):
  """Backscatter gain (dB), attenuation (dB/cm/MHz) and scatterers/cell maps on the beam grid.

  Args:
    p: per-image parameters; sl: the chunk's slice.
    z: depth along the beam, mm, [B, nz, 1]; theta: beam angle, rad, [B, 1, nx];
    r0: probe radius, mm, [B, 1, 1].

  Returns:
    (gain_db, alpha, cells) float32[B, nz, nx] and parenchyma bool[B, nz, nx] (liver tissue
    outside vessels and rib shadows: what an operator judges brightness by).
  """
  ph = physics
  col = lambda a: np.asarray(a[sl], np.float32)[:, None, None]  # noqa: E731
  shape = np.broadcast_shapes(z.shape, theta.shape)
  r = r0 + z
  x = r * np.sin(theta)
  y = r * np.cos(theta) - r0  # Vertical depth below the centre of the probe face.
  gbs = col(cohort["backscatter_db"])
  gain = np.broadcast_to(gbs, shape).astype(np.float32)
  alpha = np.broadcast_to(col(cohort["alpha0"]), shape).astype(np.float32)
  cells = np.broadcast_to(col(cohort["cells"]), shape).astype(np.float32)

  # Abdominal wall: skin, subcutaneous fat, fascia, muscle, then the liver capsule. Layers follow
  # the probe face with a gentle undulation.
  wall = col(p["wall_mm"]) * (1 + 0.06 * np.sin(3.0 * theta / 0.6 + col(p["wall_phase"])))
  fat_end = col(p["fat_frac"]) * wall
  skin_db, fat_db, fascia_db, muscle_db = ph.wall_db
  layer = np.where(z < 1.5, skin_db,
                   np.where(z < fat_end, fat_db,
                            np.where(z < fat_end + 1.0, fascia_db, muscle_db)))
  in_wall = z < wall
  gain = np.where(in_wall, layer, gain)
  alpha = np.where(in_wall, ph.alpha_wall, alpha)
  cells = np.where(in_wall, ph.cells_wall, cells)
  capsule = (z >= wall) & (z < wall + 1.0)
  gain = np.where(capsule, ph.capsule_db, gain)

  # Diaphragm: a bright curved dome; lung / mirror image below it.
  dx = x - col(p["diaphragm_x"])
  dist = y - (col(p["diaphragm_mm"]) + col(p["diaphragm_curv"]) * dx * dx
              + col(p["diaphragm_tilt"]) * dx)
  half_th = ph.diaphragm_thickness_mm / 2
  gain = np.where(dist > half_th, gbs + ph.below_diaphragm_db, gain)
  band = np.abs(dist) <= half_th
  gain = np.where(band, ph.diaphragm_db, gain)
  liver = (z >= wall + 1.0) & (dist < -half_th)

  # Vessels: anechoic lumen (low attenuation: posterior enhancement); portal veins have walls of
  # fixed brightness (+10 dB re normal parenchyma), specular (brightest facing the beam), so their
  # contrast falls as fatty parenchyma brightens. Each vessel is drawn in its bounding window only.
  specular = band | capsule
  parenchyma = liver.copy()
  gain = np.ascontiguousarray(gain, np.float32)
  alpha = np.ascontiguousarray(alpha, np.float32)
  for j, i in enumerate(range(sl.start, sl.stop)):
    zj, tj, rj = z[j, :, 0], theta[j, 0, :], float(r0[j, 0, 0])
    for v in range(p["v_on"].shape[1]):
      if not p["v_on"][i, v]:
        continue
      a = p["v_radius"][i, v]
      b = a * p["v_ratio"][i, v]
      extent = b + ph.vessel_wall_mm + 1.0
      vd, vt = p["v_depth"][i, v], p["v_theta"][i, v]
      rows = slice(np.searchsorted(zj, vd - extent), np.searchsorted(zj, vd + extent))
      half = extent / max(rj + vd - extent, 1.0)
      cols = slice(np.searchsorted(tj, vt - half), np.searchsorted(tj, vt + half))
      xw, yw, tw = x[j, rows, cols], y[j, rows, cols], theta[j, :, cols]
      cx, cy = (rj + vd) * np.sin(vt), (rj + vd) * np.cos(vt) - rj
      ca, sa = np.cos(p["v_angle"][i, v]), np.sin(p["v_angle"][i, v])
      u = (xw - cx) * ca + (yw - cy) * sa
      w = -(xw - cx) * sa + (yw - cy) * ca
      q = np.sqrt((u / a) ** 2 + (w / b) ** 2)
      inside = liver[j, rows, cols]
      lumen = inside & (q < 1.0)
      ring = inside & (q >= 1.0) & (q < 1.0 + ph.vessel_wall_mm / a) & bool(p["v_portal"][i, v])
      # Cosine between the wall normal (gradient of q) and the beam direction (sin t, cos t).
      nu, nw = u / (a * a), w / (b * b)
      gx, gy = nu * ca - nw * sa, nu * sa + nw * ca
      cos_psi = np.abs(gx * np.sin(tw) + gy * np.cos(tw)) / (np.hypot(gx, gy) + 1e-6)
      wall_db = ph.vessel_wall_db + 20 * np.log10(0.3 + 0.7 * cos_psi)
      gw = gain[j, rows, cols]
      gain[j, rows, cols] = np.where(lumen, ph.lumen_db, np.where(ring, wall_db, gw))
      alpha[j, rows, cols] = np.where(lumen, ph.alpha_blood, alpha[j, rows, cols])
      specular[j, rows, cols] |= ring
      parenchyma[j, rows, cols] &= ~(lumen | ring)
    # Rib: a bright arc in the wall and an acoustic shadow behind it, within its angular band.
    if p["rib"][i]:
      depth = p["rib_depth"][i]
      half = p["rib_width"][i] / 2 / (rj + depth)
      cols = slice(np.searchsorted(tj, p["rib_theta"][i] - half),
                   np.searchsorted(tj, p["rib_theta"][i] + half))
      top, bottom = np.searchsorted(zj, depth), np.searchsorted(zj, depth + 2.5)
      gain[j, bottom:, cols] -= p["rib_db"][i]
      parenchyma[j, bottom:, cols] = False
      gain[j, top:bottom, cols] = ph.rib_db
      specular[j, top:bottom, cols] = True
  cells = np.where(specular, ph.cells_specular, cells)
  return (gain.astype(np.float32), alpha.astype(np.float32), cells.astype(np.float32),
          parenchyma)


def _axial_transfer(f0, bandwidth, dz, nz_pad):
  """FFT of the unit-energy axial pulse-echo PSF (Gaussian envelope x exp(j 2 k0 z)), [B, nz_pad].

  sigma_t = sqrt(2 ln 2) / (pi B f0), sigma_z = c sigma_t / 2. At render sizes where the grid
  is coarser than the pulse the carrier aliases; with circular complex Gaussian scatterers that
  leaves the envelope statistics unchanged.
  """
  sigma_t = np.sqrt(2 * np.log(2)) / (np.pi * bandwidth * f0)  # us
  sigma_z = SPEED_OF_SOUND_MM_PER_US * sigma_t / 2  # mm
  k0 = 2 * np.pi * f0 / SPEED_OF_SOUND_MM_PER_US  # rad/mm
  half = int(np.ceil(4 * np.max(sigma_z / dz))) + 1
  taps = np.arange(-half, half + 1)[None, :] * dz[:, None]  # mm
  h = np.exp(-taps ** 2 / (2 * sigma_z[:, None] ** 2)) * np.exp(2j * k0[:, None] * taps)
  h /= np.sqrt(np.sum(np.abs(h) ** 2, axis=1, keepdims=True))
  kernel = np.zeros((f0.shape[0], nz_pad), np.complex64)
  kernel[:, :half + 1] = h[:, half:]
  kernel[:, nz_pad - half:] = h[:, :half]
  return scipy.fft.fft(kernel, axis=1), sigma_z


def _lateral_sigma_mm(f0, f_number, focus_mm, z, cap):
  """Lateral PSF sigma (mm) at depth z: lambda F# / 2.355 at the focus, widening away from it.

  The widening follows the transmit depth of field (7.1 lambda F#^2), capped because dynamic
  receive focusing keeps the far field within a few focal widths.
  """
  lam = SPEED_OF_SOUND_MM_PER_US / f0
  sigma_f = lam * f_number / 2.355
  dof = 7.1 * lam * f_number ** 2
  growth = np.sqrt(1 + ((z - focus_mm) / dof) ** 2)
  return sigma_f * np.minimum(growth, cap), sigma_f


def _poisson(rng, cells, values, per_cell: float) -> np.ndarray:
  """Exact Poisson(cells x per_cell) counts where `cells` takes only the given values.

  Inverse-CDF sampling, one table per value: 3-5x faster than `Generator.poisson` for the small
  means (< 10) of sparse S0 parenchyma, whose multiplication method is O(mean) per draw.
  """
  u = rng.random(cells.shape, dtype=np.float32)
  count = np.zeros(cells.shape, np.float32)
  for v in np.unique(values):
    mean = float(v) * float(per_cell)
    k = np.arange(int(mean + 10 * math.sqrt(mean) + 10))
    cdf = stats.poisson.cdf(k, mean).astype(np.float32)
    where = cells == v
    count[where] = np.searchsorted(cdf, u[where], side="right")
  return count


def _recentre(level, parenchyma, depth_frac, fraction, physics: Physics):
  """The operator's partial re-centring of liver brightness (a fraction f per image).

  `recentre_mode` "mid" (ULTRASOUND_PHYSICS.md as written): the parenchyma's mean level in the
  mid-liver band moves a fraction f towards the target (an overall gain change). "tgc": the
  operator does this with the TGC sliders, at each of the knot depths, so part of the
  depth-dependent darkening is compensated too (what sonographers are taught to do: make the
  liver look uniform), by the same fraction f.

  Args:
    level: dB, float32[B, nz, nx] (modified in place).
    parenchyma: bool[B, nz, nx].
    depth_frac: depth / image depth, [B, nz].
    fraction: f per image, [B].
    physics: constants (recentre_mode, recentre_band, recentre_target_db, tgc_knots).

  Returns:
    level, re-centred.
  """
  ph = physics
  for j in range(level.shape[0]):
    lev, par = level[j], parenchyma[j]
    if not par.any():  # No liver in view (not with the default anatomy): judge by everything.
      par = np.ones_like(par)
    if ph.recentre_mode == "mid":
      rows = (depth_frac[j] >= ph.recentre_band[0]) & (depth_frac[j] < ph.recentre_band[1])
      mean = lev[rows][par[rows]].mean() if par[rows].any() else lev[rows].mean()
      level[j] += np.float32(fraction[j] * (ph.recentre_target_db - mean))
      continue
    knots = np.linspace(0.0, 1.0, ph.tgc_knots)
    nearest = np.rint(depth_frac[j] * (ph.tgc_knots - 1)).astype(np.int64)
    sums = np.bincount(nearest, weights=np.where(par, lev, 0).sum(axis=1), minlength=knots.size)
    counts = np.bincount(nearest, weights=par.sum(axis=1), minlength=knots.size)
    valid = counts >= 0.1 * counts.max()  # Knots that see enough liver to judge by.
    corr = fraction[j] * (ph.recentre_target_db - sums[valid] / counts[valid])
    level[j] += np.interp(depth_frac[j], knots[valid], corr).astype(np.float32)[:, None]
  return level


def _lateral_fft_len(nx: int, physics: Physics) -> int:
  """Beam lines + zero padding (3 sigma of the widest lateral PSF any profile can have).

  Fixed per render size, never per chunk, so that chunking cannot change a pixel.
  """
  widest = 0.0
  for prof in PROFILES:
    lam = SPEED_OF_SOUND_MM_PER_US / prof.f0_mhz[0]
    sigma_mm = lam * prof.f_number[1] / 2.355 * physics.lateral_growth_cap
    spacing_mm = prof.probe_radius_mm * np.deg2rad(prof.fan_deg) / nx  # Narrowest: at the probe.
    widest = max(widest, sigma_mm / spacing_mm)
  return scipy.fft.next_fast_len(nx + int(np.ceil(3 * widest)) + 2)


def _render_chunk(p, cohort, sl, render_size, grid, geometry, seed, physics: Physics):
  """Renders images sl.start..sl.stop-1 to uint8 RGB [B, R, R, 3]."""
  ph = physics
  nz, nx = grid
  idx = np.arange(sl.start, sl.stop)
  b = idx.size
  col = lambda a: np.asarray(a[sl], np.float64)  # noqa: E731
  dev = cohort["device"][sl]
  r0 = np.array([PROFILES[d].probe_radius_mm for d in dev])
  fan = np.deg2rad([PROFILES[d].fan_deg for d in dev])
  depth = col(p["depth_mm"])
  dz = depth / nz
  dtheta = fan / nx
  z = ((np.arange(nz) + 0.5)[None, :] * dz[:, None])  # [B, nz]
  theta = ((np.arange(nx) + 0.5)[None, :] / nx - 0.5) * fan[:, None]  # [B, nx]
  f0, fnum, focus = col(p["f0"]), col(p["f_number"]), col(p["focus_mm"])

  gain_db, alpha, cells, parenchyma = _anatomy(
      p, sl, z[:, :, None].astype(np.float32), theta[:, None, :].astype(np.float32),
      r0[:, None, None].astype(np.float32), ph, cohort)

  # Scatterers per grid sample from scatterers per resolution cell at the focus (Bernoulli on a
  # sub-grid -> Poisson count per sample; a sum of K complex Gaussians is CN(0, K)).
  sig_lat, sigma_f = _lateral_sigma_mm(f0[:, None], fnum[:, None], focus[:, None], z,
                                       ph.lateral_growth_cap)
  h_ax, sigma_z = _axial_transfer(f0, col(p["bandwidth"]), dz,
                                  scipy.fft.next_fast_len(nz + 8))
  cell_z = np.maximum(1.0, 2.355 * sigma_z / dz)
  cell_x = np.maximum(1.0, 2.355 * sigma_f[:, 0] / ((r0 + focus) * dtheta))
  per_cell = 1.0 / (cell_z * cell_x)  # Grid samples per resolution cell, inverted.
  lam = cells * per_cell.astype(np.float32)[:, None, None]
  amp = np.power(np.float32(10.0), gain_db / np.float32(20.0))
  field = np.empty((b, nz, nx), np.complex64)
  noise = np.empty((b, nz, nx), np.complex64)
  cell_values = (ph.cells_wall, ph.cells_specular)
  for j, i in enumerate(idx):
    rng = _rng(seed, 2, int(i))
    g = rng.standard_normal((4, nz, nx), dtype=np.float32)
    values = np.array((cohort["cells"][i],) + cell_values, np.float32)
    count = _poisson(rng, cells[j], values, per_cell[j])
    scale = np.sqrt(count / lam[j] / 2) * amp[j]
    field[j].real, field[j].imag = g[0] * scale, g[1] * scale
    noise[j].real, noise[j].imag = g[2], g[3]

  # PSF: axial FFT convolution (depth-invariant pulse), then a lateral Gaussian whose width
  # depends on depth (row-wise transfer function). Unit energy, so mean speckle power = gain.
  sig_lines = sig_lat / ((r0[:, None] + z) * dtheta[:, None])  # [B, nz]
  nx_pad = _lateral_fft_len(nx, ph)
  nz_pad = h_ax.shape[1]
  buf = np.zeros((b, nz_pad, nx_pad), np.complex64)
  buf[:, :nz, :nx] = field
  buf = scipy.fft.fft(buf, axis=1, workers=1, overwrite_x=True)
  buf *= h_ax[:, :, None].astype(np.complex64)
  buf = scipy.fft.ifft(buf, axis=1, workers=1, overwrite_x=True)[:, :nz]
  nu = scipy.fft.fftfreq(nx_pad).astype(np.float32)
  h_lat = np.exp(-2 * np.pi ** 2 * (sig_lines[:, :, None] ** 2).astype(np.float32) * nu ** 2)
  h_lat /= np.sqrt(np.mean(h_lat ** 2, axis=2, keepdims=True))
  buf = scipy.fft.fft(buf, axis=2, workers=1, overwrite_x=True)
  buf *= h_lat
  iq = scipy.fft.ifft(buf, axis=2, workers=1, overwrite_x=True)[:, :, :nx]

  # Round-trip attenuation along each beam (midpoint rule), receiver noise, then TGC + gain.
  path = np.cumsum(alpha, axis=1)
  path -= alpha / 2  # One-way dB/MHz per sample step (midpoint rule), x dz below.
  # 10^(-2 f0 path dz / 20) as one exp: amplitude after the round trip.
  rate = (-2.0 * f0 * (dz / 10.0) * np.log(10.0) / 20.0).astype(np.float32)[:, None, None]
  path *= rate
  noise_amp = (np.power(10.0, col(p["noise_db"]) / 20) / np.sqrt(2)).astype(np.float32)
  noise *= noise_amp[:, None, None]
  iq *= np.exp(path)
  iq += noise
  # TGC = compensating alpha + operator gain; the operator's partial re-centring (done with the
  # sliders); then the sliders' imprecision (8 knots of N(0, 3 dB)), which re-centring does not
  # undo.
  tgc = 2 * col(p["tgc_alpha"])[:, None] * f0[:, None] * z / 10.0 + col(p["gain_db"])[:, None]
  level = 20 * np.log10(np.abs(iq) + np.float32(1e-30)) + tgc[:, :, None].astype(np.float32)
  level = _recentre(level, parenchyma, z / depth[:, None], col(p["recentre"]), ph)
  knots_z = np.linspace(0.0, 1.0, p["tgc_knots"].shape[1])
  knots = np.stack([np.interp(z[j] / depth[j], knots_z, p["tgc_knots"][i])
                    for j, i in enumerate(idx)])
  level += knots[:, :, None].astype(np.float32)

  dr = col(p["dynamic_range"]).astype(np.float32)[:, None, None]
  ref = ph.display_ref_frac * dr
  disp = np.clip((level - ref + dr) / dr, 0.0, 1.0) ** col(p["gamma"]).astype(
      np.float32)[:, None, None]

  out = np.empty((b, render_size, render_size, 3), np.uint8)
  font = _font(max(6, render_size // 22))
  for j, i in enumerate(idx):
    prof = PROFILES[dev[j]]
    coords, mask = geometry[(int(dev[j]), int(depth[j]))]
    img = np.zeros(mask.shape, np.float32)
    img[mask] = ndimage.map_coordinates(disp[j], coords, order=1, mode="nearest",
                                        output=np.float32)
    sigma = p["smoothing"][i] * render_size / 224.0
    if sigma > 0.05:
      img = ndimage.gaussian_filter(img, sigma, mode="nearest")
    img = np.clip(img * mask, 0.0, 1.0)
    if p["overlay"][i]:
      rgb = np.stack([img ** g for g in prof.tint_gamma], axis=-1)
      text = _overlay_alpha(prof, p, i, render_size, font)
      rgb = rgb * (1 - text[..., None]) + text[..., None] * (np.array(prof.text_rgb) / 255.0)
    else:
      rgb = np.repeat(img[..., None], 3, axis=-1)
    rgb8 = np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)
    if p["jpeg"][i]:
      rgb8 = _jpeg_round_trip(rgb8, int(p["jpeg_q"][i]))
    out[j] = rgb8
  return out


def _font(size: int):
  try:
    return ImageFont.load_default(size=size)
  except (ImportError, OSError, TypeError):  # Pillow without FreeType: the fixed bitmap font.
    return ImageFont.load_default()


def _overlay_alpha(prof: MachineProfile, p, i, render_size, font) -> np.ndarray:
  """Burned-in annotations (machine-specific layout) as an alpha mask in [0, 1], [R, R]."""
  canvas = Image.new("L", (render_size, render_size), 0)
  draw = ImageDraw.Draw(canvas)
  depth_cm = int(round(p["depth_mm"][i] / 10))
  lines_left = [prof.name.replace("_", " "), f"{p['f0'][i]:.1f}MHz"]
  lines_right = [f"D{depth_cm}cm", f"G{int(round(50 + p['gain_db'][i]))}",
                 f"DR{int(round(p['dynamic_range'][i]))}"]
  step = max(6, render_size // 22) + 1
  for k, s in enumerate(lines_left):
    draw.text((2, 1 + k * step), s, fill=255, font=font)
  for k, s in enumerate(lines_right):
    w = draw.textlength(s, font=font)
    draw.text((render_size - 2 - w, 1 + k * step), s, fill=255, font=font)
  # Depth ticks every centimetre along the right fan edge and the focus marker on the left.
  scale, ax, ay = _fan_layout(prof, p["depth_mm"][i], render_size)
  half = np.deg2rad(prof.fan_deg) / 2
  r0 = prof.probe_radius_mm
  dot = max(1, render_size // 112)
  for cm in range(1, depth_cm + 1):
    rr = r0 + 10 * cm
    px, py = ax + scale * rr * np.sin(half) + 2 * dot, ay + scale * rr * np.cos(half)
    size = 2 * dot if cm % 5 == 0 else dot
    draw.rectangle([px, py - size / 2, px + size, py + size / 2], fill=255)
  rf = r0 + p["focus_mm"][i]
  fx, fy = ax - scale * rf * np.sin(half) - 3 * dot, ay + scale * rf * np.cos(half)
  draw.polygon([(fx, fy), (fx - 3 * dot, fy - 2 * dot), (fx - 3 * dot, fy + 2 * dot)], fill=255)
  return np.asarray(canvas, np.float32) / 255.0


def _jpeg_round_trip(rgb8: np.ndarray, quality: int) -> np.ndarray:
  buf = io.BytesIO()
  Image.fromarray(rgb8, mode="RGB").save(buf, format="JPEG", quality=quality)
  buf.seek(0)
  with Image.open(buf) as im:
    return np.asarray(im.convert("RGB"), np.uint8)


# ------------------------------------------------------------------------------ public API


def simulate(synth_cfg, image_size_render: Optional[int] = None, physics: Physics = PHYSICS,
             num_threads: Optional[int] = None) -> Dict[str, np.ndarray]:
  """Simulates the cohort's B-mode images (RGB renders, before any preprocessing).

  Args:
    synth_cfg: `config.data.synthetic` (num_subjects, num_images, num_s0, render_size,
      rib_shadow_prob, overlay_prob, cap_noise_sd, seed).
    image_size_render: render side; defaults to synth_cfg.render_size.
    physics: simulator constants (defaults: ULTRASOUND_PHYSICS.md).
    num_threads: chunks rendered at once (default: CPU cores, at most 4). Memory is about
      num_threads x chunk x 2 MB at render 224.

  Returns:
    dict of numpy arrays: images uint8[N, R, R, 3]; cap float32[N] (measured, dB/m);
    true_cap float32[N]; subject_id str[N] ("sim-0001"...); device str[N] (profile name);
    depth_cm float32[N] (depth setting, for `fan_mask`).

  Raises:
    UserInputError: a bad cohort or render field, before any rendering.
  """
  render_size = int(synth_cfg.render_size if image_size_render is None else image_size_render)
  validate(synth_cfg, render_size)
  cohort = sample_cohort(synth_cfg, physics)
  params = _sample_image_params(synth_cfg, cohort, physics)
  grid = _grid_shape(render_size, physics)
  geometry = {}
  for d, depth in sorted(set(zip(cohort["device"].tolist(), params["depth_mm"].tolist()))):
    geometry[(int(d), int(depth))] = _scan_geometry(PROFILES[d], depth, render_size, grid)
  n = cohort["cap"].shape[0]
  images = np.empty((n, render_size, render_size, 3), np.uint8)
  def render(start):
    sl = slice(start, min(n, start + physics.chunk))
    images[sl] = _render_chunk(params, cohort, sl, render_size, grid, geometry,
                               synth_cfg.seed, physics)

  # Chunks render in threads (numpy, scipy.fft and ndimage release the GIL); every image has its
  # own RNG stream, so the pixels do not depend on the thread count or the chunking.
  threads = max(1, min(num_threads or os.cpu_count() or 1, 4))
  with concurrent.futures.ThreadPoolExecutor(threads) as pool:
    list(pool.map(render, range(0, n, physics.chunk)))
  return {
      "images": images,
      "cap": cohort["cap"].astype(np.float32),
      "true_cap": cohort["true_cap"].astype(np.float32),
      "subject_id": cohort["subject_id"].astype(str),
      "device": np.array([DEVICE_NAMES[d] for d in cohort["device"]]),
      "depth_cm": (params["depth_mm"] / 10.0).astype(np.float32),
  }


_OUTPUT_KEYS = frozenset({"images", "cap", "true_cap", "subject_id", "device", "depth_cm"})


def cache_key(synth_cfg, render_size: Optional[int] = None, physics: Physics = PHYSICS) -> str:
  """Hash of every simulator input: config fields, constants, profiles and SIMULATOR_VERSION."""
  fields = ("num_subjects", "num_images", "num_s0", "rib_shadow_prob", "overlay_prob",
            "cap_noise_sd", "seed")
  spec = {
      "version": SIMULATOR_VERSION,
      "config": {k: getattr(synth_cfg, k) for k in fields},
      "render_size": int(synth_cfg.render_size if render_size is None else render_size),
      "physics": dataclasses.asdict(physics),
      "profiles": [dataclasses.asdict(p) for p in PROFILES],
  }
  text = json.dumps(spec, sort_keys=True, default=float)
  return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def cache_dir_of(data_cfg) -> str:
  """The synthetic cache folder: <config.data.cache_dir or ~/.cache/nasrl_jax>/synthetic."""
  root = data_cfg.cache_dir or os.path.join("~", ".cache", "nasrl_jax")
  return os.path.join(os.path.expanduser(root), "synthetic")


def simulate_cached(synth_cfg, cache_dir: str,
                    image_size_render: Optional[int] = None) -> Tuple[Dict[str, np.ndarray], bool]:
  """`simulate`, read from `<cache_dir>/<hash>.npz` when there, else rendered and written once.

  Args:
    synth_cfg: `config.data.synthetic`.
    cache_dir: folder of the npz files (created if missing).
    image_size_render: as in `simulate`.

  Returns:
    (the `simulate` dict, True if it came from the cache).
  """
  render_size = int(synth_cfg.render_size if image_size_render is None else image_size_render)
  validate(synth_cfg, render_size)
  path = os.path.join(cache_dir, cache_key(synth_cfg, render_size) + ".npz")
  if os.path.isfile(path):
    try:
      with np.load(path, allow_pickle=False) as f:
        cached = {k: f[k] for k in f.files}
      if set(cached) >= _OUTPUT_KEYS:
        return cached, True
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
      pass  # A damaged cache file is simply rebuilt.
  sim = simulate(synth_cfg, render_size)
  buf = io.BytesIO()
  np.savez(buf, **sim)
  io_utils.atomic_write_bytes(path, buf.getvalue())
  return sim, False


def load(data_cfg) -> Dataset:
  """The synthetic source: simulated (or cached) renders -> grayscale -> resize -> Dataset.

  Args:
    data_cfg: `config.data` (synthetic, image_size, crop, cache_dir, label_mode, cap_cutoff,
      grade_cutoffs).

  Returns:
    Dataset with images uint8[N, image_size, image_size, 1], labels from measured CAP.
  """
  synth_cfg = data_cfg.synthetic
  validate(synth_cfg)
  preprocess_lib.validate_config(data_cfg)
  labels_lib.num_classes(data_cfg)  # Validates label_mode before rendering.
  sim, _ = simulate_cached(synth_cfg, cache_dir_of(data_cfg))
  images = np.stack([preprocess_lib.preprocess(img, data_cfg) for img in sim["images"]])
  n = images.shape[0]
  return Dataset(
      images=images[..., None],
      label=labels_lib.cap_to_label(sim["cap"], data_cfg),
      cap=sim["cap"].astype(np.float32),
      subject_id=sim["subject_id"].astype(str),
      device=sim["device"].astype(str),
      true_cap=sim["true_cap"].astype(np.float32),
      name=f"synthetic (seed {synth_cfg.seed}, {n} images)",
  )
