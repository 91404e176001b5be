"""The loader-side stages of bench/scale.py: one rank's epoch, span tables for many ranks, a 90% resume.

All of them run the training loader's own code (pipeline.data.streams / spans / position) on the manifest of
a real prep output; none decodes a JPEG.
"""

from __future__ import annotations

import io
import time
from collections import defaultdict
from itertools import islice

import torch

from data_prep.manifest import load_manifest
from pipeline.data.position import LoaderPosition, round_robin
from pipeline.data.spans import SkipCounter, Span, epoch_shards, even_range, take_samples
from pipeline.data.streams import TrainStream

WORKERS = 8
PAPER_BATCH = 128
SHUFFLE_BUFFER = 2_000  # conf/data/shards.yaml


def train_shards(out: str) -> list[tuple[str, int]]:
    manifest = load_manifest(out)
    return [(str(manifest.root / s.name), s.samples) for s in manifest.split("train").shards]


def _stream(shards, *, rank: int, world: int, workers: int, batch: int) -> TrainStream:
    return TrainStream(
        shards, transform=lambda sample, draws: sample, batch_size=batch, shuffle_buffer=SHUFFLE_BUFFER,
        seed=0, rank=rank, world_size=world, num_workers=workers,
    )  # fmt: skip


def loader_epoch(out: str) -> dict:
    """Rank 0 of 1, one worker, batch 1: every train sample's key and label, read through tar + shuffle."""
    shards = train_shards(out)
    stream = _stream(shards, rank=0, world=1, workers=1, batch=1)
    handler = SkipCounter(1).handler(0)
    start = time.perf_counter()
    keys, labels = set(), defaultdict(int)
    read = 0
    for sample in stream.sample_pipeline(0, 0, 1, handler):
        keys.add(sample["__key__"])
        labels[int(sample["cls"])] += 1
        read += 1
    seconds = time.perf_counter() - start
    expected = sum(count for _, count in shards)
    return {
        "seconds": seconds, "samples_per_s": read / seconds, "read": read, "distinct": len(keys),
        "expected": expected, "classes_seen": len(labels), "exactly_once": read == len(keys) == expected,
    }  # fmt: skip


def batch_for(samples: int, ranks: int, workers: int) -> int:
    """The paper's 128 per rank, smaller where the count is too small for every worker to get a batch."""
    return max(1, min(PAPER_BATCH, samples // (ranks * workers)))


def rank_spans(shards, *, rank: int, steps: int, workers: int, batch: int) -> list[list[Span]]:
    """Each worker's spans, cut as TrainStream.sample_pipeline cuts them (its take_samples stages)."""
    share = steps * batch
    result = []
    for worker in range(workers):
        first, last = even_range(steps, workers, worker)
        spans = epoch_shards(shards, seed=0, epoch=0, shuffle=True)
        by_node = take_samples(start=rank * share, stop=(rank + 1) * share)(spans)
        result.append(list(take_samples(start=first * batch, stop=last * batch)(by_node)))
    return result


def check_cover(shards, tables: list[list[list[Span]]], step_samples: int) -> dict:
    """Exactly once: the spans of all ranks and workers never overlap, and leave < one global step out."""
    by_shard: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for rank in tables:
        for worker in rank:
            for span in worker:
                by_shard[span.url].append((span.start, span.stop))
    overlaps, covered = 0, 0
    for ranges in by_shard.values():
        ranges.sort()
        for (_, stop), (start, _) in zip(ranges, ranges[1:], strict=False):
            overlaps += start < stop
        covered += sum(stop - start for start, stop in ranges)
    total = sum(count for _, count in shards)
    per_rank = {sum(span.samples for worker in rank for span in worker) for rank in tables}
    return {
        "covered": covered, "dropped": total - covered, "overlaps": overlaps,
        "exactly_once": overlaps == 0 and 0 <= total - covered < step_samples,
        "equal_steps": len(per_rank) == 1,
    }  # fmt: skip


def span_tables(out: str, ranks: int, workers: int = WORKERS) -> dict:
    """Every (rank, worker)'s spans for one epoch; then the last worker of the last rank's first sample."""
    shards = train_shards(out)
    total = sum(count for _, count in shards)
    batch = batch_for(total, ranks, workers)
    stream = _stream(shards, rank=ranks - 1, world=ranks, workers=workers, batch=batch)
    start = time.perf_counter()
    tables = [
        rank_spans(shards, rank=r, steps=stream.batches, workers=workers, batch=batch) for r in range(ranks)
    ]
    seconds = time.perf_counter() - start
    cover = check_cover(shards, tables, ranks * batch)
    start = time.perf_counter()
    first = next(iter(stream.sample_pipeline(0, workers - 1, workers, SkipCounter(1).handler(0))), None)
    first_sample = time.perf_counter() - start
    return {
        "ranks": ranks, "workers": workers, "batch": batch, "steps": stream.batches, "seconds": seconds,
        "first_sample_s": first_sample, "got_first": first is not None, **cover,
    }  # fmt: skip


def resume_position(out: str, ranks: int = 64, workers: int = WORKERS) -> dict:
    """A checkpoint's loader position at 90% of an epoch on ``ranks`` ranks: its size, load time, and the time
    the slowest-placed worker takes to read back to it (tar + shuffle buffer, no decoding)."""
    shards = train_shards(out)
    batch = batch_for(sum(count for _, count in shards), ranks, workers)
    stream = _stream(shards, rank=0, world=ranks, workers=workers, batch=batch)
    delivered = stream.batches * 9 // 10
    start = time.perf_counter()
    rank = round_robin(stream.quotas(), delivered, batch)
    position = LoaderPosition(0, batch, tuple(rank for _ in range(ranks)))
    buffer = io.BytesIO()
    torch.save({"loader": position.to_state()}, buffer)
    compute = time.perf_counter() - start
    buffer.seek(0)
    start = time.perf_counter()
    loaded = LoaderPosition.from_state(torch.load(buffer, weights_only=True)["loader"])
    resumed = loaded.rank_start(ranks - 1, ranks, stream.quotas(), batch)
    load = time.perf_counter() - start
    worker = max(range(workers), key=lambda w: resumed.workers[w].samples)
    skip = resumed.workers[worker].samples
    last = _stream(shards, rank=ranks - 1, world=ranks, workers=workers, batch=batch)
    start = time.perf_counter()
    drawn = sum(1 for _ in islice(last.sample_pipeline(0, worker, workers, SkipCounter(1).handler(0)), skip))
    read_back = time.perf_counter() - start
    return {
        "ranks": ranks, "batch": batch, "steps": stream.batches, "delivered": delivered,
        "state_bytes": buffer.getbuffer().nbytes, "compute_s": compute, "load_s": load,
        "read_back_samples": drawn, "read_back_s": read_back, "at_position": drawn == skip,
    }  # fmt: skip
