"""Tests for the nasrl_jax.data.synthetic package: cohort, kidney, physics, fan, cache, labels."""

import dataclasses
import glob
import inspect
import os

import numpy as np
import pytest
from scipy import stats

from configs import fatty_liver
from nasrl_jax.data import Dataset
from nasrl_jax.data import preprocess
from nasrl_jax.data import synthetic
from nasrl_jax.data.synthetic import cohort
from nasrl_jax.data.synthetic import spec
from nasrl_jax.errors import UserInputError


def _synth(num_subjects=18, num_images=24, num_s0=8, render_size=48, **kw):
  cfg = fatty_liver.get_config().data.synthetic
  cfg.num_subjects, cfg.num_images, cfg.num_s0 = num_subjects, num_images, num_s0
  cfg.render_size = render_size
  for k, v in kw.items():
    setattr(cfg, k, v)
  return cfg


def _data_cfg(tmp_path, image_size=24, **kw):
  cfg = fatty_liver.get_config().data
  cfg.image_size = image_size
  cfg.cache_dir = str(tmp_path)
  cfg.synthetic = _synth(**kw)
  return cfg


@pytest.fixture(scope="module")
def small():
  return synthetic.simulate(_synth())


def test_default_cohort_counts():
  cfg = fatty_liver.get_config().data.synthetic
  sim = synthetic.simulate(cfg, image_size_render=16)  # Tiny renders: the cohort is what counts.
  assert sim["images"].shape == (310, 16, 16, 3)
  assert np.unique(sim["subject_id"]).size == 242
  assert int((sim["cap"] < 238).sum()) == 96
  assert int((sim["cap"] >= 238).sum()) == 214
  assert sim["cap"].min() >= 100 and sim["cap"].max() <= 400
  assert set(np.unique(sim["device"])) == set(synthetic.DEVICE_NAMES)
  # True CAP = measured - N(0, 18): centred on the measurement, with about that spread.
  diff = sim["cap"] - sim["true_cap"]
  assert abs(diff.mean()) < 4 and 12 < diff.std() < 24


def test_shapes_dtypes_and_ids(small):
  n = 24
  assert small["images"].shape == (n, 48, 48, 3) and small["images"].dtype == np.uint8
  for key in ("cap", "true_cap", "depth_cm"):
    assert small[key].shape == (n,) and small[key].dtype == np.float32
  assert small["kidney"].shape == (n,) and small["kidney"].dtype == bool
  for key in ("liver_roi", "kidney_roi"):
    assert small[key].shape == (n, 4) and small[key].dtype == np.int32
  assert small["subject_id"].shape == (n,) and small["subject_id"][0].startswith("sim-")
  assert all(len(s) == len("sim-0001") for s in small["subject_id"])
  assert set(small["device"]) <= set(synthetic.DEVICE_NAMES)
  assert int((small["cap"] < 238).sum()) == 8
  assert small["images"].std() > 10  # Not blank.


def test_deterministic_per_seed_and_chunking(small):
  again = synthetic.simulate(_synth(), physics=dataclasses.replace(synthetic.PHYSICS, chunk=5),
                             num_threads=1)
  for key in small:
    np.testing.assert_array_equal(small[key], again[key])
  other = synthetic.simulate(_synth(seed=1))
  assert not np.array_equal(small["images"], other["images"])
  assert not np.array_equal(small["cap"], other["cap"])


def test_several_images_per_subject_share_subject_properties(small):
  ids, counts = np.unique(small["subject_id"], return_counts=True)
  assert ids.size == 18 and counts.max() >= 2
  for sid in ids[counts >= 2]:
    rows = small["subject_id"] == sid
    assert np.unique(small["device"][rows]).size == 1
    assert np.unique(small["cap"][rows]).size == 1
    assert np.unique(small["true_cap"][rows]).size == 1
    # Different vessel layout / angle per image of the same subject.
    imgs = small["images"][rows]
    assert not np.array_equal(imgs[0], imgs[1])


def _near_far(sim):
  feats = []
  for img, dev, depth in zip(sim["images"], sim["device"], sim["depth_cm"]):
    mask = synthetic.fan_mask(dev, depth, img.shape[0])
    rows = np.flatnonzero(mask.any(axis=1))
    third = (rows[-1] + 1 - rows[0]) // 3
    gray = img.astype(np.float64).mean(axis=-1)
    near = gray[rows[0]:rows[0] + third][mask[rows[0]:rows[0] + third]].mean()
    far = gray[rows[-1] + 1 - third:rows[-1] + 1][mask[rows[-1] + 1 - third:rows[-1] + 1]].mean()
    feats.append((near, far))
  return np.array(feats)


