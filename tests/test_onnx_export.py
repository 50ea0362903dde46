"""Tests for nasrl_jax.onnx_export: the ONNX graph computes what the JAX model computes, the files
beside it (record, predict_onnx.py, test vectors), predict --backend=onnx, one-line errors.

Models are randomly initialised children with every bias and batch-norm statistic moved off its
initial value (so the biases, BN scale/offset and running mean/var are all in the comparison),
small inputs and widths; JAX's probabilities are the reference (float32, CPU).
"""

import csv
import dataclasses
import hashlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import onnxruntime
import pytest
from flax import nnx
from PIL import Image
from pydicom.data import get_testdata_file

from conftest import ROOT, load_config
from nasrl_jax import checkpoint
from nasrl_jax import child
from nasrl_jax import export
from nasrl_jax import onnx_export
from nasrl_jax import predict
from nasrl_jax import space
from nasrl_jax.errors import UserInputError

# Kernels 1, 3, 5, 7 (SAME pads 0..3) in three blocks: 26 -> 13 -> 6 (an odd side: pools floor)
# -> 3, so the VGG head flattens a 3 x 3 map and a flatten in the wrong order shows.
ARCH = space.Architecture((1, 3, 5, 7, 3), (64, 128, 64, 256, 128), (1, 2, 2))
SIZE = 26
TOL = 1e-5
# name: (architecture, head, batch norm, input side, width multiplier).
CONFIGS = {"gap": (ARCH, "gap", False, SIZE, 0.125), "gap_bn": (ARCH, "gap", True, SIZE, 0.125),
           "vgg": (ARCH, "vgg", False, SIZE, 0.125), "vgg_bn": (ARCH, "vgg", True, SIZE, 0.125),
           # VGG19 itself, 64 -> 2 after five pools, at 1/16 width (4..32 filters, 256 units).
           "vgg19_vgg": (space.VGG19, "vgg", False, 64, 1 / 16),
           "vgg19_vgg_bn": (space.VGG19, "vgg", True, 64, 1 / 16)}
BLOCKED = ("jax", "jaxlib", "flax", "nasrl_jax", "onnx", "orbax")


def _moved(tree: dict, rng) -> dict:
  """Biases and means moved off 0, scales and variances off 1: every such leaf is tested."""
  def one(path, v):
    v, name = np.asarray(v, np.float32), str(path[-1].key)
    if name in ("bias", "mean"):
      return v + rng.normal(0.0, 0.2, v.shape).astype(np.float32)
    if name in ("scale", "var"):
      return v * rng.uniform(0.5, 2.0, v.shape).astype(np.float32)
    return v
  return jax.tree_util.tree_map_with_path(one, tree)


def _exported(arch, head, batch_norm, size, width, seed=0, crop="none",
              directory="/nowhere") -> export.Exported:
  spec = child.ChildSpec((size, size, 1), 2, head, 512, 0.5, batch_norm, width)
  graphdef, params, stats = child.init(arch, spec, seed)
  rng = np.random.default_rng(seed)
  for state in (params, stats):
    nnx.replace_by_pure_dict(state, _moved(nnx.to_pure_dict(state), rng))
  _calibrate(graphdef, params, stats, size)
  cfg = load_config("tiny").data
  cfg.image_size, cfg.crop, cfg.crop_box = size, crop, (10, 5, 60, 80)
  meta = export.metadata(arch, spec, cfg, name="NASRL", threshold=0.4, threshold_source="test")
  return export.Exported("NASRL", directory, arch, spec, graphdef, params, stats, meta, 0.4,
                         export.data_config(meta["preprocessing"]))


