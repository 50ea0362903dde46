#!/usr/bin/env bash
# The paper-scale speed check on a lent H100/H200, in about 6 minutes (each stage has a timeout).
#
# Here, once:   bash benchmarks/fetch_wheels.sh          # -> .whl/ (git-ignored)
# On the GPU:   run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=480)
#
# The GPU image has jax (CUDA), flax, optax, orbax, absl and chex but not ml-collections, tqdm,
# tensorboardX or scikit-learn (nor this package): they are installed from the carried .whl/ into
# /tmp/site. Stages (the default config's child setup at 224 px, width 1.0, batch 32, random pixels
# of the paper cohort's shapes), most important first; a stage that hits its timeout keeps the rows
# it finished (every benchmark writes its JSON after each row):
#   1 child_training bf16: VGG19, smallest, largest -> MFU (target >= 40 %), step, compile split
#   2 child_training f32: VGG19                      -> f32 step and MFU for comparison
#   3 search_throughput bf16, 2 epochs, 1 x 2 children, r=2 (vmapped on GPU by default)
#                                                    -> compile share (<= 10 %), persistent-cache
#                                                       hits, cached trainers (the same search
#                                                       again compiles nothing), AOT prefetch, and
#                                                       the 2-GPU-hour projection
#   4 vmap_cv bf16: smallest and a sampled child, 4 folds x 1 epoch, sequential, vmap chunks 2
#     and 4, the unrolled batch                      -> vmapped vs sequential CV (split_batching)
#   5 inference bf16: VGG19 and the found-like model -> batch-1 FPS (target >= 1,000)
#   6 paper recipe: VGG19 at 224 px, full width, the default (paper) config's recipe, 2 outer
#     folds of tuning cohort 1 (benchmarks/recipes.py)  -> does the paper recipe learn (subject
#                                                       AUROC CI above 0.5, no degenerate training)
# Then benchmarks/summary.py prints one table against the targets. JSONs and logs go to $OUT when
# set (the run tool brings them back), else to benchmarks/results/gpu/.
#
# DRY_RUN=1 bash benchmarks/gpu_check.sh   runs the same stages at 32 px, width 1/32 (the tiny
# config's, 2-16 channels), on the 5-layer test space, a few steps, float32 outside the bf16
# stage, random search and no warm/AOT/repeat search workers, XLA:CPU level 0 with one LLVM module
# per program outside the inference stage, as the test suite compiles: a CPU check of the script
# (about 1 minute on 2 cores; results in /tmp/gpu_check_dry unless $OUT is set).
# tests/test_benchmarks.py runs it.
set -uo pipefail
cd "$(dirname "$0")/.."
# The interpreter: $PYTHON (the tests pass theirs: sys.executable), else python3 from PATH.
PY="${PYTHON:-python3}"
T0=$(date +%s)
TOY="1x64 | 1x64 | 1x64 | 1x64 | 1x64"
if [ "${DRY_RUN:-0}" = 1 ]; then
  RES="${OUT:-/tmp/gpu_check_dry}"
  PAPER=(--size=32 --width=0.03125)
  CHILD=(--config=tiny --peak_n=256)
  CHILD_ARCHS=("$TOY"); F32_ARCHS=("$TOY"); FPS_ARCHS=("$TOY")
  STEPS=3
  DTYPE=float32  # bf16 only where the stage is about it: bf16 convolutions are slow on CPU.
  SEARCH=(--config=tiny --data=random --epochs=1 --steps=1 --children=2 --strategy=random
          --warm=0 --repeat_children=0 --aot_children=0)
  VMAP=(--config=tiny --archs=vgg19 --folds=2 --chunks=2 --epochs=1 --forms=vmap,unrolled)
  T_CHILD=90 T_F32=90 T_SEARCH=150 T_VMAP=150 T_FPS=60 T_PAPER=120
  RECIPE=(--variant=tiny --recipes=train.epochs=1 --children=0 --folds=2)
  # The stages that only check plumbing compile at XLA:CPU level 0 with the older emitters, as the
  # test suite does (dry run 92 -> 77 CPU-s). The inference stage compiles under XLA's defaults,
  # so a default-compiled program runs in every suite run (its forward program is the cheapest to
  # compile; vmap_cv's three training programs cost ~8 CPU-s more at the defaults).
  FAST=(env "XLA_FLAGS=--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false \
--xla_cpu_parallel_codegen_split_count=1")
else
  RES="${OUT:-benchmarks/results/gpu}"
  PAPER=(--size=224 --width=1.0)
  CHILD=(--config=paper)
  CHILD_ARCHS=(vgg19,smallest,largest); F32_ARCHS=(vgg19); FPS_ARCHS=(vgg19,found)
  STEPS=15
  DTYPE=bfloat16
  SEARCH=(--config=paper --data=random --epochs=2 --steps=1 --children=2 --repeat_children=0
          --aot_children=2 --budget_seconds=100)
  VMAP=(--config=paper --archs=smallest,sampled --folds=4 --chunks=2,4 --epochs=1
        --forms=vmap,unrolled)
  T_CHILD=95 T_F32=40 T_SEARCH=110 T_VMAP=80 T_FPS=35 T_PAPER=150
  RECIPE=(--variant=paper --recipes=base --children=0 --folds=2)
  FAST=()
