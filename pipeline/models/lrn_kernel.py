"""The fused CPU LRN kernel (``lrn_cpu.cpp``): built by torch's C++ extension tools, loaded once per process.

The first use on a machine compiles it (~10 s; ``scripts/install.sh`` does it at install time) into torch's
extension cache (``TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``); later processes load the
cached library in milliseconds, and an edited source is rebuilt. The build is tuned to the CPU it runs on
(``-march=native``), so its name carries a digest of the CPU's model and flags: nodes of different CPU types
sharing one home directory keep separate builds. Without a C++ compiler, or with ``ALEXNET_FUSED_LRN=0``, the
LRN runs as torch ops instead (``pipeline.models.lrn``): the same function, ~2x slower on a CPU.

Imports only torch and the standard library: the model files must run on a machine with torch alone.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import platform
import sysconfig
import time
import warnings
from pathlib import Path
from types import ModuleType

import torch

__all__ = ["available", "build_name"]

SOURCE = Path(__file__).with_name("lrn_cpu.cpp")
# -fno-math-errno lets sqrt vectorise; OpenMP is what at::parallel_for runs on (torch's own runtime).
CFLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fopenmp"]
log = logging.getLogger(__name__)


def build_name() -> str:
    """``alexnet_lrn_cpu_<digest>`` of the CPU's model and feature flags, the kernel's source and its flags:
    one build per CPU type and source, so checkouts of different sources on one machine (branches, worktrees)
    build side by side in torch's extension cache instead of rebuilding one folder in turn."""
    cpu = platform.machine()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu += "".join(line for line in lines if line.startswith(("model name", "flags", "Features")))[:4096]
    except OSError:
        cpu += platform.processor()
    digest = hashlib.sha256(cpu.encode())
    digest.update(SOURCE.read_bytes())
    digest.update(" ".join(CFLAGS).encode())
    return f"alexnet_lrn_cpu_{digest.hexdigest()[:12]}"


_loaded: bool | None = None  # None: not tried yet in this process


def available() -> bool:
    """Whether ``torch.ops.alexnet_lrn`` is loaded: builds or loads the kernel on the first eager call.

    While torch.compile traces, it only reports what eager calls found (the build is not traceable): a graph
    traced before any eager LRN call uses the torch-op path, which inductor fuses itself.
    """
    global _loaded
    if _loaded is None:
        if torch.compiler.is_compiling():
            return False
        _loaded = _load()
    return _loaded


def _load() -> bool:
    if os.environ.get("ALEXNET_FUSED_LRN", "1") == "0":
        return False
    started = time.perf_counter()
    cpp_extension = _import_quietly("torch.utils.cpp_extension")  # slow to import; only CPUs need it
    _put_on_path(sysconfig.get_path("scripts"))  # pip's ninja, when this venv's python runs unactivated
    try:
        cpp_extension.load(
            name=build_name(),
            sources=[str(SOURCE)],
            extra_cflags=CFLAGS,
            extra_ldflags=["-fopenmp"],
            is_python_module=False,
        )
    except Exception as error:  # any failure to build or load: no compiler or ninja, a read-only cache, ...
        warnings.warn(
            f"the fused CPU LRN kernel ({SOURCE.name}) could not be built, so LRN runs as torch ops (the "
            "same function, ~2x slower on a CPU). Install a C++ compiler (g++) and ninja, or set "
            f"ALEXNET_FUSED_LRN=0 to silence this. The build said: {error}",
            stacklevel=2,
        )
        return False
    _register_fake_kernels()
    log.info("fused CPU LRN kernel ready in %.1f s (%s)", time.perf_counter() - started, build_name())
    return True


def _put_on_path(directory: str) -> None:
    """torch runs ``ninja`` from PATH."""
    path = os.environ.get("PATH", "")
    if directory not in path.split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([directory, path]) if path else directory


def _import_quietly(module: str) -> ModuleType:
    """Imports ``module`` without its import-time warning that a CPU-only machine has no CUDA runtime."""
    logger = logging.getLogger(module)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return importlib.import_module(module)
    finally:
        logger.setLevel(level)


def _register_fake_kernels() -> None:
    """Shapes for torch.compile's tracing: both ops return a tensor like their input."""

    @torch.library.register_fake("alexnet_lrn::forward")
    def _forward(x, size, alpha, beta, k, groups):  # noqa: ANN001, ANN202 (signature fixed by the schema)
        return torch.empty_like(x)

    @torch.library.register_fake("alexnet_lrn::backward")
    def _backward(grad, x, size, alpha, beta, k, groups):  # noqa: ANN001, ANN202
        return torch.empty_like(x)


def main() -> None:
    """scripts/install.sh: build the kernel now rather than in the first training run."""
    logging.basicConfig(level=logging.INFO, format="[install] %(message)s")
    print(f"[install] fused CPU LRN kernel: {'built' if available() else 'not built (torch-op LRN instead)'}")
