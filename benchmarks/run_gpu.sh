#!/usr/bin/env bash
# The GPU runs of issue 7, as the paper measures them: batch 128 (halved on out-of-memory), 224²,
# the better of channels-first and channels-last, median of synchronised steps.
#
#   bash benchmarks/run_gpu.sh [OUT_DIR]        # default OUT_DIR: benchmarks/gpu
#
# Environment overrides (for a quick check or a smaller budget):
#   PRECISIONS="tf32 bf16"   COMPILE="0 1"   IMG=224   BATCH=128   WARMUP=10   ITERS=30
#   MODELS="..."   ISO="..."   MIXER=1 (0 skips the token-mixer runs)
#   DEVICE=cuda (cpu for a dry run of this script at tiny sizes)
# Compiled runs spend minutes compiling each model and layout. On a short GPU lease,
# use COMPILE=0 first and then a compiled run on a shorter list.
set -euo pipefail

OUT=${1:-benchmarks/gpu}
PRECISIONS=${PRECISIONS:-"tf32 bf16"}
COMPILE=${COMPILE:-"0 1"}
IMG=${IMG:-224}
BATCH=${BATCH:-128}
WARMUP=${WARMUP:-10}
ITERS=${ITERS:-30}
MIXER=${MIXER:-1}
DEVICE=${DEVICE:-cuda}
KIND=${DEVICE%%:*}  # file names carry the device type
# Table 4 / Figure 1 networks, timm's InceptionNeXt-T, and Table 1's ConvNeXt-T kernel variants
MODELS=${MODELS:-"inceptionnext_atto inceptionnext_tiny inceptionnext_small inceptionnext_base
  inception_next_tiny convnext_atto convnext_tiny convnext_small convnext_base convnext_tiny_k5
  convnext_tiny_k3 resnet50 swin_tiny_patch4_window7_224"}
# Table 5: the isotropic models (measured in fp32 on a 2080Ti in the paper)
ISO=${ISO:-"inceptionnext_small_iso convnext_small_iso metanext_attn_small deit_small_patch16_224"}

common=(--device "$DEVICE" --img-size "$IMG" --batch-size "$BATCH" --warmup "$WARMUP" --iters "$ITERS")
for c in $COMPILE; do
  flag=(); [[ $c == 1 ]] && flag=(--compile)
  for p in $PRECISIONS; do
    # shellcheck disable=SC2086  # the model lists are meant to split into words
    inceptionnext-bench --models $MODELS --precision "$p" "${flag[@]}" "${common[@]}" \
      --out "$OUT" --plot
    # shellcheck disable=SC2086
    inceptionnext-bench --models $ISO --baseline convnext_small_iso --precision "$p" "${flag[@]}" \
      "${common[@]}" --out "$OUT" --name "iso-$KIND-$p$([[ $c == 1 ]] && echo -compiled)" --plot
    if [[ $MIXER == 1 && $c == 0 ]]; then
      inceptionnext-bench --mode mixer --precision "$p" "${common[@]}" --out "$OUT"
    fi
  done
done
csvs=()
for p in $PRECISIONS; do csvs+=("$OUT/models-$KIND-$p.csv"); done
inceptionnext-bench --mode plot --csv "${csvs[@]}" --out "$OUT" --name "figure1-$KIND"
