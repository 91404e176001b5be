"""Keep freed CPU memory for reuse: glibc's malloc returns every block above 32 MiB to the OS on free.

PyTorch has no caching allocator on the CPU: each op's output is a fresh malloc. glibc serves blocks above its
mmap threshold (dynamic, at most 32 MiB) with a fresh mmap and unmaps them on free, so every large activation
of every step (conv1's output at batch 32 is 37 MB) is zero-filled page by page by the kernel on first touch:
a ReLU over it costs 21 ms of CPU instead of 9. Raising the threshold to 1 GiB (and never trimming the heap)
makes freed blocks stay in the heap, where the next step's same-sized tensors reuse them. Measured on the
paper's net, batch 32, 1 thread: the whole fp32 training step runs 1.24-1.38x faster (docs/benchmarks.md).
The cost: the process keeps its peak memory instead of returning it between steps. glibc only (Linux);
elsewhere this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["glibc_default_malloc", "reuse_freed_memory"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
_REUSE = {_M_MMAP_THRESHOLD: 1 << 30, _M_TRIM_THRESHOLD: 2**31 - 1}
# glibc's own steady state once large blocks have been freed: threshold at its 32 MiB cap, trim at twice that.
_GLIBC_DEFAULT = {_M_MMAP_THRESHOLD: 32 << 20, _M_TRIM_THRESHOLD: 64 << 20}


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None  # musl has neither


def _set(settings: dict[int, int]) -> bool:
    libc = _libc()
    return libc is not None and all(libc.mallopt(key, value) == 1 for key, value in settings.items())


def reuse_freed_memory() -> bool:
    """Keep freed blocks of up to 1 GiB in this process's heap; True if glibc took the settings."""
    return _set(_REUSE)


def glibc_default_malloc() -> bool:
    """Back to glibc's steady-state behaviour, releasing the heap's free memory (benchmarks compare both)."""
    done = _set(_GLIBC_DEFAULT)
    if done:
        _libc().malloc_trim(0)
    return done
