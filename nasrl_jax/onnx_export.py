"""ONNX export of an exported model: the same network and weights for runtimes without JAX.

This module owns `model.onnx` in a model folder (`W/models/<name>/`) and what goes beside it:

* `to_onnx(model) -> onnx.ModelProto`: the child written op by op with the `onnx` package's own
  graph API (no converter package). Input `image` float32 [N, S, S, 1], gray levels 0..255 as
  preprocessing leaves them (x / 127.5 - 1 is inside the graph); output `probabilities` float32
  [N, classes], the softmax. Threshold and preprocessing are in `metadata_props` (`nasrl_jax.*`).
* `export_onnx(exported_or_dir, path=None) -> dict`: builds and checks the graph (`onnx.checker`,
  then onnxruntime against JAX on the test vectors), then writes `model.onnx`, `predict_onnx.py`
  (`write_predict_script`: a copy of `onnx_standalone.py`, numpy, Pillow and onnxruntime only)
  with its `test_vectors/`, and the `onnx` record of the folder's metadata.
* `load_session(model)`: onnxruntime session of the folder's `model.onnx` after `check_file`
  (parses, passes the checker, is the file the metadata records), for predict --backend=onnx.

Command line: `python -m nasrl_jax.export --onnx MODEL_DIR` (= `python -m nasrl_jax.onnx_export
MODEL_DIR`).

Layout: JAX runs NHWC with HWIO kernels, ONNX's Conv NCHW with OIHW weights. The graph transposes
its input once to NCHW; kernels are transposed when written; the VGG head transposes back to NHWC
before Flatten so that fc1's rows are in JAX's flatten order. Widths come from the weight shapes,
never from the spec. Each op kind is one small function; a new layer kind (a norm option) is one
entry in `_NORMS` or `_HEADS`, and weights no function consumed stop the export with their names.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import os
import sys
from typing import Callable, Optional, Sequence

import jax
import numpy as np
import onnx
from flax import nnx
from onnx import helper
from onnx import numpy_helper
from PIL import Image

import nasrl_jax
from nasrl_jax import checkpoint
from nasrl_jax import child as child_lib
from nasrl_jax import export
from nasrl_jax import io_utils
from nasrl_jax.data import preprocess
from nasrl_jax.errors import UserInputError

OPSET = 17  # ai.onnx opset of the graph: onnxruntime >= 1.13 (2022) and most runtimes run it.
# IR version 8 is opset 17's (onnx 1.12): make_model would stamp the installed onnx's newest IR,
# which runtimes older than that onnx refuse although every op here is theirs.
IR_VERSION = 8
FILE = "model.onnx"
SCRIPT = "predict_onnx.py"
VECTORS = "test_vectors"
INPUT, OUTPUT = "image", "probabilities"
FORMAT = "nasrl_jax.onnx/1"
# predict_onnx.py --self-test passes within this |probability| difference: conversion errors
# show as 1e-2 and more, float32 rounding of another CPU or onnxruntime build as about 1e-7.
SELF_TEST_TOLERANCE = 1e-4
_STANDALONE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "onnx_standalone.py")


class _Graph:
  """Nodes and initializers of the graph being written; node names are their output names."""

  def __init__(self, params: dict, stats: dict):
    self.nodes, self.inits = [], []
    self._weights, self._used = {"params": params, "batch_stats": stats}, set()

  def weight(self, *path) -> np.ndarray:
    """The array at ('params', 'convs', 0, 'kernel'), remembered as used."""
    node = self._weights
    for key in path:
      node = node[key]
    self._used.add(path)
    return np.asarray(node, np.float32)

  def unused(self) -> list[str]:
    leaves = jax.tree_util.tree_flatten_with_path(self._weights)[0]
    paths = [tuple(k.key for k in p) for p, _ in leaves]
    return ["/".join(map(str, p)) for p in paths if p not in self._used]

  def const(self, name: str, value) -> str:
    self.inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
    return name

  def op(self, op_type: str, inputs: Sequence[str], name: str, **attrs) -> str:
    self.nodes.append(helper.make_node(op_type, list(inputs), [name], name=name, **attrs))
    return name


def _conv(g: _Graph, x: str, i: int) -> str:
  kernel = g.weight("params", "convs", i, "kernel")  # HWIO.
  kh, kw = kernel.shape[:2]
  # XLA's SAME at stride 1: k - 1 pad rows, the odd one after (symmetric k // 2 for odd k).
  pads = [(kh - 1) // 2, (kw - 1) // 2, kh // 2, kw // 2]
  w = g.const(f"conv{i}.weight", kernel.transpose(3, 2, 0, 1))  # OIHW.
  b = g.const(f"conv{i}.bias", g.weight("params", "convs", i, "bias"))
  return g.op("Conv", [x, w, b], f"conv{i}", kernel_shape=[kh, kw], pads=pads,
              strides=[1, 1], dilations=[1, 1])


def _batch_norm(g: _Graph, x: str, i: int, module) -> str:
  """Inference batch norm with the running statistics, as `child.BatchNorm(train=False)`."""
  inputs = [g.const(f"bn{i}.scale", g.weight("params", "norms", i, "scale")),
            g.const(f"bn{i}.bias", g.weight("params", "norms", i, "bias")),
            g.const(f"bn{i}.mean", g.weight("batch_stats", "norms", i, "mean")),
            g.const(f"bn{i}.var", g.weight("batch_stats", "norms", i, "var"))]
  return g.op("BatchNormalization", [x] + inputs, f"bn{i}", epsilon=float(module.epsilon))


_NORMS = {"batch": _batch_norm, "none": None}  # model norm option -> op writer.


def _max_pool(g: _Graph, x: str, name: str) -> str:
  # 2x2, stride 2, VALID: an odd last row/column is dropped (floor), as in child._max_pool.
  return g.op("MaxPool", [x], name, kernel_shape=[2, 2], strides=[2, 2])


def _dense(g: _Graph, x: str, layer: str) -> str:
  w = g.const(f"{layer}.weight", g.weight("params", layer, "kernel"))  # [in, out]: x @ W + b.
  b = g.const(f"{layer}.bias", g.weight("params", layer, "bias"))
  return g.op("Gemm", [x, w, b], layer)


def _gap_head(g: _Graph, x: str) -> str:
  x = g.op("Flatten", [g.op("GlobalAveragePool", [x], "gap")], "gap_flat", axis=1)
  return _dense(g, x, "out")


def _vgg_head(g: _Graph, x: str) -> str:
  # JAX flattens NHWC: back to NHWC first, so fc1's rows meet the features they were trained on.
  x = g.op("Flatten", [g.op("Transpose", [x], "to_nhwc", perm=[0, 2, 3, 1])], "flat", axis=1)
  x = g.op("Relu", [_dense(g, x, "fc1")], "fc1_relu")  # Dropout is the identity at inference.
  x = g.op("Relu", [_dense(g, x, "fc2")], "fc2_relu")
  return _dense(g, x, "out")


_HEADS = {"gap": _gap_head, "vgg": _vgg_head}


def norm_kind(spec) -> str:
  """The spec's norm layer: its `norm` field where the spec has one, else from `batch_norm`."""
  kind = getattr(spec, "norm", None)
  return str(kind) if kind is not None else ("batch" if spec.batch_norm else "none")


