"""Where the train loader stands in its epoch: what a checkpoint holds so that a resumed job draws exactly the
batches that an uninterrupted job would have drawn.

The contract: for a seed, the sequence of training batches is a pure function of (seed, epoch, world size,
loader workers), and a resumed job re-enters it at the step it stopped. Each (rank, worker) reads its share of
the epoch as one stream: tar -> shuffle buffer -> decode + crop + flip -> batches (``TrainStream``). A
worker's position is two numbers: the batches it delivered to the training loop, and the samples it drew out
of its shuffle buffer for them (corrupt ones included). Resuming, a worker reads its share back to that sample
through the tar reader and the shuffle buffer only (no JPEG decoding), so the buffer holds what it held; the
crop and flip of a sample are a pure function of (seed, epoch, rank, worker, sample index)
(``transforms.sample_draws``).

The DataLoader takes batches from its workers round robin, so the position also names the worker whose batch
comes next; a resumed loader rotates the workers' roles so that this worker goes first. The position is
counted in the main process as batches are handed to the training loop, so batches that workers prefetched
but the loop has not taken are not counted: they are drawn again after a resume.

In a checkpoint (``LoaderPosition.to_state``, plain ints, loadable with ``weights_only=True``)::

    {"version": 1, "epoch": 3, "batch_size": 64,
     "ranks": [{"next_worker": 1, "batches": [5, 4], "samples": [320, 257]}, ...]}   # one entry per rank
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger("pipeline.data")

STATE_VERSION = 1


@dataclass(frozen=True)
class WorkerPosition:
    batches: int  # batches this worker delivered to the training loop in this epoch
    samples: int  # samples it drew from its shuffle buffer for them (decoded, or skipped as corrupt)


@dataclass(frozen=True)
class RankPosition:
    next_worker: int  # the worker whose batch comes next (the DataLoader's round robin)
    workers: tuple[WorkerPosition, ...]

    @classmethod
    def start(cls, workers: int) -> RankPosition:
        return cls(0, tuple(WorkerPosition(0, 0) for _ in range(workers)))

    @property
    def batches(self) -> int:
        return sum(worker.batches for worker in self.workers)


@dataclass(frozen=True)
class LoaderPosition:
    """The train loader's position on every rank at one step of ``epoch`` (``batch_size`` per rank)."""

    epoch: int
    batch_size: int
    ranks: tuple[RankPosition, ...]

    def to_state(self) -> dict[str, Any]:
        ranks = [
            {
                "next_worker": rank.next_worker,
                "batches": [worker.batches for worker in rank.workers],
                "samples": [worker.samples for worker in rank.workers],
            }
            for rank in self.ranks
        ]
        return {"version": STATE_VERSION, "epoch": self.epoch, "batch_size": self.batch_size, "ranks": ranks}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> LoaderPosition:
        try:
            if state["version"] != STATE_VERSION:
                raise ValueError(f"version {state['version']}, this code reads {STATE_VERSION}")
            ranks = tuple(
                RankPosition(
                    int(rank["next_worker"]),
                    tuple(
                        WorkerPosition(int(b), int(s))
                        for b, s in zip(rank["batches"], rank["samples"], strict=True)
                    ),
                )
                for rank in state["ranks"]
            )
            position = cls(int(state["epoch"]), int(state["batch_size"]), ranks)
        except (KeyError, TypeError, ValueError) as error:
            message = f"the checkpoint's train loader state is malformed ({error}): {state!r:.200}"
            raise ValueError(message) from error
        if not ranks or len({len(rank.workers) for rank in ranks}) != 1:
            raise ValueError(f"the checkpoint's train loader state has no or uneven ranks: {state!r:.200}")
        return position

    @classmethod
    def from_rows(cls, epoch: int, batch_size: int, rows: torch.Tensor) -> LoaderPosition:
        """From the gathered ``PositionTracker.row()`` of every rank: [world size, 1 + 2 x workers]."""
        workers = (rows.shape[1] - 1) // 2
        ranks = tuple(
            RankPosition(
                row[0],
                tuple(
                    WorkerPosition(b, s)
                    for b, s in zip(row[1 : 1 + workers], row[1 + workers :], strict=True)
                ),
            )
            for row in rows.tolist()
        )
        return cls(epoch, batch_size, ranks)

    def rank_start(self, rank: int, world_size: int, quotas: Sequence[int], batch_size: int) -> RankPosition:
        """Where ``rank`` resumes. With the layout the checkpoint was written with (world size, workers, batch
        size), exactly there; with another, at the same step, spreading the delivered batches over the new
        workers as the DataLoader would (the rest of this epoch then differs from the uninterrupted job's)."""
        if (len(self.ranks), len(self.ranks[0].workers), self.batch_size) == (
            world_size,
            len(quotas),
            batch_size,
        ):
            return self.ranks[rank]
        log.warning(
            "resuming epoch %d with %d ranks x %d loader workers x batch %d; the checkpoint was written with "
            "%d x %d x %d: the rest of this epoch's batches differ from an uninterrupted job's",
            self.epoch,
            world_size,
            len(quotas),
            batch_size,
            len(self.ranks),
            len(self.ranks[0].workers),
            self.batch_size,
        )
        return round_robin(quotas, self.ranks[0].batches, batch_size)


def round_robin(quotas: Sequence[int], delivered: int, batch_size: int) -> RankPosition:
    """The position after ``delivered`` batches taken round robin from workers holding ``quotas`` batches,
    each worker skipped once it has delivered its quota (what the DataLoader does)."""
    batches, worker = [0] * len(quotas), 0
    for _ in range(min(delivered, sum(quotas))):
        while batches[worker] >= quotas[worker]:
            worker = (worker + 1) % len(quotas)
        batches[worker] += 1
        worker = (worker + 1) % len(quotas)
    return RankPosition(worker, tuple(WorkerPosition(b, b * batch_size) for b in batches))


class PositionTracker:
    """Counts, in the main process, the batches handed to the training loop in one epoch on this rank."""

    def __init__(self, start: RankPosition) -> None:
        self.next_worker = start.next_worker
        self.batches = [worker.batches for worker in start.workers]
        self.samples = [worker.samples for worker in start.workers]

    def record(self, worker: int, samples: int) -> None:
        """A batch of ``worker`` reached the loop; the worker had drawn ``samples`` samples by its end."""
        self.batches[worker] += 1
        self.samples[worker] = samples
        self.next_worker = (worker + 1) % len(self.batches)

    def row(self) -> torch.Tensor:
        return torch.tensor([self.next_worker, *self.batches, *self.samples], dtype=torch.int64)
