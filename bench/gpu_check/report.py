"""The steps' results (``WORK/steps/``) into one ``gpu_check.json`` and a readable summary.

A step with no result file did not finish: the script's exit-code file (``STEP.rc``: 124 or 137 = its time
box ran out) and the last lines of its log say why; a step the script did not start for want of time has a
``STEP.skip`` file with the reason. Exit status 0 when every step passed or was skipped for a stated reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.gpu_check.common import ERROR, PASS, write_json

ENV_PACKAGES = ("torch", "torchvision", "lightning")
ORDER = ("environment", "lrn", "decode", "bf16", "split", "end_to_end", "step_b128", "step_b512", "loaders")


def _read(path: Path) -> str | None:
    return path.read_text().strip() if path.is_file() else None


def _unfinished(steps: Path, name: str) -> dict[str, Any]:
    skip = _read(steps / f"{name}.skip")
    if skip is not None:
        return {"status": skip, "details": {}, "seconds": None, "error": None}
    rc, box = _read(steps / f"{name}.rc"), _read(steps / f"{name}.box")
    log_tail = (_read(steps / f"{name}.log") or "")[-1500:]
    if rc is None:
        why = "not run"
    elif rc in ("124", "137"):
        why = f"time box of {box} s ran out (exit {rc})"
    else:
        why = f"exited with status {rc} and wrote no result"
    return {"status": ERROR, "details": {}, "seconds": None, "error": f"{why}\n{log_tail}"}


def collect(work: Path) -> dict[str, Any]:
    steps = work / "steps"
    meta = json.loads(_read(work / "run.json") or "{}")
    names = meta.get("steps", list(ORDER))
    results = {}
    for name in names:
        text = _read(steps / f"{name}.json")
        results[name] = json.loads(text) if text else _unfinished(steps, name)
        results[name]["time_box_s"] = _read(steps / f"{name}.box")
    counts: dict[str, int] = {}
    for result in results.values():
        key = "skipped" if result["status"].startswith("skipped") else result["status"]
        counts[key] = counts.get(key, 0) + 1
    return {"meta": meta, "summary": counts, "steps": results}


def _figures(name: str, result: dict[str, Any]) -> list[str]:
    """The few numbers worth a line in the summary."""
    details = result.get("details") or {}
    lines = []
    if name == "environment":
        versions = details.get("versions", {})
        described = [
            str(details.get("gpu")), f"driver {details.get('driver')}", f"CUDA {details.get('torch_cuda')}",
            f"Python {details.get('python')}", *(f"{p} {versions.get(p)}" for p in ENV_PACKAGES),
        ]  # fmt: skip
        lines.append("    " + " | ".join(described))
    for setting, row in (details.get("settings") or {}).items():
        share = row.get("bf16_peak_share")
        rate = f"{row['images_per_s_median']:10,.0f} img/s  x{row['ratio_to_baseline']:.2f}"
        lines.append(
            f"    {setting:28s} {rate}" + (f"  {share:.1%} of bf16 peak" if share is not None else "")
        )
    for row in details.get("rows") or []:
        wait = "" if row.get("wait") is None else f"  wait {row['wait']:.0%}"
        lines.append(
            f"    {row['name'][:48]:48s} {row['precision']:10s} {row['images_per_s']:10,.0f} img/s{wait}"
        )
    run = details.get("run")
    if run:
        metrics = run["metrics"]
        lines.append("    " + "  ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())
                                     if k.startswith(("eval/", "throughput/", "val/"))))  # fmt: skip
    for check, held in (details.get("checks") or {}).items():
        if not held:
            lines.append(f"    FAILED: {check}")
    return lines


def summary(report: dict[str, Any]) -> str:
    lines = ["", "GPU check: " + ", ".join(f"{v} {k}" for k, v in sorted(report["summary"].items()))]
    for name, result in report["steps"].items():
        seconds = "" if result.get("seconds") is None else f" ({result['seconds']:.0f} s)"
        lines.append(f"  {name:12s} {result['status']}{seconds}")
        if result.get("error"):
            lines.append("    " + result["error"].strip().splitlines()[0][:200])
        lines += _figures(name, result)
    return "\n".join(lines)


def main(work: Path, out: Path) -> int:
    report = collect(work)
    write_json(out / "gpu_check.json", report)
    print(summary(report))
    fine = all(r["status"] == PASS or r["status"].startswith("skipped") for r in report["steps"].values())
    return 0 if fine else 1
