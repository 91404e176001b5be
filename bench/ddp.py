"""DDP scaling on the CPU: images/s per process with 1 and 2 gloo processes at the same per-process batch.

A bare DistributedDataParallel loop (forward, cross-entropy, backward with the gradient all-reduce, SGD step)
over pipeline.models.alexnet.AlexNet on random images already in memory, so only compute and gradient
communication are measured, not data loading. Each process uses one torch thread (one core each), so on an
N-core machine up to N processes are directly comparable. Both world sizes run in this one invocation, one
after the other; scaling efficiency = images/s with 2 processes / (2 x images/s with 1 process). On a shared
machine the wall-clock figure depends on free cores; images per CPU-second of each process (process time,
all its threads) does not, and its ratio shows what DDP itself costs (the gloo all-reduce, the barrier).

    .venv/bin/python bench/ddp.py                       # width 0.25, batch 16 per process, 12 timed steps
    .venv/bin/python bench/ddp.py --width 1 --batch-size 32 --steps 8

The two-device model split against the one-device grouped net is bench/split.py.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from pipeline.models.alexnet import AlexNet


@dataclass(frozen=True)
class Settings:
    width: float
    batch_size: int
    steps: int
    warmup: int
    num_classes: int


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _worker(rank: int, world_size: int, port: int, settings: Settings, out_dir: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(0)  # the same initial weights on every rank, as DDP expects
        model = DistributedDataParallel(AlexNet(settings.num_classes, width=settings.width, dropout=0.0))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        generator = torch.Generator().manual_seed(rank)
        images = torch.randn(settings.batch_size, 3, 227, 227, generator=generator)
        labels = torch.randint(0, settings.num_classes, (settings.batch_size,), generator=generator)
        loss_fn = nn.CrossEntropyLoss()
        wall: list[float] = []
        cpu: list[float] = []
        for step in range(settings.warmup + settings.steps):
            dist.barrier()  # ranks start each step together; a step lasts as long as its slowest rank
            start, start_cpu = time.perf_counter(), time.process_time()
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(images), labels).backward()  # backward all-reduces the gradients (gloo)
            optimizer.step()
            if step >= settings.warmup:
                wall.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
        steps = " ".join(f"{w:.6f},{c:.6f}" for w, c in zip(wall, cpu, strict=True))
        Path(out_dir, f"rank{rank}.txt").write_text(steps)
    finally:
        dist.destroy_process_group()


@dataclass(frozen=True)
class Result:
    world_size: int
    median_step_s: float
    images_per_s_per_process: float
    images_per_cpu_s: float  # per process: robust to other load on a shared machine

    @property
    def images_per_s(self) -> float:
        return self.images_per_s_per_process * self.world_size


def measure(world_size: int, settings: Settings) -> Result:
    with tempfile.TemporaryDirectory() as out_dir:
        mp.spawn(_worker, args=(world_size, _free_port(), settings, out_dir), nprocs=world_size, join=True)
        per_rank = [_read_steps(Path(out_dir, f"rank{rank}.txt")) for rank in range(world_size)]
    # A synchronous step lasts as long as its slowest rank.
    median_wall = statistics.median(max(wall for wall, _ in step) for step in zip(*per_rank, strict=True))
    median_cpu = statistics.median(cpu for steps in per_rank for _, cpu in steps)
    per_process = settings.batch_size / median_wall
    return Result(world_size, median_wall, per_process, settings.batch_size / median_cpu)


def _read_steps(path: Path) -> list[tuple[float, float]]:
    """(wall seconds, CPU seconds) of every timed step, as _worker wrote them."""
    return [(float(wall), float(cpu)) for wall, cpu in (pair.split(",") for pair in path.read_text().split())]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--width", type=float, default=0.25, help="AlexNet width multiplier (1 = the paper)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per process per step")
    parser.add_argument("--steps", type=int, default=12, help="timed steps per world size")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--classes", type=int, default=1000)
    args = parser.parse_args()
    if os.cpu_count() is not None and os.cpu_count() < 2:
        raise SystemExit("bench/ddp.py compares 1 and 2 single-threaded processes: it needs 2 CPU cores")
    settings = Settings(args.width, args.batch_size, args.steps, args.warmup, args.classes)
    print(
        f"AlexNet width {settings.width}, {settings.batch_size} images per process per step, gloo, "
        f"1 thread per process, median of {settings.steps} steps"
    )
    single = measure(1, settings)
    double = measure(2, settings)
    print(f"{'processes':>9} {'step s':>8} {'img/s/process':>14} {'img/s total':>12} {'img/CPU-s/proc':>15}")
    for result in (single, double):
        print(
            f"{result.world_size:>9} {result.median_step_s:>8.3f} {result.images_per_s_per_process:>14.1f} "
            f"{result.images_per_s:>12.1f} {result.images_per_cpu_s:>15.1f}"
        )
    speedup = double.images_per_s / single.images_per_s
    print(f"scaling efficiency 1 -> 2 processes, wall clock: {speedup / 2:.2f} (speed-up {speedup:.2f}x)")
    cpu_efficiency = double.images_per_cpu_s / single.images_per_cpu_s
    print(f"scaling efficiency 1 -> 2 processes, per CPU-second: {cpu_efficiency:.2f} (all-reduce cost)")
    print(f"load average while running: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
