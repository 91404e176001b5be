"""The machine a run trained on, as tags: the same config on the same machine gives bit-identical results,
on another CPU or GPU only statistically equal ones (other vector units run other kernels, whose float
sums round differently), so a reader of a study needs to see which machine made each run.

Tags: the CPU model and its vector extensions (from /proc/cpuinfo where there is one), the kernels torch
picked for it (``torch.backends.cpu.get_cpu_capability()``: DEFAULT, AVX2, AVX512, ...), the torch version,
and the GPU's name and the CUDA version where a GPU is present ("none" otherwise).
"""

from __future__ import annotations

import platform
from pathlib import Path

import torch

from pipeline.tracking import keys

CPUINFO = Path("/proc/cpuinfo")
# The flags that decide which kernels run (x86 SIMD and matrix units; Arm NEON/SVE), in this order.
VECTOR_FLAGS = (
    "sse4_2", "avx", "fma", "f16c", "avx2", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
    "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve", "sve2",
)  # fmt: skip


def cpu_model_and_flags(cpuinfo: str) -> tuple[str, list[str]]:
    """The first processor's model name and the vector flags it lists, from /proc/cpuinfo's text."""
    model, flags = "", set()
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
        elif name in ("flags", "features") and not flags:
            flags = set(value.split())
    return model, [flag for flag in VECTOR_FLAGS if flag in flags]


def machine_tags() -> dict[str, str]:
    cpuinfo = CPUINFO.read_text(errors="replace") if CPUINFO.is_file() else ""
    model, flags = cpu_model_and_flags(cpuinfo)
    tags = {
        keys.TAG_CPU_MODEL: model or platform.processor() or platform.machine() or "unknown",
        keys.TAG_CPU_VECTOR: " ".join(flags) or "unknown",
        keys.TAG_TORCH_CPU_CAPABILITY: torch.backends.cpu.get_cpu_capability(),
        keys.TAG_TORCH_VERSION: torch.__version__,
        keys.TAG_GPU_NAME: "none",
        keys.TAG_CUDA_VERSION: "none",
    }
    if torch.cuda.is_available():
        tags[keys.TAG_GPU_NAME] = torch.cuda.get_device_name(0)
        tags[keys.TAG_CUDA_VERSION] = str(torch.version.cuda)
    return tags
