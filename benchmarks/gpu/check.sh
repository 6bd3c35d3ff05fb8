#!/usr/bin/env bash
# Issue 11's GPU run: every measurement in priority order, one command, each step capped.
#
#   bash benchmarks/gpu/check.sh                      # on the lent GPU (see benchmarks/gpu/README.md)
#   DRY=1 OUT=/tmp/dry bash benchmarks/gpu/check.sh   # the same steps on CPU at tiny sizes
#
# Steps, in order (cap in seconds on the GPU; the caps add up to 475 s):
#   setup 25           carried wheels, the package from src/, every version -> env.json
#   tests 60           pytest -m cuda (tests/test_cuda.py) -> cuda-tests.xml
#   bench_eager 75     inceptionnext-bench bf16 channels_last batch 128 224², train + infer:
#                      ours fast on / off, timm's inception_next_tiny, convnext_tiny, resnet50
#   bench_compiled 120 the same compiled, training: ours fast on, timm's, convnext_tiny, ours off
#   mixer 30           the token mixer alone at T's 4 stages, bf16, with the copy bandwidth
#                      measured in the same run -> kernels.csv
#   fit_a 30           lightning fit, tiny.yaml on one GPU, 200 steps, in-memory images -> fit.csv
#   fit_b 40           the same on real JPEGs through ImageDataModule, 14 workers
#   fit_c 70           (b) with model.compile and the fast path (fast: auto, which takes the
#                      kernel for channels_last CUDA input: jsonargparse reads "on" in
#                      model_kwargs as the boolean true)
#   seg 25             segmentation FPS at batch 1 as Tables 6 and 7 (fp32, FPN 512x512,
#                      UperNet 512x2048): InceptionNeXt-T and the baselines -> seg-cuda-fp32.csv
# Each result is published as soon as its step ends: $OUT/results.tgz (every file so far),
# $OUT/summary.txt (the targets, by benchmarks/gpu/summary.py) and $OUT/check.log (all output).
#
# Environment: OUT (required on the GPU; DRY default: a new temporary folder), STEPS (a subset,
# e.g. STEPS="fit_b fit_c" for a rerun), WHEELS (carried wheels, default .gpu_wheels),
# INSTALL_WHEELS (1: install them, the GPU default; 0: the DRY default), WORK (scratch, default
# a new temporary folder), CAP_<step> (seconds, overrides one cap), PYTHON (default python3).
set -uo pipefail  # no -e: a failed step is recorded and the next one runs

REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO"
DRY=${DRY:-0}
if [[ $DRY == 1 ]]; then
  OUT=${OUT:-$(mktemp -d)}
else
  : "${OUT:?set OUT to the folder for the results (the device tool sets it)}"
fi
WORK=${WORK:-$(mktemp -d)}
RES=$WORK/results
mkdir -p "$OUT" "$RES"
WHEELS=${WHEELS:-$REPO/.gpu_wheels}
STEPS=${STEPS:-"setup tests bench_eager bench_compiled mixer fit_a fit_b fit_c seg"}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_DATASETS_CACHE=$WORK/hf
exec > >(tee -a "$OUT/check.log") 2>&1
TEE_PID=$!

if [[ $DRY == 1 ]]; then
  # CPU at tiny sizes: the kernel under Triton's interpreter; the compile steps run eagerly
  # (compiling takes minutes on a CPU; tests/test_kernels.py compiles the op itself).
  # The atto models stand in for the tiny ones, and the "fast on" rows run fast=auto (the
  # PyTorch path on a CPU): the interpreted kernel would take minutes in whole networks, so only
  # the mixer step runs it. One thread per process: more threads than free cores make ops spin.
  export TRITON_INTERPRET=1 OMP_NUM_THREADS=1
  export OURS=inceptionnext_atto TIMM=inception_next_atto CONVNEXT=convnext_atto RESNET=resnet18
  export FAST=auto
  DEVICE=cpu IMG=32 BATCH=2 WARMUP=0 ITERS=1
  MIXER_ARGS=(--device cpu --batch 1 --img-size 32 --dtypes fp32 --copy-mb 4 --reps 1
    --stages 3 --variants fused reference dwconv7x7)
  FIT_STEPS=3 FIT_WARMUP=1 FIT_WORKERS=2
  FIT_ARGS=(--trainer.accelerator cpu --model.model_name "$OURS" --data.image_size 32
    --data.loader.batch_size 4)
  IMAGES=(--total 48 --distinct 8 --classes 4)
  COMPILE_ENV=(env TORCHDYNAMO_DISABLE=1)
  TEST_ARGS=(--collect-only -q)
  SEG_SIZE=64 SEG_MODELS=(fpn/inceptionnext_atto upernet/inceptionnext_atto)
else
  export OURS=inceptionnext_tiny TIMM=inception_next_tiny CONVNEXT=convnext_tiny RESNET=resnet50
  export FAST=on
  DEVICE=cuda IMG=224 BATCH=128 WARMUP=5 ITERS=20
  MIXER_ARGS=(--device cuda --batch 128 --dtypes bf16)
  FIT_STEPS=200 FIT_WARMUP=50 FIT_WORKERS=14
  FIT_ARGS=()
  IMAGES=(--total 26000 --distinct 512 --classes 1000)
  COMPILE_ENV=()
  TEST_ARGS=(-q -rfE)
  SEG_SIZE=512 SEG_MODELS=(fpn/inceptionnext_tiny fpn/resnet50 upernet/inceptionnext_tiny
    upernet/convnext_tiny upernet/swin_tiny_patch4_window7_224)
fi

cap() {  # the cap of step $1: CAP_<step>, else $2 (four times longer in a DRY run)
  local var="CAP_$1" default=$2
  [[ $DRY == 1 ]] && default=$((default * 4))
  echo "${!var:-$default}"
}

