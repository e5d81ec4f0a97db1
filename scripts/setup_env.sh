#!/usr/bin/env bash
# Idempotent environment set-up: Debian packages (if missing), the venv with pinned packages,
# and a project-local QGIS profile in which the plugin is enabled.  Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

# xvfb/xauth and Mesa's GL: the desktop test starts the real `qgis` under xvfb-run (tests/test_desktop.py).
APT_PACKAGES=(qgis python3-qgis qgis-providers python3-rasterio python3-venv python3-pip zip unzip git make
              xvfb xauth libgl1-mesa-dri libglx-mesa0)
# More Debian packages a target needs beside these, as arguments (make bench: grass-core, for
# bench_accuracy's comparison with GRASS's r.kappa).
APT_PACKAGES+=("$@")
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "==> Installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
fi

# The venv sees Debian's QGIS bindings, GDAL and rasterio (--system-site-packages).
if [ ! -x .venv/bin/python ]; then
  echo "==> Creating .venv"
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
stamp=.venv/.requirements.sha256
want=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  # torch's CUDA build and its NVIDIA libraries take about 6 GiB installed, plus pip's unpacking:
  # say so in one line rather than let pip fail half-way with "No space left on device".
  need_gib=9
  compgen -G ".venv/lib/python3*/site-packages/torch" >/dev/null && need_gib=1  # an update of the pins
  free_gib=$(( $(df --output=avail -k "$ROOT/.venv" | tail -1) / 1048576 ))
  if (( free_gib < need_gib )); then
    echo "make env: only ${free_gib} GiB free on the disk of $ROOT/.venv; the pinned Python packages need about ${need_gib} GiB" >&2
    exit 1
  fi
  echo "==> Installing pinned Python packages into .venv"
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade "pip==25.3"
  .venv/bin/python -m pip install -q --no-cache-dir --disable-pip-version-check -r requirements-dev.txt
  echo "$want" > "$stamp"
fi

# QGIS needs a plugin folder named like the plugin: a link to the repository root.
mkdir -p .qgis-plugins .qgis-tmp
ln -sfn "$ROOT" .qgis-plugins/optsar_fusion
.venv/bin/python scripts/make_profile.py .qgis-profile
echo "==> Environment ready (.venv, .qgis-profile, .qgis-plugins/optsar_fusion)"
