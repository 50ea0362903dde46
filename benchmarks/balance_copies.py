"""The paper's rot90 balancing vs unrotated copies: VGG19 10-fold CV on the simulator.

  python benchmarks/balance_copies.py [--variant=quick] [--arch=vgg19]

Every rotated training copy is a minority-class image, while val/test scans are upright, so the
fan's orientation can leak the label (BUILD_NOTES.md). Prints image-level accuracy, sensitivity,
specificity and AUROC (mean over folds) for config.data.balance_copies = rot90 and repeat, and
writes benchmarks/results/balance_copies.json.
"""

import argparse
import datetime
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top

from nasrl_jax import data, evaluate, pipeline  # pylint: disable=g-import-not-at-top
from nasrl_jax import space as space_lib  # pylint: disable=g-import-not-at-top
from nasrl_jax.data import folds as folds_lib  # pylint: disable=g-import-not-at-top
from tests.conftest import load_config  # pylint: disable=g-import-not-at-top


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--variant", default="quick")
  args = ap.parse_args()
  rows = []
  for mode in ("rot90", "repeat"):
    c = load_config(args.variant)
    c.data.balance_copies = mode
    pipeline.setup_runtime(c)
    ds = data.load(c.data)
    folds = folds_lib.make_folds(ds.subject_id, ds.label, c.data.num_folds, c.seed)
    cv = evaluate.cross_validate(space_lib.VGG19, ds, folds, c)
    mean = lambda k: float(np.nanmean([f["image"][k] for f in cv["folds"]]))
    rows.append({"balance_copies": mode, **{k: mean(k) for k in
                                            ("accuracy", "sensitivity", "specificity", "auroc")}})
  out = {"date": datetime.date.today().isoformat(), "command": "python " + " ".join(sys.argv),
         "device": evaluate.describe_device(), "rows": rows}
  os.makedirs(os.path.join(os.path.dirname(__file__), "results"), exist_ok=True)
  with open(os.path.join(os.path.dirname(__file__), "results", "balance_copies.json"), "w") as f:
    json.dump(out, f, indent=2)
  print(f"{'balance_copies':15s} {'acc':>6s} {'sens':>6s} {'spec':>6s} {'auroc':>6s}")
  for r in rows:
    print(f"{r['balance_copies']:15s} {r['accuracy']:6.3f} {r['sensitivity']:6.3f} "
          f"{r['specificity']:6.3f} {r['auroc']:6.3f}")


if __name__ == "__main__":
  main()
