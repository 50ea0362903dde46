"""Tests for nasrl_jax.data.tfds_builder: ArrayRecord build and data-source read, without TF."""

import os
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from configs import fatty_liver
from nasrl_jax.data import manifest
from nasrl_jax.data import synthetic
from nasrl_jax.data import tfds_builder
from nasrl_jax.errors import UserInputError


def _assert_same(a, b):
  np.testing.assert_array_equal(a.images, b.images)
  np.testing.assert_array_equal(a.label, b.label)
  np.testing.assert_array_equal(a.cap, b.cap)  # nan == nan for assert_array_equal.
  np.testing.assert_array_equal(a.true_cap, b.true_cap)
  np.testing.assert_array_equal(a.subject_id, b.subject_id)
  np.testing.assert_array_equal(a.device, b.device)


def test_synthetic_round_trip(tmp_path):
  cfg = fatty_liver.get_config("tiny").data
  cfg.cache_dir = str(tmp_path / "cache")
  data_dir = tmp_path / "tfds"
  ds = tfds_builder.build_and_read(cfg, data_dir)
  assert "tensorflow" not in sys.modules  # The core never needs TensorFlow.
  _assert_same(ds, synthetic.load(cfg))  # Same images, labels, order as the direct source.
  assert ds.images.shape == (60, 32, 32, 1)

  version = str(tfds_builder.FattyLiverUS.VERSION)
  assert version == "2.0.0"  # Simulator v3: a synthetic build of v2 pixels is never reused.
  version_dir = data_dir / "fatty_liver_us" / "synthetic" / version
  records = [f for f in os.listdir(version_dir) if ".array_record" in f]
  assert records, os.listdir(version_dir)
  mtime = os.stat(version_dir / records[0]).st_mtime_ns
  # Public TFDS reading path, by name.
  source = tfds.data_source("fatty_liver_us/synthetic", data_dir=str(data_dir))["train"]
  assert len(source) == 60 and source[0]["image"].shape == (64, 64, 1)

  # A second call reads the existing build (no rewrite), also at another image size.
  cfg.image_size = 16
  again = tfds_builder.build_and_read(cfg, data_dir)
  assert again.images.shape == (60, 16, 16, 1)
  assert os.stat(version_dir / records[0]).st_mtime_ns == mtime

  # Another cohort in the same data_dir is refused, not served stale.
  cfg.synthetic.seed = 1
  with pytest.raises(UserInputError, match="holds a fatty_liver_us/synthetic build of other data"):
    tfds_builder.build_and_read(cfg, data_dir)


def test_synthetic_fingerprint_follows_the_simulator_version(monkeypatch):
  cfg = fatty_liver.get_config("tiny").data
  before = tfds_builder.fingerprint("synthetic", cfg)
  monkeypatch.setattr(synthetic, "SIMULATOR_VERSION", synthetic.SIMULATOR_VERSION + "-next")
  assert tfds_builder.fingerprint("synthetic", cfg) != before


def test_manual_round_trip(tmp_path):
  rng = np.random.default_rng(0)
  folder = tmp_path / "study"
  folder.mkdir()
  lines = ["path,subject_id,cap,device"]
  for s in range(4):
    for k in range(2):
      Image.fromarray(rng.integers(0, 255, (30 + k, 40, 3), np.uint8)).save(
          folder / f"s{s}_{k}.png")
      lines.append(f"s{s}_{k}.png,s{s},{200 + 40 * s},Aplio300")
  (folder / "manifest.csv").write_text("\n".join(lines) + "\n")
  cfg = fatty_liver.get_config("tiny,manifest").data
  cfg.manifest = str(folder / "manifest.csv")
  cfg.num_folds = 2
  ds = tfds_builder.build_and_read(cfg, tmp_path / "tfds")
  _assert_same(ds, manifest.load(cfg))
  np.testing.assert_array_equal(ds.label, [0, 0, 1, 1, 1, 1, 1, 1])  # CAP 200, 240, 280, 320.
  assert ds.name == "tfds:fatty_liver_us/manual"
  built = tfds.builder_from_directory(str(tmp_path / "tfds" / "fatty_liver_us" / "manual" /
                                          str(tfds_builder.FattyLiverUS.VERSION)))
  assert len(built.info.metadata["fingerprint"]) == 16


def test_bad_input_before_building(tmp_path):
  cfg = fatty_liver.get_config("tiny,byra_mat").data
  with pytest.raises(UserInputError, match="config.data.source='byra_mat'"):
    tfds_builder.build_and_read(cfg, tmp_path)
  cfg = fatty_liver.get_config("tiny,manifest").data
  cfg.manifest = str(tmp_path / "missing.csv")
  with pytest.raises(UserInputError, match="missing.csv: manifest CSV not found"):
    tfds_builder.build_and_read(cfg, tmp_path / "tfds")
  assert not (tmp_path / "tfds").exists()
