"""Step ``loaders``: ``bench/gpu.py`` (compute-only ceiling, ``decode=workers`` at 4/8/16 workers,
``decode=device``, each loader alone; fp32 and bf16-mixed) in a process of its own, its rows into the JSON.

The ``--quick`` CPU rehearsal runs ``bench/gpu.py --device cpu --quick`` with fewer images: its rates mean
nothing beyond "it runs".
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from bench.gpu_check.common import Context, StepResult, device_name, peak_share, verdict
from bench.gpu_check.paths import REPO


def run(ctx: Context) -> StepResult:
    out = ctx.work / "loaders.json"
    command = [
        sys.executable,
        str(REPO / "bench" / "gpu.py"),
        "--device",
        str(ctx.device),
        "--json",
        str(out),
    ]
    if ctx.quick:
        command += ["--quick", "--images", "48", "--warmup", "1", "--workers", "1"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    print(done.stdout[-6000:], done.stderr[-6000:], sep="\n", file=sys.stderr)  # into the step's log
    seconds = round(time.perf_counter() - started, 1)
    details = {"command": " ".join(command[1:]), "returncode": done.returncode, "seconds_in_bench": seconds}
    details["table"] = done.stdout[-4000:]
    if done.returncode != 0 or not out.is_file():
        return StepResult("fail", details, error=done.stderr[-2000:])
    rows = json.loads(out.read_text())
    gpu = device_name(ctx.device)
    for row in rows:
        row["bf16_peak_share"] = peak_share(row["images_per_s"], gpu) if ctx.cuda else None
    names = {row["name"] for row in rows}
    checks = {
        "compute-only, workers, device and loader-alone rows all there": (
            any(n.startswith("compute only") for n in names)
            and any(n.startswith("decode=device") for n in names)
            and any(n.endswith("loader alone") for n in names)
        ),
        "every row has a rate": all(row["images_per_s"] > 0 for row in rows),
    }
    details.update(rows=rows, checks=checks)
    return StepResult(verdict(checks), details)
