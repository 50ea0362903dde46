"""Tests for nasrl_jax.predict: files and folders in, probabilities, subjects, Grad-CAM, CLI out.

The model is a tiny exported child (16 layers x 8 filters at 32 x 32, gap head, batch norm) saved
with `export.metadata` and `export.save`, as the pipeline does; images come from the simulator
(full screens with a sector fan, burned-in text and ruler dots) and from DICOM files shipped inside
pydicom.
"""

import csv
import io
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pydicom
import pytest
from flax import nnx
from PIL import Image
from pydicom.data import get_testdata_file

from conftest import ROOT, load_config
from nasrl_jax import child
from nasrl_jax import export
from nasrl_jax import predict
from nasrl_jax import space
from nasrl_jax.data import dicom as dicom_lib
from nasrl_jax.data import manifest as manifest_lib
from nasrl_jax.data import synthetic
from nasrl_jax.errors import UserInputError

ARCH = space.Architecture((3,) * 16, (64,) * 16)
SIZE = 32


def _shipped(name):
  path = get_testdata_file(name, download=False)
  assert path and os.path.dirname(pydicom.__file__) in path, name
  return path


def _spec(head="gap", batch_norm=True):
  return child.ChildSpec((SIZE, SIZE, 1), 2, head, 512, 0.5, batch_norm, 0.125)


