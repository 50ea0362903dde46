"""Tests for nasrl_jax.data.preprocess: grayscale, crops (box, sector fan mask), resize."""

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from configs import fatty_liver
from nasrl_jax.data import preprocess as pp
from nasrl_jax.errors import UserInputError


def _cfg(**overrides):
  d = fatty_liver.get_config("tiny").data
  for k, v in overrides.items():
    d[k] = v
  return d


def _screen(h=434, w=636, seed=0):
  """A B-mode-like screen: speckled sector fan + burned-in text, ECG trace, grey bar, ruler."""
  rng = np.random.default_rng(seed)
  fan = Image.new("L", (w, h), 0)
  cx, cy, radius = w // 2, 30, 370
  ImageDraw.Draw(fan).pieslice(
      [cx - radius, cy - radius, cx + radius, cy + radius], 55, 125, fill=255)
  fan_mask = np.asarray(fan) > 0
  speckle = np.clip(rng.rayleigh(60, size=(h, w)), 0, 255)
  gray = np.where(fan_mask, speckle, 0).astype(np.uint8)
  yy, xx = np.mgrid[:h, :w]
  gray[(yy - 200) ** 2 + (xx - cx) ** 2 < 25 ** 2] = 0  # An anechoic vessel inside the fan.
  rgb = Image.fromarray(np.stack([gray] * 3, -1), "RGB")
  draw = ImageDraw.Draw(rgb)
  font = ImageFont.load_default(size=14)
  draw.text((10, 10), "GE LOGIQ S8  C1-5  17cm", fill=(255, 255, 255), font=font)
  draw.text((w - 150, 30), "Gn 52 DR 66", fill=(255, 255, 0), font=font)
  draw.text((10, h - 60), "DOE^JANE 1970", fill=(255, 255, 255), font=font)
  x = np.arange(20, w - 20)
  ecg = (h - 10 + 5 * np.sin(x / 6.0)).astype(int)
  draw.line(list(zip(x.tolist(), ecg.tolist())), fill=(0, 255, 0), width=2)
  for i in range(120):  # Grey bar.
    draw.line([(w - 30, 120 + i), (w - 20, 120 + i)], fill=(2 * i, 2 * i, 2 * i))
  for i in range(10):  # Depth ruler ticks.
    draw.line([(70, 60 + 30 * i), (78, 60 + 30 * i)], fill=(200, 200, 200), width=1)
  return np.asarray(rgb), fan_mask


def test_to_grayscale_uses_itu_601_luma():
  rgb = np.zeros((1, 4, 3), np.uint8)
  rgb[0, 0] = (255, 0, 0)
  rgb[0, 1] = (0, 255, 0)
  rgb[0, 2] = (0, 0, 255)
  rgb[0, 3] = (100, 150, 200)
  gray = pp.to_grayscale(rgb)
  expected = np.rint(rgb.astype(float) @ np.array([0.299, 0.587, 0.114]))
  assert gray.dtype == np.uint8 and gray.shape == (1, 4)
  np.testing.assert_allclose(gray[0], expected[0], atol=1)
  np.testing.assert_array_equal(gray, np.asarray(Image.fromarray(rgb).convert("L")))


def test_to_grayscale_other_inputs():
  gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
  np.testing.assert_array_equal(pp.to_grayscale(gray[..., None]), gray)
  rgba = np.concatenate([np.stack([gray] * 3, -1), np.zeros((3, 4, 1), np.uint8)], -1)
  np.testing.assert_array_equal(pp.to_grayscale(rgba), gray)  # Alpha is ignored.
  pal = Image.fromarray(gray).convert("P")
  np.testing.assert_array_equal(pp.to_grayscale(pal), gray)
  # 16-bit and float images are scaled by their dtype range, not stretched per image.
  np.testing.assert_array_equal(pp.to_grayscale(np.array([[0, 65535, 257 * 10]], np.uint16)),
                                [[0, 255, 10]])
  np.testing.assert_array_equal(pp.to_grayscale(Image.fromarray(np.array([[0, 65535]], np.uint16))),
                                [[0, 255]])
  np.testing.assert_array_equal(pp.to_grayscale(np.array([[0.0, 0.5, 1.0]])), [[0, 128, 255]])
  with pytest.raises(UserInputError, match="shape"):
    pp.to_grayscale(np.zeros((2, 3, 5), np.uint8))


