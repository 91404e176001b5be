"""LRN alone, forward + backward, on the paper's conv1 and conv2 outputs: each implementation side by side.

    python bench/lrn.py                       # batch 32, 2 threads, NCHW and channels_last, fp32 and bf16

Implementations: torch's ``nn.LocalResponseNorm`` per tower (the reference, the pipeline before this work),
``pipeline.models.lrn``'s torch-op path (the banded GEMM; what GPUs run) and its fused CPU kernel. Rounds are
interleaved (each round times every implementation once) and the median round is reported, with the ratio
against torch's. Imports only torch and pipeline.models.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere, without installing

from pipeline.models.alexnet import LRN_ALPHA, LRN_BETA, LRN_K, LRN_SIZE  # noqa: E402
from pipeline.models.cpu_memory import reuse_freed_memory  # noqa: E402
from pipeline.models.lrn import GroupedLocalResponseNorm, TorchLocalResponseNorm  # noqa: E402

PAPER = {"size": LRN_SIZE, "alpha": LRN_ALPHA, "beta": LRN_BETA, "k": LRN_K, "groups": 2}
SHAPES = {"conv1": (96, 55, 55), "conv2": (256, 27, 27)}  # the LRNs' inputs: after ReLU of conv1 and conv2
LAYOUTS = {"NCHW": torch.contiguous_format, "channels_last": torch.channels_last}
IMPLEMENTATIONS = {
    "torch": lambda: TorchLocalResponseNorm(**PAPER),
    "gemm": lambda: GroupedLocalResponseNorm(**PAPER, fused=False),
    "kernel": lambda: GroupedLocalResponseNorm(**PAPER, fused=True),
}


def forward_backward(module: torch.nn.Module, x: torch.Tensor, grad: torch.Tensor) -> Callable[[], None]:
    """bf16 maps run under autocast, as in bf16-mixed training (torch's LRN has no bf16 CPU kernel)."""

    def run() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=x.dtype == torch.bfloat16):
            y = module(x.detach().requires_grad_())
        y.backward(grad.to(y.dtype))

    return run


def milliseconds(run: Callable[[], None], repeats: int) -> float:
    started = time.perf_counter()
    for _ in range(repeats):
        run()
    return (time.perf_counter() - started) / repeats * 1e3


def measure(batch: int, dtype: torch.dtype, layout: torch.memory_format, args: argparse.Namespace) -> dict:
    """Per implementation: the median over rounds of conv1's + conv2's forward-and-backward milliseconds."""
    generator = torch.Generator().manual_seed(0)
    runs: dict[str, list[Callable[[], None]]] = {name: [] for name in IMPLEMENTATIONS}
    for shape in SHAPES.values():
        x = (torch.randn(batch, *shape, generator=generator) * 40).relu()
        x = x.to(dtype).contiguous(memory_format=layout)
        grad = torch.randn(x.shape, generator=generator).to(dtype).contiguous(memory_format=layout)
        for name, make in IMPLEMENTATIONS.items():
            runs[name].append(forward_backward(make(), x, grad))
    rounds: dict[str, list[float]] = {name: [] for name in IMPLEMENTATIONS}
    for round_ in range(args.rounds + 1):
        for name, layers in runs.items():
            elapsed = sum(milliseconds(run, args.repeats) for run in layers)
            if round_:  # the first round warms up: allocator, oneDNN's choices, the kernel's first load
                rounds[name].append(elapsed)
    return {name: statistics.median(times) for name, times in rounds.items()}


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=3, help="forward+backward calls per layer and round")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reuse_freed_memory()  # as CPU training does
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}: conv1 + conv2, fwd + bwd")
    print("| maps | torch's LRN ms | GEMM LRN ms | ratio | kernel ms | ratio |")
    print("|---|---|---|---|---|---|")
    for dtype in (torch.float32, torch.bfloat16):
        for layout_name, layout in LAYOUTS.items():
            ms = measure(args.batch, dtype, layout, args)
            cells = [f"{str(dtype).removeprefix('torch.')} {layout_name}", f"{ms['torch']:.1f}"]
            for name in ("gemm", "kernel"):
                cells += [f"{ms[name]:.1f}", f"{ms['torch'] / ms[name]:.2f}x"]
            print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
