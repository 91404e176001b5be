#!/usr/bin/env bash
# The one install path shared by the README, .ci/run and the Dockerfile.
# Usage: scripts/install.sh [VENV_DIR]   (default: .venv in the repository root)
# Set INSTALL_EXTRAS="" to skip the dev extra (the Dockerfile does). INSTALL_ONLY_DEPS=1 installs torch and the
# project's dependencies (read from pyproject.toml) but not the project: the Dockerfile caches them in a layer
# that only pyproject.toml and this script invalidate.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-$root/.venv}
extras=${INSTALL_EXTRAS-dev}
python=${PYTHON:-python3}

if [ ! -x "$venv/bin/python" ]; then
  echo "[install] creating venv $venv"
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --disable-pip-version-check --progress-bar off)
# torch first, pinned: on the dev machines pip takes these wheels from local disk.
"${pip[@]}" "torch==2.14.1" "torchvision==0.29.1"
if [ "${INSTALL_ONLY_DEPS:-0}" = 1 ]; then
  read_deps='import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
extras = [e for e in sys.argv[2].split(",") if e]
print("\n".join(project["dependencies"] + [d for e in extras for d in project["optional-dependencies"][e]]))'
  deps=$("$venv/bin/python" -c "$read_deps" "$root/pyproject.toml" "$extras")
  mapfile -t deps <<<"$deps"
  "${pip[@]}" "${deps[@]}"
else
  spec="$root"
  [ -n "$extras" ] && spec="${root}[$extras]"
  "${pip[@]}" -e "$spec"
fi
# foolbox is only a carrier of 20 real ImageNet photos for the demo; its deps are not needed.
"${pip[@]}" --no-deps "foolbox==3.3.4"
if [ "${INSTALL_ONLY_DEPS:-0}" != 1 ]; then
  # The fused CPU LRN kernel, compiled for this machine's CPU now rather than in the first training run;
  # without a compiler it warns and training uses torch ops instead (GPUs never need it).
  "$venv/bin/python" -c "from pipeline.models.lrn_kernel import main; main()"
fi
echo "[install] done: $venv"
