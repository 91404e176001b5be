"""Step ``environment``: what the figures came from (GPU, driver, CUDA, Python and library versions)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys

import torch

from bench.gpu_check.common import NEEDS_CUDA, PASS, Context, StepResult, bf16_peak_tflops, device_name

PACKAGES = (
    "torch", "torchvision", "lightning", "torchmetrics", "numpy", "pillow",
    "hydra-core", "omegaconf", "mlflow", "mlflow-skinny", "webdataset", "braceexpand",
)  # fmt: skip


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _driver() -> str | None:
    """The driver's version from nvidia-smi (torch does not report it); None without the tool."""
    if shutil.which("nvidia-smi") is None:
        return None
    done = subprocess.run(
        ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else None


def run(ctx: Context) -> StepResult:
    details = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "device": str(ctx.device),
        "versions": {package: _version(package) for package in PACKAGES},
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
    }
    if not ctx.cuda:
        details["gpu"] = NEEDS_CUDA
        return StepResult(PASS, details)
    props = torch.cuda.get_device_properties(ctx.device)
    name = device_name(ctx.device)
    details.update(
        gpu=name,
        gpu_memory_gib=round(props.total_memory / 2**30, 1),
        multiprocessors=props.multi_processor_count,
        capability=f"{props.major}.{props.minor}",
        driver=_driver(),
        bf16_peak_tflops=bf16_peak_tflops(name),
        bf16_supported=torch.cuda.is_bf16_supported(),
    )
    return StepResult(PASS, details)
