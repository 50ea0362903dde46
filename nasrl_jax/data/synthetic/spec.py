"""What the simulator is given: its constants, machine profiles, version and config checks.

This module owns every number the simulator uses (the `Physics` dataclass and the
`MachineProfile` table, both part of the cache key), the `SIMULATOR_VERSION` that the cache key
and the TFDS builder's fingerprint carry, the named random streams, and `validate`, which checks
`config.data.synthetic` before any work. The ranges come from /work/shared/ULTRASOUND_PHYSICS.md.
"""

import dataclasses
import enum
from typing import Optional, Tuple

import numpy as np

from nasrl_jax.errors import UserInputError

# Bump whenever the rendered pixels change for the same config: it is part of the cache key.
SIMULATOR_VERSION = "3"

SPEED_OF_SOUND_MM_PER_US = 1.54  # c = 1540 m/s.
S0_CUTOFF = 238.0  # dB/m: `num_s0` counts images with measured CAP below this (the paper).


class Stream(enum.IntEnum):
  """Random streams: every draw uses `SeedSequence([seed, stream, index])` (see `rng`)."""
  COHORT = 0  # Subjects: class, CAP, tissue factors, device, wall (index 0).
  IMAGE = 1  # Per-image acquisition and anatomy layout (index = image).
  SPECKLE = 2  # Per-image scatterer amplitudes, counts and receiver noise (index = image).
  KIDNEY = 3  # Per-image kidney presence and shape (index = image); never sees the CAP.


