"""pipeline.models.cpu_memory: with reuse on, a freed large block stays in the heap rather than unmapped.

Checked in a fresh process: in the test session's own, earlier tests (training with reuse on) leave large free
chunks in the heap, which glibc hands out before it considers mmap, whatever the threshold.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.helpers.paths import REPO

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")

CHECK = textwrap.dedent(
    """
    import ctypes

    import torch

    from pipeline.models.cpu_memory import glibc_default_malloc, reuse_freed_memory

    FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
              "keepcost")

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in FIELDS]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2

    def mmapped_bytes():  # bytes glibc serves by mmap (hblkhd): large blocks outside the heap
        return libc.mallinfo2().hblkhd

    def grows_mmapped(size):
        before = mmapped_bytes()
        block = torch.empty(size, dtype=torch.uint8)
        grown = mmapped_bytes() - before >= size
        del block
        return grown

    size = 48 << 20  # above glibc's 32 MiB cap on its mmap threshold: conv1's output at batch 32 is 37 MB
    assert glibc_default_malloc()
    default = grows_mmapped(size)  # glibc's default: a fresh mapping, unmapped on free
    assert reuse_freed_memory()
    reusing = grows_mmapped(size)  # from the heap, where its memory stays after the free
    print(f"mmapped with glibc's default: {default}; with reuse: {reusing}")
    """
)


def test_large_blocks_come_from_the_heap_only_with_reuse_on() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHECK], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "mmapped with glibc's default: True; with reuse: False"
