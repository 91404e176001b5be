"""Step ``lrn``: the project's LRN on its GEMM path (what GPUs run) against ``torch.nn.LocalResponseNorm``.

Forward and backward, fp32 and bf16, NCHW and channels_last, at conv1's and conv2's shapes of the paper's net
(groups=2, the paper's k, n, alpha, beta). The bounds are the CPU tests' (tests/model/test_lrn.py), so a GPU
that needs looser ones shows up here: fp32 within 1e-5 of torch's LRN (relative to the largest value);
bf16 against the exact (fp64) result: RMS relative error within 1.7x that of rounding the exact result to
bf16, largest error within 3 bf16 roundoffs (2^-8) of the largest value, gradients within 2.
"""

from __future__ import annotations

import torch

from bench.gpu_check.common import Context, StepResult, max_relative, verdict
from pipeline.models.lrn import GroupedLocalResponseNorm, TorchLocalResponseNorm

PAPER = {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 2.0, "groups": 2}
ROUNDOFF = 2.0**-8
FP32_BOUND, BF16_FLOOR_TIMES, BF16_VALUE_ROUNDOFFS, BF16_GRAD_ROUNDOFFS = 1e-5, 1.7, 3.0, 2.0


def _shapes(ctx: Context) -> dict[str, tuple[int, int, int, int]]:
    if ctx.quick:  # the paper's channel counts (the band's size), fewer pixels
        return {"conv1": (2, 96, 19, 19), "conv2": (2, 256, 13, 13)}
    return {"conv1": (32, 96, 55, 55), "conv2": (32, 256, 27, 27)}


def _values_and_grad(module: torch.nn.Module, x: torch.Tensor, grad: torch.Tensor):
    x = x.detach().clone().requires_grad_()
    y = module(x)
    y.backward(grad)
    return y.detach(), x.grad


def _rms_of_nonzero(result: torch.Tensor, exact: torch.Tensor) -> float:
    nonzero = exact != 0
    relative = (result.double() - exact)[nonzero] / exact[nonzero]
    return float(relative.pow(2).mean().sqrt())


def _inputs(shape, layout: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)  # drawn on the CPU: the same numbers on every device
    x = (torch.randn(shape, generator=generator) * 150).relu()  # d over ~2..10: the window matters
    grad = torch.randn(shape, generator=generator)
    memory_format = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    return tuple(t.to(device).contiguous(memory_format=memory_format) for t in (x, grad))


def _case(shape, layout: str, device: torch.device) -> dict[str, float | bool]:
    x, grad = _inputs(shape, layout, device)
    gemm = GroupedLocalResponseNorm(**PAPER, fused=False)  # the torch-op path, what a GPU runs
    reference = TorchLocalResponseNorm(**PAPER)
    y, dx = _values_and_grad(gemm, x, grad)
    ty, tdx = _values_and_grad(reference, x, grad)
    xb, gb = x.bfloat16(), grad.bfloat16()
    yb, dxb = _values_and_grad(gemm, xb, gb)
    exact, exact_grad = _values_and_grad(reference, xb.double(), gb.double())
    floor = _rms_of_nonzero(exact.bfloat16(), exact)
    try:  # torch's own LRN in bf16, for comparison only: the CPU has no bf16 avg_pool3d
        torch_bf16 = _rms_of_nonzero(_values_and_grad(reference, xb, gb)[0], exact) / floor
    except (NotImplementedError, RuntimeError):
        torch_bf16 = None
    row: dict[str, float | bool] = {
        "fp32_values": max_relative(y, ty),
        "fp32_grads": max_relative(dx, tdx),
        "bf16_dtype_kept": yb.dtype == dxb.dtype == torch.bfloat16,
        "bf16_rms_over_floor": _rms_of_nonzero(yb, exact) / floor,
        "bf16_values_roundoffs": max_relative(yb, exact) / ROUNDOFF,
        "bf16_grads_roundoffs": max_relative(dxb, exact_grad) / ROUNDOFF,
        "torch_lrn_bf16_rms_over_floor": torch_bf16,
        "layout_kept": y.is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last"),
    }
    return row


def run(ctx: Context) -> StepResult:
    cases, checks = {}, {}
    for layer, shape in _shapes(ctx).items():
        for layout in ("nchw", "channels_last"):
            name = f"{layer}/{layout}"
            row = cases[name] = _case(shape, layout, ctx.device)
            checks[f"{name}: fp32 values and grads within {FP32_BOUND}"] = (
                row["fp32_values"] <= FP32_BOUND and row["fp32_grads"] <= FP32_BOUND
            )
            checks[f"{name}: bf16 in, bf16 out, layout kept"] = bool(
                row["bf16_dtype_kept"] and row["layout_kept"]
            )
            checks[f"{name}: bf16 RMS <= {BF16_FLOOR_TIMES}x floor"] = (
                row["bf16_rms_over_floor"] <= BF16_FLOOR_TIMES
            )
            checks[f"{name}: bf16 values <= {BF16_VALUE_ROUNDOFFS} roundoffs"] = (
                row["bf16_values_roundoffs"] <= BF16_VALUE_ROUNDOFFS
            )
            checks[f"{name}: bf16 grads <= {BF16_GRAD_ROUNDOFFS} roundoffs"] = (
                row["bf16_grads_roundoffs"] <= BF16_GRAD_ROUNDOFFS
            )
    return StepResult(verdict(checks), {"shapes": _shapes(ctx), "cases": cases, "checks": checks})
