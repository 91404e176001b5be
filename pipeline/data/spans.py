"""The shard-level pipeline stages: which samples of which shards a (rank, worker) reads, and reading them.

Items flowing between these stages are ``Span``\\ s: "samples [start, stop) of shard ``url``". The manifest
knows every shard's sample count, so splitting by node and by worker cuts the epoch's stream of samples, not
its list of shards: every rank and every worker gets an exact, contiguous share (at most two partial shards
each), and there is no "No samples found" when ranks x workers exceed the shards. Skipping into a partial
shard reads through its leading members without decoding them. Tar parsing is tarstream.py's.
"""

from __future__ import annotations

import logging
import random
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import BinaryIO

import torch
from webdataset.filters import pipelinefilter

from pipeline.data.shard_checks import ShardChecks, ShardMismatchError, open_shard
from pipeline.data.tarstream import tar_samples
from pipeline.data.transforms import CorruptSampleError

log = logging.getLogger("pipeline.data")


@dataclass(frozen=True)
class Span:
    url: str
    start: int
    stop: int

    @property
    def samples(self) -> int:
        return self.stop - self.start


def epoch_shards(
    shards: Sequence[tuple[str, int]], *, seed: int, epoch: int, shuffle: bool
) -> Iterator[Span]:
    """Whole shards, in an order shuffled with ``seed + epoch``: the same order on every rank."""
    order = list(shards)
    if shuffle:
        random.Random(seed + epoch).shuffle(order)
    for url, samples in order:
        yield Span(url, 0, samples)


def _take_samples(spans: Iterable[Span], start: int, stop: int) -> Iterator[Span]:
    """Keeps positions [start, stop) of the samples the spans hold, taken end to end."""
    position = 0
    for span in spans:
        low, high = max(start, position), min(stop, position + span.samples)
        if low < high:
            yield Span(span.url, span.start + low - position, span.start + high - position)
        position += span.samples
        if position >= stop:
            return


take_samples = pipelinefilter(_take_samples)


def even_range(total: int, parts: int, index: int) -> tuple[int, int]:
    """The ``index``-th of ``parts`` contiguous ranges covering [0, total); sizes differ by at most one."""
    return total * index // parts, total * (index + 1) // parts


class SkipCounter:
    """Counts samples skipped as corrupt or lost to a damaged shard: one shared-memory slot per DataLoader
    worker, so no races.

    The tensor lives in shared memory, so counts made inside worker processes are visible to the main process
    (``total``), where the DataModule reports them for logging.
    """

    def __init__(self, slots: int) -> None:
        self.counts = torch.zeros(max(1, slots), dtype=torch.int64).share_memory_()

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def handler(self, slot: int) -> SkipHandler:
        return SkipHandler(self.counts, slot)


class SkipHandler:
    """A webdataset exception handler: logs and counts corrupt samples, or a damaged shard's lost samples.

    Anything else (a configuration error, a missing file) is re-raised. Damage met again in the same epoch (a
    worker re-reading its range to fill its quota) is counted once. While ``muted`` (a resumed worker reading
    back to its checkpointed position) damage is skipped silently: the checkpoint's count holds it already.
    """

    def __init__(self, counts: torch.Tensor, slot: int) -> None:
        self.counts = counts
        self.slot = slot
        self.seen: set[str] = set()
        self.muted = False

    def __call__(self, exc: Exception, samples: int = 1) -> bool:
        if not isinstance(exc, CorruptSampleError | tarfile.TarError):
            raise exc
        what = str(exc)
        if what not in self.seen:
            self.seen.add(what)
            if not self.muted:
                self.counts[self.slot] += samples
                log.warning("skipped %s%s", what, f" ({samples} samples lost)" if samples != 1 else "")
        return True


def _read_span(stream: BinaryIO, span: Span, handler: SkipHandler) -> Iterator[dict]:
    """Samples [start, stop) of one shard. Damage that stops the tar stream (it cannot resynchronise) is
    handed to ``handler`` with the number of samples it loses: the rest of this span."""
    position = span.start
    try:
        for sample in islice(tar_samples(stream, span.url), span.start, span.stop):
            yield sample
            position += 1
        if position < span.stop:
            raise tarfile.ReadError(
                f"{span.url} ends after {position} samples, fewer than its manifest entry; "
                f"check the shards with alexnet-prep-verify"
            )
    except tarfile.ReadError as exc:
        handler(exc, span.stop - position)


def _read_spans(
    spans: Iterable[Span], handler: SkipHandler, checks: ShardChecks | None = None
) -> Iterator[dict]:
    """tarfile_to_samples for spans: closes each shard when done (no ResourceWarning); a damaged or short
    shard is counted and logged once, and the rest of it skipped. With ``checks``, each shard is checked
    against the manifest's sha256 before any of its samples leaves (``shard_checks``): a mismatch loses the
    whole span (data.verify=skip) or stops the job (data.verify=fail)."""
    for span in spans:
        try:
            stream = open_shard(span.url, checks)
        except ShardMismatchError as exc:
            handler(exc, span.samples)
            continue
        with stream:
            yield from _read_span(stream, span, handler)


read_spans = pipelinefilter(_read_spans)
