"""Runs NASRL for fatty-liver detection: search, random-search baseline, 10-fold CV, report.

  python launch.py --config=configs/fatty_liver.py:quick --workdir=runs/quick

Rerunning the same command with the same --workdir resumes where it stopped.
"""

import shlex
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from nasrl_jax import pipeline
from nasrl_jax.errors import UserInputError

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (e.g. configs/fatty_liver.py:quick).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder; rerun with it to resume.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.info("JAX devices: %s", jax.devices())
  command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
  try:
    pipeline.run(_CONFIG.value, _WORKDIR.value, command=command)
  except UserInputError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