def _save_model(folder, crop="none", seed=0):
  config = load_config("tiny")
  config.data.crop = crop
  spec = _spec()
  _, params, stats = child.init(ARCH, spec, seed)
  # Non-trivial BN statistics, so eval-mode batch norm is exercised, not the identity.
  rng = np.random.default_rng(seed)
  stats = jax.tree.map(lambda v: v * rng.uniform(0.5, 2.0, v.shape).astype(v.dtype), stats)
  meta = export.metadata(ARCH, spec, config.data, name="NASRL", threshold=0.5,
                         threshold_source="test")
  export.save(folder, params, stats, meta)
  return str(folder)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  return _save_model(tmp_path_factory.mktemp("model") / "NASRL")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
  """A study: 6 simulated screens in subject folders, a JPEG twin, DICOMs, junk, a broken PNG."""
  root = tmp_path_factory.mktemp("study")
  cfg = load_config("tiny").data.synthetic
  cfg.num_subjects, cfg.num_images, cfg.num_s0, cfg.overlay_prob = 4, 6, 2, 1.0
  sim = synthetic.simulate(cfg, 96)
  pngs = []
  for i, (img, sid) in enumerate(zip(sim["images"], sim["subject_id"])):
    (root / sid).mkdir(exist_ok=True)
    pngs.append(root / sid / f"img{i}.png")
    Image.fromarray(img).save(pngs[-1])
  Image.fromarray(sim["images"][0]).save(root / sim["subject_id"][0] / "img0.jpg", quality=90)
  shutil.copy(_shipped("examples_ybr_color.dcm"), root / "cine.dcm")  # US, 30 frames, JPEG.
  shutil.copy(_shipped("examples_rgb_color.dcm"), root / "IM0001")  # US, RGB, no extension.
  (root / "notes.txt").write_text("not an image\n")
  data = pngs[0].read_bytes()
  (root / "broken.png").write_bytes(data[:len(data) // 2])
  return {"root": root, "pngs": pngs, "subject_id": list(sim["subject_id"])}


def _apply(model, x):
  """Reference probabilities: the training code's forward pass, softmax class 1."""
  logits, _ = jax.jit(lambda p, s, x: child.apply(model.graphdef, p, s, x, train=False))(
      model.params, model.batch_stats, jnp.asarray(x)[..., None])
  return np.asarray(jax.nn.softmax(logits)[:, 1])


@pytest.mark.parametrize("head, batch_norm", [("gap", True), ("vgg", False)])
def test_features_and_head_reproduce_child_apply(head, batch_norm):
  spec = _spec(head, batch_norm)
  graphdef, params, stats = child.init(ARCH, spec, 1)
  x = jnp.asarray(np.random.default_rng(0).integers(0, 256, (3, SIZE, SIZE, 1), np.uint8))

  @jax.jit
  def both(params, stats, x):
    model = nnx.merge(graphdef, params, stats, copy=True)
    a = predict.features(model, x)
    return child.apply(graphdef, params, stats, x, train=False)[0], predict.head(model, a), a

  ref, ours, a = both(params, stats, x)
  assert a.shape == (3, 2, 2, 8)  # Last conv layer: 32 / 2**4, 64 * 0.125 filters.
  np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)
  assert float(jnp.abs(ref).max()) > 1e-3  # Not a trivially zero network.


def test_gradcam_highlights_what_drives_the_fatty_logit():
  # One 1x1 conv (weight 1, 1 filter) then the gap head with logit_1 = feature, logit_0 = 0:
  # A = relu(x / 127.5 - 1), log-odds = mean(maxpool(A)), so Grad-CAM must equal A / max(A).
  arch = space.Architecture((1,), (64,), (1,))
  spec = child.ChildSpec((16, 16, 1), 2, "gap", 8, 0.0, False, 1 / 64)
  graphdef, params, stats = child.init(arch, spec, 0)
  pure = nnx.to_pure_dict(params)
  pure["convs"][0]["kernel"] = np.ones((1, 1, 1, 1), np.float32)
  pure["out"]["kernel"] = np.array([[0.0, 1.0]], np.float32)
  nnx.replace_by_pure_dict(params, pure)
  x = np.zeros((2, 16, 16), np.uint8)
  x[0, 2:6, 3:9] = 255  # Bright patch top-left: A = 1.
  x[0, 10:14, 11:15] = 191  # Dimmer patch bottom-right: A = 0.498.
  x[1] = 100  # All below mid-grey: A = 0, no evidence for fatty anywhere.
  prob, cam = predict.make_predict_fn(graphdef, saliency=True)(params, stats, x[..., None])
  a = np.maximum(x / 127.5 - 1.0, 0.0)
  np.testing.assert_allclose(cam[0], a[0] / a[0].max(), atol=1e-5)
  np.testing.assert_array_equal(np.asarray(cam[1]), 0.0)
  pooled = a.reshape(2, 8, 2, 8, 2).max(axis=(2, 4)).mean(axis=(1, 2))
  np.testing.assert_allclose(prob, 1 / (1 + np.exp(-pooled)), rtol=1e-5)
  prob_only, none = predict.make_predict_fn(graphdef, saliency=False)(params, stats, x[..., None])
  assert none is None
  np.testing.assert_allclose(prob_only, prob, rtol=1e-6)


@pytest.mark.parametrize("crop", ["none", "sector"])
def test_read_image_matches_training_sources(images, tmp_path, crop):
  root = images["root"]
  cfg = load_config("tiny").data
  cfg.image_size, cfg.crop, cfg.num_folds = SIZE, crop, 2
  rel = [os.path.relpath(p, root) for p in images["pngs"]]
  (root / f"train_{crop}.csv").write_text(
      "path,subject_id,label\n" + "".join(f"{r},{s},{i % 2}\n" for i, (r, s) in enumerate(
          zip(rel, images["subject_id"]))))
  cfg.manifest = str(root / f"train_{crop}.csv")
  train = manifest_lib.load(cfg)
  ours = np.concatenate([predict.read_image(str(p), cfg) for p in images["pngs"]])
  np.testing.assert_array_equal(ours, train.images[..., 0])
  if crop == "sector":  # The fan is found: text and ruler dots in the corners are blanked.
    assert ours[:, :3, :3].max() == 0
  (root / f"dcm_{crop}.csv").write_text("file,subject_id,label\ncine.dcm,A,0\nIM0001,B,1\n")
  cfg.manifest = str(root / f"dcm_{crop}.csv")
  train = dicom_lib.load(cfg)
  ours = np.concatenate([predict.read_image(str(root / f), cfg) for f in ("cine.dcm", "IM0001")])
  assert ours.shape == (31, SIZE, SIZE)
  np.testing.assert_array_equal(ours, train.images[..., 0])


def test_predict_folder_dicom_and_broken_file(model_dir, images, tmp_path):
  root = images["root"]
  model = export.load(model_dir)
  rows, errors = predict.predict_paths(model, [root], saliency_dir=tmp_path / "sal",
                                       batch_size=8)
  # The broken PNG is reported (one line) and every other image is still predicted.
  assert len(errors) == 1 and "broken.png" in errors[0] and "\n" not in errors[0]
  by_file = {}
  for r in rows:
    by_file.setdefault(os.path.relpath(r["path"], root), []).append(r)
  assert sorted(by_file) == sorted(["IM0001", "cine.dcm", "sim-0001/img0.jpg"] + [
      os.path.relpath(p, root) for p in images["pngs"]])  # notes.txt skipped, broken failed.
  assert [r["frame"] for r in by_file["cine.dcm"]] == list(range(30))
  assert len(rows) == 30 + 1 + 1 + 6  # 38 images = 4 full batches of 8 + one padded to 8.
  # Probabilities are the training code's forward pass on the training preprocessing.
  x = np.concatenate([predict.read_image(r_path, model.data_cfg)
                      for r_path in dict.fromkeys(r["path"] for r in rows)])
  np.testing.assert_allclose([r["prob"] for r in rows], _apply(model, x), rtol=1e-4, atol=1e-6)
  assert all(r["label"] == int(r["prob"] >= 0.5) and r["threshold"] == 0.5 for r in rows)
  assert {r["model"] for r in rows} == {"NASRL"} and rows[0]["architecture"] == str(ARCH)
  # One overlay per image, at the model's input size, named after the input file.
  sal = tmp_path / "sal"
  for ext in ("jpg", "png"):
    assert by_file[f"sim-0001/img0.{ext}"][0]["saliency"] == str(
        sal / "sim-0001" / f"img0_{ext}_saliency.png")
  assert by_file["cine.dcm"][7]["saliency"] == str(sal / "cine_f0007_saliency.png")
  assert by_file["IM0001"][0]["saliency"] == str(sal / "IM0001_saliency.png")
  pngs = sorted(sal.rglob("*.png"))
  assert len(pngs) == len(rows) == len({r["saliency"] for r in rows})
  for p in pngs[:5]:
    with Image.open(p) as im:
      assert (im.size, im.mode) == ((SIZE, SIZE), "RGB")


def test_manifest_adds_subject_rows_and_threshold(model_dir, images, tmp_path):
  root = images["root"]
  rel = [os.path.relpath(p, root) for p in images["pngs"]]
  csv_path = root / "subjects.csv"
  csv_path.write_text("path,subject_id\n" + "".join(
      f"{r},{s}\n" for r, s in zip(rel, images["subject_id"])) + "cine.dcm,cine\ngone.png,X\n")
  rows, errors = predict.predict_paths(model_dir, [], threshold=0.25, manifest=csv_path)
  assert errors == [f"{csv_path}: row 9, field 'path': 'gone.png' does not exist "
                    f"({root / 'gone.png'})"]
  image_rows = [r for r in rows if r["level"] == "image"]
  subject_rows = [r for r in rows if r["level"] == "subject"]
  assert len(image_rows) == 6 + 30
  assert [r["subject_id"] for r in subject_rows] == sorted(set(images["subject_id"]) | {"cine"})
  for s in subject_rows:
    probs = [r["prob"] for r in image_rows if r["subject_id"] == s["subject_id"]]
    assert s["n_images"] == len(probs)
    assert s["prob"] == pytest.approx(np.mean(probs))
    assert s["label"] == int(s["prob"] >= 0.25) and s["threshold"] == 0.25
  assert all(r["label"] == int(r["prob"] >= 0.25) for r in image_rows)
  out = tmp_path / "preds.csv"
  predict.write_csv(out, rows)
  with open(out, newline="") as f:
    read = list(csv.DictReader(f))
  assert tuple(read[0]) == predict.COLUMNS and len(read) == len(rows)
  assert float(read[-1]["prob"]) == pytest.approx(rows[-1]["prob"], abs=1e-6)


def test_bad_inputs(model_dir, images, tmp_path):
  png = str(images["pngs"][0])
  with pytest.raises(UserInputError, match=r"threshold=1.5: must be a probability in \[0, 1\]"):
    predict.predict_paths(model_dir, [png], threshold=1.5)
  with pytest.raises(UserInputError, match="no such model folder"):
    predict.predict_paths(tmp_path / "nope", [png])
  with pytest.raises(UserInputError, match="no input"):
    predict.predict_paths(model_dir, [])
  with pytest.raises(UserInputError, match="batch_size=0"):
    predict.predict_paths(model_dir, [png], batch_size=0)
  (tmp_path / "m.csv").write_text("path,patient\nx.png,1\n")
  with pytest.raises(UserInputError, match=r"m.csv: missing column\(s\) \['subject_id'\]"):
    predict.predict_paths(model_dir, [png], manifest=tmp_path / "m.csv")
  (tmp_path / "notes").mkdir()
  (tmp_path / "notes" / "a.txt").write_text("x")
  _, errors = predict.find_files([tmp_path / "missing.png", tmp_path / "notes"])
  assert errors[0] == f"{tmp_path / 'missing.png'}: no such file or folder"
  assert errors[1].endswith("folder holds no PNG/JPEG/BMP/TIFF/DICOM file")


def test_find_files(tmp_path):
  for name in ("b.PNG", "a.jpg", ".hidden.png", "notes.txt", "DICOMDIR", "sal/old_saliency.png",
               "sub/c.tif", "sub/IM0002"):
    (tmp_path / name).parent.mkdir(exist_ok=True)
    (tmp_path / name).write_bytes(b"x" * 200)
  shutil.copy(_shipped("examples_rgb_color.dcm"), tmp_path / "sub" / "IM0002")  # No extension.
  files, errors = predict.find_files(
      [tmp_path, tmp_path / "a.jpg", tmp_path / "notes.txt"], exclude_dirs=[tmp_path / "sal"])
  assert errors == []
  # Sorted walk; duplicates dropped; a file named explicitly is tried whatever its extension.
  assert [os.path.relpath(f, tmp_path) for f in files] == [
      "a.jpg", "b.PNG", "sub/IM0002", "sub/c.tif", "notes.txt"]
  assert predict.is_dicom(str(tmp_path / "sub" / "IM0002"))
  assert not predict.is_dicom(str(tmp_path / "a.jpg"))


def test_saliency_names_and_overlay():
  names = predict.saliency_names(["/d/s1/a.png", "/d/s2/a.png", "/d/s2/a.jpg", "/d/b.dcm"])
  assert names == {"/d/s1/a.png": "s1/a", "/d/s2/a.png": "s2/a_png", "/d/s2/a.jpg": "s2/a_jpg",
                   "/d/b.dcm": "b"}
  gray = np.full((4, 4), 100, np.uint8)
  cam = np.zeros((4, 4))
  cam[0, 0] = 1.0
  out = predict.overlay(gray, cam)
  assert out.shape == (4, 4, 3) and out.dtype == np.uint8
  np.testing.assert_array_equal(out[1:, 1:], 100)  # No saliency: the image unchanged.
  assert out[0, 0, 0] > out[0, 0, 2] + 50 and out[0, 0, 1] < 60  # Peak: jet's dark red on top.
  batch_shape = predict._batch_shape  # pylint: disable=protected-access
  assert [batch_shape(n, 32) for n in (1, 3, 8, 9, 32)] == [1, 4, 8, 16, 32]


def _cli(*args):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "nasrl_jax.predict", *map(str, args)], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=300)


