#!/usr/bin/env bash
# GPU checks for a machine with one NVIDIA GPU, no QGIS and no internet (see tests/gpu/checks.py for
# what is measured).  Run from the repository root:
#
#     bash tests/gpu/run_checks.sh [OUT_DIR]          # on the GPU machine: writes OUT_DIR/gpu_checks.json
#     bash tests/gpu/run_checks.sh --cpu-smoke [DIR]  # anywhere: every check on the CPU, tiny sizes
#
# Python packages the machine lacks travel as wheels: on a machine with PyPI, run
# tests/gpu/fetch_wheels.sh first; it fills tests/gpu/wheels/ (git-ignored) for the GPU machine's
# Python (default 3.12), and this script installs them into a private folder (never into the system).
# The whole run is limited to OPTSAR_GPU_BUDGET_S seconds (default 470, inside 8 minutes); each check
# rewrites the JSON when it finishes, so a run cut short keeps what it measured.
set -uo pipefail
cd "$(dirname "$0")/../.."
MODE=()
if [ "${1:-}" = "--cpu-smoke" ]; then MODE=(--cpu-smoke); shift; fi
OUT_DIR=${1:-${OUT:-gpu_output}}
mkdir -p "$OUT_DIR"
PY=${OPTSAR_GPU_PYTHON:-$(command -v python3)}
WHEELS=${OPTSAR_WHEELS:-tests/gpu/wheels}
BUDGET=${OPTSAR_GPU_BUDGET_S:-470}
LOG="$OUT_DIR/gpu_checks.log"
echo "== $(date -u +%FT%TZ) $(uname -n); python $("$PY" -V 2>&1); budget ${BUDGET} s" | tee "$LOG"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$LOG"

# What the engine needs beyond torch/timm/numpy/safetensors: rasterio (with its own GDAL) and its helpers.
if ! "$PY" -c "import rasterio, affine" 2>/dev/null; then
  if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    SITE=${TMPDIR:-/tmp}/optsar-gpu-site
    echo "== installing $(ls "$WHEELS"/*.whl | wc -l) carried wheel(s) into $SITE" | tee -a "$LOG"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
      "$WHEELS"/*.whl >>"$LOG" 2>&1 || echo "WARNING: pip could not install every wheel (see the log)" | tee -a "$LOG"
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "WARNING: rasterio is missing and $WHEELS holds no wheels: the end-to-end check will fail" \
         "(run tests/gpu/fetch_wheels.sh where PyPI is reachable)" | tee -a "$LOG"
  fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PY" -c "import optsar_plugin.models.selective_scan as s; print('mamba_ssm:', s.mamba_ssm_available())" 2>&1 | tee -a "$LOG"

timeout --signal=TERM --kill-after=10 "$BUDGET" "$PY" tests/gpu/checks.py "${MODE[@]}" \
  --out "$OUT_DIR/gpu_checks.json" --work "${TMPDIR:-/tmp}/optsar-gpu-work" 2>&1 | tee -a "$LOG"
status=${PIPESTATUS[0]}
[ "$status" = 124 ] && echo "== stopped at the ${BUDGET} s budget; the JSON holds the checks that finished" | tee -a "$LOG"
echo "== exit status $status; results in $OUT_DIR/gpu_checks.json" | tee -a "$LOG"
exit "$status"