def _layers(g: _Graph, model: export.Exported, x: str) -> str:
  """Conv blocks (conv, norm, ReLU; a 2x2 max-pool between blocks and after the last one)."""
  kind = norm_kind(model.spec)
  if kind not in _NORMS:
    raise UserInputError(f"{model.directory}: norm layer {kind!r} has no ONNX mapping "
                         f"(nasrl_jax.onnx_export writes {', '.join(sorted(_NORMS))})")
  net = nnx.merge(model.graphdef, model.params, model.batch_stats, copy=True)
  i = 0
  for bi, b in enumerate(model.arch.blocks):
    if bi:
      x = _max_pool(g, x, f"pool{bi}")
    for _ in range(b):
      x = _conv(g, x, i)
      if _NORMS[kind] is not None:
        x = _NORMS[kind](g, x, i, net.norms[i])
      x = g.op("Relu", [x], f"relu{i}")
      i += 1
  return _max_pool(g, x, f"pool{len(model.arch.blocks)}")


def to_onnx(model: export.Exported) -> onnx.ModelProto:
  """The exported model as an ONNX graph (see the module docstring), checked by onnx.checker.

  Raises:
    UserInputError: a head or norm layer without an ONNX mapping, or weights the graph leaves out.
  """
  spec = model.spec
  if spec.head not in _HEADS:
    raise UserInputError(f"{model.directory}: head {spec.head!r} has no ONNX mapping")
  g = _Graph(nnx.to_pure_dict(model.params), nnx.to_pure_dict(model.batch_stats))
  x = g.op("Div", [INPUT, g.const("gray_scale", 127.5)], "scaled")
  x = g.op("Sub", [x, g.const("one", 1.0)], "normalized")  # x / 127.5 - 1, as ChildNet.features.
  x = g.op("Transpose", [x], "to_nchw", perm=[0, 3, 1, 2])
  logits = _HEADS[spec.head](g, _layers(g, model, x))
  g.op("Softmax", [logits], OUTPUT, axis=1)
  unused = g.unused()
  if unused:
    raise UserInputError(f"{model.directory}: weights {', '.join(unused[:3])} have no place in "
                         "the ONNX graph (a layer kind nasrl_jax.onnx_export does not write)")
  graph = helper.make_graph(
      g.nodes, f"nasrl_jax_{model.name}",
      [helper.make_tensor_value_info(INPUT, onnx.TensorProto.FLOAT, ["N", *spec.input_shape])],
      [helper.make_tensor_value_info(OUTPUT, onnx.TensorProto.FLOAT, ["N", spec.num_classes])],
      initializer=g.inits)
  proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                            ir_version=IR_VERSION, producer_name="nasrl_jax",
                            producer_version=nasrl_jax.__version__,
                            doc_string=f"{model.name}: {model.arch}")
  helper.set_model_props(proto, _props(model))
  onnx.checker.check_model(proto, full_check=True)
  return proto