def test_run_cli_exit_codes(model_dir, images, tmp_path):
  root = images["root"]
  out, err = io.StringIO(), io.StringIO()
  code = predict.run_cli(model_dir, str(tmp_path / "a.csv"), [str(root / "sim-0003")],
                         threshold=0.0, out=out, err=err)
  assert (code, err.getvalue()) == (0, "")
  assert out.getvalue() == (
      f"predicted 1 images from 1 files; 0 failed; wrote {tmp_path / 'a.csv'}\n")
  with open(tmp_path / "a.csv", newline="") as f:
    assert [(r["label"], r["threshold"]) for r in csv.DictReader(f)] == [("1", "0")]
  err = io.StringIO()
  assert predict.run_cli(model_dir, str(tmp_path / "b.csv"), [str(tmp_path / "empty")],
                         out=io.StringIO(), err=err) == 1  # Nothing found is not success.
  assert err.getvalue() == f"error: {tmp_path / 'empty'}: no such file or folder\n"
  for model, output in ((str(tmp_path / "missing"), str(tmp_path / "c.csv")),
                        (str(tmp_path), str(tmp_path / "c.csv")),  # Not a model folder.
                        (model_dir, str(tmp_path)), (None, str(tmp_path / "c.csv"))):
    err = io.StringIO()
    assert predict.run_cli(model, output, [str(root)], out=io.StringIO(), err=err) == 2
    assert err.getvalue().startswith("error: ") and err.getvalue().count("\n") == 1
  assert not (tmp_path / "c.csv").exists()  # Nothing written on a bad model or flag.