fi
mkdir -p "$RES"

echo "== setup"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# Found, not imported (an import of all of them cost ~4 CPU-s; every stage prints its devices).
IMPORTS="import importlib.metadata as m, importlib.util as u, sys; \
missing = [n for n in ('jax', 'flax', 'optax', 'ml_collections', 'tqdm', 'tensorboardX', \
'sklearn') if u.find_spec(n) is None]; \
sys.exit('missing: ' + ' '.join(missing)) if missing else \
print('jax', m.version('jax'), 'flax', m.version('flax'))"
if ! "$PY" -c "$IMPORTS" 2>/dev/null; then
  if ! ls .whl/*.whl >/dev/null 2>&1; then
    echo "no wheels in .whl/: run 'bash benchmarks/fetch_wheels.sh' here and carry .whl" >&2
    exit 2
  fi
  "$PY" -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl || exit 2
  export PYTHONPATH="/tmp/site:$PYTHONPATH"
  "$PY" -c "$IMPORTS" || exit 2
fi
# Benchmarks use their own cache settings; keep any outer setting from changing them.
unset JAX_COMPILATION_CACHE_DIR
nvidia-smi 2>/dev/null || echo "(no nvidia-smi)"

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

stage child_training_bf16 "$T_CHILD" ${FAST[@]+"${FAST[@]}"} "$PY" benchmarks/child_training.py \
  "${CHILD[@]}" "${PAPER[@]}" --dtype=bfloat16 --archs="${CHILD_ARCHS[0]}" --steps=$STEPS \
  --max_seconds_per_arch=8 \
  --name=child_training_bf16 --results_dir="$RES"
stage child_training_f32 "$T_F32" ${FAST[@]+"${FAST[@]}"} "$PY" benchmarks/child_training.py \
  "${CHILD[@]}" "${PAPER[@]}" --dtype=float32 --archs="${F32_ARCHS[0]}" --steps=$STEPS \
  --max_seconds_per_arch=6 --name=child_training_f32 --results_dir="$RES"
stage search_throughput "$T_SEARCH" ${FAST[@]+"${FAST[@]}"} "$PY" benchmarks/search_throughput.py \
  "${SEARCH[@]}" "${PAPER[@]}" --dtype=$DTYPE --name=search_throughput --results_dir="$RES"
stage vmap_cv "$T_VMAP" ${FAST[@]+"${FAST[@]}"} "$PY" benchmarks/vmap_cv.py "${VMAP[@]}" \
  "${PAPER[@]}" --dtype=$DTYPE --name=vmap_cv --results_dir="$RES"
stage inference "$T_FPS" "$PY" benchmarks/inference.py "${PAPER[@]}" \
  --dtype=$DTYPE --archs="${FPS_ARCHS[0]}" --iters=$(( STEPS * 13 )) --batch=64 --name=inference \
  --results_dir="$RES"
stage paper_recipe "$T_PAPER" ${FAST[@]+"${FAST[@]}"} "$PY" benchmarks/recipes.py "${RECIPE[@]}" \
  --cohort_seed=1 --name=paper_recipe --results_dir="$RES" --workdir=/tmp/gpu_check_recipe

echo
echo "== summary ($(( $(date +%s) - T0 ))s in all; stage exit codes:$(for k in "${!RC[@]}"; do
  printf ' %s=%s' "$k" "${RC[$k]}"; done))"
"$PY" benchmarks/summary.py --results_dir="$RES" --children=200 2>&1 | tee "$RES/summary.log"