def _props(model: export.Exported) -> dict[str, str]:
  """metadata_props: what a runtime needs besides the graph (strings; JSON where structured)."""
  return {"nasrl_jax.format": FORMAT, "nasrl_jax.name": model.name,
          "nasrl_jax.architecture": str(model.arch),
          "nasrl_jax.threshold": repr(float(model.threshold)),
          "nasrl_jax.preprocessing": json.dumps(export.preprocessing(model.data_cfg)),
          "nasrl_jax.input": "float32 [N, S, S, 1]: gray levels 0..255 after grayscale (ITU-R "
                             "601-2 luma), crop and bilinear resize; x / 127.5 - 1 is inside",
          "nasrl_jax.output": "softmax over classes; P(fatty) = 1 - P(class 0); label = P(fatty) "
                              ">= threshold",
          # The graph computes in float32 whatever the training compute dtype was.
          "nasrl_jax.compute_dtype": "float32", "nasrl_jax.train_dtype": model.spec.dtype}


def _load(exported_or_dir) -> export.Exported:
  if isinstance(exported_or_dir, export.Exported):
    return exported_or_dir
  return export.load(exported_or_dir)


def _session(data: bytes):
  import onnxruntime as ort  # pylint: disable=g-import-not-at-top  # Only sessions need it.
  options = ort.SessionOptions()
  options.log_severity_level = 3  # Errors only: its warnings are not the user's business.
  return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def _fatty(probs: np.ndarray) -> np.ndarray:
  """P(fatty) from softmax rows: the classes after S0 together (1 - P(S0))."""
  return np.asarray(probs, np.float64)[:, 1:].sum(axis=1)


