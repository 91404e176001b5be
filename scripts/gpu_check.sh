#!/usr/bin/env bash
# The GPU check: every GPU-only path of the pipeline, time-boxed, into OUT_DIR/gpu_check.json and
# OUT_DIR/gpu_check.log (nothing else lands there: the device tool sends back at most 8 files).
#
#   scripts/gpu_check.sh OUT_DIR [--device cuda|cpu] [--quick] [--budget SECONDS] [--work DIR] [--steps "a b"]
#
# Steps (bench/gpu_check/, one process each, each in its own time box): environment; lrn, decode, bf16, split
# (correctness on the device); end_to_end (python -m pipeline.train on generated shards, ending with the
# 10-crop test); step_b128, step_b512 (bench/step.py's settings); loaders (bench/gpu.py). The whole run stays
# within --budget (default 450 s: under 8 minutes with the wheel install): a step that would start with less
# than 20 s left is skipped and says so. --device cpu --quick is the CPU rehearsal (tests/gpu_check/).
#
# Missing Hydra/OmegaConf/MLflow/WebDataset (a bare GPU machine): the wheels in .gpu/wheels
# (scripts/gpu_wheels.sh) are installed into WORK/site first. PYTHON picks the interpreter (default python3).
set -uo pipefail
usage="usage: scripts/gpu_check.sh OUT_DIR [--device cuda|cpu] [--quick] [--budget SECONDS] [--work DIR] [--steps \"a b\"]"
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
out="" device=cuda quick="" budget="" work="" only=""
while (($#)); do
    case $1 in
        --device) device=${2:?--device needs cuda or cpu}; shift 2 ;;
        --quick) quick=--quick; shift ;;
        --budget) budget=${2:?--budget needs seconds}; shift 2 ;;
        --work) work=${2:?--work needs a folder}; shift 2 ;;
        --steps) only=${2:?--steps needs step names}; shift 2 ;;
        -h|--help) echo "$usage"; exit 0 ;;
        -*) echo "scripts/gpu_check.sh: unknown option $1; $usage" >&2; exit 2 ;;
        *) [[ -z $out ]] || { echo "scripts/gpu_check.sh: one OUT_DIR only (got $out and $1)" >&2; exit 2; }
           out=$1; shift ;;
    esac
done
[[ -n $out ]] || { echo "scripts/gpu_check.sh: OUT_DIR missing; $usage" >&2; exit 2; }
[[ $device == cuda || $device == cpu ]] || { echo "scripts/gpu_check.sh: --device $device: use cuda or cpu" >&2; exit 2; }
budget=${budget:-$([[ -n $quick ]] && echo 900 || echo 450)}
[[ $budget =~ ^[0-9]+$ ]] || { echo "scripts/gpu_check.sh: --budget $budget: give whole seconds" >&2; exit 2; }
declare -A box=([environment]=60 [lrn]=60 [decode]=60 [bf16]=60 [split]=60 [end_to_end]=180
                [step_b128]=120 [step_b512]=120 [loaders]=180)
order_all=(environment lrn decode bf16 split end_to_end step_b128 step_b512 loaders)
order=("${order_all[@]}")
if [[ -n $only ]]; then read -ra order <<<"$only"; fi
for step in "${order[@]}"; do
    [[ -n ${box[$step]:-} ]] || { echo "scripts/gpu_check.sh: unknown step $step (steps: ${order_all[*]})" >&2; exit 2; }
done
mkdir -p "$out" && out=$(cd "$out" && pwd)
work=${work:-$(mktemp -d /tmp/gpu_check.XXXXXX)}
mkdir -p "$work/steps" && work=$(cd "$work" && pwd)
log=$out/gpu_check.log
: >"$log"
started=$SECONDS
say() { echo "$*" | tee -a "$log"; }

say "== GPU check $(date -u +%Y-%m-%dT%H:%M:%SZ): device $device ${quick:+(quick) }budget ${budget} s, work $work"
export PYTHONPATH=$repo${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
if ! "$python" -c "import hydra, omegaconf, mlflow, webdataset, braceexpand" 2>/dev/null; then
    wheels=$repo/.gpu/wheels
    if ! compgen -G "$wheels/*.whl" >/dev/null; then
        say "Hydra/MLflow/WebDataset are missing and $wheels holds no wheels: run scripts/gpu_wheels.sh here first and carry .gpu/wheels"
    else
        say "== installing $(ls "$wheels"/*.whl | wc -l) wheels from .gpu/wheels into $work/site"
        "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
            --target "$work/site" "$wheels"/*.whl >>"$log" 2>&1 || say "wheel install failed (see the log)"
        export PYTHONPATH=$PYTHONPATH:$work/site
    fi
fi

steps_json=$(printf '"%s",' "${order[@]}")
cat >"$work/run.json" <<EOF
{"device": "$device", "quick": $([[ -n $quick ]] && echo true || echo false), "budget_s": $budget,
 "started_utc": "$(date -u +%Y-%m-%dT%H:%M:%SZ)", "host": "$(hostname)", "steps": [${steps_json%,}],
 "commit": "$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)"}
EOF

for step in "${order[@]}"; do
    left=$((budget - (SECONDS - started)))
    limit=$((left - 5 < ${box[$step]} ? left - 5 : ${box[$step]}))
    rm -f "$work/steps/$step".{json,rc,skip,box,log}
    if ((limit < 20)); then
        echo "skipped: out of the run's ${budget} s budget" >"$work/steps/$step.skip"
        say "-- $step: skipped (out of the ${budget} s budget)"
        continue
    fi
    echo "$limit" >"$work/steps/$step.box"
    say "-- $step (time box ${limit} s, $((SECONDS - started)) s into the run)"
    timeout --kill-after=10 "$limit" "$python" -m bench.gpu_check "$step" --work "$work" --device "$device" \
        $quick >"$work/steps/$step.log" 2>&1
    echo $? >"$work/steps/$step.rc"
    cat "$work/steps/$step.log" >>"$log"
    tail -n 1 "$work/steps/$step.log"
done

say "== report ($((SECONDS - started)) s)"
"$python" -m bench.gpu_check report --work "$work" --out "$out" | tee -a "$log"
status=${PIPESTATUS[0]}
say "== done in $((SECONDS - started)) s: $out/gpu_check.json, $log"
exit "$status"