@pytest.mark.parametrize("recentre,min_near,max_ratio", [
    ((0.0, 0.0), 5.0, -0.25),  # The physics alone: no operator re-centring.
    (None, 1.0, -0.15),  # Defaults: the operator's re-centring hides part of it, on purpose.
])
def test_physics_signs_brighter_liver_darker_far_field(recentre, min_near, max_ratio):
  # Thresholds measured at this seed (v3: +8.5 / -0.50 without, +2.6 / -0.30 with re-centring);
  # v2's single "+3 grey levels with re-centring" was pinned to its own draws.
  physics = synthetic.PHYSICS
  if recentre is not None:
    physics = dataclasses.replace(physics, recentre=recentre)
  sim = synthetic.simulate(_synth(60, 80, 40, 48, overlay_prob=0.0, rib_shadow_prob=0.0),
                           physics=physics)
  near, far = _near_far(sim).T
  fatty = sim["cap"] >= 238
  assert near[fatty].mean() > near[~fatty].mean() + min_near  # Bright liver (backscatter).
  ratio = far / near
  assert ratio[fatty].mean() < ratio[~fatty].mean() + max_ratio  # Posterior attenuation.


# ------------------------------------------------------------------------------ no cliff


@pytest.mark.parametrize("law", sorted(cohort.TISSUE_LAWS))
def test_tissue_laws_change_by_at_most_a_tenth_of_their_range_per_10_db(law):
  fn, neutral = cohort.TISSUE_LAWS[law]
  lo, hi = synthetic.PHYSICS.cap_range
  step = 0.5
  cap = np.arange(lo, hi + step, step)
  lag = int(round(10.0 / step))  # 10 dB/m.
  # The subject's random factor held fixed: neutral and the ends of its spread.
  factors = {"alpha0": (0.85, 1.0), "backscatter_db": (-4.0, 0.0, 4.0),
             "cells": (np.exp(-0.4), 1.0, np.exp(0.4))}[law]
  assert neutral in factors
  for factor in factors:
    values = fn(cap, factor)
    span = values.max() - values.min()
    assert span > 0, law  # A property that does not follow fat would pass trivially.
    worst = np.abs(values[lag:] - values[:-lag]).max()
    assert worst <= 0.1 * span + 1e-9, (law, factor, worst, span)
    # And nothing special happens at the label's cut-off.
    at = np.searchsorted(cap, synthetic.S0_CUTOFF)
    assert abs(values[at + 1] - values[at - 1]) <= 0.1 * span * (2 * step / 10.0) + 1e-9


def test_sampled_cohort_has_no_step_at_the_cutoff():
  # The cohort as drawn (random factors included) follows the laws: the subjects just below and
  # just above true CAP 238 have the same tissue on average. The old recipe's scatterer density
  # jumped there (U(5, 10) below, >= 8 x lognormal above: +40 %).
  cfg = _synth(2000, 2000, 600, 16)
  c = synthetic.sample_cohort(cfg)
  below = (c["true_cap"] >= 228) & (c["true_cap"] < 238)
  above = (c["true_cap"] >= 238) & (c["true_cap"] < 248)
  assert below.sum() > 50 and above.sum() > 50
  for key, span in (("cells", 25.0), ("backscatter_db", 13.0), ("alpha0", 300 / 350)):
    step = np.median(c[key][above]) - np.median(c[key][below])
    assert abs(step) <= 0.1 * span, (key, step)


def test_kidney_presence_never_reads_cap():
  # By construction: the function that draws it is given no CAP, label or subject ...
  params = list(inspect.signature(cohort.sample_kidneys).parameters)
  assert params == ["seed", "num_images", "prob", "physics"]
  # ... so two cohorts of different CAPs (other S0 share, other CAP noise) have the same kidneys.
  a = cohort.sample_image_params(_synth(), synthetic.sample_cohort(_synth()), synthetic.PHYSICS)
  other = _synth(num_s0=20, cap_noise_sd=30.0)
  b = cohort.sample_image_params(other, synthetic.sample_cohort(other), synthetic.PHYSICS)
  assert not np.array_equal(synthetic.sample_cohort(_synth())["cap"],
                            synthetic.sample_cohort(other)["cap"])
  for key in ("kidney", "k_long_mm", "k_db"):
    np.testing.assert_array_equal(a[key], b[key])
  # And on the default cohort (fixed seed: deterministic) it is unrelated to the label.
  cfg = fatty_liver.get_config().data.synthetic
  labels = synthetic.sample_cohort(cfg)["cap"] >= 238
  kidney = cohort.sample_kidneys(cfg.seed, cfg.num_images, cfg.kidney_prob)["kidney"] > 0
  assert 0.4 < kidney.mean() < 0.6
  table = [[np.sum(kidney & labels), np.sum(~kidney & labels)],
           [np.sum(kidney & ~labels), np.sum(~kidney & ~labels)]]
  assert stats.fisher_exact(table).pvalue > 0.05