def test_box_crop_and_errors():
  img = np.arange(100, dtype=np.uint8).reshape(10, 10)
  cfg = _cfg(crop="box", crop_box=(2, 3, 4, 5))
  np.testing.assert_array_equal(pp.crop(img, cfg), img[2:6, 3:8])
  np.testing.assert_array_equal(pp.crop(img, _cfg(crop="none")), img)
  with pytest.raises(UserInputError, match=r"crop_box.*10x10"):
    pp.crop(img, _cfg(crop="box", crop_box=(8, 0, 4, 4)))
  with pytest.raises(UserInputError, match="config.data.crop_box"):
    pp.validate_config(_cfg(crop="box", crop_box=(0, 0, 0, 4)))
  with pytest.raises(UserInputError, match="config.data.crop="):
    pp.validate_config(_cfg(crop="fan"))
  with pytest.raises(UserInputError, match="config.data.image_size"):
    pp.validate_config(_cfg(image_size=0))
  with pytest.raises(UserInputError, match="row 7"):
    pp.check_box_fits(5, 5, _cfg(crop="box", crop_box=(0, 0, 6, 2)), where="row 7")


def test_sector_crop_removes_text_outside_fan():
  rgb, fan = _screen()
  gray = pp.to_grayscale(rgb)
  overlay = (gray > 0) & ~fan
  assert overlay.sum() > 2000  # The screen really has text, ECG, bar and ruler.
  mask = pp.sector_mask(gray)
  assert (mask & fan).sum() / fan.sum() > 0.995  # The fan is kept...
  assert not (mask & overlay).any()  # ...and every overlay pixel is outside the mask.
  rows, cols = np.flatnonzero(fan.any(1)), np.flatnonzero(fan.any(0))
  out = pp.crop(gray, _cfg(crop="sector"))
  # Cropped to the fan's bounding box, within 3 % (the opening rounds off the pointed apex).
  fan_h, fan_w = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
  assert abs(out.shape[0] - fan_h) <= 0.03 * fan_h and abs(out.shape[1] - fan_w) <= 0.03 * fan_w
  assert out.dtype == np.uint8
  # Nothing of the overlays survives: bright pixels left are the fan's own speckle.
  out_full = np.where(mask, gray, 0)
  assert out_full[overlay].max() == 0
  np.testing.assert_array_equal(out_full[fan & mask], gray[fan & mask])


def test_sector_crop_keeps_frames_without_a_fan():
  blank = np.zeros((50, 60), np.uint8)
  np.testing.assert_array_equal(pp.crop(blank, _cfg(crop="sector")), blank)
  full = np.random.default_rng(0).integers(40, 200, size=(50, 60)).astype(np.uint8)
  assert pp.crop(full, _cfg(crop="sector")).shape == (50, 60)  # Linear-probe full frame.


def test_resize_and_preprocess():
  img = np.full((40, 60), 7, np.uint8)
  assert pp.resize(img, 16).shape == (16, 16)
  assert pp.resize(img, (20, 30)).shape == (20, 30)
  assert np.all(pp.resize(img, 16) == 7)  # Bilinear keeps a constant image constant.
  rgb, _ = _screen(seed=1)
  out = pp.preprocess(Image.fromarray(rgb), _cfg(crop="sector", image_size=32))
  assert out.shape == (32, 32) and out.dtype == np.uint8
  assert pp.output_shape(_cfg(image_size=32)) == (32, 32, 1)


def test_sector_mask_on_simulated_screens():
  # The simulator's renders carry burned-in text, depth-ruler dots and a focus marker next to the
  # fan; `synthetic.fan_mask` gives the true sector.
  from nasrl_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  s = fatty_liver.get_config().data.synthetic
  s.num_subjects, s.num_images, s.num_s0, s.overlay_prob, s.seed = 8, 10, 4, 1.0, 5
  sim = synthetic.simulate(s)
  kept, overlay_kept = [], []
  for img, device, depth in zip(sim["images"], sim["device"], sim["depth_cm"]):
    gray = pp.to_grayscale(img)
    fan = synthetic.fan_mask(device, depth, s.render_size)
    overlay = (gray > 30) & ~fan
    mask = pp.sector_mask(gray)
    kept.append((mask & fan).sum() / fan.sum())
    overlay_kept.append((mask & overlay).sum() / max(1, overlay.sum()))
  assert np.mean(kept) > 0.9
  assert np.mean(overlay_kept) < 0.01
