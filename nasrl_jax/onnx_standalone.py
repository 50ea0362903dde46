#!/usr/bin/env python3
"""P(fatty liver) per ultrasound image by the model.onnx beside this file, without JAX.

Needs only numpy, Pillow and onnxruntime; imports neither JAX nor nasrl_jax. nasrl_jax writes it
into an exported model folder as predict_onnx.py (`python -m nasrl_jax.export --onnx MODEL_DIR`).

  python predict_onnx.py IMAGE...       one `path,probability` line per image (CSV quoting)
  python predict_onnx.py --self-test    checks test_vectors/ (exit 0 passed, 1 failed)
  --model=FILE                          another model.onnx written by nasrl_jax

probability = P(fatty) = 1 - P(class 0), the model's softmax; the decision threshold the model
was exported with is in its metadata (`nasrl_jax.threshold`): label = probability >= threshold.

Preprocessing is nasrl_jax/data/preprocess.py's for PNG/JPEG/BMP/TIFF with crop "none" or "box":
the header checks (format, max_pixels), the first frame, grayscale (Pillow's ITU-R 601-2 luma;
16-bit and float images scaled by their type's range), the crop box, Pillow's bilinear resize to
S x S. A model trained with crop "sector" (the automatic fan mask) or a DICOM file is refused with
one line: use `python -m nasrl_jax.predict` for those. The same Pillow version as the export
gives the same pixels; --self-test checks that too.

Exit codes: 0 all predicted; 1 some image could not be read (one line each on stderr) or the
self-test failed; 2 bad usage or a model this script cannot serve.
"""

import argparse
import csv
import json
import os
import sys

import numpy as np
import onnxruntime
from PIL import Image

FORMATS = ("PNG", "JPEG", "MPO", "BMP", "TIFF")  # Pillow's names for what nasrl_jax reads.
_8BIT_MODES = ("1", "L", "P", "LA", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "HSV")
_HERE = os.path.dirname(os.path.abspath(__file__))


class Refused(Exception):
  """One line for the user: a file or model this script does not handle."""


def load_model(path):
  """(onnxruntime session, preprocessing record, threshold) of a nasrl_jax model.onnx."""
  options = onnxruntime.SessionOptions()
  options.log_severity_level = 3
  try:
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
  except Exception as e:  # pylint: disable=broad-except  # onnxruntime's Fail, NoSuchFile ...
    raise Refused(f"{path}: not a loadable ONNX model ({' '.join(str(e).split())[:200]})")
  props = session.get_modelmeta().custom_metadata_map
  if "nasrl_jax.preprocessing" not in props:
    raise Refused(f"{path}: not a model written by nasrl_jax (no nasrl_jax.preprocessing)")
  return session, json.loads(props["nasrl_jax.preprocessing"]), float(props["nasrl_jax.threshold"])


