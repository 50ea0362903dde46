"""The acoustic signal chain on the polar beam grid: scatterers -> PSF -> attenuation -> TGC.

This module owns the physics of one echo image, given the tissue maps that the render module
draws (backscatter gain, attenuation, scatterer density) on a grid of depth samples x beam lines:

  scatterers   complex Gaussian x sqrt(Poisson count) x 10^(G/20), the count from the scatterers
               per resolution cell at the focus
  PSF          FFT convolution: axial Gaussian pulse envelope x exp(j 2 k0 z) (from f0, bandwidth),
               lateral Gaussian sigma_x = lambda F# / 2.355 widening away from the transmit focus
  attenuation  x 10^(-2 f0 int(alpha dz) / 20) along each beam
  receiver     + electronic noise (at the receiver input, so TGC amplifies it with depth), then
               TGC + operator gain, the operator's partial re-centring of liver brightness with
               the TGC sliders, and the sliders' own imprecision

`echo_level` returns the displayed-to-be level in dB; the render module maps it to grey levels.
"""

import math
from typing import NamedTuple

import numpy as np
import scipy.fft
from scipy import stats

from nasrl_jax.data.synthetic import spec
from nasrl_jax.data.synthetic.spec import PROFILES, Physics, Stream


class Beam(NamedTuple):
  """The polar beam grid of a chunk of B images (nz depth samples x nx beam lines).

  Attributes:
    z: depth along each beam, mm, float64[B, nz] (sample centres).
    theta: beam angle, rad, float64[B, nx].
    r0: probe radius (virtual apex above the skin), mm, float64[B].
    dz: depth step, mm, float64[B].
    dtheta: angle step, rad, float64[B].
    depth: image depth setting, mm, float64[B].
  """
  z: np.ndarray
  theta: np.ndarray
  r0: np.ndarray
  dz: np.ndarray
  dtheta: np.ndarray
  depth: np.ndarray


def axial_transfer(f0, bandwidth, dz, nz_pad):
  """FFT of the unit-energy axial pulse-echo PSF (Gaussian envelope x exp(j 2 k0 z)), [B, nz_pad].

  sigma_t = sqrt(2 ln 2) / (pi B f0), sigma_z = c sigma_t / 2. At render sizes where the grid
  is coarser than the pulse the carrier aliases; with circular complex Gaussian scatterers that
  leaves the envelope statistics unchanged.

  Returns:
    (transfer function complex[B, nz_pad], sigma_z mm [B]).
  """
  sigma_t = np.sqrt(2 * np.log(2)) / (np.pi * bandwidth * f0)  # us
  sigma_z = spec.SPEED_OF_SOUND_MM_PER_US * sigma_t / 2  # mm
  k0 = 2 * np.pi * f0 / spec.SPEED_OF_SOUND_MM_PER_US  # rad/mm
  half = int(np.ceil(4 * np.max(sigma_z / dz))) + 1
  taps = np.arange(-half, half + 1)[None, :] * dz[:, None]  # mm
  h = np.exp(-taps ** 2 / (2 * sigma_z[:, None] ** 2)) * np.exp(2j * k0[:, None] * taps)
  h /= np.sqrt(np.sum(np.abs(h) ** 2, axis=1, keepdims=True))
  kernel = np.zeros((f0.shape[0], nz_pad), np.complex64)
  kernel[:, :half + 1] = h[:, half:]
  kernel[:, nz_pad - half:] = h[:, :half]
  return scipy.fft.fft(kernel, axis=1), sigma_z


def lateral_sigma_mm(f0, f_number, focus_mm, z, cap):
  """Lateral PSF sigma (mm) at depth z: lambda F# / 2.355 at the focus, widening away from it.

  The widening follows the transmit depth of field (7.1 lambda F#^2), capped because dynamic
  receive focusing keeps the far field within a few focal widths.

  Returns:
    (sigma at z, sigma at the focus), mm.
  """
  lam = spec.SPEED_OF_SOUND_MM_PER_US / f0
  sigma_f = lam * f_number / 2.355
  dof = 7.1 * lam * f_number ** 2
  growth = np.sqrt(1 + ((z - focus_mm) / dof) ** 2)
  return sigma_f * np.minimum(growth, cap), sigma_f


def lateral_fft_len(nx: int, physics: Physics) -> int:
  """Beam lines + zero padding (3 sigma of the widest lateral PSF any profile can have).

  Fixed per render size, never per chunk, so that chunking cannot change a pixel.
  """
  widest = 0.0
  for prof in PROFILES:
    lam = spec.SPEED_OF_SOUND_MM_PER_US / prof.f0_mhz[0]
    sigma_mm = lam * prof.f_number[1] / 2.355 * physics.lateral_growth_cap
    spacing_mm = prof.probe_radius_mm * np.deg2rad(prof.fan_deg) / nx  # Narrowest: at the probe.
    widest = max(widest, sigma_mm / spacing_mm)
  return scipy.fft.next_fast_len(nx + int(np.ceil(3 * widest)) + 2)


