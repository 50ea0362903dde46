#!/usr/bin/env bash
# Downloads, here, the wheels that a lent GPU machine lacks into .whl/ (git-ignored), for
# benchmarks/gpu_check.sh to install there with no network:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
#
#   bash benchmarks/fetch_wheels.sh              # what the benchmarks import (the default)
#   bash benchmarks/fetch_wheels.sh --pipeline   # + what launch.py's whole pipeline imports
#
# The GPU image has jax (CUDA), flax, optax, orbax-checkpoint, chex, absl and their dependencies
# (numpy, scipy, protobuf, PyYAML, etils, ...), but not:
#   ml-collections        configs/fatty_liver.py                       (all benchmarks)
#   tqdm                  nasrl_jax/search.py's progress line          (search_throughput)
#   tensorboardX          nasrl_jax/logs.py: a search's Ledger writes TensorBoard events
#                                                                      (search_throughput)
#   scikit-learn (+ joblib, threadpoolctl, narwhals, cloudpickle)
#                         train.auroc (every child's val_auroc), data/folds.py via
#                         nasrl_jax/evaluate.py (inference: FPS comes from
#                         evaluate.inference_speed)
# --pipeline adds Pillow (data sources, simulator: needed by --data=synthetic, reward_noise and
# balance_modes), matplotlib and its dependencies (report.py) and pydicom (dicom source).
# tensorflow-datasets is only needed by data/tfds_builder.py and is not fetched. Versions are
# pinned to the ones installed here (tested), else the newest.
# Target: CPython 3.12, manylinux x86_64 (the GPU image); --no-deps, binary wheels only.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(ml-collections tqdm tensorboardX scikit-learn joblib threadpoolctl narwhals cloudpickle)
case "${1:-}" in
  "") ;;
  --pipeline) pkgs+=(pillow matplotlib contourpy cycler fonttools kiwisolver pyparsing
                     python-dateutil six packaging pydicom) ;;
  *) echo "usage: bash benchmarks/fetch_wheels.sh [--pipeline]" >&2; exit 2 ;;
esac

# name==version for every package installed here, so the GPU runs what the tests ran.
mapfile -t specs < <(python3 - "${pkgs[@]}" <<'EOF'
import importlib.metadata as md
import sys
for name in sys.argv[1:]:
  try:
    print(f"{name}=={md.version(name)}")
  except md.PackageNotFoundError:
    print(name)
EOF
)

mkdir -p .whl
python3 -m pip download --quiet --no-deps --only-binary=:all: --dest .whl \
  --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any \
  "${specs[@]}"
echo "wheels in .whl/ (carry it: run(..., carry=['.whl'])):"
ls -1 .whl
du -sh .whl