def _test_images(model: export.Exported) -> list[tuple[str, Image.Image]]:
  """Three deterministic images that exercise the preprocessing: RGB, 8-bit and 16-bit gray.

  Larger than the model input and not square (the resize runs); large enough for the crop box.
  """
  size, cfg = int(model.data_cfg.image_size), model.data_cfg
  top, left, bh, bw = (int(v) for v in cfg.crop_box) if cfg.crop == "box" else (0, 0, 0, 0)
  h, w = max(size + size // 2 + 3, top + bh), max(2 * size + 5, left + bw)
  i, j = np.mgrid[:h, :w]
  rgb = np.stack([i * 255 // h, j * 255 // w, (i * j // 7) % 256], -1).astype(np.uint8)
  gray = ((i * i + 3 * j * j) // 5 % 256).astype(np.uint8)
  deep = ((i * 977 + j * 331) % 65536).astype(np.uint16)
  return [("rgb.png", Image.fromarray(rgb, "RGB")), ("gray.png", Image.fromarray(gray, "L")),
          ("gray16.png", Image.fromarray(deep))]


def _test_vectors(model: export.Exported) -> list[dict]:
  """The test vectors: PNG bytes, the model input nasrl_jax makes of them, and P(fatty) by JAX."""
  from nasrl_jax.predict import gradcam  # pylint: disable=g-import-not-at-top  # Avoids a cycle.
  vectors = []
  for name, img in _test_images(model):
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    with Image.open(io.BytesIO(buf.getvalue())) as back:
      pixels = preprocess.preprocess(back, model.data_cfg)  # What nasrl_jax.predict reads.
    vectors.append({"name": name, "png": buf.getvalue(), "pixels": pixels})
  x = np.stack([v["pixels"] for v in vectors])[..., None]
  # The float32 model: a bfloat16-trained child's ONNX graph computes in float32.
  spec32 = dataclasses.replace(model.spec, dtype="float32")
  graphdef = child_lib.abstract_state(model.arch, spec32)[0]
  prob, _ = gradcam.make_predict_fn(graphdef, False)(model.params, model.batch_stats, x)
  for v, p in zip(vectors, np.asarray(prob, np.float64)):
    v["probability"] = float(p)
  return vectors


def _check_against_jax(data: bytes, vectors: list[dict]) -> float:
  """max |P(fatty) by onnxruntime - by JAX| on the test vectors; raises past the tolerance."""
  x = np.stack([v["pixels"] for v in vectors])[..., None].astype(np.float32)
  got = _fatty(_session(data).run([OUTPUT], {INPUT: x})[0])
  diff = float(np.max(np.abs(got - [v["probability"] for v in vectors])))
  if not diff <= SELF_TEST_TOLERANCE:
    raise RuntimeError(f"ONNX graph differs from the JAX model by {diff:.3g} in P(fatty) "
                       "(an onnx_export bug)")
  return diff


def write_predict_script(model_dir, vectors: Optional[list[dict]] = None) -> str:
  """Writes `predict_onnx.py` and `test_vectors/` (PNGs, model inputs, expected.json) to a folder.

  Args:
    model_dir: the model folder (or its `export.Exported`).
    vectors: test vectors from `_test_vectors` (computed from the model when None).

  Returns:
    The script's path.
  """
  model = _load(model_dir)
  vectors = _test_vectors(model) if vectors is None else vectors
  folder = os.path.join(model.directory, VECTORS)
  entries = []
  for v in vectors:
    stem = os.path.splitext(v["name"])[0]
    io_utils.atomic_write_bytes(os.path.join(folder, v["name"]), v["png"])
    buf = io.BytesIO()
    Image.fromarray(v["pixels"], "L").save(buf, format="PNG")
    io_utils.atomic_write_bytes(os.path.join(folder, f"{stem}_input.png"), buf.getvalue())
    entries.append({"image": v["name"], "input": f"{stem}_input.png",
                    "probability": v["probability"]})
  io_utils.atomic_write_json(os.path.join(folder, "expected.json"), {
      "computed_by": "nasrl_jax.predict (JAX, float32) at export", "model": FILE,
      "tolerance": SELF_TEST_TOLERANCE, "vectors": entries})
  with open(_STANDALONE, encoding="utf-8") as f:
    script = os.path.join(model.directory, SCRIPT)
    io_utils.atomic_write_text(script, f.read())
  return script


def export_onnx(exported_or_dir, path=None) -> dict:
  """Writes the ONNX graph of an exported model, checked against the JAX model.

  Args:
    exported_or_dir: the model folder or its `export.Exported`.
    path: where to write the file; None = `<folder>/model.onnx`, and then `predict_onnx.py`, the
      test vectors and the folder's metadata record are written too.

  Returns:
    The `onnx` record: file, opset, input and output (name, shape, dtype), sha256, the max
    |P(fatty)| difference to JAX on the test vectors.

  Raises:
    UserInputError: an unusable folder (no weights, bad record) or a layer without a mapping.
  """
  model = _load(exported_or_dir)
  proto = to_onnx(model)
  data = proto.SerializeToString()
  vectors = _test_vectors(model)
  diff = _check_against_jax(data, vectors)  # Before anything is written.
  in_folder = path is None
  path = os.path.join(model.directory, FILE) if in_folder else os.fspath(path)
  io_utils.atomic_write_bytes(path, data)
  shape = ["N", *model.spec.input_shape]
  record = {"file": FILE if in_folder else os.path.abspath(path), "opset": OPSET,
            "input": {"name": INPUT, "shape": shape, "dtype": "float32"},
            "output": {"name": OUTPUT, "shape": ["N", model.spec.num_classes], "dtype": "float32"},
            "sha256": hashlib.sha256(data).hexdigest(), "max_abs_diff_vs_jax": diff}
  if in_folder:
    write_predict_script(model, vectors)
    record["predict_script"] = SCRIPT
    checkpoint.update_meta(model.directory, {"onnx": record})
  return record


def check_file(model: export.Exported) -> bytes:
  """The bytes of the folder's `model.onnx` after checking that it is the exported one.

  Raises:
    UserInputError: one line naming the file and what is wrong (no such file, unreadable, fails
      the ONNX checker, not the file its metadata records: altered, or left from an earlier
      export), without the remedy.
  """
  path = os.path.join(model.directory, FILE)
  if not os.path.isfile(path):
    raise UserInputError(f"{path}: no such file")
  with open(path, "rb") as f:
    data = f.read()
  try:
    onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
  except Exception as e:  # pylint: disable=broad-except  # DecodeError, ValidationError ...
    first = (str(e).strip().splitlines() or [""])[0][:200]
    raise UserInputError(f"{path}: fails the ONNX checker ({type(e).__name__}: {first})") from None
  record = checkpoint.load_meta(model.directory).get("onnx") or {}  # As on disk now.
  if record.get("sha256") != hashlib.sha256(data).hexdigest():
    raise UserInputError(f"{path}: not the file its model's metadata records (sha256 differs or "
                         "no onnx record)")
  return data


def load_session(model: export.Exported):
  """onnxruntime session of the folder's `model.onnx` (`check_file`), for prediction.

  Raises:
    UserInputError: `check_file`'s line plus the command that writes the file again.
  """
  try:
    data = check_file(model)
  except UserInputError as e:
    raise UserInputError(f"{e}; write it with `python -m nasrl_jax.export --onnx "
                         f"{model.directory}`") from None
  return _session(data)


def predict_fn(model: export.Exported) -> Callable:
  """`fn(x uint8[B, S, S, 1]) -> (P(fatty) [B], None)` by onnxruntime (see `load_session`)."""
  session = load_session(model)
  return lambda x: (_fatty(session.run([OUTPUT], {INPUT: np.asarray(x, np.float32)})[0]), None)


class _Parser(argparse.ArgumentParser):

  def error(self, message):  # One line, exit code 2, as every nasrl_jax command.
    self.exit(2, f"error: {message} (see --help)\n")


def main(argv: Sequence[str], prog: str = "python -m nasrl_jax.onnx_export") -> int:
  """`python -m nasrl_jax.export --onnx MODEL_DIR` (or `... onnx_export MODEL_DIR`): 0 or 2."""
  parser = _Parser(prog=prog, description="Write model.onnx and predict_onnx.py into exported "
                   "model folders, checked against the JAX model.")
  parser.add_argument("--onnx", action="append", default=[], metavar="MODEL_DIR")
  parser.add_argument("dirs", nargs="*", metavar="MODEL_DIR")
  args = parser.parse_args(argv)
  dirs = args.onnx + args.dirs
  if not dirs:
    parser.error("give a model folder: --onnx MODEL_DIR")
  try:
    for d in dirs:
      model = export.load(d)
      if os.path.exists(os.path.join(model.directory, FILE)):
        try:
          check_file(model)
        except UserInputError as e:  # Say what is replaced, then replace it.
          sys.stderr.write(f"note: {e}; writing it again\n")
      rec = export_onnx(model)
      print(f"wrote {os.path.join(model.directory, FILE)} and {SCRIPT} (opset {rec['opset']}, "
            f"sha256 {rec['sha256'][:12]}, max |JAX - ONNX| {rec['max_abs_diff_vs_jax']:.1e})")
  except UserInputError as e:
    sys.stderr.write(f"error: {e}\n")
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
