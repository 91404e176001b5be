"""The train loader's position: a loader restored from ``state_dict()`` after k batches yields exactly the
batches an uninterrupted loader yields from batch k on (same samples, crops, flips, order), for any k, with 0,
2 or 3 workers, with corrupt samples in the shards; reading back to the position decodes nothing."""

from __future__ import annotations

import logging

import pytest
import torch

from pipeline.data import ShardDataModule
from pipeline.data.position import LoaderPosition, RankPosition, WorkerPosition, round_robin

CROP, BATCH = 56, 4


@pytest.fixture(scope="module")
def damaged_shards(shard_factory):
    """58 train samples in 5 uneven shards, 2 of them corrupt (14 batches of 4 per epoch, one rank)."""
    return shard_factory("resume", train=[13, 7, 22, 5, 11], val=[5, 3], corrupt=[17, 30])


def _loader(root, workers: int, rank: int = 0, world: int = 1):
    dm = ShardDataModule(
        root, batch_size=BATCH, num_workers=workers, crop_size=CROP, full_size=64, shuffle_buffer=16
    )
    dm.set_distributed(rank, world)
    return dm.train_dataloader()


def _read_into(root, workers: int, batches: int) -> tuple[list, dict]:
    """The first ``batches`` batches of a fresh train loader, and its state_dict after them."""
    loader = _loader(root, workers)
    iterator = iter(loader)
    head = [next(iterator) for _ in range(batches)]
    return head, loader.state_dict()  # the iterator goes with this frame: its workers stop here


def _same(left: list, right: list) -> bool:
    return len(left) == len(right) and all(
        torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(left, right, strict=True)
    )


@pytest.mark.parametrize("workers", [0, 2, 3])
def test_a_restored_loader_continues_with_the_very_next_batch(damaged_shards, workers):
    reference = _loader(damaged_shards, workers)
    epochs = [[(x.clone(), y.clone()) for x, y in reference] for _ in range(2)]
    assert len(epochs[0]) == 14 and not _same(epochs[0], epochs[1])
    for stop in (1, 5, 13, 14) if workers == 0 else (5, 14):  # mid-epoch, and at its end
        head, state = _read_into(damaged_shards, workers, stop)
        resumed = _loader(damaged_shards, workers)
        resumed.load_state_dict(state)
        assert _same(head + list(resumed), epochs[0]), f"epoch 0 resumed after {stop} batches"
        assert _same(list(resumed), epochs[1]), f"epoch 1 after a resume at {stop}"


def test_reading_back_to_the_position_decodes_nothing(damaged_shards, monkeypatch):
    _, state = _read_into(damaged_shards, 0, 10)
    decoded = []
    import pipeline.data.transforms as transforms

    original = transforms.decode_sample
    monkeypatch.setattr(transforms, "decode_sample", lambda *a: decoded.append(1) or original(*a))
    resumed = _loader(damaged_shards, 0)
    resumed.load_state_dict(state)
    assert len(list(resumed)) == 4
    assert len(decoded) <= 4 * BATCH + 2  # the 4 remaining batches (and at most the 2 corrupt samples)


def test_the_state_is_plain_and_round_trips():
    position = LoaderPosition(3, 8, (RankPosition(1, (WorkerPosition(2, 17), WorkerPosition(1, 8))),))
    state = position.to_state()
    assert state == {
        "version": 1,
        "epoch": 3,
        "batch_size": 8,
        "ranks": [{"next_worker": 1, "batches": [2, 1], "samples": [17, 8]}],
    }
    assert LoaderPosition.from_state(state) == position
    with pytest.raises(ValueError, match="train loader state is malformed"):
        LoaderPosition.from_state({**state, "ranks": [{"next_worker": 0}]})


def test_round_robin_skips_workers_that_delivered_their_quota():
    # quotas 4, 5, 4, 5: after 4 rounds (16 batches) only workers 1 and 3 deliver
    position = round_robin([4, 5, 4, 5], 17, batch_size=2)
    assert [w.batches for w in position.workers] == [4, 5, 4, 4] and position.next_worker == 2
    assert position.workers[1].samples == 10


def test_another_layout_resumes_at_the_same_step_with_a_warning(damaged_shards, caplog):
    _, state = _read_into(damaged_shards, 2, 6)
    resumed = _loader(damaged_shards, 3)
    resumed.load_state_dict(state)
    with caplog.at_level(logging.WARNING, logger="pipeline.data"):
        assert len(list(resumed)) == 14 - 6
    assert "the checkpoint was written with 1 x 2 x 4" in caplog.text
