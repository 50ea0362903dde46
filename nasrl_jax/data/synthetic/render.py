"""From parameters to screens: anatomy on the beam grid, display, scan conversion, overlays.

This module owns what the scanner's screen shows and where: the tissue maps on the polar beam
grid (abdominal wall, liver capsule, parenchyma from the subject's true CAP, vessels, diaphragm,
the right kidney with fixed echoes, rib and its shadow), the hepatorenal-index boxes, the
dB -> grey mapping (dynamic range, gamma), the curvilinear scan conversion and fan geometry
(`fan_mask`), smoothing, the machine's RGB tint and burned-in text, the JPEG round trip, and
`simulate`, which runs cohort -> anatomy -> physics -> display for the whole cohort in chunks
(threads), deterministically from the seed.
"""

import concurrent.futures
import io
import os
from typing import Dict, Optional, Tuple

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont
from scipy import ndimage

from nasrl_jax.data.synthetic import cohort as cohort_lib
from nasrl_jax.data.synthetic import physics as physics_lib
from nasrl_jax.data.synthetic import spec
from nasrl_jax.data.synthetic.spec import DEVICE_NAMES, PROFILES, MachineProfile, Physics
from nasrl_jax.errors import UserInputError

# What `simulate` returns; a cache file lacking one of these is rebuilt.
OUTPUT_KEYS = frozenset({"images", "cap", "true_cap", "subject_id", "device", "depth_cm",
                         "kidney", "liver_roi", "kidney_roi"})


# ------------------------------------------------------------------------------ geometry


def grid_shape(render_size: int, physics: Physics) -> Tuple[int, int]:
  """(depth samples, beam lines) of the polar grid for one render size."""
  return (max(16, int(round(physics.grid_axial * render_size))),
          max(16, int(round(physics.grid_lines * render_size))))


def fan_layout(profile: MachineProfile, depth_mm: float, render_size: int):
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
  scale, ax, ay = fan_layout(profile, depth_mm, render_size)
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

  Raises:
    UserInputError: an unknown device name.
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


# ------------------------------------------------------------------------------ anatomy


