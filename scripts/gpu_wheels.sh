#!/usr/bin/env bash
# Builds .gpu/wheels (git-ignored): the wheels that scripts/gpu_check.sh needs on a bare GPU machine, for
# CPython 3.12 on manylinux x86-64: Hydra, OmegaConf, MLflow, WebDataset and braceexpand at the versions
# pyproject.toml asks for, with their dependencies, minus every package the machine's image already has
# (bench/gpu_check/image_packages.txt). Reports the size; fails, leaving any previous .gpu/wheels as it was, when
# the wheels and the working tree together exceed the device tool's 64 MiB (--budget-mib to change).
#
#   scripts/gpu_wheels.sh [--budget-mib 64]
#
# Needs pip and the package index (not the GPU machine: it has no index). hydra-core needs
# antlr4-python3-runtime 4.9.3, published as a source archive only: it is built into a (pure-Python) wheel here.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
python=${PYTHON:-python3}
budget_mib=64
while (($#)); do
    case $1 in
        --budget-mib) budget_mib=${2:?--budget-mib needs a number}; shift 2 ;;
        *) echo "scripts/gpu_wheels.sh: unknown argument $1; usage: scripts/gpu_wheels.sh [--budget-mib 64]" >&2
           exit 2 ;;
    esac
done

# The pins come from pyproject.toml, so the GPU machine runs the versions the project is tested with.
mapfile -t requirements < <("$python" - <<'EOF'
import re, tomllib
wanted = {"hydra-core", "mlflow", "webdataset"}
for dependency in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]:
    name = re.split(r"[<>=!~ \[;]", dependency, maxsplit=1)[0].lower()
    if name in wanted:
        print(dependency)
print("braceexpand")  # webdataset's brace patterns (a dependency it declares)
EOF
)
echo "== wheels for CPython 3.12, manylinux x86-64: ${requirements[*]}"
scratch=$(mktemp -d /tmp/gpu_wheels.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
pip=("$python" -m pip --disable-pip-version-check)
"${pip[@]}" wheel -q --no-deps -w "$scratch/built" "antlr4-python3-runtime==4.9.3"
platforms=()
for tag in manylinux2014_x86_64 manylinux_2_17_x86_64 manylinux_2_24_x86_64 manylinux_2_27_x86_64 \
    manylinux_2_28_x86_64 manylinux1_x86_64 manylinux_2_5_x86_64; do
    platforms+=(--platform "$tag")
done
"${pip[@]}" download -q --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --abi abi3 \
    --abi none "${platforms[@]}" --find-links "$scratch/built" -d "$scratch/all" "${requirements[@]}"

# Keep what the image lacks (names normalised as in PEP 503).
mkdir -p "$scratch/keep"
have=$(grep -v '^#' bench/gpu_check/image_packages.txt)
for wheel in "$scratch"/all/*.whl; do
    name=$(basename "$wheel" | cut -d- -f1 | tr 'A-Z_.' 'a-z--')
    grep -qxF "$name" <<<"$have" || cp "$wheel" "$scratch/keep/"
done

bytes() { du -cb "$@" 2>/dev/null | tail -1 | cut -f1; }
wheels_bytes=$(bytes "$scratch"/keep/*.whl)
# What the device tool sends: tracked files and untracked ones git does not ignore (plus the carried wheels).
tree_bytes=$(git ls-files -z --cached --others --exclude-standard | xargs -0 -r du -cb 2>/dev/null | awk '/\ttotal$/ {s += $1} END {print s + 0}')
mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1048576}'; }
echo "== $(ls "$scratch"/keep/*.whl | wc -l) wheels (of $(ls "$scratch"/all/*.whl | wc -l) resolved; the rest are on the image): $(mib "$wheels_bytes") MiB"
ls -S -s --block-size=K "$scratch"/keep | sed 's|^|   |' | head -12
total=$((wheels_bytes + tree_bytes))
echo "== wheels $(mib "$wheels_bytes") MiB + working tree $(mib "$tree_bytes") MiB = $(mib "$total") MiB of ${budget_mib} MiB"
if ((total > budget_mib * 1048576)); then
    echo "scripts/gpu_wheels.sh: $(mib "$total") MiB is over the ${budget_mib} MiB that travels to the GPU machine;" \
        "drop a package from the list above or make the tree smaller. .gpu/wheels is unchanged." >&2
    exit 1
fi
rm -rf .gpu/wheels.new
mkdir -p .gpu
mv "$scratch/keep" .gpu/wheels.new
rm -rf .gpu/wheels
mv .gpu/wheels.new .gpu/wheels
echo "== .gpu/wheels ready: carry it (device tool: carry [\".gpu/wheels\"]), then scripts/gpu_check.sh OUT_DIR"
