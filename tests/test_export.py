"""Tests for nasrl_jax.export: the record, save/load round trips, one-line errors on bad folders."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import load_config
from nasrl_jax import checkpoint
from nasrl_jax import child
from nasrl_jax import export
from nasrl_jax import space
from nasrl_jax.errors import UserInputError

ARCH = space.Architecture((3,) * 16, (64,) * 16)
SIZE = 32


def _spec(head="gap", batch_norm=True, **changes):
  spec = child.ChildSpec((SIZE, SIZE, 1), 2, head, 512, 0.5, batch_norm, 0.125)
  return child.ChildSpec(**dict(spec.to_json(), **changes))


def _data_cfg(**changes):
  cfg = load_config("tiny").data
  for k, v in changes.items():
    cfg[k] = v
  return cfg


def _weights(spec, seed=0):
  graphdef, params, stats = child.init(ARCH, spec, seed)
  # Non-trivial BN statistics, so a swapped params/batch_stats would show.
  rng = np.random.default_rng(seed)
  stats = jax.tree.map(lambda v: v * rng.uniform(0.5, 2.0, v.shape).astype(v.dtype), stats)
  return graphdef, params, stats


def _meta(spec=None, **extra):
  return export.metadata(ARCH, spec or _spec(), _data_cfg(), name="NASRL", threshold=0.375,
                         threshold_source="Youden J on the fold's validation part", **extra)


def test_metadata_record():
  meta = _meta(fold=np.int64(2), seed=3, source="synthetic",
               test_metrics={"image": {"auroc": float("nan"), "accuracy": np.float32(0.75)}})
  assert json.loads(json.dumps(meta, allow_nan=False)) == meta  # Plain JSON, no NaN.
  assert meta["format"] == export.FORMAT and meta["name"] == "NASRL"
  assert meta["architecture"] == ARCH.to_json() and meta["spec"] == dict(
      _spec().to_json(), input_shape=[SIZE, SIZE, 1])
  cfg = _data_cfg()
  assert meta["preprocessing"] == {
      "image_size": SIZE, "crop": cfg.crop, "crop_box": list(cfg.crop_box),
      "max_pixels": cfg.max_pixels, "label_mode": cfg.label_mode,
      "cap_cutoff": cfg.cap_cutoff, "grade_cutoffs": list(cfg.grade_cutoffs)}
  assert meta["threshold"] == 0.375 and "validation" in meta["threshold_source"]
  assert meta["fold"] == 2 and meta["test_metrics"]["image"] == {"auroc": None, "accuracy": 0.75}
  with pytest.raises(ValueError, match="format, preprocessing cannot be extra fields"):
    export.metadata(ARCH, _spec(), cfg, name="x", threshold=0.5, threshold_source="",
                    preprocessing={}, format="mine")
  with pytest.raises(UserInputError, match=r"threshold=1.5: must be a probability"):
    export.metadata(ARCH, _spec(), cfg, name="x", threshold=1.5, threshold_source="")


@pytest.mark.parametrize("head, batch_norm, pure", [("gap", True, False), ("vgg", False, True)])
def test_save_load_round_trip(tmp_path, head, batch_norm, pure):
  spec = _spec(head, batch_norm)
  _, params, stats = _weights(spec)
  if pure:  # Pure dicts of device arrays, as a jitted training step returns them.
    params = jax.tree.map(jnp.asarray, nnx.to_pure_dict(params))
    stats = nnx.to_pure_dict(stats)
  export.save(tmp_path / "NASRL", params, stats, _meta(spec, fold=1))
  model = export.load(tmp_path / "NASRL")
  assert (model.name, model.arch, model.spec, model.threshold) == ("NASRL", ARCH, spec, 0.375)
  assert model.directory == str(tmp_path / "NASRL") and model.metadata["fold"] == 1
  assert model.data_cfg.image_size == SIZE
  assert isinstance(model.params, nnx.State) and isinstance(model.batch_stats, nnx.State)
  for got, want in ((model.params, params), (model.batch_stats, stats)):
    got, want = nnx.to_pure_dict(got), want if pure else nnx.to_pure_dict(want)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # The loaded model runs (and computes what the saved weights compute).
  x = np.random.default_rng(0).integers(0, 256, (2, SIZE, SIZE, 1), np.uint8)
  forward = jax.jit(lambda p, s: child.apply(model.graphdef, p, s, x, train=False)[0])
  ref, ours = forward(*_weights(spec)[1:]), forward(model.params, model.batch_stats)
  np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)


def test_process_local_save_loads(tmp_path):
  _, params, stats = _weights(_spec())
  export.save(tmp_path / "m", params, stats, _meta(), process_local=True)
  assert export.load(tmp_path / "m").name == "NASRL"


def test_a_model_store_child_loads(tmp_path):
  _, params, stats = _weights(_spec(), seed=4)
  with checkpoint.ModelStore(tmp_path / "children", max_to_keep=2) as store:
    store.save(7, {"params": nnx.to_pure_dict(params), "batch_stats": nnx.to_pure_dict(stats)},
               _meta(reward=0.8, index=7), score=0.8)
    folder = store.path(7)
  model = export.load(folder)
  np.testing.assert_array_equal(model.params["out"]["kernel"][...], params["out"]["kernel"][...])
  assert model.metadata["reward"] == 0.8


def test_folder_exported_before_the_format_tag_loads(tmp_path):
  # The earlier pipeline's record: no format, no max_pixels, no threshold_source, no checksums.
  _, params, stats = _weights(_spec())
  old = {k: v for k, v in _meta().items() if k not in ("format", "threshold_source")}
  old["preprocessing"].pop("max_pixels")
  checkpoint.save_model(tmp_path / "old", {"params": nnx.to_pure_dict(params),
                                           "batch_stats": nnx.to_pure_dict(stats)}, old)
  for p in (tmp_path / "old" / "checksums").iterdir():
    p.unlink()
  (tmp_path / "old" / "checksums").rmdir()
  model = export.load(tmp_path / "old")
  assert model.data_cfg.max_pixels == export.DEFAULT_MAX_PIXELS


def _save(folder, spec=None, weights_spec=None, **meta_changes):
  """A model folder, maybe made wrong on purpose (so not always through export.save's check)."""
  _, params, stats = _weights(weights_spec or spec or _spec())
  meta = dict(_meta(spec), **meta_changes)
  checkpoint.save_model(folder, {"params": nnx.to_pure_dict(params),
                                 "batch_stats": nnx.to_pure_dict(stats)}, meta)
  return folder


def test_bad_folders_are_one_line_user_errors(tmp_path):
  def fails(folder, pattern):
    with pytest.raises(UserInputError, match=pattern) as err:
      export.load(folder)
    assert "\n" not in str(err.value) and str(folder) in str(err.value)

  fails(tmp_path / "nope", "no such model folder")
  model = _save(tmp_path / "models" / "NASRL")
  # The parent, by mistake: the message names the model folders in it.
  fails(tmp_path / "models", "not a nasrl_jax model folder .*; model folders inside it: NASRL$")
  fails(_save(tmp_path / "v2", format="nasrl_jax.export/2"), "format 'nasrl_jax.export/2'")
  fails(_save(tmp_path / "oval", preprocessing={"image_size": SIZE, "crop": "oval"}),
        r"metadata: bad preprocessing record .*crop='oval'")
  fails(_save(tmp_path / "noarch", architecture={"kernels": [3]}),
        r"metadata: no usable architecture and spec \(KeyError")
  fails(_save(tmp_path / "t", threshold=2.0), r"metadata: threshold=2.0: must be a probability")
  # Weights of 8-filter layers, a spec of 16-filter ones: Orbax refuses, the leaf is named.
  fails(_save(tmp_path / "wide", spec=_spec(width_multiplier=0.25), weights_spec=_spec()),
        r"not a usable nasrl_jax exported model: batch_stats/norms/0/mean is shape \(8,\), the "
        r"architecture and spec in its metadata need shape \(16,\)")
  # The gap head's weights fit any input size: the spec/preprocessing mismatch is caught.
  fails(_save(tmp_path / "big", spec=_spec(input_shape=(64, 64, 1)), weights_spec=_spec()),
        r"spec.input_shape \(64, 64, 1\) does not match preprocessing.image_size 32")
  # One flipped bit inside the largest array's bytes: Orbax reads it, the checksum refuses it.
  data = sorted((p for p in (model / "params").rglob("*") if p.parent.name == "d"),
                key=lambda p: -p.stat().st_size)[0]
  b = bytearray(data.read_bytes())
  b[len(b) // 2] ^= 0x10
  data.write_bytes(bytes(b))
  fails(model, r"model checkpoint is unreadable or corrupt \(Corrupt: 1 array\(s\) differ")


def test_save_refuses_a_record_not_made_by_metadata(tmp_path):
  _, params, stats = _weights(_spec())
  with pytest.raises(ValueError, match="export.metadata"):
    export.save(tmp_path / "m", params, stats, {"architecture": ARCH.to_json()})
  assert not (tmp_path / "m").exists()
