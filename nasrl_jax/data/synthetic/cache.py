"""The simulator's on-disk cache and the `synthetic` source of `nasrl_jax.data.load`.

This module owns the cache key (a hash of every simulator input: config fields, render size,
every `Physics` constant, the machine profiles and `SIMULATOR_VERSION`), the npz cache under
`<cache_dir>/synthetic/<hash>.npz` (written atomically, rebuilt when damaged or incomplete), and
`load`, which preprocesses the cached renders like any other source (RGB -> ITU-R 601-2 luma,
crop, resize) into a `Dataset` labelled from the measured CAP.
"""

import dataclasses
import hashlib
import io
import json
import os
import zipfile
from typing import Dict, Optional, Tuple

import numpy as np

from nasrl_jax import io_utils
from nasrl_jax.data import Dataset
from nasrl_jax.data import labels as labels_lib
from nasrl_jax.data import preprocess as preprocess_lib
from nasrl_jax.data.synthetic import render
from nasrl_jax.data.synthetic import spec
from nasrl_jax.data.synthetic.spec import PROFILES, Physics

# The config fields that change the renders (render_size is handled on its own).
_CONFIG_FIELDS = ("num_subjects", "num_images", "num_s0", "rib_shadow_prob", "overlay_prob",
                  "kidney_prob", "cap_noise_sd", "seed")


def cache_key(synth_cfg, render_size: Optional[int] = None,
              physics: Physics = spec.PHYSICS) -> str:
  """Hash of every simulator input: config fields, constants, profiles and SIMULATOR_VERSION.

  Args:
    synth_cfg: `config.data.synthetic`.
    render_size: overrides synth_cfg.render_size when given.
    physics: simulator constants.

  Returns:
    20 hex characters.
  """
  spec_dict = {
      "version": spec.SIMULATOR_VERSION,
      "config": {k: getattr(synth_cfg, k) for k in _CONFIG_FIELDS},
      "render_size": int(synth_cfg.render_size if render_size is None else render_size),
      "physics": dataclasses.asdict(physics),
      "profiles": [dataclasses.asdict(p) for p in PROFILES],
  }
  text = json.dumps(spec_dict, sort_keys=True, default=float)
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
  spec.validate(synth_cfg, render_size)
  path = os.path.join(cache_dir, cache_key(synth_cfg, render_size) + ".npz")
  if os.path.isfile(path):
    try:
      with np.load(path, allow_pickle=False) as f:
        cached = {k: f[k] for k in f.files}
      if set(cached) >= render.OUTPUT_KEYS:
        return cached, True
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
      pass  # A damaged cache file is simply rebuilt.
  sim = render.simulate(synth_cfg, render_size)
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

  Raises:
    UserInputError: a bad synthetic, preprocessing or label field, before any rendering.
  """
  synth_cfg = data_cfg.synthetic
  spec.validate(synth_cfg)
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