def _calibrate(graphdef, params, stats, size):
  """Shifts (and shrinks) the output layer so the fatty log-odds of images have mean 0, sd <= 1.

  Random BN statistics easily saturate the softmax, and a saturated probability hides any
  difference in the logits (dp = p (1 - p) dlogit). Never scaled up: that would amplify float32
  rounding beyond what the network itself has.
  """
  logits, _ = child.apply(graphdef, params, stats, jnp.asarray(_images(8, size, seed=99)),
                          train=False)
  d = np.asarray(logits[:, 1] - logits[:, 0], np.float64)
  shrink = max(d.std(), 1.0)
  out = nnx.to_pure_dict(params)["out"]
  kernel, bias = np.asarray(out["kernel"]) / shrink, np.asarray(out["bias"]) / shrink
  bias[1] -= d.mean() / shrink
  params["out"]["kernel"].set_value(jnp.asarray(kernel, jnp.float32))
  params["out"]["bias"].set_value(jnp.asarray(bias, jnp.float32))


def _save(folder, model: export.Exported) -> str:
  export.save(folder, model.params, model.batch_stats, model.metadata)
  return str(folder)


def _images(n, size, seed=0):
  """uint8 [n, size, size, 1]: noise around brightness levels from dark to bright."""
  rng = np.random.default_rng(seed)
  level = np.linspace(10, 245, n)[:, None, None, None]
  return np.clip(rng.normal(level, 40, (n, size, size, 1)), 0, 255).astype(np.uint8)


def _jax_softmax(model, x):
  logits, _ = child.apply(model.graphdef, model.params, model.batch_stats, jnp.asarray(x),
                          train=False)
  return np.asarray(jax.nn.softmax(logits), np.float64)


def _ort(proto_or_bytes, x):
  data = proto_or_bytes if isinstance(proto_or_bytes, bytes) else proto_or_bytes.SerializeToString()
  session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
  return session.run(None, {"image": np.asarray(x, np.float32)})[0].astype(np.float64)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_onnx_probabilities_equal_jax(config):
  arch, head, batch_norm, size, width = CONFIGS[config]
  model = _exported(arch, head, batch_norm, size, width)
  proto = onnx_export.to_onnx(model)
  assert [(o.domain, o.version) for o in proto.opset_import] == [("", onnx_export.OPSET)]
  assert proto.ir_version == onnx_export.IR_VERSION
  ops = {n.op_type for n in proto.graph.node}
  assert ("BatchNormalization" in ops) == batch_norm
  assert ("GlobalAveragePool" in ops) == (head == "gap")
  x = _images(8, size)
  want, got = _jax_softmax(model, x), _ort(proto, x)
  diff = np.abs(got - want).max()
  print(f"{config}: max |JAX - ONNX| = {diff:.2e}")
  assert diff <= TOL, diff
  # Something to compare: the probabilities vary between images and are not saturated.
  assert want[:, 1].std() > 1e-2 and 0.01 < want[:, 1].mean() < 0.99, want[:, 1]


def test_a_layout_mistake_would_show():
  """The comparison can fail: fc1's rows in ONNX's NCHW flatten order change the output."""
  model = _exported(*CONFIGS["vgg"])
  x = _images(8, SIZE)
  right = _jax_softmax(model, x)
  pure = nnx.to_pure_dict(model.params)
  c = pure["fc1"]["kernel"].shape[0] // 9  # 3 x 3 x C features.
  order = np.arange(9 * c).reshape(3, 3, c).transpose(2, 0, 1).reshape(-1)
  pure["fc1"]["kernel"] = np.asarray(pure["fc1"]["kernel"])[order]
  params = nnx.clone(model.params)
  nnx.replace_by_pure_dict(params, pure)
  wrong = _jax_softmax(dataclasses.replace(model, params=params), x)
  assert np.abs(wrong - right).max() > 100 * TOL


