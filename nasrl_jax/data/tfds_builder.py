"""A tensorflow-datasets builder for the study's images, stored as ArrayRecord, read without TF.

This module owns `FattyLiverUS`, a `tfds.core.GeneratorBasedBuilder` with two BuilderConfigs:

  synthetic  the embedded simulator (`synthetic.simulate(config.data.synthetic)`);
  manual     a manifest folder (CSV + PNG/JPEG/BMP/TIFF, as the `manifest` source) in `manual_dir`.

Each example: image (grayscale PNG, shape (None, None, 1), the source resolution: crop and resize
happen when reading, so one build serves every image_size / crop setting), label (int32, from the
build's label settings), cap (float32 dB/m, nan if unknown), true_cap (float32, simulator ground
truth, nan for real data), subject_id, device (text), index (the source order).

TensorFlow is not needed and not imported: tensorflow-datasets 4.9.10 builds and reads
`file_format='array_record'` without it when images are given as encoded PNG bytes (numpy images,
the tfrecord format, `tfds.load` and `tfds.as_numpy` would need TF). Read back with
`builder.as_data_source()` or `tfds.data_source('fatty_liver_us/synthetic', data_dir=...)`.

What a build holds is pinned by a fingerprint (simulator version and fields, or manifest bytes
and image file stats, plus label settings) in the dataset's metadata: `build_and_read` refuses to
reuse a data_dir built from something else instead of silently returning stale data.
"""

import hashlib
import io
import json
import os
from typing import Dict, Iterator, Optional, Tuple

from etils import epath
import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from nasrl_jax.data import Dataset
from nasrl_jax.data import labels as labels_lib
from nasrl_jax.data import manifest
from nasrl_jax.data import preprocess
from nasrl_jax.data import synthetic
from nasrl_jax.errors import UserInputError

NAME = "fatty_liver_us"
MANIFEST_NAME = "manifest.csv"  # The CSV the manual config looks for in manual_dir.
SOURCE_TO_CONFIG = {"synthetic": "synthetic", "manifest": "manual"}


def _png(gray: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(np.ascontiguousarray(gray, np.uint8), mode="L").save(buf, format="PNG")
  return buf.getvalue()


def _label_settings(data_cfg) -> Dict:
  return {"label_mode": data_cfg.label_mode, "cap_cutoff": float(data_cfg.cap_cutoff),
          "grade_cutoffs": [float(c) for c in data_cfg.grade_cutoffs]}


def _manual_cfg(data_cfg, manual_dir: Optional[str]):
  """A copy of `data_cfg` whose manifest/root point into manual_dir when they are unset."""
  cfg = ml_collections.ConfigDict(data_cfg)
  if not cfg.manifest:
    if not manual_dir:
      raise UserInputError("the manual config needs config.data.manifest or a manual_dir holding "
                           f"{MANIFEST_NAME}")
    cfg.manifest = os.path.join(os.fspath(manual_dir), MANIFEST_NAME)
  return cfg


def fingerprint(config_name: str, data_cfg, manual_dir: Optional[str] = None) -> str:
  """A short hash of everything a build's content depends on.

  Args:
    config_name: synthetic | manual.
    data_cfg: `config.data`.
    manual_dir: the manual config's folder (when data_cfg.manifest is '').

  Returns:
    16 hex characters.
  """
  h = hashlib.sha256()
  h.update(json.dumps({"config": config_name, **_label_settings(data_cfg)},
                      sort_keys=True).encode())
  if config_name == "synthetic":
    # The simulator's version too: the same fields render other pixels after a simulator change.
    h.update(synthetic.SIMULATOR_VERSION.encode())
    h.update(data_cfg.synthetic.to_json(sort_keys=True).encode())
  else:
    cfg = _manual_cfg(data_cfg, manual_dir)
    table, paths, _ = manifest.validate(cfg)
    with open(table.path, "rb") as f:
      h.update(f.read())
    for p in paths:  # Images replaced under the same name change the fingerprint too.
      st = os.stat(p)
      h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}".encode())
  return h.hexdigest()[:16]


