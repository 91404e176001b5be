"""Images/s of the two-device SplitAlexNet against the one-device grouped AlexNet, side by side.

Both towers on the CPU by default: the split then does the grouped net's arithmetic plus the activation copies
at the crossings, so the ratio shows the split's overhead (expect about 1x). Steps alternate between the two
nets so that load from other processes hits both alike. Reported: images/s from the median and the fastest
step, and images per CPU-second of this process (robust to a busy machine; exact with --threads 1).

    .venv/bin/python bench/split.py                        # full-size net, batch 16, training steps
    .venv/bin/python bench/split.py --threads 1            # on a shared machine: compare images/CPU-s
    .venv/bin/python bench/split.py --mode eval --batch-size 32
    .venv/bin/python bench/split.py --devices cuda:0 cuda:1 --batch-size 128   # on a two-GPU machine
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.alexnet import AlexNet
from pipeline.models.split import SplitAlexNet


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--width", type=float, default=1.0, help="AlexNet width multiplier (1.0 = the paper)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per net")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per net first")
    parser.add_argument("--mode", choices=("train", "eval"), default="train", help="SGD step or inference")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--devices", nargs=2, default=("cpu", "cpu"), help="the split's two devices")
    return parser.parse_args()


def synchronize(devices: tuple[torch.device, ...]) -> None:
    for device in devices:
        if device.type == "cuda":
            torch.cuda.synchronize(device)


def make_step(net: nn.Module, mode: str, x: torch.Tensor, labels: torch.Tensor) -> Callable[[], None]:
    """A closure running one training step (forward, backward, SGD) or one inference forward."""
    if mode == "eval":
        net.eval()

        def infer() -> None:
            with torch.no_grad():
                net(x)

        return infer
    net.train()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def train() -> None:
        optimizer.zero_grad(set_to_none=True)
        logits = net(x)
        F.cross_entropy(logits, labels.to(logits.device)).backward()
        optimizer.step()

    return train


def time_steps(
    steps: dict[str, Callable[[], None]], warmup: int, timed: int, devices: tuple[torch.device, ...]
) -> dict[str, tuple[list[float], list[float]]]:
    """Wall and process-CPU seconds of each timed step, the nets taking turns step by step."""
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in steps}
    for index in range(warmup + timed):
        for name, step in steps.items():
            synchronize(devices)
            wall, cpu = time.perf_counter(), time.process_time()
            step()
            synchronize(devices)
            if index >= warmup:
                times[name][0].append(time.perf_counter() - wall)
                times[name][1].append(time.process_time() - cpu)
    return times


def report(times: dict[str, tuple[list[float], list[float]]], batch_size: int) -> None:
    # CPU seconds per image are robust to other processes taking the cores (exact with --threads 1).
    rates = {
        name: (
            batch_size / statistics.median(walls),
            batch_size / min(walls),
            batch_size / statistics.median(cpus),
        )
        for name, (walls, cpus) in times.items()
    }
    print(f"  {'':<28} {'images/s (median)':>18} {'images/s (best)':>16} {'images/CPU-s':>13}")
    for name, (median, best, per_cpu) in rates.items():
        print(f"  {name:<28} {median:18.2f} {best:16.2f} {per_cpu:13.2f}")
    grouped, split = rates.values()
    median, best, per_cpu = (s / g for g, s in zip(grouped, split, strict=True))
    print(f"  {'split / grouped':<28} {median:17.3f}x {best:15.3f}x {per_cpu:12.3f}x")


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    devices = tuple(torch.device(d) for d in args.devices)
    torch.manual_seed(0)
    grouped = AlexNet(1000, width=args.width).to(devices[0])
    split = SplitAlexNet(1000, width=args.width, devices=devices)
    split.load_state_dict(grouped.state_dict())
    x = torch.randn(args.batch_size, 3, 227, 227, device=devices[0]) * 50
    labels = torch.randint(0, 1000, (args.batch_size,), device=devices[0])
    steps = {
        "grouped (1 device)": make_step(grouped, args.mode, x, labels),
        f"split ({devices[0]}, {devices[1]})": make_step(split, args.mode, x, labels),
    }
    print(
        f"AlexNet width={args.width} batch={args.batch_size} mode={args.mode} threads={args.threads} "
        f"timed steps={args.steps} per net"
    )
    report(time_steps(steps, args.warmup, args.steps, devices), args.batch_size)


if __name__ == "__main__":
    main()