def test_unmapped_layers_are_one_line():
  model = _exported(*CONFIGS["gap_bn"])
  # A norm option this writer does not know (another `model.norm` value).
  group = types.SimpleNamespace(**dict(model.spec.to_json(), norm="group"))
  with pytest.raises(UserInputError, match=r"norm layer 'group' has no ONNX mapping \(.*batch"):
    onnx_export.to_onnx(dataclasses.replace(model, spec=group))
  # Weights nothing consumes: BN parameters under a spec without a norm layer.
  nobn = dataclasses.replace(model, spec=dataclasses.replace(model.spec, batch_norm=False))
  with pytest.raises(UserInputError, match=r"weights .*norms/0/\w+.* have no place"):
    onnx_export.to_onnx(nobn)
  assert onnx_export.norm_kind(group) == "group" and onnx_export.norm_kind(model.spec) == "batch"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  """Exported folders with model.onnx: gap + BN (crop none), vgg (crop box), gap (crop sector)."""
  root = tmp_path_factory.mktemp("onnx_models")
  out = {}
  for name, cfg, crop in (("plain", "gap_bn", "none"), ("box", "vgg", "box"),
                          ("sector", "gap", "sector")):
    model = _exported(*CONFIGS[cfg], seed=len(out), crop=crop)
    out[name] = _save(root / name, model)
    out[name + "_record"] = onnx_export.export_onnx(out[name])
  return out


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
  """Images in the modes and formats users bring, 100 x 90, all fitting the crop box."""
  root = tmp_path_factory.mktemp("pictures")
  i, j = np.mgrid[:100, :90]
  rgb = np.stack([i * 2, j * 2, (i * j) % 256], -1).astype(np.uint8)
  gray = Image.fromarray(rgb).convert("L")
  made = {"rgb.png": Image.fromarray(rgb), "rgba.png": Image.fromarray(rgb).convert("RGBA"),
          "gray.png": gray, "palette.png": Image.fromarray(rgb).convert("P"),
          "la.png": gray.convert("LA"), "gray16.png": Image.fromarray((i * 600 + j).astype(
              np.uint16)), "float.tif": Image.fromarray((i / 100.0).astype(np.float32)),
          "photo.jpg": Image.fromarray(rgb), "scan.bmp": gray}
  paths = []
  for name, img in made.items():
    img.save(root / name)
    paths.append(str(root / name))
  return paths


def test_export_writes_the_files_and_the_record(folders):
  folder, record = folders["plain"], folders["plain_record"]
  path = os.path.join(folder, "model.onnx")
  data = open(path, "rb").read()
  assert record == checkpoint.load_meta(folder)["onnx"] == export.load(folder).metadata["onnx"]
  assert record["file"] == "model.onnx" and record["opset"] == onnx_export.OPSET
  assert record["sha256"] == hashlib.sha256(data).hexdigest()
  assert record["input"] == {"name": "image", "shape": ["N", SIZE, SIZE, 1], "dtype": "float32"}
  assert record["output"] == {"name": "probabilities", "shape": ["N", 2], "dtype": "float32"}
  assert record["max_abs_diff_vs_jax"] <= TOL
  proto = onnx.load(path)
  onnx.checker.check_model(proto, full_check=True)
  props = {p.key: p.value for p in proto.metadata_props}
  assert float(props["nasrl_jax.threshold"]) == 0.4
  assert json.loads(props["nasrl_jax.preprocessing"]) == export.load(folder).metadata[
      "preprocessing"]
  vectors = json.load(open(os.path.join(folder, "test_vectors", "expected.json")))["vectors"]
  assert len(vectors) == 3 and all(os.path.isfile(os.path.join(folder, "test_vectors", v[k]))
                                   for v in vectors for k in ("image", "input"))
  # The same weights give the same bytes (the record's sha256 identifies the weights' graph).
  assert onnx_export.export_onnx(folder)["sha256"] == record["sha256"]


def test_update_meta_merges_and_keeps_the_weights(tmp_path):
  folder = _save(tmp_path / "m", _exported(*CONFIGS["gap"]))
  before = checkpoint.load_meta(folder)
  after = checkpoint.update_meta(folder, {"onnx": {"file": "x"}, "note": 1})
  assert after == dict(before, onnx={"file": "x"}, note=1) == checkpoint.load_meta(folder)
  assert export.load(folder).metadata["note"] == 1  # Arrays still pass their checksums.
  with pytest.raises(TypeError, match="not JSON-serializable"):
    checkpoint.update_meta(folder, {"bad": object()})
  assert checkpoint.load_meta(folder) == after


