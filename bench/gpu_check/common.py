"""What every step shares: its result, the run's settings, the device, timing and the bf16 peak table."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

PASS, FAIL, ERROR = "pass", "fail", "error"
NEEDS_CUDA = "skipped: needs CUDA"

# One training image of the paper's net (227 crop, forward + backward): ~0.72 G multiply-adds forward, so
# ~4.3 GFLOP for the three passes (docs/cluster.md, "Planning GPU runs").
FLOP_PER_TRAINING_IMAGE = 4.3e9

# Dense bf16 tensor-core peak, TFLOP/s, from the vendors' data sheets, keyed by a substring of
# torch.cuda.get_device_name(); the first match wins (so "H100 PCIe" before "H100").
BF16_PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.0),  # H200 SXM: the H100 SXM's tensor cores, more and faster memory
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # H100 SXM5 ("NVIDIA H100 80GB HBM3")
    ("A100", 312.0),
    ("L40S", 362.0),
)


def bf16_peak_tflops(device_name: str) -> float | None:
    """The table's peak for this GPU name, or None where it has no row (the share is then not given)."""
    for key, peak in BF16_PEAK_TFLOPS:
        if key in device_name:
            return peak
    return None


def peak_share(images_per_s: float, device_name: str) -> float | None:
    """Images/s as a share of the GPU's dense bf16 peak, at ~4.3 GFLOP per training image."""
    peak = bf16_peak_tflops(device_name)
    return None if peak is None else images_per_s * FLOP_PER_TRAINING_IMAGE / (peak * 1e12)


@dataclasses.dataclass
class Context:
    """The run's settings, as the script passes them to every step."""

    device: torch.device
    quick: bool
    work: Path  # scratch: shards, MLflow store, per-step files (never the folder that is sent back)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


@dataclasses.dataclass
class StepResult:
    status: str
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    seconds: float | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def verdict(checks: dict[str, bool]) -> str:
    """pass where every named check holds, else fail (the failed ones are in the details)."""
    return PASS if all(checks.values()) else FAIL


def timed(function: Callable[[], StepResult]) -> StepResult:
    started = time.perf_counter()
    result = function()
    result.seconds = round(time.perf_counter() - started, 2)
    return result


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"


def write_json(path: Path, data: Any) -> None:
    """Written whole or not at all: a step cut off mid-write leaves no half file for the report to misread."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=1, default=str))
    partial.replace(path)


def max_relative(result: torch.Tensor, reference: torch.Tensor) -> float:
    """Largest |result - reference|, relative to the reference's largest magnitude."""
    reference = reference.double()
    scale = reference.abs().max().clamp_min(1e-30)
    return float((result.double() - reference).abs().max() / scale)


def rms_relative(result: torch.Tensor, reference: torch.Tensor) -> float:
    reference = reference.double()
    return float((result.double() - reference).norm() / reference.norm().clamp_min(1e-30))
