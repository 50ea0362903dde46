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
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 for a multi-host search (the "
    "coordinator binds to this address).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 1, "Processes of a multi-host search.")
_PROCESS_ID = flags.DEFINE_integer("process_id", 0, "This process's index (0 writes outputs).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _NUM_PROCESSES.value > 1:
    if not _COORDINATOR.value:
      print("error: --num_processes > 1 needs --coordinator_address=host:port", file=sys.stderr)
      sys.exit(2)
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value,
                               coordinator_bind_address=_COORDINATOR.value)
  logging.info("JAX devices: %s (process %d of %d)", jax.devices(), jax.process_index(),
               jax.process_count())
  command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
  try:
    pipeline.run(_CONFIG.value, _WORKDIR.value, command=command)
  except UserInputError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