def _standalone(folder, *args, env_extra=None):
  """Runs predict_onnx.py with jax, flax, nasrl_jax, onnx and orbax made unimportable."""
  code = ("import runpy, sys\n"
          f"for m in {BLOCKED!r}: sys.modules[m] = None\n"
          f"sys.argv = ['predict_onnx.py'] + {list(map(str, args))!r}\n"
          "try:\n"
          f"  runpy.run_path({os.path.join(folder, 'predict_onnx.py')!r}, run_name='__main__')\n"
          "finally:\n"
          f"  loaded = [m for m in {BLOCKED!r} if sys.modules.get(m) is not None]\n"
          "  assert not loaded, loaded\n")
  return subprocess.run([sys.executable, "-c", code], cwd=str(folder), capture_output=True,
                        text=True, timeout=120, env=dict(os.environ, **(env_extra or {})))


def _script_module(folder):
  spec = importlib.util.spec_from_file_location("predict_onnx", os.path.join(folder,
                                                                             "predict_onnx.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("name", ["plain", "box"])
def test_standalone_script_predicts_what_nasrl_jax_predicts(folders, pictures, name):
  folder = folders[name]
  res = _standalone(folder, "--self-test")
  assert res.returncode == 0 and "self-test passed: 3 vectors" in res.stdout, res.stderr
  res = _standalone(folder, *pictures)
  assert res.returncode == 0, res.stderr
  rows = list(csv.reader(io.StringIO(res.stdout)))
  rows_jax, errors = predict.predict_paths(folder, pictures)
  assert not errors and [r[0] for r in rows] == [r["path"] for r in rows_jax]
  got, want = np.array([float(r[1]) for r in rows]), np.array([r["prob"] for r in rows_jax])
  np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
  # Its preprocessing gives nasrl_jax's pixels exactly, for every mode and format above.
  script = _script_module(folder)
  _, prep, threshold = script.load_model(os.path.join(folder, "model.onnx"))
  assert threshold == 0.4
  data_cfg = export.load(folder).data_cfg
  for path in pictures:
    np.testing.assert_array_equal(script.preprocess(path, prep),
                                  predict.read_image(path, data_cfg)[0], err_msg=path)


def test_standalone_script_refuses_in_one_line(folders, pictures, tmp_path):
  # A sector-crop model: prediction refused; the model part of the self-test still runs.
  res = _standalone(folders["sector"], pictures[0])
  assert res.returncode == 2 and res.stdout == "" and res.stderr.count("\n") == 1
  assert "'sector'" in res.stderr and "nasrl_jax.predict" in res.stderr
  res = _standalone(folders["sector"], "--self-test")
  assert res.returncode == 0 and "preprocessing not checked" in res.stdout, res.stderr
  # DICOM and a missing file: one line each, the rest predicted, exit 1.
  dicom = get_testdata_file("examples_rgb_color.dcm", download=False)
  res = _standalone(folders["plain"], dicom, pictures[0], tmp_path / "missing.png")
  assert res.returncode == 1 and res.stdout.startswith(pictures[0] + ","), res.stderr
  lines = res.stderr.splitlines()
  assert len(lines) == 2 and "DICOM input: use python -m nasrl_jax.predict" in lines[0]
  assert "no such file" in lines[1]
  # A self-test against altered expectations fails.
  folder = tmp_path / "altered"
  folder.mkdir()
  for name in ("model.onnx", "predict_onnx.py"):
    (folder / name).write_bytes(open(os.path.join(folders["plain"], name), "rb").read())
  (folder / "test_vectors").mkdir()
  for name in os.listdir(os.path.join(folders["plain"], "test_vectors")):
    (folder / "test_vectors" / name).write_bytes(
        open(os.path.join(folders["plain"], "test_vectors", name), "rb").read())
  expected = json.loads((folder / "test_vectors" / "expected.json").read_text())
  expected["vectors"][1]["probability"] += 1e-3
  (folder / "test_vectors" / "expected.json").write_text(json.dumps(expected))
  res = _standalone(folder, "--self-test")
  assert res.returncode == 1 and "FAIL gray.png: probability differs" in res.stdout


def test_wrong_input_shape(folders):
  session = onnxruntime.InferenceSession(os.path.join(folders["plain"], "model.onnx"),
                                         providers=["CPUExecutionProvider"])
  x = np.zeros((1, SIZE - 2, SIZE, 1), np.float32)
  with pytest.raises(Exception, match="(?i)invalid dimensions"):  # onnxruntime's own error.
    session.run(None, {"image": x})
  script = _script_module(folders["plain"])
  with pytest.raises(script.Refused, match=r"^input of shape \[1, 24, 26, 1\]: the model needs "
                     r"\['N', 26, 26, 1\] \(N images\)$"):
    script.probabilities(session, x)
  assert script.probabilities(session, x[:, :1].repeat(SIZE, 1)).shape == (1,)


def test_predict_backends_agree_in_process(folders, pictures):
  rows = {b: predict.predict_paths(folders["plain"], pictures, batch_size=4, backend=b)
          for b in ("jax", "onnx")}
  assert not rows["jax"][1] and not rows["onnx"][1]
  drop = lambda r: {k: v for k, v in r.items() if k not in ("prob", "label")}
  assert [drop(r) for r in rows["jax"][0]] == [drop(r) for r in rows["onnx"][0]]
  np.testing.assert_allclose([r["prob"] for r in rows["onnx"][0]],
                             [r["prob"] for r in rows["jax"][0]], atol=TOL, rtol=0)
  with pytest.raises(UserInputError, match="backend='torch': must be one of jax, onnx"):
    predict.predict_paths(folders["plain"], pictures, backend="torch")


def _predict_cli(*args):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "nasrl_jax.predict", *map(str, args)], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=300)


