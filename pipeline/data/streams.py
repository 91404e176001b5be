"""The streams the DataLoaders iterate: one webdataset pipeline per (epoch, rank, worker), read top to bottom.

Train, per epoch::

    shards (manifest order) -> shuffled with seed + epoch (same on every rank)
      -> split by node   (this rank's contiguous share: `batches` x batch_size samples)
      -> split by worker (this worker's whole batches of that share)
      -> tar (checked against the manifest's sha256 before use: shard_checks.py)
      -> samples (damaged ones skipped, counted, logged) -> shuffle buffer
      -> decode JPEG + crop + flip drawn from (seed, epoch, rank, worker, sample index) (in the worker)
         (data.decode=device: the worker draws the same crop + flip, the batch is decoded on the device)
      -> repeat until the worker's quota -> batch, tagged with the worker's position (position.py)

Eval: the same without shuffling, the quota or dropping: every image exactly once across ranks and workers.
Rank and world size are plain constructor arguments (the DataModule takes them from the trainer), never read
from the environment or torch.distributed inside workers, which have no process group under ``ddp_spawn``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any

import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline.data.position import LoaderPosition, PositionTracker, RankPosition
from pipeline.data.shard_checks import ShardChecks
from pipeline.data.spans import SkipCounter, SkipHandler, epoch_shards, even_range, read_spans, take_samples
from pipeline.data.transforms import CorruptSampleError, collate, sample_draws, stream_seed

Batch = tuple[torch.Tensor, torch.Tensor]


def _worker_slot() -> tuple[int, int]:
    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


class TrainStream(IterableDataset):
    """Training batches for one rank: exactly ``len(self)`` full batches per epoch, the same on every rank.

    Each epoch, the shards in that epoch's order form one stream; rank r takes samples
    [r·n, (r+1)·n) with n = ``batches`` x batch_size, ``batches`` = floor(samples / (world x batch_size)), and
    splits those batches evenly among its workers. The < world x batch_size samples left over are dropped this
    epoch (different ones next epoch, as the order changes). A worker short of its quota because of corrupt
    samples re-reads its share (a few samples seen twice), so a corrupt sample cannot make ranks disagree.

    Each batch leaves the worker as (batch, (worker, samples drawn)); ``EpochDataLoader`` keeps the second
    element (the loader's position, ``pipeline.data.position``) and hands the batch on: (images, labels), or
    a ``device_decode.JpegBatch`` with data.decode=device. Where an
    epoch starts (a resumed job: mid-epoch) is set in shared memory by ``set_start`` before the workers start.
    """

    def __init__(
        self,
        shards: Sequence[tuple[str, int]],
        *,
        transform: Callable[[dict[str, Any], tuple[int, int, int]], Any],
        batch_size: int,
        shuffle_buffer: int,
        seed: int,
        rank: int,
        world_size: int,
        num_workers: int,
        collate_fn: Callable[[list[Any]], Any] = collate,
        checks: ShardChecks | None = None,
    ) -> None:
        super().__init__()
        self.shards = list(shards)
        self.checks = checks  # data.verify: each shard checked against the manifest's sha256 as it is read
        self.transform = transform
        self.collate_fn = collate_fn  # data.decode=device: device_decode.collate_jpegs
        self.batch_size = batch_size
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.workers = max(1, num_workers)
        self.samples = sum(count for _, count in self.shards)
        self.batches = self.samples // (world_size * batch_size)
        self.skips = SkipCounter(num_workers)
        # Shared memory: the main process sets them, workers (fresh or persistent) read them when an epoch
        # starts. _start: [rotation, batches done by worker 0..W-1, samples drawn by worker 0..W-1].
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._start = torch.zeros(1 + 2 * self.workers, dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(epoch)

    def set_start(self, start: RankPosition) -> None:
        """Where the next pass starts: each worker's batches and samples done, the worker that goes first."""
        if len(start.workers) != self.workers:
            raise ValueError(
                f"a start for {len(start.workers)} loader workers, this loader has {self.workers}"
            )
        batches = [worker.batches for worker in start.workers]
        samples = [worker.samples for worker in start.workers]
        self._start.copy_(torch.tensor([start.next_worker, *batches, *samples], dtype=torch.int64))

    def quotas(self) -> list[int]:
        """Batches per worker in an epoch."""
        return [
            stop - first
            for first, stop in (even_range(self.batches, self.workers, w) for w in range(self.workers))
        ]

    def __len__(self) -> int:
        return self.batches

    def sample_pipeline(
        self, epoch: int, worker: int, workers: int, handler: SkipHandler
    ) -> wds.DataPipeline:
        """The worker's share of the epoch, read from the tars through the shuffle buffer (no decoding)."""
        share = self.batches * self.batch_size
        first, last = even_range(self.batches, workers, worker)
        return wds.DataPipeline(
            partial(epoch_shards, self.shards, seed=self.seed, epoch=epoch, shuffle=True),
            take_samples(start=self.rank * share, stop=(self.rank + 1) * share),  # split by node
            take_samples(start=first * self.batch_size, stop=last * self.batch_size),  # split by worker
            read_spans(handler=handler, checks=self.checks),
            wds.shuffle(self.shuffle_buffer, seed=hash((self.seed, epoch, self.rank, worker))),
        )

    def _drawn(self, epoch: int, worker: int, handler: SkipHandler) -> Iterator[dict[str, Any] | None]:
        """The share's samples, read again and again (a share short of readable samples refills its quota);
        None marks the end of each pass."""
        while True:
            yield from self.sample_pipeline(epoch, worker, self.workers, handler)
            yield None

    def __iter__(self) -> Iterator[tuple[Any, tuple[int, int]]]:
        slot, workers = _worker_slot()
        if workers != self.workers:
            raise ValueError(f"TrainStream built for {self.workers} loader workers runs under {workers}")
        start = self._start.tolist()
        worker = (slot + start[0]) % workers
        batches_done, samples_done = start[1 + worker], start[1 + workers + worker]
        if batches_done >= self.quotas()[worker]:
            return iter(())
        handler = self.skips.handler(worker % len(self.skips.counts))
        samples = self._drawn(self.epoch, worker, handler)
        handler.muted = True  # reading back to the checkpointed position: tar and shuffle buffer only
        _skip(samples, samples_done)
        handler.muted = False
        return self._batches(samples, worker, handler, batches_done, samples_done)

    def _batches(
        self,
        samples: Iterator[dict[str, Any] | None],
        worker: int,
        handler: SkipHandler,
        produced: int,
        drawn: int,
    ) -> Iterator[tuple[Any, tuple[int, int]]]:
        seed, quota = stream_seed(self.seed, self.epoch, self.rank, worker), self.quotas()[worker]
        batch: list[tuple[torch.Tensor, int]] = []
        readable = drawn > 0  # a pass without one readable sample ends the stream
        for sample in samples:
            if sample is None:
                if not readable:
                    break
                readable = False
                continue
            drawn += 1
            try:
                batch.append(self.transform(sample, sample_draws(seed, drawn - 1)))
            except CorruptSampleError as error:
                handler(error)
                continue
            readable = True
            if len(batch) == self.batch_size:
                yield self.collate_fn(batch), (worker, drawn)
                batch, produced = [], produced + 1
                if produced == quota:
                    return
        raise RuntimeError(
            f"rank {self.rank} worker {worker} produced {produced} of {quota} batches: no readable sample "
            f"in its shards (see the 'skipped' warnings above); check the shards with alexnet-prep-verify"
        )


def _skip(samples: Iterator[dict[str, Any] | None], count: int) -> None:
    """Draws ``count`` samples (pass ends not counted), or fewer at two pass ends in a row (none left)."""
    previous: dict[str, Any] | None = {}
    while count > 0:
        sample = next(samples)
        if sample is None and previous is None:
            return
        count -= sample is not None
        previous = sample


class EvalStream(IterableDataset):
    """Evaluation batches for one rank: every image of the split exactly once across all ranks and workers.

    Rank r takes the r-th of ``world_size`` near-equal contiguous ranges of the samples (manifest order), each
    worker the w-th part of that; the last batch of each worker may be partial. So ranks may differ by a batch
    or so: fine for validation, whose metrics synchronise at epoch end.
    """

    def __init__(
        self,
        shards: Sequence[tuple[str, int]],
        *,
        transform: Callable[[dict[str, Any]], tuple[torch.Tensor, int]],
        batch_size: int,
        rank: int,
        world_size: int,
        num_workers: int,
        checks: ShardChecks | None = None,
    ) -> None:
        super().__init__()
        self.shards = list(shards)
        self.checks = checks
        self.transform = transform
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.num_workers = num_workers
        self.samples = sum(count for _, count in self.shards)
        self.rank_range = even_range(self.samples, world_size, rank)
        self.skips = SkipCounter(num_workers)

    def __len__(self) -> int:
        rank_samples = self.rank_range[1] - self.rank_range[0]
        workers = max(1, self.num_workers)
        return sum(
            math.ceil((stop - start) / self.batch_size)
            for start, stop in (even_range(rank_samples, workers, w) for w in range(workers))
        )

    def __iter__(self) -> Iterator[Batch]:
        worker, workers = _worker_slot()
        start, stop = even_range(self.rank_range[1] - self.rank_range[0], workers, worker)
        handler = self.skips.handler(worker % len(self.skips.counts))
        return iter(
            wds.DataPipeline(
                partial(epoch_shards, self.shards, seed=0, epoch=0, shuffle=False),
                take_samples(start=self.rank_range[0], stop=self.rank_range[1]),  # split by node
                take_samples(start=start, stop=stop),  # split by worker
                read_spans(handler=handler, checks=self.checks),
                wds.map(self.transform, handler=handler),
                wds.batched(self.batch_size, collation_fn=collate, partial=True),
            )
        )


class EpochDataLoader(DataLoader):
    """A DataLoader over a TrainStream that tells the stream its epoch before each pass starts the workers,
    and keeps the stream's position: Lightning saves ``state_dict()`` in every checkpoint and hands it back to
    ``load_state_dict`` on resume, and the next pass of that epoch starts where the checkpoint was written.

    ``epoch_source`` returns the trainer's current epoch (so a resumed run continues the same shard order), or
    None without a trainer, in which case passes are numbered 0, 1, 2, ... ``gather`` collects one int64 row
    per rank ([world size, n]; the identity for one process): a checkpoint holds every rank's position.
    """

    def __init__(
        self,
        dataset: TrainStream,
        *,
        epoch_source: Callable[[], int | None],
        gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(dataset, batch_size=None, **kwargs)
        self.epoch_source = epoch_source
        self.gather = gather or (lambda row: row[None])
        self.passes = 0
        self.epoch = 0
        self.tracker = PositionTracker(RankPosition.start(dataset.workers))
        self._resume: LoaderPosition | None = None

    def __iter__(self) -> Iterator[Batch]:
        return self._pass()

    def _pass(self) -> Iterator[Batch]:
        """One pass, set up at its first batch: Lightning creates the iterator before it settles which epoch
        it runs with it (resuming from an end-of-epoch checkpoint it is the next epoch)."""
        stream: TrainStream = self.dataset
        epoch = self.epoch_source()
        self.epoch = self.passes if epoch is None else epoch
        self.passes += 1
        start = RankPosition.start(stream.workers)
        if self._resume is not None and self._resume.epoch == self.epoch:
            start = self._resume.rank_start(
                stream.rank, stream.world_size, stream.quotas(), stream.batch_size
            )
        self._resume = None
        stream.set_epoch(self.epoch)
        stream.set_start(start)
        tracker = self.tracker = PositionTracker(start)
        for batch, (worker, drawn) in super().__iter__():
            tracker.record(worker, drawn)
            yield batch  # (images, labels), or a device_decode.JpegBatch

    def state_dict(self) -> dict[str, Any]:
        """Every rank's position (a collective under DDP: Lightning calls it on all ranks at a checkpoint)."""
        rows = self.gather(self.tracker.row())
        return LoaderPosition.from_rows(self.epoch, self.dataset.batch_size, rows).to_state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resume = LoaderPosition.from_state(state_dict)
