"""``python -m bench.gpu_check STEP --work DIR [--device cuda|cpu] [--quick]``: one step, DIR/steps/STEP.json.

``python -m bench.gpu_check report --work DIR --out OUT_DIR``: the steps' results into OUT_DIR/gpu_check.json
and a summary on stdout. ``scripts/gpu_check.sh`` runs these; run a step by hand to look into one.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from bench.gpu_check import common, report
from bench.gpu_check.common import ERROR, Context, StepResult


def _steps() -> dict[str, Callable[[Context], StepResult]]:
    """Imported on use: a step whose imports fail (a missing wheel) fails alone, as an error."""

    def lazy(module: str, **kwargs) -> Callable[[Context], StepResult]:
        def call(ctx: Context) -> StepResult:
            imported = __import__(f"bench.gpu_check.{module}", fromlist=["run"])
            return partial(imported.run, **kwargs)(ctx)

        return call

    return {
        "environment": lazy("environment"),
        "lrn": lazy("lrn_check"),
        "decode": lazy("decode_check"),
        "bf16": lazy("precision_check"),
        "split": lazy("split_check"),
        "end_to_end": lazy("end_to_end"),
        "step_b128": lazy("step_bench", batch=128),
        "step_b512": lazy("step_bench", batch=512),
        "loaders": lazy("loader_bench"),
    }


STEPS = tuple(_steps())


def run_step(name: str, ctx: Context) -> StepResult:
    try:
        return common.timed(lambda: _steps()[name](ctx))
    except Exception as exc:  # noqa: BLE001 - every failure of a step is its result, never the run's end
        traceback.print_exc()
        return StepResult(ERROR, error=f"{type(exc).__name__}: {exc}"[:2000])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=[*STEPS, "report"])
    parser.add_argument("--work", type=Path, required=True, help="scratch folder shared by the steps")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--quick", action="store_true", help="small sizes: the CPU rehearsal")
    parser.add_argument("--out", type=Path, help="report: the folder for gpu_check.json")
    args = parser.parse_args(argv)
    if args.step == "report":
        if args.out is None:
            parser.error("report needs --out OUT_DIR")
        return report.main(args.work, args.out)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        result = StepResult(ERROR, error="--device cuda, but torch sees no CUDA device here (--device cpu)")
    else:
        if device.type == "cuda":
            device = torch.device(
                "cuda", torch.cuda.current_device() if device.index is None else device.index
            )
        ctx = Context(device=device, quick=args.quick, work=args.work)
        result = run_step(args.step, ctx)
    common.write_json(args.work / "steps" / f"{args.step}.json", result.to_json())
    print(f"{args.step}: {result.status}" + (f" ({result.error.splitlines()[0]})" if result.error else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
