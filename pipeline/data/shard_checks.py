"""Shards checked against the manifest's sha256 as they are read (``data.verify``).

The first time a process's loaders open a shard, the worker reads the whole file into memory, hashes it, and
parses the samples from that memory: the bytes that reach a training step are the bytes that were hashed, and
the shard is read once, not once to check and again to train (a worker whose share starts or ends inside a
shard reads that shard whole the first time; its cost: docs/benchmarks.md). The verdict is kept
in shared memory per shard with the file's (size, mtime_ns), so the other workers, later epochs and the eval
loaders open a verified shard straight from disk; a file changed since (another size or mtime) is hashed
again. Each process checks the bytes it reads itself: ranks on other nodes may read other copies.

- ``skip`` (the default): a shard that does not match is not read; its samples are counted in
  ``data/skipped_samples`` and a warning names the shard and both hashes (``ShardMismatchError`` is a
  ``tarfile.TarError``, so ``spans.SkipHandler`` treats it as a damaged shard);
- ``fail``: ``ShardCheckFailed`` (not a TarError: nothing skips it) ends the job naming the shard;
- ``off``: shards are opened unread, as before this check existed (the run is tagged ``data_verify=off``).

With every shard intact the samples, their order and every draw are the same as with ``off``.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Sequence
from typing import BinaryIO

import torch

VERIFY_MODES = ("skip", "fail", "off")
UNCHECKED, GOOD, BAD = 0, 1, 2
FIX = "rerun data_prep with the same settings (it rewrites changed shards) or `python -m data_prep.verify`"


class ShardMismatchError(tarfile.TarError):
    """The shard's bytes are not the manifest's: data.verify=skip skips and counts its samples."""


class ShardCheckFailed(RuntimeError):
    """data.verify=fail and a shard does not match the manifest: the job stops, naming it."""


class ShardChecks:
    """The verdict on every shard of a prep output, shared by a process's loader workers (shared memory).

    ``shards``: (path, bytes, sha256) per shard, as the manifest lists them; ``manifest``: its path, for the
    messages. ``open(path)`` returns the shard's bytes to parse, checked, or raises as ``mode`` says.
    """

    def __init__(self, shards: Sequence[tuple[str, int, str]], *, mode: str, manifest: str) -> None:
        if mode not in VERIFY_MODES:
            raise ValueError(f"data.verify must be one of {', '.join(VERIFY_MODES)} (got {mode!r})")
        self.mode = mode
        self.manifest = manifest
        self.paths = [path for path, _, _ in shards]
        self.index = {path: i for i, path in enumerate(self.paths)}
        self.expected = [(size, sha256) for _, size, sha256 in shards]
        count = len(self.paths)
        # per shard: the verdict; the (size, mtime_ns) it was reached for; the sha256 found (for messages)
        self.verdicts = torch.zeros(count, dtype=torch.int8).share_memory_()
        self.stamps = torch.zeros((count, 2), dtype=torch.int64).share_memory_()
        self.found = torch.zeros((count, 32), dtype=torch.uint8).share_memory_()

    def open(self, path: str) -> BinaryIO:
        """The shard to read: its bytes, hashed now; the file, where it was verified before at its present
        size and mtime (or with data.verify=off); a ShardMismatchError / ShardCheckFailed where it differs."""
        index = self.index.get(path)
        if self.mode == "off" or index is None:
            return open(path, "rb")
        with open(path, "rb") as stream:
            stat = os.fstat(stream.fileno())
            stamp = torch.tensor([stat.st_size, stat.st_mtime_ns], dtype=torch.int64)
            verdict = int(self.verdicts[index]) if torch.equal(self.stamps[index], stamp) else UNCHECKED
            if verdict == UNCHECKED:
                data = stream.read()
                verdict = self._record(index, stamp, hashlib.sha256(data).digest())
                if verdict == GOOD:
                    return io.BytesIO(data)
        if verdict == GOOD:
            return open(path, "rb")
        raise self._mismatch(index)

    def _record(self, index: int, stamp: torch.Tensor, digest: bytes) -> int:
        verdict = GOOD if digest.hex() == self.expected[index][1] else BAD
        self.verdicts[index] = UNCHECKED  # first: no reader pairs the new stamp with an old verdict
        self.found[index] = torch.frombuffer(bytearray(digest), dtype=torch.uint8)
        self.stamps[index] = stamp
        self.verdicts[index] = verdict
        return verdict

    def _mismatch(self, index: int) -> Exception:
        size, expected = self.expected[index]
        found = bytes(self.found[index].tolist()).hex()
        what = (
            f"shard {self.paths[index]} does not match {self.manifest}: sha256 {found} "
            f"({int(self.stamps[index][0])} bytes), the manifest says {expected} ({size} bytes)"
        )
        if self.mode == "fail":
            return ShardCheckFailed(f"{what}; data.verify=fail stops the job: {FIX}, or set data.verify=skip")
        return ShardMismatchError(f"{what}; its samples are skipped: {FIX}")

    def counts(self) -> tuple[int, int]:
        """(shards checked, shards that failed) by this process's loaders so far."""
        checked = int((self.verdicts != UNCHECKED).sum())
        return checked, int((self.verdicts == BAD).sum())


def open_shard(path: str, checks: ShardChecks | None) -> BinaryIO:
    """The shard at ``path`` to read, through ``checks`` where there are some."""
    return open(path, "rb") if checks is None else checks.open(path)