publish() {  # everything so far into $OUT, each file replaced at once
  $PY benchmarks/gpu/summary.py "$RES" > "$OUT/summary.txt.part" 2>&1
  mv "$OUT/summary.txt.part" "$OUT/summary.txt"
  tar czf "$OUT/results.tgz.part" -C "$RES" . && mv "$OUT/results.tgz.part" "$OUT/results.tgz"
}

step() {  # step NAME CAP COMMAND...: run it under its cap, log it, record its exit status
  local name=$1 limit
  limit=$(cap "$1" "$2")
  shift 2
  [[ " $STEPS " == *" $name "* ]] || return 0
  echo "=== [$name] cap ${limit}s: $*"
  local t0=$SECONDS
  timeout -k 5 "$limit" "$@" 2>&1 | tee "$RES/$name.log"
  local rc=${PIPESTATUS[0]}
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" $((SECONDS - t0)) "$limit" >> "$RES/steps.tsv"
  echo "=== [$name] exit $rc after $((SECONDS - t0))s"
  publish
}

fit_config() {  # fit_config SETTING [ARGS]: the setting's config file (see fit_config.py)
  $PY benchmarks/gpu/fit_config.py "$1" --csv "$RES/fit.csv" --steps "$FIT_STEPS" \
    --warmup "$FIT_WARMUP" --root "$WORK/runs/fit-$1" "${@:2}" > "$WORK/fit-$1.yaml"
  echo "$WORK/fit-$1.yaml"
}

echo "check.sh: DRY=$DRY OUT=$OUT WORK=$WORK STEPS=$STEPS"
# The carried wheels go to $WORK/site, first on the path; the package runs from src/.
INSTALL_WHEELS=${INSTALL_WHEELS:-$((DRY != 1))}
export PYTHONPATH=$REPO/src${PYTHONPATH:+:$PYTHONPATH}
[[ $INSTALL_WHEELS == 1 ]] && PYTHONPATH=$WORK/site:$PYTHONPATH
SETUP="set -e; (nvidia-smi || true) | head -12; "
if [[ $INSTALL_WHEELS == 1 ]]; then
  SETUP+="ls '$WHEELS'/*.whl > /dev/null || { echo 'no wheels in $WHEELS: run benchmarks/gpu/prepare.sh here and carry .gpu_wheels'; exit 1; }; "
  SETUP+="$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target '$WORK/site' '$WHEELS'/*.whl; "
fi
step setup 25 bash -c "$SETUP $PY benchmarks/gpu/env_report.py '$RES/env.json'"
if [[ $DRY != 1 ]] && $PY -c "import xdist" 2> /dev/null; then
  TEST_ARGS+=(-n 6)  # six processes compile the kernels in parallel
fi

# The JPEG tree for fit_b / fit_c is built in the background while the first steps run.
IMAGES_PID=
if [[ " $STEPS " == *" fit_b "* || " $STEPS " == *" fit_c "* ]]; then
  nice -n 5 $PY benchmarks/gpu/make_images.py "$WORK/images" "${IMAGES[@]}" > "$RES/images.log" 2>&1 &
  IMAGES_PID=$!
fi

step tests 60 $PY -m pytest -m cuda tests/test_cuda.py -p no:cacheprovider \
  --junitxml="$RES/cuda-tests.xml" "${TEST_ARGS[@]}"

BENCH=($PY -m inceptionnext_pl.bench --device "$DEVICE" --precision bf16
  --memory-format channels-last --batch-size "$BATCH" --img-size "$IMG" --warmup "$WARMUP"
  --iters "$ITERS" --keep-going --out "$RES")
step bench_eager 75 "${BENCH[@]}" --name models-eager --models "$OURS:fast=$FAST" "$OURS:fast=off" \
  "$TIMM" "$CONVNEXT" "$RESNET"
step bench_compiled 120 "${COMPILE_ENV[@]}" "${BENCH[@]}" --compile --warmup "$((WARMUP > 0 ? WARMUP : 1))" --phases train \
  --name models-compiled --models "$OURS:fast=$FAST" "$TIMM" "$CONVNEXT" "$OURS:fast=off"

step mixer 30 $PY -m inceptionnext_pl.models.kernels.bench --model "$OURS" "${MIXER_ARGS[@]}" \
  --csv "$RES/kernels.csv"

FIT=(--config configs/tiny.yaml --config benchmarks/gpu/fit.yaml)
step fit_a 30 $PY -m inceptionnext_pl.bench.fit "${FIT[@]}" --config "$(fit_config a)" \
  "${FIT_ARGS[@]}"
if [[ -n $IMAGES_PID ]]; then
  wait "$IMAGES_PID" || echo "building the JPEG tree failed: see images.log in results.tgz"
fi
FIT_REAL=($PY -m inceptionnext_pl.cli fit "${FIT[@]}" --data.dataset "$WORK/images/index"
  --data.loader.num_workers "$FIT_WORKERS" "${FIT_ARGS[@]}")
step fit_b 40 "${FIT_REAL[@]}" --config "$(fit_config b)"
step fit_c 70 "${COMPILE_ENV[@]}" "${FIT_REAL[@]}" \
  --config "$(fit_config c --compile-fast configs/tiny.yaml)"

step seg 25 $PY -m inceptionnext_pl.bench --mode seg --device "$DEVICE" --precision fp32 \
  --img-size "$SEG_SIZE" --warmup "$WARMUP" --iters "$ITERS" --out "$RES" \
  --seg-models "${SEG_MODELS[@]}"

publish
echo "=== summary"
cat "$OUT/summary.txt"
exec 1>&- 2>&-
wait "$TEE_PID"
