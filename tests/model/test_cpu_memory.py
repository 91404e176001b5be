"""pipeline.models.cpu_memory: with reuse on, a freed large block stays in the heap rather than unmapped."""

from __future__ import annotations

import ctypes
import sys

import pytest
import torch

from pipeline.models.cpu_memory import glibc_default_malloc, reuse_freed_memory

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def mmapped_bytes() -> int:
    """Bytes glibc currently serves by mmap (mallinfo2's hblkhd): large blocks outside the heap."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    return libc.mallinfo2().hblkhd


def test_large_blocks_come_from_the_heap_only_with_reuse_on() -> None:
    size = 48 << 20  # above glibc's 32 MiB cap on its mmap threshold: conv1's output at batch 32 is 37 MB
    try:
        assert glibc_default_malloc()
        before = mmapped_bytes()
        block = torch.empty(size, dtype=torch.uint8)
        assert mmapped_bytes() - before >= size  # glibc's default: a fresh mapping, unmapped on free
        del block
        assert reuse_freed_memory()
        before = mmapped_bytes()
        block = torch.empty(size, dtype=torch.uint8)
        assert mmapped_bytes() - before < size  # from the heap, where its memory stays after the free
        del block
    finally:
        reuse_freed_memory()  # what AlexNetModule.setup leaves a CPU training process with