def _hri(sim):
  out = np.full(len(sim["cap"]), np.nan)
  for i in np.flatnonzero(sim["kidney_roi"][:, 0] >= 0):
    gray = preprocess.to_grayscale(sim["images"][i]).astype(np.float64)
    (r, c, h, w), (rk, ck, hk, wk) = sim["liver_roi"][i], sim["kidney_roi"][i]
    out[i] = gray[r:r + h, c:c + w].mean() / max(gray[rk:rk + hk, ck:ck + wk].mean(), 1.0)
  return out


def test_hepatorenal_index_rises_with_fat():
  sim = synthetic.simulate(_synth(30, 40, 14, 96, kidney_prob=1.0))
  assert sim["kidney"].all()
  hri = _hri(sim)
  ok = np.isfinite(hri)
  assert ok.sum() >= 30  # Nearly every kidney leaves room for both boxes.
  rho = stats.spearmanr(hri[ok], sim["true_cap"][ok]).statistic
  assert rho > 0.4, rho
  fatty = sim["cap"] >= 238
  assert np.median(hri[ok & fatty]) > np.median(hri[ok & ~fatty]) + 0.2
  # Normal livers are a little brighter than the cortex (the physics file: 1.14 +- 0.2).
  assert 0.95 < np.median(hri[ok & ~fatty]) < 1.35


def test_kidney_boxes_lie_in_the_fan_at_one_depth(small):
  kidney = small["kidney"]
  assert 0 < kidney.sum() < kidney.size  # Default probability 0.5: some with, some without.
  no_box = small["kidney_roi"][:, 0] < 0
  assert no_box[~kidney].all() and (small["liver_roi"][~kidney] == -1).all()
  for i in np.flatnonzero(~no_box):
    (r, c, h, w), (rk, ck, hk, wk) = small["liver_roi"][i], small["kidney_roi"][i]
    assert (r, h, w) == (rk, hk, wk) and h >= 2 and w >= 2  # Same rows, same size.
    fan = synthetic.fan_mask(small["device"][i], small["depth_cm"][i], 48)
    assert fan[r:r + h, c:c + w].all() and fan[rk:rk + hk, ck:ck + wk].all()
    assert abs(c - ck) >= w  # Side by side, not overlapping.
  none = synthetic.simulate(_synth(6, 6, 2, 32, kidney_prob=0.0))
  assert not none["kidney"].any() and (none["kidney_roi"] == -1).all()


def test_outside_the_fan_is_black(small):
  for img, dev, depth in zip(small["images"], small["device"], small["depth_cm"]):
    mask = synthetic.fan_mask(dev, depth, img.shape[0])
    assert 0.2 < mask.mean() < 0.8
    assert img[mask].mean() > 20
  clean = synthetic.simulate(_synth(overlay_prob=0.0))
  for img, dev, depth in zip(clean["images"], clean["device"], clean["depth_cm"]):
    outside = img[~synthetic.fan_mask(dev, depth, img.shape[0])]
    # JPEG exports ring a few grey levels just outside the fan edge; no more.
    assert outside.mean() < 2 and np.percentile(outside, 99) < 30
    assert np.array_equal(img[..., 0], img[..., 2]) or outside.max() < 64  # Grey unless tinted.


def test_overlay_makes_coloured_images():
  sim = synthetic.simulate(_synth(6, 6, 2, 48, overlay_prob=1.0))
  img = sim["images"].astype(int)
  assert np.abs(img[..., 0] - img[..., 2]).mean() > 1  # Tint: RGB is not grey.


def test_cache_hit_is_identical_and_does_not_resimulate(tmp_path, monkeypatch):
  cfg = _data_cfg(tmp_path)
  first = synthetic.load(cfg)
  files = glob.glob(os.path.join(str(tmp_path), "synthetic", "*"))
  assert len(files) == 1 and files[0].endswith(".npz")  # No temp file left behind.
  assert os.path.basename(files[0]) == synthetic.cache_key(cfg.synthetic) + ".npz"

  def boom(*args, **kwargs):
    raise AssertionError("simulate called on a cache hit")

  # The cache module renders through render.simulate (synthetic.simulate is the same function).
  monkeypatch.setattr(synthetic.render, "simulate", boom)
  second = synthetic.load(cfg)
  for field in ("images", "label", "cap", "true_cap", "subject_id", "device"):
    np.testing.assert_array_equal(getattr(first, field), getattr(second, field))
  assert first.name == second.name == "synthetic (seed 0, 24 images)"