def _array_to_uint8(arr):
  """nasrl_jax's scaling: integer types by their full range, floats as [0, 1] or [0, 255]."""
  if arr.dtype == np.uint8:
    return arr
  if arr.dtype == np.bool_:
    return arr.astype(np.uint8) * 255
  if np.issubdtype(arr.dtype, np.integer):
    info = np.iinfo(arr.dtype)
    lo = min(info.min, 0)
    scaled = (arr.astype(np.float64) - lo) * (255.0 / (info.max - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
  a = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
  if a.size and a.max() <= 1.0:
    a = a * 255.0
  return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def to_grayscale(img):
  """uint8[H, W] of a PIL image, as nasrl_jax's preprocess.to_grayscale."""
  if img.mode in _8BIT_MODES:
    return np.asarray(img.convert("L"), dtype=np.uint8)
  if img.mode not in ("I", "F") and not img.mode.startswith("I;16"):
    raise Refused(f"image mode {img.mode!r} cannot be converted to grayscale")
  arr = np.asarray(img)
  if img.mode == "I" and arr.size and arr.min() >= 0 and arr.max() <= 65535:
    arr = arr.astype(np.uint16)  # How Pillow opens most 16-bit PNG/TIFF files.
  return np.ascontiguousarray(_array_to_uint8(arr))


def check_supported(prep):
  """Refuses a model whose preprocessing this script does not reproduce (the sector crop)."""
  if prep["crop"] not in ("none", "box"):
    raise Refused(f"this model crops with {prep['crop']!r}, which only nasrl_jax reproduces: use "
                  "python -m nasrl_jax.predict")


def preprocess(path, prep):
  """uint8[S, S]: the model input nasrl_jax makes of an image file."""
  check_supported(prep)
  if not os.path.isfile(path):
    raise Refused(f"{path}: no such file")
  with open(path, "rb") as f:
    f.seek(128)
    if path.lower().endswith((".dcm", ".dicom")) or f.read(4) == b"DICM":
      raise Refused(f"{path}: DICOM input: use python -m nasrl_jax.predict")
  try:
    with Image.open(path) as probe:
      fmt, (w, h) = probe.format, probe.size
      if fmt not in FORMATS:
        raise Refused(f"{path}: {fmt} image, not one of {', '.join(FORMATS)}")
      if w * h > int(prep.get("max_pixels", 60_000_000)):
        raise Refused(f"{path}: {w}x{h} pixels, over max_pixels (decompression-bomb guard)")
      probe.verify()
    with Image.open(path) as img:
      img.load()
      gray = to_grayscale(img)
  except Refused:
    raise
  except Exception as e:  # pylint: disable=broad-except  # Pillow raises many types on bad files.
    raise Refused(f"{path}: corrupt or not an image ({type(e).__name__}: "
                  f"{' '.join(str(e).split())[:200]})")
  if prep["crop"] == "box":
    top, left, bh, bw = (int(v) for v in prep["crop_box"])
    if top + bh > h or left + bw > w:
      raise Refused(f"{path}: crop_box {prep['crop_box']} does not fit the {h}x{w} image")
    gray = gray[top:top + bh, left:left + bw]
  size = int(prep["image_size"])
  if gray.shape != (size, size):
    gray = np.asarray(Image.fromarray(np.ascontiguousarray(gray), "L").resize(
        (size, size), resample=Image.Resampling.BILINEAR), np.uint8)
  return gray


def probabilities(session, x):
  """P(fatty) [N] of model inputs x [N, S, S, 1] (gray levels 0..255).

  The shape is checked here because onnxruntime's own error for a wrong one is a long
  INVALID_ARGUMENT message ("Got invalid dimensions for input: image for the following indices
  ..."); this is one line naming the shape the model needs.
  """
  x = np.asarray(x, np.float32)
  need = session.get_inputs()[0].shape  # ['N', S, S, 1]
  if x.ndim != len(need) or any(isinstance(n, int) and n != d for n, d in zip(need, x.shape)):
    raise Refused(f"input of shape {list(x.shape)}: the model needs {need} (N images)")
  probs = session.run(None, {session.get_inputs()[0].name: x})[0]
  return probs[:, 1:].astype(np.float64).sum(axis=1)  # = 1 - P(class 0).


def self_test(session, prep, folder):
  """Checks the model (and, for crop none/box, the preprocessing) on the test vectors: 0 or 1."""
  if not os.path.isfile(os.path.join(folder, "expected.json")):
    raise Refused(f"{folder}: no expected.json (the test vectors written with the model)")
  with open(os.path.join(folder, "expected.json"), encoding="utf-8") as f:
    expected = json.load(f)
  failed, worst, checked = 0, 0.0, prep["crop"] in ("none", "box")
  if not checked:
    print(f"note: preprocessing not checked (crop {prep['crop']!r} is nasrl_jax.predict's)")
  for v in expected["vectors"]:
    with Image.open(os.path.join(folder, v["input"])) as img:
      pixels = np.asarray(img.convert("L"), np.uint8)
    if checked and not np.array_equal(preprocess(os.path.join(folder, v["image"]), prep), pixels):
      print(f"FAIL {v['image']}: preprocessing differs from nasrl_jax's (Pillow version?)")
      failed += 1
    diff = abs(float(probabilities(session, pixels[None, ..., None])[0]) - v["probability"])
    worst = max(worst, diff)
    if not diff <= expected["tolerance"]:
      print(f"FAIL {v['image']}: probability differs from JAX's by {diff:.2e}")
      failed += 1
  print(f"self-test {'failed' if failed else 'passed'}: {len(expected['vectors'])} vectors, "
        f"max |ONNX - JAX| = {worst:.2e} (tolerance {expected['tolerance']:g})")
  return 1 if failed else 0


class _Parser(argparse.ArgumentParser):

  def error(self, message):  # One line and exit code 2, as nasrl_jax's commands.
    self.exit(2, f"error: {message} (see --help)\n")


def main(argv):
  parser = _Parser(description=__doc__.splitlines()[0])
  parser.add_argument("images", nargs="*", metavar="IMAGE")
  parser.add_argument("--self-test", action="store_true", help="check test_vectors/")
  parser.add_argument("--model", default=os.path.join(_HERE, "model.onnx"))
  args = parser.parse_args(argv)
  if not args.images and not args.self_test:
    parser.error("give IMAGE files or --self-test")
  try:
    session, prep, _ = load_model(args.model)
    if args.self_test:
      return self_test(session, prep, os.path.join(os.path.dirname(args.model), "test_vectors"))
    check_supported(prep)
  except Refused as e:
    sys.stderr.write(f"error: {e}\n")
    return 2
  out, failed = csv.writer(sys.stdout, lineterminator="\n"), 0
  for path in args.images:
    try:
      p = probabilities(session, preprocess(path, prep)[None, ..., None])[0]
    except (Refused, OSError) as e:
      sys.stderr.write(f"error: {e}\n")
      failed += 1
      continue
    out.writerow([path, f"{p:.6f}"])
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