def test_command_line(model_dir, images, tmp_path):
  root = images["root"]
  out = tmp_path / "preds.csv"
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  res = subprocess.run(
      [sys.executable, "-m", "nasrl_jax.predict", f"--model={model_dir}", f"--output={out}",
       f"--saliency={tmp_path / 'sal'}", "--batch_size=16", str(root / "sim-0002"),
       str(root / "broken.png"), str(root / "IM0001")],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert res.returncode == 1, res.stderr
  err_lines = [l for l in res.stderr.splitlines() if l.startswith("error:")]
  assert len(err_lines) == 1 and "broken.png" in err_lines[0]
  assert res.stdout.strip().splitlines()[-1] == (
      f"predicted 3 images from 3 files; 1 failed; wrote {out}")
  with open(out, newline="") as f:
    rows = list(csv.DictReader(f))
  assert [os.path.basename(r["path"]) for r in rows] == ["img2.png", "img3.png", "IM0001"]
  assert all(os.path.isfile(r["saliency"]) for r in rows)
  assert "orbax" not in res.stderr.lower()  # Library INFO chatter is filtered.
  # A flag error is exit code 2 and one line, before anything is loaded.
  res = _cli("--batch_size=x")
  assert res.returncode == 2 and res.stderr.startswith("error: ") and res.stderr.count("\n") == 1