def test_damaged_cache_file_is_rebuilt(tmp_path):
  cfg = _synth(6, 6, 2, 32)
  path = os.path.join(str(tmp_path), synthetic.cache_key(cfg) + ".npz")
  with open(path, "wb") as f:
    f.write(b"not a zip file")
  sim, hit = synthetic.simulate_cached(cfg, str(tmp_path))
  assert not hit and sim["images"].shape == (6, 32, 32, 3)
  again, hit = synthetic.simulate_cached(cfg, str(tmp_path))
  assert hit
  np.testing.assert_array_equal(sim["images"], again["images"])


def test_cache_key_covers_parameters():
  base = _synth()
  assert synthetic.cache_key(base) == synthetic.cache_key(_synth())
  for change in ({"seed": 1}, {"overlay_prob": 0.5}, {"render_size": 64}, {"num_s0": 9},
                 {"cap_noise_sd": 20.0}, {"rib_shadow_prob": 0.0}):
    assert synthetic.cache_key(_synth(**change)) != synthetic.cache_key(base), change
  tuned = dataclasses.replace(synthetic.PHYSICS, gain_db=5.0)
  assert synthetic.cache_key(base, physics=tuned) != synthetic.cache_key(base)
  assert synthetic.cache_key(_synth(kidney_prob=0.2)) != synthetic.cache_key(base)


def test_cache_key_changes_with_the_simulator_version(monkeypatch):
  # A changed simulator must never be served a stale cohort from an older version's cache.
  base = synthetic.cache_key(_synth())
  monkeypatch.setattr(spec, "SIMULATOR_VERSION", spec.SIMULATOR_VERSION + "-next")
  assert synthetic.cache_key(_synth()) != base


def test_load_returns_dataset_with_binary_labels(tmp_path):
  ds = synthetic.load(_data_cfg(tmp_path, image_size=20))
  assert isinstance(ds, Dataset)
  assert ds.images.shape == (24, 20, 20, 1) and ds.images.dtype == np.uint8
  np.testing.assert_array_equal(ds.label, (ds.cap >= 238).astype(np.int32))
  assert int((ds.label == 0).sum()) == 8
  assert ds.summary()["subjects"] == 18


def test_grade_labels_use_config_cutoffs(tmp_path):
  cfg = _data_cfg(tmp_path)
  cfg.label_mode = "grade"
  cfg.grade_cutoffs = (238.0, 260.0, 290.0)
  ds = synthetic.load(cfg)
  expected = (ds.cap >= 238).astype(int) + (ds.cap >= 260) + (ds.cap >= 290)
  np.testing.assert_array_equal(ds.label, expected)
  cfg.label_mode = "binary"
  cfg.cap_cutoff = 260.0
  assert int(synthetic.load(cfg).label.sum()) == int((ds.cap >= 260).sum())


def test_grayscale_is_pillow_luma(tmp_path):
  cfg = _data_cfg(tmp_path, image_size=48, overlay_prob=1.0)
  ds = synthetic.load(cfg)
  sim, hit = synthetic.simulate_cached(cfg.synthetic, synthetic.cache_dir_of(cfg))
  assert hit
  rgb = sim["images"][0].astype(np.float64)
  luma = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
  assert np.abs(ds.images[0, ..., 0] - luma).max() <= 1.0


@pytest.mark.parametrize("field,value", [
    ("num_s0", 25), ("num_s0", -1), ("num_subjects", 30), ("num_subjects", 0),
    ("num_images", 0), ("render_size", 8), ("render_size", 64.5), ("overlay_prob", 1.5),
    ("rib_shadow_prob", -0.1), ("cap_noise_sd", -1.0), ("seed", -3), ("num_images", "24"),
    ("kidney_prob", 1.5), ("kidney_prob", "half"),
])
def test_bad_cohort_config_raises_naming_the_field(field, value, tmp_path):
  base = _data_cfg(tmp_path)
  # Plain copies: ConfigDict would refuse some wrong-type values before the loader sees them.
  cfg = _SimpleCfg(base, synthetic=_SimpleCfg(base.synthetic, **{field: value}))
  with pytest.raises(UserInputError, match=f"config.data.synthetic.{field}"):
    synthetic.load(cfg)
  assert not os.path.exists(os.path.join(str(tmp_path), "synthetic"))


def test_one_class_needs_only_one_subject():
  sim = synthetic.simulate(_synth(1, 3, 0, 32))
  assert (sim["cap"] >= 238).all() and np.unique(sim["subject_id"]).size == 1
  with pytest.raises(UserInputError, match="num_subjects"):
    synthetic.simulate(_synth(1, 3, 1, 32))


def test_fan_mask_rejects_unknown_device():
  with pytest.raises(UserInputError, match="device"):
    synthetic.fan_mask("Voluson", 16, 64)


class _SimpleCfg:
  """A plain attribute bag copying a ConfigDict, with some fields overridden."""

  def __init__(self, base, **overrides):
    for k in base.keys():
      setattr(self, k, base[k])
    for k, v in overrides.items():
      setattr(self, k, v)