class FattyLiverUS(tfds.core.GeneratorBasedBuilder):
  """B-mode liver ultrasound images with CAP/labels, per subject (see the module docstring)."""

  VERSION = tfds.core.Version("2.0.0")
  RELEASE_NOTES = {
      "1.0.0": "Grayscale images at source resolution, labels, CAP, subjects.",
      "2.0.0": ("Synthetic config re-simulated (simulator version 3): tissue properties smooth in "
                "the true CAP (no step at the label's cut-off), the right kidney in view on part "
                "of the images (config.data.synthetic.kidney_prob). Manual config unchanged."),
  }
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(
          name="synthetic", description="Simulated cohort (nasrl_jax.data.synthetic.simulate)."),
      tfds.core.BuilderConfig(
          name="manual", description="A manifest CSV + image folder placed in manual_dir."),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Put {MANIFEST_NAME} (columns path, subject_id, cap or label, optional device, site) and "
      "the images it names (paths relative to the folder) in manual_dir.")

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # tensorflow-datasets 4.9.10 finds this itself via `importlib_resources`, a package it only
    # declares for Python < 3.9 (ModuleNotFoundError on 3.11 for builders inside a package).
    return epath.Path(__file__)

  def __init__(self, *, data_cfg=None, **kwargs):
    """Args: data_cfg: `config.data`, needed to build (not to read); kwargs: DatasetBuilder's."""
    self._data_cfg = data_cfg
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    metadata = tfds.core.MetadataDict()
    if self._data_cfg is not None and self.builder_config.name == "synthetic":
      metadata["fingerprint"] = fingerprint("synthetic", self._data_cfg)
    return tfds.core.DatasetInfo(
        builder=self,
        description=("B-mode liver ultrasound images for early fatty-liver detection (NASRL "
                     "reproduction): grayscale, source resolution, FibroScan CAP and labels."),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 1), encoding_format="png"),
            "label": tfds.features.Scalar(np.int32, doc="0 normal / 1 fatty, or grade 0..3"),
            "cap": tfds.features.Scalar(np.float32, doc="measured CAP, dB/m (nan if unknown)"),
            "true_cap": tfds.features.Scalar(np.float32, doc="simulator ground truth or nan"),
            "subject_id": tfds.features.Text(),
            "device": tfds.features.Text(),
            "index": tfds.features.Scalar(np.int64, doc="position in the source order"),
        }),
        supervised_keys=("image", "label"),
        disable_shuffling=True,  # Keep the source order: folds are computed from it.
        metadata=metadata,
    )

  def _split_generators(self, dl_manager):
    if self._data_cfg is None:
      raise UserInputError("FattyLiverUS needs data_cfg=config.data to build a dataset")
    if self.builder_config.name == "synthetic":
      return {"train": self._generate_examples(None)}
    cfg = _manual_cfg(self._data_cfg, dl_manager.manual_dir)
    self.info.metadata["fingerprint"] = fingerprint("manual", cfg)
    return {"train": self._generate_examples(cfg)}

  def _generate_examples(self, manual_cfg) -> Iterator[Tuple[int, Dict]]:
    """Yields (key, example); manual_cfg is the manifest config (None for synthetic)."""
    if manual_cfg is None:
      yield from self._generate_synthetic()
    else:
      yield from self._generate_manual(manual_cfg)

  def _generate_synthetic(self) -> Iterator[Tuple[int, Dict]]:
    sim = synthetic.simulate(self._data_cfg.synthetic)
    label = labels_lib.cap_to_label(sim["cap"], self._data_cfg)
    for i in range(sim["images"].shape[0]):
      yield i, {
          "image": _png(preprocess.to_grayscale(sim["images"][i])),
          "label": int(label[i]), "cap": float(sim["cap"][i]),
          "true_cap": float(sim["true_cap"][i]), "subject_id": str(sim["subject_id"][i]),
          "device": str(sim["device"][i]), "index": i,
      }

  def _generate_manual(self, cfg) -> Iterator[Tuple[int, Dict]]:
    table, paths, (cap, label, subject_id) = manifest.validate(cfg)
    for i, (path, row, line) in enumerate(zip(paths, table.rows, table.row_numbers)):
      gray = manifest.decode_image(path, f"{table.path}: row {line}")
      yield i, {
          "image": _png(gray), "label": int(label[i]), "cap": float(cap[i]),
          "true_cap": float("nan"), "subject_id": str(subject_id[i]),
          "device": row.get("device", ""), "index": i,
      }


