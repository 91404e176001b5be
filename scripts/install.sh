#!/usr/bin/env bash
# The one install path shared by the README, .ci/run and the Dockerfile.
# Usage: scripts/install.sh [VENV_DIR]   (default: .venv in the repository root)
#
# 1. torch and torchvision (the versions requirements.lock pins; on the dev machines pip takes these wheels
#    from local disk), unless INSTALL_TORCH=0: a cluster's own torch build is kept (a venv made with
#    --system-site-packages over it), and the lock's torch, torchvision, triton and CUDA wheels are skipped;
# 2. every other dependency at the exact version and hash of requirements.lock (pip --require-hashes);
# 3. the project itself, editable, with --no-deps: nothing beyond the lock is resolved on the day.
# INSTALL_ONLY_DEPS=1 stops after 2 (the Dockerfile caches the dependencies in a layer of their own).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-$root/.venv}
python=${PYTHON:-python3}
lock="$root/requirements.lock"

if [ ! -x "$venv/bin/python" ]; then
  echo "[install] creating venv $venv"
  "$python" -m venv "$venv"
fi
"$venv/bin/python" "$root/scripts/lock.py" --check  # a lock older than pyproject.toml: stop here
pip=("$venv/bin/python" -m pip install --disable-pip-version-check --progress-bar off)
# The lock's own entries for torch's stack, with their hashes (the cluster case drops them instead).
torch_stack='^(torch|torchvision|triton|nvidia-(cu|nccl|nvjitlink|nvshmem|nvtx)[a-z0-9-]*|cuda-[a-z0-9-]+)=='
entries=$(mktemp)
trap 'rm -f "$entries"' EXIT
if [ "${INSTALL_TORCH:-1}" = 1 ]; then
  awk -v stack="$torch_stack" '/^[a-z]/ { keep = ($0 ~ stack) } keep' "$lock" >"$entries"
  "${pip[@]}" --require-hashes --no-deps -r "$entries"
  awk -v stack="$torch_stack" '/^[a-z]/ { keep = ($0 !~ stack) } keep' "$lock" >"$entries"
else
  echo "[install] INSTALL_TORCH=0: keeping this environment's torch ($("$venv/bin/python" -c 'import torch; print(torch.__version__)'))"
  awk -v stack="$torch_stack" '/^[a-z]/ { keep = ($0 !~ stack) } keep' "$lock" >"$entries"
fi
"${pip[@]}" --require-hashes --no-deps -r "$entries"
# foolbox is only a carrier of 20 real ImageNet photos for the demo; its deps are not needed.
"${pip[@]}" --no-deps "foolbox==3.3.4"
if [ "${INSTALL_ONLY_DEPS:-0}" != 1 ]; then
  "${pip[@]}" --no-deps --no-build-isolation -e "$root"
  # The fused CPU LRN kernel, compiled for this machine's CPU now rather than in the first training run;
  # without a compiler it warns and training uses torch ops instead (GPUs never need it).
  "$venv/bin/python" -c "from pipeline.models.lrn_kernel import main; main()"
fi
echo "[install] done: $venv"
