"""Training-step throughput of the paper's net under each speed setting, side by side in one process.

    python bench/step.py                                   # CPU: batch 32 and 128, 2 threads, every setting
    python bench/step.py --batch 32 --profile bf16         # + torch.profiler's table and LRN's share
    python bench/step.py --device cuda --batch 128 512 --settings fp32-torch-lrn fp32 bf16 bf16+compile

A step is what training does: forward, cross-entropy, backward, SGD with momentum, on one fixed batch. The
baseline is eager fp32 with torch's LRN (``TorchLocalResponseNorm``: the pipeline before this work); every
other setting is a ratio against it. Rounds are interleaved (each round runs every setting once, one step by
default) so that load from other processes on a shared machine hits all settings alike. Reported per setting:
the median round; the best round (load only ever slows a step down, so on a busy machine the best of many
rounds is the closest to the unloaded speed); images per CPU-second of this process (moves less with others'
load; with 2 threads it also counts OpenMP's spin-waiting). LRN's share of a step, from the best rounds, is
1 - (images/s) / (images/s of the same setting without LRN): the no-LRN settings are the same net with
``nn.Identity`` for both LRNs. ``torch.compile``'s first call is timed on its own and reported, not hidden.

Imports only torch and pipeline.models (plain torch modules), so it runs on a bare GPU machine too: on CUDA,
timings synchronise the device; "fp32" there means torch's defaults (cuDNN may use TF32 for convolutions).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere, without installing

from pipeline.models.alexnet import AlexNet  # noqa: E402
from pipeline.models.cpu_memory import glibc_default_malloc, reuse_freed_memory  # noqa: E402
from pipeline.models.lrn import use_torch_lrn  # noqa: E402

AUTOCAST = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}


@dataclasses.dataclass(frozen=True)
class Setting:
    precision: str = "32"  # Lightning's trainer.precision: 32-true, bf16-mixed, 16-mixed
    lrn: str = "fast"  # fast (pipeline.models.lrn: the fused kernel on CPUs) | gemm (its torch-op path)
    # | torch (torch.nn.LocalResponseNorm, the reference) | none (nn.Identity)
    channels_last: bool = False
    compile: bool = False
    fused_sgd: bool = True  # the pipeline's optimizer now; foreach SGD before this work
    malloc_reuse: bool = True  # CPU: freed blocks stay in the heap, as training now does (cpu_memory.py)


SETTINGS = {
    # the baseline, the pipeline before this work: torch's LRN, foreach SGD, glibc's malloc as it comes
    "fp32-torch-lrn": Setting(lrn="torch", fused_sgd=False, malloc_reuse=False),
    "fp32-torch-lrn+fused-sgd": Setting(lrn="torch", malloc_reuse=False),  # each change alone ...
    "fp32-torch-lrn+malloc-reuse": Setting(lrn="torch", fused_sgd=False),
    "fp32-fast-lrn": Setting(fused_sgd=False, malloc_reuse=False),  # ... the fast LRN alone
    "fp32": Setting(),
    "fp32+channels_last": Setting(channels_last=True),
    "fp32+channels_last-gemm-lrn": Setting(lrn="gemm", channels_last=True),
    "fp32+compile": Setting(compile=True),
    "bf16-torch-lrn": Setting("bf16", lrn="torch"),
    "bf16": Setting("bf16"),
    "bf16+channels_last": Setting("bf16", channels_last=True),
    "bf16+compile": Setting("bf16", compile=True),
    "bf16+channels_last+compile": Setting("bf16", channels_last=True, compile=True),
    "fp32+channels_last+compile": Setting(channels_last=True, compile=True),
    "fp16": Setting("16"),
    "fp32-no-lrn": Setting(lrn="none"),
    "fp32+channels_last-no-lrn": Setting(lrn="none", channels_last=True),
    "bf16-no-lrn": Setting("bf16", lrn="none"),
}
BASELINE = "fp32-torch-lrn"
CPU_DEFAULT = [name for name in SETTINGS if name != "fp16"]  # CPU autocast has no fp16 speed-up to show


# The profiler's events that make up LRN's time: the forward's range and the backward's autograd node (not
# also "autograd::engine::evaluate_function: ...", the same time again).
LRN_EVENTS = {"LRN forward", "_LocalResponseNormBackward", "_FusedLocalResponseNormBackward"}


class _Marked(nn.Module):
    """Wraps an LRN layer in a profiler range (its backward shows up as _...LocalResponseNormBackward)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.profiler.record_function("LRN forward"):
            return self.inner(x)