def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def read(builder: tfds.core.DatasetBuilder, data_cfg, split: str = "train") -> Dataset:
  """Reads a built split through `as_data_source()` into a `Dataset` (crop + resize applied).

  Args:
    builder: a prepared FattyLiverUS builder (or `tfds.builder_from_directory` of one).
    data_cfg: `config.data` (image_size, crop, crop_box).
    split: split name.

  Returns:
    Dataset in source order.
  """
  source = builder.as_data_source()[split]
  records = sorted((source[i] for i in range(len(source))), key=lambda r: int(r["index"]))
  size = int(data_cfg.image_size)
  images = np.empty((len(records), size, size, 1), np.uint8)
  for i, r in enumerate(records):
    gray = np.asarray(r["image"], np.uint8)[..., 0]
    images[i, ..., 0] = preprocess.resize(preprocess.crop(gray, data_cfg), size)
  return Dataset(
      images=images,
      label=np.asarray([r["label"] for r in records], np.int32),
      cap=np.asarray([r["cap"] for r in records], np.float32),
      subject_id=np.asarray([_text(r["subject_id"]) for r in records], str),
      device=np.asarray([_text(r["device"]) for r in records], str),
      true_cap=np.asarray([r["true_cap"] for r in records], np.float32),
      name=f"tfds:{builder.name}/{builder.builder_config.name}")


def build_and_read(data_cfg, data_dir: str) -> Dataset:
  """Builds the TFDS dataset for `config.data` if needed, then reads it back as a `Dataset`.

  Args:
    data_cfg: `config.data`; source synthetic -> the synthetic config, manifest -> the manual
      config (manual_dir = config.data.root or the CSV's folder).
    data_dir: TFDS data_dir (the build lands in data_dir/fatty_liver_us/<config>/<VERSION>).

  Returns:
    Dataset, identical to `nasrl_jax.data.load(data_cfg)` for the same config.

  Raises:
    UserInputError: bad input (validated before building), or data_dir already holds a build of
      different content.
  """
  if data_cfg.source not in SOURCE_TO_CONFIG:
    raise UserInputError(f"config.data.source={data_cfg.source!r}: the TFDS builder supports "
                         f"{', '.join(SOURCE_TO_CONFIG)}")
  preprocess.validate_config(data_cfg)
  config_name = SOURCE_TO_CONFIG[data_cfg.source]
  manual_dir = None
  if config_name == "manual":
    manual_dir = manifest.data_root(data_cfg, data_cfg.manifest) if data_cfg.manifest else None
  wanted = fingerprint(config_name, data_cfg, manual_dir)  # Validates all input first.
  builder = FattyLiverUS(data_cfg=data_cfg, config=config_name, data_dir=os.fspath(data_dir),
                         file_format="array_record")
  if os.path.isfile(os.path.join(os.fspath(builder.data_dir), "dataset_info.json")):
    built = tfds.builder_from_directory(builder.data_dir)
    have = built.info.metadata.get("fingerprint") if built.info.metadata else None
    if have != wanted:
      raise UserInputError(
          f"{builder.data_dir} holds a {NAME}/{config_name} build of other data (fingerprint "
          f"{have} != {wanted}); use another data_dir or delete that folder")
    return read(built, data_cfg)
  download_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
  builder.download_and_prepare(download_config=download_config)
  return read(builder, data_cfg)
