#!/usr/bin/env bash
# Download, where PyPI is reachable, the wheels tests/gpu/run_checks.sh installs on a GPU machine that
# has torch, timm, numpy and safetensors but not the engine's raster stack.  For the GPU machine's Python
# (OPTSAR_GPU_PYVER, default 3.12) on x86-64 Linux.  Into tests/gpu/wheels/ (git-ignored; about 25 MB).
set -euo pipefail
cd "$(dirname "$0")"
PYVER=${OPTSAR_GPU_PYVER:-3.12}
DEST=${1:-wheels}
mkdir -p "$DEST"
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_26_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
  PLATFORMS+=(--platform "$p")
done
# rasterio's wheels carry GDAL, PROJ and their data; the rest are its pure-Python requirements.
python3 -m pip download --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  "${PLATFORMS[@]}" -d "$DEST" "rasterio==1.4.3"
python3 -m pip download --no-deps --only-binary=:all: -d "$DEST" "affine==2.4.0" "cligj==0.7.2" "click-plugins==1.1.1.2"
# mamba_ssm publishes no wheel on PyPI (its source build needs nvcc and about 20 minutes, more than the
# 8-minute budget): the scan check then measures the pure-PyTorch scan.  A wheel built elsewhere for the
# machine's torch/CUDA can be dropped into this folder and is installed with the others.
ls -la "$DEST"