def test_predict_command_line_backends(folders, pictures, tmp_path):
  """The onnx backend through the real command line; the jax one (whose command line
  test_predict.py runs) and the flag error through `run_cli`, the command line's body."""
  tables = {}
  for backend in ("jax", "onnx"):
    out = tmp_path / f"{backend}.csv"
    if backend == "onnx":
      res = _predict_cli(f"--model={folders['box']}", f"--output={out}", f"--backend={backend}",
                         *pictures)
      assert res.returncode == 0, res.stderr
    else:
      assert predict.run_cli(folders["box"], str(out), pictures, backend=backend,
                             out=io.StringIO(), err=io.StringIO()) == 0
    with open(out, newline="") as f:
      tables[backend] = list(csv.DictReader(f))
  assert len(tables["jax"]) == len(pictures)
  for a, b in zip(tables["jax"], tables["onnx"]):
    assert abs(float(a["prob"]) - float(b["prob"])) <= TOL
    assert {k: v for k, v in a.items() if k not in ("prob", "label")} == \
        {k: v for k, v in b.items() if k not in ("prob", "label")}
  err = io.StringIO()
  code = predict.run_cli(folders["box"], str(tmp_path / "x.csv"), pictures, backend="onnx",
                         saliency=str(tmp_path / "sal"), out=io.StringIO(), err=err)
  assert code == 2 and err.getvalue().count("\n") == 1, err.getvalue()
  assert err.getvalue().startswith("error: --saliency needs --backend=jax")
  assert not (tmp_path / "x.csv").exists()


def _run_cli_onnx(folder, pictures, tmp_path):
  err = io.StringIO()
  code = predict.run_cli(folder, str(tmp_path / "p.csv"), pictures[:1], backend="onnx",
                         out=io.StringIO(), err=err)
  return code, err.getvalue()


