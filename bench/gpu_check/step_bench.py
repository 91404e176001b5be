"""Steps ``step_b128`` and ``step_b512``: ``bench/step.py``'s training step per speed setting, side by side.

The same ``Runner`` and interleaved rounds as ``python bench/step.py --device cuda``; reported per setting:
images/s (median and best round), the ratio to the baseline (eager fp32 with torch's LRN), and the share of
the GPU's dense bf16 peak that the images/s amount to at ~4.3 GFLOP per training image (``common.py``'s
table; fp32 settings get the same arithmetic, so the shares compare the settings' speed, not their peaks).
``torch.compile``'s first call (compilation) is reported apart. The ``--quick`` CPU rehearsal leaves out the
compiled setting (tens of seconds of compilation on a small CPU) and runs a 1/8-width net.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from bench.gpu_check.common import Context, StepResult, device_name, peak_share, verdict
from bench.step import BASELINE, measure

SETTINGS = (
    BASELINE,  # fp32, torch's LRN, foreach SGD: the pipeline before the speed work
    "fp32",
    "fp32+channels_last",
    "bf16",
    "bf16+channels_last",
    "bf16+channels_last+compile",
    "fp32-no-lrn",
    "bf16-no-lrn",
)


def _args(ctx: Context) -> argparse.Namespace:
    if ctx.quick:
        return argparse.Namespace(width=0.0625, warmup=0, rounds=1, steps=1)
    return argparse.Namespace(width=1.0, warmup=3, rounds=5, steps=5)


def run(ctx: Context, batch: int) -> StepResult:
    if ctx.quick:
        batch = batch // 64  # 2 and 8: the same code at a size a small CPU runs in seconds
    if ctx.cuda:
        torch.backends.cudnn.benchmark = True  # as Lightning's trainer would for fixed shapes
    names = [name for name in SETTINGS if not (ctx.quick and "compile" in name)]
    args = _args(ctx)
    result = measure(names, args, batch, ctx.device)
    gpu = device_name(ctx.device)
    rows = {}
    for name in names:
        rates = [rate for rate, _ in result["rounds"][name]]
        rows[name] = {"images_per_s_median": statistics.median(rates), "images_per_s_best": max(rates),
                      "first_call_s": result["first_call"][name]}  # fmt: skip
    base = rows[BASELINE]["images_per_s_median"]
    for name, row in rows.items():
        row["ratio_to_baseline"] = row["images_per_s_median"] / base
        row["bf16_peak_share"] = peak_share(row["images_per_s_median"], gpu) if ctx.cuda else None
        no_lrn = {"fp32": "fp32-no-lrn", "bf16": "bf16-no-lrn"}.get(name)
        if no_lrn in rows:
            row["lrn_share"] = 1 - row["images_per_s_median"] / rows[no_lrn]["images_per_s_median"]
    checks = {
        "every setting ran and gave a rate": all(row["images_per_s_median"] > 0 for row in rows.values())
    }
    details = {"batch": batch, "width": args.width, "rounds": args.rounds, "steps_per_round": args.steps,
               "device": gpu, "settings": rows, "checks": checks}  # fmt: skip
    return StepResult(verdict(checks), details)
