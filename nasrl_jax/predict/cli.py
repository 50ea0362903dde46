"""The prediction command line: flags, the summary line, exit codes (0 / 1 / 2).

`python -m nasrl_jax.predict --model=W/models/NASRL --output=preds.csv PATH...` (see the package
docstring). Bad flags and an unusable model exit with code 2 and one `error:` line before any
image is read or any file written; files that cannot be read are listed and give code 1.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Optional, Sequence

from nasrl_jax.errors import UserInputError


def _define_flags():
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("model", None, "Exported model folder, e.g. W/models/NASRL.")
  flags.DEFINE_string("output", None, "CSV file to write (replaced atomically).")
  flags.DEFINE_float("threshold", None, "Label = prob >= threshold (default: the model's).")
  flags.DEFINE_string("manifest", None, "Optional CSV with path,subject_id columns (paths "
                      "relative to its folder): adds per-subject rows.")
  flags.DEFINE_string("saliency", None, "Optional folder for Grad-CAM overlay PNGs.")
  flags.DEFINE_integer("batch_size", 32, "Images per model call.")
  flags.DEFINE_enum("backend", "jax", ["jax", "onnx"], "jax: the exported weights; onnx: the "
                    "folder's model.onnx by onnxruntime (python -m nasrl_jax.export --onnx DIR).")
  return flags.FLAGS


def _parse_flags(argv):
  """absl's parser, but a bad flag exits with code 2 (the documented code for bad flags/model)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.stderr.write(f"error: {' '.join(str(e).split())} (see --helpshort)\n")
    sys.exit(2)


def run_cli(model: Optional[str], output: Optional[str], paths: Sequence[str], *,
            threshold: Optional[float] = None, manifest: Optional[str] = None,
            saliency: Optional[str] = None, batch_size: int = 32, backend: str = "jax",
            out=None, err=None) -> int:
  """The command line's work after flag parsing: predict, write the CSV, report.

  Args:
    model: exported model folder.
    output: CSV file to write.
    paths: files and folders.
    threshold: see `predict_paths`.
    manifest: see `predict_paths`.
    saliency: see `predict_paths` (saliency_dir).
    batch_size: see `predict_paths`.
    backend: see `predict_paths`.
    out: stream for the summary line (default sys.stdout).
    err: stream for error lines (default sys.stderr).

  Returns:
    The exit code: 0 all predicted, 1 some file failed or nothing found, 2 bad flags or model.
  """
  from nasrl_jax import predict  # pylint: disable=g-import-not-at-top  # The package imports cli.
  out = sys.stdout if out is None else out
  err = sys.stderr if err is None else err
  try:
    if not model:
      raise UserInputError("--model is required (an exported model folder, e.g. W/models/NASRL)")
    if not output:
      raise UserInputError("--output is required (the CSV file to write)")
    if os.path.isdir(output):
      raise UserInputError(f"--output={output} is a folder; give a CSV file name")
    rows, errors = predict.predict_paths(model, paths, threshold=threshold,
                                         saliency_dir=saliency or None, manifest=manifest or None,
                                         batch_size=batch_size, backend=backend)
  except UserInputError as e:
    err.write(f"error: {e}\n")
    return 2
  predict.write_csv(output, rows)
  n_images = sum(r["level"] == "image" for r in rows)
  n_files = len({r["path"] for r in rows if r["level"] == "image"})
  n_subjects = sum(r["level"] == "subject" for r in rows)
  for e in errors:
    err.write(f"error: {e}\n")
  err.flush()
  subjects = f", {n_subjects} subjects" if manifest else ""
  out.write(f"predicted {n_images} images from {n_files} files{subjects}; {len(errors)} failed; "
            f"wrote {output}\n")
  out.flush()
  return 0 if n_images > 0 and not errors else 1


class _OwnInfoOnly(logging.Filter):
  """Keeps everyone's warnings but only nasrl_jax's INFO lines (Orbax logs dozens per load)."""

  def filter(self, record):
    return record.levelno >= logging.WARNING or f"{os.sep}nasrl_jax{os.sep}" in record.pathname


def main(argv: Sequence[str]) -> int:
  """absl entry point: flags -> `run_cli`."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  for handler in logging.getLogger().handlers + logging.getLogger("absl").handlers:
    handler.addFilter(_OwnInfoOnly())
  return run_cli(f.model, f.output, list(argv[1:]), threshold=f.threshold, manifest=f.manifest,
                 saliency=f.saliency, batch_size=f.batch_size, backend=f.backend)


def run() -> None:
  """Defines the flags and runs `main` under absl (what `python -m nasrl_jax.predict` does)."""
  from absl import app  # pylint: disable=g-import-not-at-top
  _define_flags()
  app.run(main, flags_parser=_parse_flags)