def test_bad_onnx_files_are_one_line(folders, pictures, tmp_path, capsys):
  folder = _save(tmp_path / "m", _exported(*CONFIGS["gap"], seed=5))
  code, err = _run_cli_onnx(folder, pictures, tmp_path)  # Exported, never converted.
  assert code == 2 and err.count("\n") == 1 and "model.onnx: no such file" in err
  assert f"python -m nasrl_jax.export --onnx {folder}" in err
  onnx_path = os.path.join(folder, "model.onnx")
  good = open(os.path.join(folders["plain"], "model.onnx"), "rb").read()
  broken = onnx.load_from_string(good)
  broken.graph.initializer.pop()  # Parses, but a node input is now undefined.
  for data in (b"\x00garbage\xff" * 10, broken.SerializeToString()):
    with open(onnx_path, "wb") as f:
      f.write(data)
    code, err = _run_cli_onnx(folder, pictures, tmp_path)
    assert code == 2 and err.count("\n") == 1 and "fails the ONNX checker" in err, err
  with open(onnx_path, "wb") as f:  # Valid, but another model's graph.
    f.write(good)
  code, err = _run_cli_onnx(folder, pictures, tmp_path)
  assert code == 2 and "not the file its model's metadata records" in err, err
  assert not (tmp_path / "p.csv").exists()
  # The command rewrites it from the weights, saying what it replaces.
  capsys.readouterr()
  assert onnx_export.main(["--onnx", folder]) == 0
  err = capsys.readouterr().err
  assert err.startswith("note: ") and "not the file its model's metadata records" in err
  assert _run_cli_onnx(folder, pictures, tmp_path)[0] == 0


def test_export_command_line(folders, tmp_path):
  folder = _save(tmp_path / "m", _exported(*CONFIGS["gap_bn"], seed=7))
  with open(os.path.join(folder, "model.onnx"), "wb") as f:
    f.write(b"corrupt")
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  run = lambda *a: subprocess.run([sys.executable, "-m", "nasrl_jax.export", *map(str, a)],
                                  cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  res = run("--onnx", folder)
  assert res.returncode == 0, res.stderr
  assert res.stdout.startswith(f"wrote {folder}/model.onnx and predict_onnx.py (opset 17")
  notes = [l for l in res.stderr.splitlines() if l.startswith("note:")]
  assert len(notes) == 1 and "fails the ONNX checker" in notes[0] and "writing it again" in notes[0]
  assert checkpoint.load_meta(folder)["onnx"]["sha256"] == hashlib.sha256(
      open(os.path.join(folder, "model.onnx"), "rb").read()).hexdigest()


def test_folder_without_weights_and_bad_usage(tmp_path, capsys):
  folder = _save(tmp_path / "m", _exported(*CONFIGS["gap"]))
  os.rename(os.path.join(folder, "params"), os.path.join(folder, "moved"))
  with pytest.raises(UserInputError, match=r"not a nasrl_jax model folder \(no params item"):
    onnx_export.export_onnx(folder)
  assert onnx_export.main(["--onnx", folder]) == 2
  out = capsys.readouterr()
  assert out.out == "" and out.err.count("\n") == 1 and "(no params item" in out.err
  assert not os.path.exists(os.path.join(folder, "model.onnx"))
  with pytest.raises(SystemExit) as exit_info:
    onnx_export.main([], prog="python -m nasrl_jax.export")
  assert exit_info.value.code == 2 and capsys.readouterr().err == (
      "error: give a model folder: --onnx MODEL_DIR (see --help)\n")


def test_export_to_another_path_leaves_the_folder_alone(tmp_path):
  model = _exported(*CONFIGS["vgg_bn"], directory=str(tmp_path / "nothing_here"))
  record = onnx_export.export_onnx(model, tmp_path / "copy.onnx")
  assert record["file"] == str(tmp_path / "copy.onnx") and record["opset"] == onnx_export.OPSET
  assert record["sha256"] == hashlib.sha256((tmp_path / "copy.onnx").read_bytes()).hexdigest()
  assert sorted(os.listdir(tmp_path)) == ["copy.onnx"]