def rng(seed: int, stream: Stream, index: int = 0) -> np.random.Generator:
  """The generator of one stream and index: independent of chunking, threads and order."""
  return np.random.default_rng(np.random.SeedSequence([int(seed), int(stream), int(index)]))


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
  # Scatterers per resolution cell = clip(7.5 + 0.15 (CAP - 220), 5, 30) x lognormal(0, 0.2):
  # (base, slope, centre, lo, hi, sd). One smooth law for every subject: fat droplets add
  # scatterers gradually, with no step at the label's cut-off.
  cells: Tuple[float, float, float, float, float, float] = (7.5, 0.15, 220.0, 5.0, 30.0, 0.2)
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
  recentre_mode: str = "tgc"  # mid (overall gain only) | tgc (per TGC knot); see recentre.
  noise_db: Tuple[float, float] = (-95.0, -78.0)  # Receiver noise re normal parenchyma echo.
  wall_mm: Tuple[float, float] = (12.0, 35.0)  # Abdominal wall thickness (per subject).
  wall_jitter: Tuple[float, float] = (0.9, 1.1)  # Per image (probe pressure and angle).
  wall_fat_frac: Tuple[float, float] = (0.3, 0.6)  # Subcutaneous fat share of the wall.
  wall_db: Tuple[float, float, float, float] = (6.0, -10.0, 8.0, -4.0)  # skin, fat, fascia, muscle
  skin_mm: float = 1.5
  fascia_mm: float = 1.0
  wall_wave: Tuple[float, float] = (0.06, 5.0)  # Undulation: amplitude (relative), rad per rad.
  capsule_db: float = 6.0
  capsule_mm: float = 1.0  # Liver capsule (Glisson's), just below the wall.
  alpha_wall: float = 0.6  # dB/cm/MHz, fat and muscle.
  alpha_blood: float = 0.18
  # Where vessels may lie: from this far below the wall to this far above the diaphragm or the
  # bottom of the image (mm), at most this fraction of the half fan off the axis.
  liver_inset_mm: Tuple[float, float] = (8.0, 12.0)
  liver_min_mm: float = 5.0  # Depth range left for vessels when the diaphragm is shallow.
  vessels: Tuple[int, int] = (1, 4)
  vessel_theta_frac: float = 0.8
  vessel_radius_mm: Tuple[float, float] = (2.0, 7.0)
  vessel_along_prob: float = 0.2  # Cut along its length (a tube) rather than across.
  vessel_ratio_along: Tuple[float, float] = (3.0, 6.0)  # Length / width of a tube.
  vessel_ratio_across: Tuple[float, float] = (1.0, 2.0)  # Of a round / oval cross-section.
  vessel_wall_db: float = 10.0  # Portal-vein wall, fixed (not scaled with fat).
  vessel_wall_mm: float = 1.8
  vessel_wall_edge_on: float = 0.3  # Wall echo amplitude seen edge-on, re facing the beam.
  portal_prob: float = 0.6  # Otherwise a hepatic vein: no bright wall.
  lumen_db: float = -40.0
  diaphragm_mm: Tuple[float, float] = (110.0, 150.0)
  diaphragm_x_mm: float = 40.0  # Dome apex off the axis, U(-x, x).
  diaphragm_radius_mm: Tuple[float, float] = (120.0, 250.0)  # Dome radius.
  diaphragm_tilt: float = 0.3  # Slope of the dome, U(-t, t).
  diaphragm_db: float = 20.0
  diaphragm_thickness_mm: float = 3.0
  below_diaphragm_db: float = -8.0  # Lung / mirror image, relative to the parenchyma.
  rib_atten_db: Tuple[float, float] = (20.0, 40.0)
  rib_width_mm: Tuple[float, float] = (10.0, 20.0)
  rib_theta_frac: float = 0.75  # Rib centre, at most this fraction of the half fan off the axis.
  rib_depth_frac: Tuple[float, float] = (0.4, 0.8)  # Rib surface depth, fraction of the wall.
  rib_mm: float = 2.5  # Bright rib surface thickness.
  rib_db: float = 15.0
  # Right kidney beside the liver (hepatorenal view); in view on a fraction
  # config.data.synthetic.kidney_prob of images, drawn from its own stream, never from the CAP.
  # Its echoes are fixed (no fat), so the liver / kidney brightness ratio rises with fat.
  kidney_long_mm: Tuple[float, float] = (45.0, 55.0)  # Semi-axes of the (elliptic) outline.
  kidney_short_mm: Tuple[float, float] = (20.0, 27.0)
  kidney_tilt_deg: float = 30.0  # Long axis off the horizontal, U(-t, t).
  kidney_theta_frac: Tuple[float, float] = (0.3, 0.7)  # Centre off the axis, fraction of half fan.
  kidney_top_frac: Tuple[float, float] = (0.35, 0.7)  # Top, between liver top and bottom.
  kidney_cortex_mm: Tuple[float, float] = (7.0, 10.0)
  kidney_cortex_db: float = -2.5  # Renal cortex re normal parenchyma (fixed: no fat).
  kidney_cortex_sd_db: float = 1.0  # Per image (view angle, patient), independent of CAP.
  kidney_medulla_db: float = -14.0  # Pyramids: hypoechoic.
  kidney_pyramids: Tuple[int, int] = (6, 9)  # Around the sinus.
  kidney_pyramid_fill: float = 0.8  # Width of their bases (1: neighbouring pyramids touch).
  kidney_sinus_frac: float = 0.45  # Sinus outline, fraction of the outline (echogenic fat).
  kidney_sinus_db: float = 6.0
  kidney_capsule_db: float = 8.0  # Capsule and perirenal fat: a bright rim.
  kidney_capsule_mm: float = 1.5
  kidney_alpha: float = 0.75  # dB/cm/MHz (renal tissue), fixed.
  behind_kidney_db: float = -6.0  # Posterior muscles (psoas, quadratus) behind the kidney.
  behind_kidney_mm: Tuple[float, float] = (15.0, 30.0)  # Their thickness behind its middle.
  cells_kidney: float = 15.0  # Renal parenchyma: fully developed speckle.
  # Hepatorenal-index ROIs (returned by `simulate`): boxes of this size (mm, height x width), one
  # in the renal cortex, one in the liver at the same rows, at least/at most this far apart.
  hri_roi_mm: Tuple[float, float] = (5.0, 10.0)
  hri_gap_mm: Tuple[float, float] = (3.0, 50.0)
  display_ref_frac: float = 0.6  # ref = this x DR above normal parenchyma: mid-grey liver.
  recentre_target_db: float = -2.5  # Mean of 20 log10 of Rayleigh speckle re its rms.
  lateral_growth_cap: float = 4.0  # Dynamic receive focusing bounds the far-field widening.
  grid_axial: float = 1.0  # Depth samples = grid_axial x R (the fan is ~0.65 R tall).
  grid_lines: float = 1.0  # Beam lines = grid_lines x R.
  chunk: int = 16  # Images rendered together (about 4 MB each at R = 224).


PHYSICS = Physics()


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
  for name in ("rib_shadow_prob", "overlay_prob", "kidney_prob"):
    v = getattr(synth_cfg, name)
    if not _is_num(v) or not 0.0 <= float(v) <= 1.0:
      raise UserInputError(f"{f}{name}={v!r}: must be a probability in [0, 1]")
  sd = synth_cfg.cap_noise_sd
  if not _is_num(sd) or not 0.0 <= float(sd) <= 100.0:
    raise UserInputError(f"{f}cap_noise_sd={sd!r}: must be a number of dB/m in [0, 100]")
  if synth_cfg.seed < 0:
    raise UserInputError(f"{f}seed={synth_cfg.seed}: must be >= 0")
