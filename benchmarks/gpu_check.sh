#!/usr/bin/env bash
# The paper-scale speed check on a lent H100/H200, in about 6 minutes (each stage has a timeout).
#
# Here, once:   bash benchmarks/fetch_wheels.sh          # -> .whl/ (git-ignored)
# On the GPU:   run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=480)
#
# The GPU image has jax (CUDA), flax, optax, orbax, absl and chex but not ml-collections, tqdm or
# scikit-learn (nor this package): they are installed from the carried .whl/ into /tmp/site.
# Stages (224 px, width 1.0, the default config's child setup, batch 32), most important first:
#   1 child_training bf16: VGG19, smallest, largest  -> MFU (target >= 40 %)
#   2 inference bf16: VGG19 and the found-like model  -> batch-1 FPS (target >= 1,000)
#   3 search_throughput bf16, 5 epochs, random pixels -> compile share (<= 10 %), cache, AOT,
#                                                        and the 2-GPU-hour projection
#   4 child_training f32: VGG19                       -> f32 step and MFU for comparison
# Then benchmarks/summary.py prints one table against the targets. JSONs and logs go to $OUT when
# set (the run tool brings them back), else to benchmarks/results/gpu/.
#
# DRY_RUN=1 bash benchmarks/gpu_check.sh   runs the same stages at 32 px, width 1/8 and a few
# steps (a CPU check of the script; results in /tmp/gpu_check_dry unless $OUT is set).
set -uo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
if [ "${DRY_RUN:-0}" = 1 ]; then
  RES="${OUT:-/tmp/gpu_check_dry}"
  PAPER=(--size=32 --width=0.125)
  STEPS=3
else
  RES="${OUT:-benchmarks/results/gpu}"
  PAPER=(--size=224 --width=1.0)
  STEPS=15
fi
mkdir -p "$RES"

echo "== setup"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! python3 -c "import ml_collections, tqdm, sklearn" 2>/dev/null; then
  if ! ls .whl/*.whl >/dev/null 2>&1; then
    echo "no wheels in .whl/: run 'bash benchmarks/fetch_wheels.sh' here and carry .whl" >&2
    exit 2
  fi
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl || exit 2
  export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
# Benchmarks use their own cache settings; keep any outer setting from changing them.
unset JAX_COMPILATION_CACHE_DIR
nvidia-smi || true
python3 -c "import jax, flax, optax, ml_collections, tqdm, sklearn; print('jax', jax.__version__, \
'flax', flax.__version__, jax.devices())" || exit 2

declare -A RC
stage() {  # stage NAME TIMEOUT_S CMD... : runs with a timeout (the whole process group), logs.
  local name=$1 limit=$2
  shift 2
  echo
  echo "== $name (timeout ${limit}s, at $(( $(date +%s) - T0 ))s)"
  timeout -k 10 "$limit" "$@" 2>&1 | tee "$RES/$name.log"
  RC[$name]=${PIPESTATUS[0]}
  [ "${RC[$name]}" = 124 ] && echo "!! $name timed out after ${limit}s (finished rows are kept)"
}

stage child_training_bf16 110 python3 benchmarks/child_training.py "${PAPER[@]}" --dtype=bfloat16 \
  --archs=vgg19,smallest,largest --steps=$STEPS --max_seconds_per_arch=8 \
  --name=child_training_bf16 --results_dir="$RES"
stage inference_bf16 50 python3 benchmarks/inference.py "${PAPER[@]}" --dtype=bfloat16 \
  --archs=vgg19,found --iters=$(( STEPS * 13 )) --batch=64 --name=inference_bf16 \
  --results_dir="$RES"
stage search_throughput_paper 165 python3 benchmarks/search_throughput.py --config=paper \
  "${PAPER[@]}" --data=random --dtype=bfloat16 --epochs=5 --steps=1 --children=2 \
  --repeat_children=2 --aot_children=3 --aot_workers=2 --budget_seconds=150 \
  --name=search_throughput_paper --results_dir="$RES"
stage child_training_f32 55 python3 benchmarks/child_training.py "${PAPER[@]}" --dtype=float32 \
  --archs=vgg19 --steps=$STEPS --max_seconds_per_arch=6 --name=child_training_f32 \
  --results_dir="$RES"

echo
echo "== summary ($(( $(date +%s) - T0 ))s in all; stage exit codes:$(for k in "${!RC[@]}"; do
  printf ' %s=%s' "$k" "${RC[$k]}"; done))"
python3 benchmarks/summary.py --results_dir="$RES" --children=200 2>&1 | tee "$RES/summary.log"
