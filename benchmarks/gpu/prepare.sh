#!/usr/bin/env bash
# Fetch here (where PyPI is reachable) the pure-Python wheels that the GPU machine lacks, into
# .gpu_wheels/ (ignored by git through .gitignore), to be carried with the device call:
#
#   bash benchmarks/gpu/prepare.sh      # then run(..., carry=[".gpu_wheels"]), see README.md
#
# The machine's python3 (3.12) has torch 2.11, Triton 3.6, Lightning 2.6, timm, torchmetrics,
# pyarrow, pandas, xxhash, fsspec and huggingface_hub, but no jsonargparse (LightningCLI, the
# `lightning fit` steps), datasets (ImageDataModule, fit_b / fit_c), grad-cam (imported with
# inceptionnext_pl.callbacks, which tiny.yaml names) or their own pure-Python needs. The versions
# are the ones this project is tested with. All are py3-none-any (multiprocess: py312), about
# 2 MB together; grad-cam publishes only an sdist, so its wheel is built here.
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST=.gpu_wheels
WHEELS=(
  jsonargparse==4.53.0 docstring-parser==0.18.0 typeshed-client==2.15.0  # jsonargparse[signatures]
  datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19                       # datasets
  ttach==0.0.3                                                            # grad-cam
  segmentation-models-pytorch==0.6.0                                      # the seg step
)
SDISTS=(grad-cam==1.5.7)
PLATFORM=(--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)

grep -qxF "/$DEST/" .git/info/exclude 2> /dev/null || echo "/$DEST/" >> .git/info/exclude
rm -rf "$DEST"
mkdir -p "$DEST"
python3 -m pip download -q --no-deps --only-binary=:all: "${PLATFORM[@]}" -d "$DEST" "${WHEELS[@]}"
python3 -m pip wheel -q --no-deps --no-build-isolation -w "$DEST" "${SDISTS[@]}"
ls -l "$DEST"
du -sh "$DEST"