class Runner:
    """One setting's net and batch; ``run(steps)`` trains that many steps: (wall seconds, CPU seconds)."""

    def __init__(self, setting: Setting, args: argparse.Namespace, batch: int, device: torch.device) -> None:
        torch.manual_seed(0)
        net = AlexNet(1000, width=args.width, lrn=setting.lrn != "none")
        if setting.lrn == "torch":
            use_torch_lrn(net)
        if setting.lrn == "gemm":
            net.lrn1.fused = net.lrn2.fused = False
        if not setting.compile:  # a profiler range inside a compiled graph would only get in its way
            for name in ("lrn1", "lrn2"):
                setattr(net, name, _Marked(getattr(net, name)))
        memory_format = torch.channels_last if setting.channels_last else torch.contiguous_format
        self.net = net.to(device, memory_format=memory_format).train()
        if setting.compile:
            self.net.compile()
        generator = torch.Generator().manual_seed(1)
        images = torch.randn(batch, 3, 227, 227, generator=generator) * 50  # mean-subtracted pixel scale
        self.images = images.to(device).contiguous(memory_format=memory_format)
        self.labels = torch.randint(0, 1000, (batch,), generator=generator).to(device)
        self.device, self.dtype = device, AUTOCAST[setting.precision]
        self.optimizer = torch.optim.SGD(
            self.net.parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-4, fused=setting.fused_sgd
        )

    def step(self) -> None:
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            loss = F.cross_entropy(self.net(self.images), self.labels)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)  # frees the grads: only weights and momentum stay

    def run(self, steps: int) -> tuple[float, float]:
        _synchronize(self.device)
        started, cpu_started = time.perf_counter(), time.process_time()
        for _ in range(steps):
            self.step()
        _synchronize(self.device)
        return time.perf_counter() - started, time.process_time() - cpu_started


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(names: list[str], args: argparse.Namespace, batch: int, device: torch.device) -> dict:
    """Per setting: the first call's seconds and, per round, (images/s, images per CPU-second)."""
    runners = {name: Runner(SETTINGS[name], args, batch, device) for name in names}
    first_call = {}
    for name, runner in runners.items():  # warm-up: compilation, allocator, oneDNN's kernel choice
        first_call[name] = runner.run(1)[0]
        runner.run(args.warmup)
    rounds: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    # glibc's malloc settings are process-wide: each round runs the settings without reuse first, then
    # the others, switching once each way (a switch to glibc's default releases the heap's free memory).
    order = sorted(names, key=lambda name: SETTINGS[name].malloc_reuse)
    for _ in range(args.rounds):
        reusing = None
        for name in order:
            runner = runners[name]
            if device.type == "cpu" and SETTINGS[name].malloc_reuse != reusing:
                reusing = SETTINGS[name].malloc_reuse
                if reusing:
                    reuse_freed_memory()
                    runner.run(1)  # fills the heap with this step's blocks, as any step after the first
                else:
                    glibc_default_malloc()
            wall, cpu = runner.run(args.steps)
            rounds[name].append((args.steps * batch / wall, args.steps * batch / cpu))
    return {"rounds": rounds, "first_call": first_call, "runners": runners}


def report(names: list[str], result: dict, batch: int, args: argparse.Namespace) -> None:
    rounds = result["rounds"]
    median = {name: statistics.median(r for r, _ in rounds[name]) for name in names}
    best = {name: max(r for r, _ in rounds[name]) for name in names}
    cpu = {name: statistics.median(c for _, c in rounds[name]) for name in names}
    print(f"\nbatch {batch}, width {args.width}, {args.rounds} rounds of {args.steps} step(s) per setting")
    print(f"(ratios: against {BASELINE}; LRN share: 1 - images/s / images/s of the setting without LRN)")
    print(
        "| setting | images/s median | ratio | best round | ratio | LRN share (best) | images/CPU-s | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        cells = [f"{name}"]
        for values in (median, best):
            cells += [f"{values[name]:.1f}", _ratio(values, name)]
        cells += [_lrn_share(name, best), f"{cpu[name]:.1f}", _ratio(cpu, name)]
        print("| " + " | ".join(cells) + " |")
    for name in names:
        if SETTINGS[name].compile:
            seconds = result["first_call"][name] - batch / median[name]
            print(
                f"torch.compile, {name}: first step took {result['first_call'][name]:.1f} s "
                f"(~{seconds:.1f} s of compilation)"
            )


def _ratio(values: dict[str, float], name: str) -> str:
    return f"{values[name] / values[BASELINE]:.2f}x" if BASELINE in values else "-"


def _lrn_share(name: str, rates: dict[str, float]) -> str:
    setting = SETTINGS[name]
    if setting.lrn == "none":
        return "-"
    without = dataclasses.replace(setting, lrn="none")
    twin = next((other for other, s in SETTINGS.items() if other in rates and s == without), None)
    return f"{1 - rates[name] / rates[twin]:.0%}" if twin else "-"


def profile(runner: Runner, steps: int = 2) -> None:
    """torch.profiler over ``steps`` steps: the top ops by self time, and the fast LRN's share of the step."""
    runner.run(1)
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities) as prof:
        started = time.perf_counter()
        for _ in range(steps):
            runner.step()
        _synchronize(runner.device)
        wall_us = (time.perf_counter() - started) * 1e6
    events = prof.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=15))
    lrn_us = sum(event.cpu_time_total for event in events if event.key in LRN_EVENTS)
    print(
        f"LRN (forward ranges + its backward): {lrn_us / 1e3:.1f} ms of {wall_us / 1e3:.1f} ms "
        f"= {lrn_us / wall_us:.1%} of the step (under the profiler)"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--width", type=float, default=1.0, help="AlexNet width multiplier (1.0 = the paper)")
    parser.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), help="default: all (CPU: no fp16)")
    parser.add_argument("--steps", type=int, default=1, help="timed steps per setting and round")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps after the first call")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (CPU)")
    parser.add_argument("--profile", choices=sorted(SETTINGS), help="profile this setting (CPU ops)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    names = args.settings or (CPU_DEFAULT if device.type == "cpu" else list(SETTINGS))
    if args.profile and args.profile not in names:
        names.append(args.profile)
    print(
        f"torch {torch.__version__}, {device}"
        + (
            f", {args.threads} threads"
            if device.type == "cpu"
            else f" ({torch.cuda.get_device_name(device)})"
        )
    )
    for batch in args.batch:
        result = measure(names, args, batch, device)
        report(names, result, batch, args)
        if args.profile:
            profile(result["runners"][args.profile])
        del result


if __name__ == "__main__":
    main()