def poisson(rng, cells, values, per_cell: float) -> np.ndarray:
  """Exact Poisson(cells x per_cell) counts where `cells` takes only the given values.

  Inverse-CDF sampling, one table per value: 3-5x faster than `Generator.poisson` for the small
  means (< 10) of sparse parenchyma, whose multiplication method is O(mean) per draw.
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


def recentre(level, parenchyma, depth_frac, fraction, physics: Physics):
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


def echo_level(beam: Beam, tissue, acq, cell_values, seed: int, idx, physics: Physics):
  """The echo level (dB, after TGC, gain and re-centring) of a chunk on its beam grid.

  Args:
    beam: the chunk's beam grid.
    tissue: dict of float32[B, nz, nx] maps: gain_db (backscatter), alpha (dB/cm/MHz), cells
      (scatterers per resolution cell), and bool parenchyma (what the operator judges by).
    acq: dict of per-image float64[B] acquisition settings of the chunk: f0, bandwidth, f_number,
      focus_mm, noise_db, tgc_alpha, gain_db, recentre, and tgc_knots [B, knots].
    cell_values: per image, the tuple of every value `tissue["cells"]` takes in it.
    seed: simulator seed; idx: the images' indices in the cohort (their speckle streams).
    physics: constants.

  Returns:
    float32[B, nz, nx] level in dB re the normal-parenchyma echo.
  """
  ph = physics
  z, r0, dz, dtheta, depth = beam.z, beam.r0, beam.dz, beam.dtheta, beam.depth
  b, nz = z.shape
  nx = beam.theta.shape[1]
  f0, fnum, focus = acq["f0"], acq["f_number"], acq["focus_mm"]
  gain_db, alpha, cells = tissue["gain_db"], tissue["alpha"], tissue["cells"]

  # Scatterers per grid sample from scatterers per resolution cell at the focus (Bernoulli on a
  # sub-grid -> Poisson count per sample; a sum of K complex Gaussians is CN(0, K)).
  sig_lat, sigma_f = lateral_sigma_mm(f0[:, None], fnum[:, None], focus[:, None], z,
                                      ph.lateral_growth_cap)
  h_ax, sigma_z = axial_transfer(f0, acq["bandwidth"], dz, scipy.fft.next_fast_len(nz + 8))
  cell_z = np.maximum(1.0, 2.355 * sigma_z / dz)
  cell_x = np.maximum(1.0, 2.355 * sigma_f[:, 0] / ((r0 + focus) * dtheta))
  per_cell = 1.0 / (cell_z * cell_x)  # Grid samples per resolution cell, inverted.
  lam = cells * per_cell.astype(np.float32)[:, None, None]
  amp = np.power(np.float32(10.0), gain_db / np.float32(20.0))
  field = np.empty((b, nz, nx), np.complex64)
  noise = np.empty((b, nz, nx), np.complex64)
  for j, i in enumerate(idx):
    gen = spec.rng(seed, Stream.SPECKLE, int(i))
    g = gen.standard_normal((4, nz, nx), dtype=np.float32)
    values = np.array(cell_values[j], np.float32)
    count = poisson(gen, cells[j], values, per_cell[j])
    scale = np.sqrt(count / lam[j] / 2) * amp[j]
    field[j].real, field[j].imag = g[0] * scale, g[1] * scale
    noise[j].real, noise[j].imag = g[2], g[3]

  # PSF: axial FFT convolution (depth-invariant pulse), then a lateral Gaussian whose width
  # depends on depth (row-wise transfer function). Unit energy, so mean speckle power = gain.
  sig_lines = sig_lat / ((r0[:, None] + z) * dtheta[:, None])  # [B, nz]
  nx_pad = lateral_fft_len(nx, ph)
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
  noise_amp = (np.power(10.0, acq["noise_db"] / 20) / np.sqrt(2)).astype(np.float32)
  noise *= noise_amp[:, None, None]
  iq *= np.exp(path)
  iq += noise
  # TGC = compensating alpha + operator gain; the operator's partial re-centring (done with the
  # sliders); then the sliders' imprecision (8 knots of N(0, 3 dB)), which re-centring does not
  # undo.
  tgc = 2 * acq["tgc_alpha"][:, None] * f0[:, None] * z / 10.0 + acq["gain_db"][:, None]
  level = 20 * np.log10(np.abs(iq) + np.float32(1e-30)) + tgc[:, :, None].astype(np.float32)
  level = recentre(level, tissue["parenchyma"], z / depth[:, None], acq["recentre"], ph)
  knots_z = np.linspace(0.0, 1.0, acq["tgc_knots"].shape[1])
  knots = np.stack([np.interp(z[j] / depth[j], knots_z, acq["tgc_knots"][j]) for j in range(b)])
  level += knots[:, :, None].astype(np.float32)
  return level
