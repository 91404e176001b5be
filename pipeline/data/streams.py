"""The streams the DataLoaders iterate: one webdataset pipeline per (epoch, rank, worker), read top to bottom.

Train, per epoch::

    shards (manifest order) -> shuffled with seed + epoch (same on every rank)
      -> split by node   (this rank's contiguous share: `batches` x batch_size samples)
      -> split by worker (this worker's whole batches of that share)
      -> tar -> samples (corrupt ones skipped, counted, logged) -> shuffle buffer
      -> decode JPEG + random crop + flip (in the worker) -> repeat until the worker's quota -> batch
         (data.decode=device: the worker draws the same crop + flip, the batch is decoded on the device)

Eval: the same without shuffling, the quota or dropping: every image exactly once across ranks and workers.
Rank and world size are plain constructor arguments (the DataModule takes them from the trainer), never read
from the environment or torch.distributed inside workers, which have no process group under ``ddp_spawn``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from typing import Any

import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline.data.spans import SkipCounter, epoch_shards, even_range, read_spans, take_samples
from pipeline.data.transforms import collate

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
    """

    def __init__(
        self,
        shards: Sequence[tuple[str, int]],
        *,
        transform: Callable[[dict[str, Any]], tuple[torch.Tensor, int]],
        batch_size: int,
        shuffle_buffer: int,
        seed: int,
        rank: int,
        world_size: int,
        num_workers: int,
        collate_fn: Callable[[list[Any]], Any] = collate,
    ) -> None:
        super().__init__()
        self.shards = list(shards)
        self.transform = transform
        self.collate_fn = collate_fn  # data.decode=device: device_decode.collate_jpegs
        self.batch_size = batch_size
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.samples = sum(count for _, count in self.shards)
        self.batches = self.samples // (world_size * batch_size)
        self.skips = SkipCounter(num_workers)
        # Shared memory: the main process sets it, workers (fresh or persistent) read it when an epoch starts.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(epoch)

    def __len__(self) -> int:
        return self.batches

    def sample_pipeline(self, epoch: int, worker: int, workers: int, handler: Callable) -> wds.DataPipeline:
        share = self.batches * self.batch_size
        first, last = even_range(self.batches, workers, worker)
        return wds.DataPipeline(
            partial(epoch_shards, self.shards, seed=self.seed, epoch=epoch, shuffle=True),
            take_samples(start=self.rank * share, stop=(self.rank + 1) * share),  # split by node
            take_samples(start=first * self.batch_size, stop=last * self.batch_size),  # split by worker
            read_spans(handler=handler),
            wds.shuffle(self.shuffle_buffer, seed=hash((self.seed, epoch, self.rank, worker))),
            wds.map(self.transform, handler=handler),
        )

    def __iter__(self) -> Iterator[Batch]:
        worker, workers = _worker_slot()
        first, last = even_range(self.batches, workers, worker)
        if last == first:
            return iter(())
        handler = self.skips.handler(worker % len(self.skips.counts))
        samples = self.sample_pipeline(self.epoch, worker, workers, handler)
        samples = samples.with_epoch((last - first) * self.batch_size)  # re-reads the share if short
        batches = wds.DataPipeline(
            samples, wds.batched(self.batch_size, collation_fn=self.collate_fn, partial=False)
        )
        return _exactly(batches, last - first, where=f"rank {self.rank} worker {worker}")


def _exactly(batches: Iterable[Batch], count: int, where: str) -> Iterator[Batch]:
    """Fails loudly instead of letting one rank run short (which would hang DDP on the next all-reduce)."""
    produced = 0
    for batch in batches:
        yield batch
        produced += 1
    if produced != count:
        raise RuntimeError(
            f"{where} produced {produced} of {count} batches: no readable sample in its shards "
            f"(see the 'skipped' warnings above); check the shards with alexnet-prep-verify"
        )


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
    ) -> None:
        super().__init__()
        self.shards = list(shards)
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
                read_spans(handler=handler),
                wds.map(self.transform, handler=handler),
                wds.batched(self.batch_size, collation_fn=collate, partial=True),
            )
        )


class EpochDataLoader(DataLoader):
    """A DataLoader over a TrainStream that tells the stream its epoch before each pass starts the workers.

    ``epoch_source`` returns the trainer's current epoch (so a resumed run continues the same shard order), or
    None without a trainer, in which case passes are numbered 0, 1, 2, ...
    """

    def __init__(
        self, dataset: TrainStream, *, epoch_source: Callable[[], int | None], **kwargs: Any
    ) -> None:
        super().__init__(dataset, batch_size=None, **kwargs)
        self.epoch_source = epoch_source
        self.passes = 0

    def __iter__(self) -> Iterator[Batch]:
        epoch = self.epoch_source()
        self.dataset.set_epoch(self.passes if epoch is None else epoch)
        self.passes += 1
        return super().__iter__()