def _anatomy(p, sl, z, theta, r0, physics: Physics, cohort):
  """Backscatter gain (dB), attenuation (dB/cm/MHz) and scatterers/cell maps on the beam grid.

  Args:
    p: per-image parameters; sl: the chunk's slice.
    z: depth along the beam, mm, [B, nz, 1]; theta: beam angle, rad, [B, 1, nx];
    r0: probe radius, mm, [B, 1, 1].
    physics: constants.
    cohort: `cohort.sample_cohort`'s dict.

  Returns:
    dict of gain_db, alpha, cells float32[B, nz, nx]; parenchyma bool[B, nz, nx] (liver tissue
    outside vessels, kidney and rib shadows: what an operator judges brightness by); cortex
    bool[B, nz, nx] (renal cortex outside rib shadows: where the HRI's kidney box may go).
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
  wave, freq = ph.wall_wave
  wall = col(p["wall_mm"]) * (1 + wave * np.sin(freq * theta + col(p["wall_phase"])))
  fat_end = col(p["fat_frac"]) * wall
  skin_db, fat_db, fascia_db, muscle_db = ph.wall_db
  layer = np.where(z < ph.skin_mm, skin_db,
                   np.where(z < fat_end, fat_db,
                            np.where(z < fat_end + ph.fascia_mm, fascia_db, muscle_db)))
  in_wall = z < wall
  gain = np.where(in_wall, layer, gain)
  alpha = np.where(in_wall, ph.alpha_wall, alpha)
  cells = np.where(in_wall, ph.cells_wall, cells)
  capsule = (z >= wall) & (z < wall + ph.capsule_mm)
  gain = np.where(capsule, ph.capsule_db, gain)

  # Diaphragm: a bright curved dome; lung / mirror image below it.
  dx = x - col(p["diaphragm_x"])
  dist = y - (col(p["diaphragm_mm"]) + col(p["diaphragm_curv"]) * dx * dx
              + col(p["diaphragm_tilt"]) * dx)
  half_th = ph.diaphragm_thickness_mm / 2
  gain = np.where(dist > half_th, gbs + ph.below_diaphragm_db, gain)
  band = np.abs(dist) <= half_th
  gain = np.where(band, ph.diaphragm_db, gain)
  below_wall = z >= wall + ph.capsule_mm
  liver = below_wall & (dist < -half_th)

  specular = band | capsule
  gain = np.ascontiguousarray(gain, np.float32)
  alpha = np.ascontiguousarray(alpha, np.float32)
  cells = np.ascontiguousarray(cells, np.float32)
  cortex = np.zeros(shape, bool)
  for j, i in enumerate(range(sl.start, sl.stop)):
    if p["kidney"][i]:
      _draw_kidney(p, i, x[j], y[j], float(r0[j, 0, 0]), below_wall[j], ph, gain[j], alpha[j],
                   cells[j], specular[j], liver[j], cortex[j])

  # Vessels: anechoic lumen (low attenuation: posterior enhancement); portal veins have walls of
  # fixed brightness (+10 dB re normal parenchyma), specular (brightest facing the beam), so their
  # contrast falls as fatty parenchyma brightens. Each vessel is drawn in its bounding window only.
  parenchyma = liver.copy()
  for j, i in enumerate(range(sl.start, sl.stop)):
    zj, tj, rj = z[j, :, 0], theta[j, 0, :], float(r0[j, 0, 0])
    for v in range(p["v_on"].shape[1]):
      if not p["v_on"][i, v]:
        continue
      a = p["v_radius"][i, v]
      b = a * p["v_ratio"][i, v]
      extent = b + ph.vessel_wall_mm + 1.0  # Drawing window: the vessel, its wall, 1 mm spare.
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
      floor = ph.vessel_wall_edge_on
      wall_db = ph.vessel_wall_db + 20 * np.log10(floor + (1 - floor) * cos_psi)
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
      top, bottom = np.searchsorted(zj, depth), np.searchsorted(zj, depth + ph.rib_mm)
      gain[j, bottom:, cols] -= p["rib_db"][i]
      parenchyma[j, bottom:, cols] = False
      cortex[j, bottom:, cols] = False
      gain[j, top:bottom, cols] = ph.rib_db
      specular[j, top:bottom, cols] = True
  cells = np.where(specular, ph.cells_specular, cells)
  return dict(gain_db=gain, alpha=alpha, cells=cells.astype(np.float32),
              parenchyma=parenchyma, cortex=cortex)


def _draw_kidney(p, i, x, y, r0, below_wall, physics: Physics, gain, alpha, cells, specular,
                 liver, cortex):
  """Draws image i's right kidney into its tissue maps (all [nz, nx], modified in place).

  An ellipse seen in long axis: a bright capsule / perirenal-fat rim, the renal cortex (fixed
  echoes, the hepatorenal reference), hypoechoic medullary pyramids between cortical columns,
  the echogenic sinus; behind it a crescent of posterior muscle. The kidney and what
  lies behind it are no longer liver, so no vessel is drawn there and the operator's re-centring
  does not judge by them.

  Args:
    p: per-image parameters; i: the image.
    x, y: lateral and vertical position of every grid sample, mm, [nz, nx].
    r0: probe radius, mm.
    below_wall: samples below the abdominal wall and liver capsule.
    physics: constants.
    gain, alpha, cells, specular, liver, cortex: the image's maps (cortex: renal cortex out).
  """
  ph = physics
  a, b, tilt = p["k_long_mm"][i], p["k_short_mm"][i], p["k_tilt"][i]
  d, t = p["k_depth_mm"][i], p["k_theta"][i]
  cx, cy = (r0 + d) * np.sin(t), (r0 + d) * np.cos(t) - r0
  # Drawn in its bounding window only: a disc round the centre holding the kidney, its rim and
  # the crescent of muscle below it.
  muscle = p["k_muscle_mm"][i]
  rim = 1.0 + ph.kidney_capsule_mm / b  # The outline with its capsule, in units of the axes.
  reach = rim * np.hypot(a, b + muscle)
  # A row's y spans [its fan edges' y, its centre's y]; both rise with depth.
  y_lo, y_hi = y.min(axis=1), y.max(axis=1)
  rows = slice(int(np.searchsorted(y_hi, cy - reach)),
               int(np.searchsorted(y_lo, cy + reach, side="right")))
  near = np.flatnonzero((np.abs(x[rows] - cx) <= reach).any(axis=0))
  if near.size == 0 or rows.start >= rows.stop:
    return  # Entirely outside the fan.
  cols = slice(int(near[0]), int(near[-1]) + 1)
  xw, yw = x[rows, cols] - cx, y[rows, cols] - cy
  ct, st = np.cos(tilt), np.sin(tilt)
  u = (xw * ct + yw * st) / a
  w = (-xw * st + yw * ct) / b
  q = np.sqrt(u * u + w * w)
  below = below_wall[rows, cols]
  outline = (q < rim) & below
  inner_cortex = 1.0 - p["k_cortex_mm"][i] / b
  sinus = outline & (q < ph.kidney_sinus_frac)
  capsule = outline & (q >= 1.0)
  # Pyramids: wedges with their bases on the cortex and their tips on the sinus.
  frac = (q - ph.kidney_sinus_frac) / (inner_cortex - ph.kidney_sinus_frac)
  lobe = np.cos(p["k_pyramids"][i] * np.arctan2(w, u) + p["k_phase"][i])
  pyramid = (outline & (q >= ph.kidney_sinus_frac) & (q < inner_cortex)
             & (lobe > 1.0 - 2.0 * ph.kidney_pyramid_fill * frac))
  renal = outline & ~(capsule | sinus | pyramid)  # Cortex and the cortical columns.
  # Posterior muscles: a crescent under the kidney (an ellipse through its poles, reaching
  # `muscle` mm deeper), thickest behind its middle and thinning to nothing at the poles.
  w_shift = (w * b - muscle / 2) / (b + muscle / 2)
  behind = (u * u + w_shift * w_shift < rim * rim) & ~outline & below

  g, al, ce, sp = gain[rows, cols], alpha[rows, cols], cells[rows, cols], specular[rows, cols]
  g[renal] = p["k_db"][i]
  g[pyramid] = ph.kidney_medulla_db
  g[sinus] = ph.kidney_sinus_db
  g[capsule] = ph.kidney_capsule_db
  g[behind] = ph.behind_kidney_db
  al[outline] = ph.kidney_alpha
  al[behind] = ph.alpha_wall
  ce[renal | pyramid] = ph.cells_kidney
  ce[behind] = ph.cells_wall
  sp[outline | behind] = False  # The kidney hides the diaphragm behind it.
  sp[capsule | sinus] = True
  liver[rows, cols] &= ~(outline | behind)
  cortex[rows, cols] = renal & (q >= inner_cortex)


# ------------------------------------------------------------------------------ display


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
  scale, ax, ay = fan_layout(prof, p["depth_mm"][i], render_size)
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


def _on_screen(grid_mask, coords, mask) -> np.ndarray:
  """A beam-grid mask scan-converted (nearest sample) to render pixels, bool[R, R]."""
  nz, nx = grid_mask.shape
  k = np.clip(np.rint(coords[0]).astype(np.int64), 0, nz - 1)
  l = np.clip(np.rint(coords[1]).astype(np.int64), 0, nx - 1)
  out = np.zeros(mask.shape, bool)
  out[mask] = grid_mask[k, l]
  # One pixel in from the edge: bilinear scan conversion and smoothing mix neighbours there.
  return ndimage.binary_erosion(out)


def _full_boxes(mask, h, w) -> np.ndarray:
  """bool[R - h + 1, R - w + 1]: True where the h x w box with that top-left lies inside mask."""
  s = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.int64)
  s[1:, 1:] = mask.cumsum(axis=0).cumsum(axis=1)
  return (s[h:, w:] - s[:-h, w:] - s[h:, :-w] + s[:-h, :-w]) == h * w


def _hri_rois(cortex, parenchyma, coords, mask, scale, physics: Physics) -> np.ndarray:
  """The hepatorenal-index ROIs a sonographer would draw on the screen, int32[2, 4].

  The kidney box is the shallowest box wholly in unshadowed renal cortex; the liver box lies in
  the same pixel rows (the same depth, so attenuation above both is about equal), wholly in
  liver parenchyma (no vessel, rib shadow or kidney), as close beside it as allowed.

  Args:
    cortex, parenchyma: beam-grid masks of the image, bool[nz, nx].
    coords, mask: its scan geometry (`_scan_geometry`).
    scale: render pixels per mm.
    physics: constants (hri_roi_mm, hri_gap_mm).

  Returns:
    [[row, col, height, width] of the liver box, [...] of the kidney box] in render pixels;
    all -1 where no such pair exists.
  """
  h, w = (max(2, int(round(v * scale))) for v in physics.hri_roi_mm)
  gap_lo, gap_hi = (v * scale for v in physics.hri_gap_mm)
  kidney_ok = _full_boxes(_on_screen(cortex, coords, mask), h, w)
  liver_ok = _full_boxes(_on_screen(parenchyma, coords, mask), h, w)
  for r in np.flatnonzero(kidney_ok.any(axis=1)):
    kc, lc = np.flatnonzero(kidney_ok[r]), np.flatnonzero(liver_ok[r])
    if lc.size == 0:
      continue
    dist = np.abs(kc[:, None] - lc[None, :])
    gap = dist - w
    dist = np.where((gap >= gap_lo) & (gap <= gap_hi), dist, np.iinfo(np.int64).max)
    k, l = np.unravel_index(np.argmin(dist), dist.shape)
    if dist[k, l] != np.iinfo(np.int64).max:
      return np.array([[r, lc[l], h, w], [r, kc[k], h, w]], np.int32)
  return np.full((2, 4), -1, np.int32)


def _render_chunk(p, cohort, sl, render_size, grid, geometry, seed, physics: Physics):
  """Renders images sl.start..sl.stop-1.

  Returns:
    (uint8 RGB [B, R, R, 3], int32 [B, 2, 4] liver and kidney HRI boxes, -1 where none).
  """
  ph = physics
  nz, nx = grid
  idx = np.arange(sl.start, sl.stop)
  col = lambda a: np.asarray(a[sl], np.float64)  # noqa: E731
  dev = cohort["device"][sl]
  r0 = np.array([PROFILES[d].probe_radius_mm for d in dev])
  fan = np.deg2rad([PROFILES[d].fan_deg for d in dev])
  depth = col(p["depth_mm"])
  dz = depth / nz
  dtheta = fan / nx
  z = ((np.arange(nz) + 0.5)[None, :] * dz[:, None])  # [B, nz]
  theta = ((np.arange(nx) + 0.5)[None, :] / nx - 0.5) * fan[:, None]  # [B, nx]
  beam = physics_lib.Beam(z=z, theta=theta, r0=r0, dz=dz, dtheta=dtheta, depth=depth)

  tissue = _anatomy(p, sl, z[:, :, None].astype(np.float32),
                    theta[:, None, :].astype(np.float32), r0[:, None, None].astype(np.float32),
                    ph, cohort)
  acq = {k: col(p[k]) for k in ("f0", "bandwidth", "f_number", "focus_mm", "noise_db",
                                "tgc_alpha", "gain_db", "recentre")}
  acq["tgc_knots"] = p["tgc_knots"][sl]
  cell_values = [(cohort["cells"][i], ph.cells_wall, ph.cells_specular)
                 + ((ph.cells_kidney,) if p["kidney"][i] else ()) for i in idx]
  level = physics_lib.echo_level(beam, tissue, acq, cell_values, seed, idx, ph)

  dr = col(p["dynamic_range"]).astype(np.float32)[:, None, None]
  ref = ph.display_ref_frac * dr
  disp = np.clip((level - ref + dr) / dr, 0.0, 1.0) ** col(p["gamma"]).astype(
      np.float32)[:, None, None]

  out = np.empty((idx.size, render_size, render_size, 3), np.uint8)
  rois = np.full((idx.size, 2, 4), -1, np.int32)
  font = _font(max(6, render_size // 22))
  for j, i in enumerate(idx):
    prof = PROFILES[dev[j]]
    coords, mask = geometry[(int(dev[j]), int(depth[j]))]
    if p["kidney"][i]:
      scale = fan_layout(prof, depth[j], render_size)[0]
      rois[j] = _hri_rois(tissue["cortex"][j], tissue["parenchyma"][j], coords, mask, scale, ph)
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
  return out, rois


# ------------------------------------------------------------------------------ public API


def simulate(synth_cfg, image_size_render: Optional[int] = None,
             physics: Physics = spec.PHYSICS,
             num_threads: Optional[int] = None) -> Dict[str, np.ndarray]:
  """Simulates the cohort's B-mode images (RGB renders, before any preprocessing).

  Args:
    synth_cfg: `config.data.synthetic` (num_subjects, num_images, num_s0, render_size,
      rib_shadow_prob, overlay_prob, kidney_prob, cap_noise_sd, seed).
    image_size_render: render side; defaults to synth_cfg.render_size.
    physics: simulator constants (defaults: ULTRASOUND_PHYSICS.md).
    num_threads: chunks rendered at once (default: CPU cores, at most 4). Memory is about
      num_threads x chunk x 2 MB at render 224.

  Returns:
    dict of numpy arrays: images uint8[N, R, R, 3]; cap float32[N] (measured, dB/m);
    true_cap float32[N]; subject_id str[N] ("sim-0001"...); device str[N] (profile name);
    depth_cm float32[N] (depth setting, for `fan_mask`); kidney bool[N] (the right kidney is
    in view); liver_roi, kidney_roi int32[N, 4] (row, col, height, width in render pixels: the
    hepatorenal-index boxes at the same depth, -1 where there is no kidney or no room for both).

  Raises:
    UserInputError: a bad cohort or render field, before any rendering.
  """
  render_size = int(synth_cfg.render_size if image_size_render is None else image_size_render)
  spec.validate(synth_cfg, render_size)
  cohort = cohort_lib.sample_cohort(synth_cfg, physics)
  params = cohort_lib.sample_image_params(synth_cfg, cohort, physics)
  grid = grid_shape(render_size, physics)
  geometry = {}
  for d, depth in sorted(set(zip(cohort["device"].tolist(), params["depth_mm"].tolist()))):
    geometry[(int(d), int(depth))] = _scan_geometry(PROFILES[d], depth, render_size, grid)
  n = cohort["cap"].shape[0]
  images = np.empty((n, render_size, render_size, 3), np.uint8)
  rois = np.empty((n, 2, 4), np.int32)

  def render(start):
    sl = slice(start, min(n, start + physics.chunk))
    images[sl], rois[sl] = _render_chunk(params, cohort, sl, render_size, grid, geometry,
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
      "kidney": params["kidney"].astype(bool),
      "liver_roi": rois[:, 0],
      "kidney_roi": rois[:, 1],
  }
