"""The shard loaders: epoch coverage, equal batches per rank, val once, shard order, corrupt samples."""

from __future__ import annotations

import gc
import logging
import warnings
from collections import Counter

import pytest
import torch

from pipeline.data import ShardDataModule
from pipeline.data.spans import epoch_shards

CROP = 56  # crops of the fixtures' 64x64 images (conftest.py)

BATCH = 4


def _module(root, rank=0, world=1, **kwargs) -> ShardDataModule:
    kwargs = {
        "batch_size": BATCH,
        "num_workers": 0,
        "crop_size": CROP,
        "full_size": 64,
        "shuffle_buffer": 16,
    } | kwargs
    dm = ShardDataModule(root, **kwargs)
    dm.set_distributed(rank, world)
    return dm


def _labels(loader) -> list[list[int]]:
    """One list of labels per batch, checking every batch's layout on the way."""
    batches = []
    for images, labels in loader:
        assert images.dtype == torch.uint8 and labels.dtype == torch.int64
        assert images.shape[1:] == (3, CROP, CROP) and images.shape[0] == labels.shape[0]
        batches.append(labels.tolist())
    return batches


@pytest.mark.parametrize("num_workers", [0, 2])
def test_one_rank_sees_every_sample_once_per_epoch(uneven_shards, num_workers):
    loader = _module(uneven_shards, num_workers=num_workers).train_dataloader()
    for _epoch in range(2):
        batches = _labels(loader)
        seen = [label for batch in batches for label in batch]
        assert len(batches) == len(loader) == 58 // BATCH  # the documented floor: 14 full batches, 2 dropped
        assert all(len(batch) == BATCH for batch in batches)
        assert len(set(seen)) == len(seen) == 56 and set(seen) <= set(range(58))


@pytest.mark.parametrize("fixture", ["uneven_shards", "few_shards"])
def test_two_ranks_two_workers_get_equal_batches(request, fixture):
    root = request.getfixturevalue(fixture)
    total = ShardDataModule(root, crop_size=CROP).manifest.split("train").samples
    per_rank = []
    for rank in (0, 1):
        loader = _module(root, rank=rank, world=2, num_workers=2).train_dataloader()
        per_rank.append(_labels(loader))
        assert len(loader) == total // (2 * BATCH)
    assert [len(batches) for batches in per_rank] == [total // (2 * BATCH)] * 2
    seen = [label for batches in per_rank for batch in batches for label in batch]
    assert len(seen) == len(set(seen)) == 2 * BATCH * (total // (2 * BATCH))  # no sample on two ranks


@pytest.mark.parametrize("fixture", ["uneven_shards", "few_shards"])
@pytest.mark.parametrize("crop", ["center", "full"])
def test_val_counts_every_image_exactly_once(request, fixture, crop):
    root = request.getfixturevalue(fixture)
    split = ShardDataModule(root, crop_size=CROP).manifest.split("val")
    first = ShardDataModule(root, crop_size=CROP).manifest.split("train").samples
    counts: Counter[int] = Counter()
    for rank in (0, 1):
        loader = _module(root, rank=rank, world=2, num_workers=2, val_batch_size=3).eval_dataloader(crop=crop)
        batches = 0
        for images, labels in loader:
            assert images.shape[1:] == ((3, CROP, CROP) if crop == "center" else (3, 64, 64))
            counts.update(labels.tolist())
            batches += 1
        assert batches == len(loader)
    assert counts == Counter(range(first, first + split.samples))


def test_centre_crop_is_the_middle_of_the_full_image(uneven_shards):
    dm = _module(uneven_shards)
    (center, _), (full, _) = next(iter(dm.eval_dataloader("center"))), next(iter(dm.eval_dataloader("full")))
    offset = (64 - CROP) // 2
    assert torch.equal(center, full[:, :, offset : offset + CROP, offset : offset + CROP])


@pytest.mark.parametrize(("num_workers", "persistent"), [(0, False), (2, True)])
def test_shard_order_changes_per_epoch_and_is_shared_by_ranks(uneven_shards, num_workers, persistent):
    shards = [(f"s{i}", 10) for i in range(8)]
    orders = {e: [s.url for s in epoch_shards(shards, seed=3, epoch=e, shuffle=True)] for e in range(3)}
    assert orders[0] != orders[1] != orders[2] and sorted(orders[0]) == sorted(orders[1])
    assert orders[1] == [s.url for s in epoch_shards(shards, seed=3, epoch=1, shuffle=True)]

    # Through the loaders: each epoch the two ranks (separate DataModules) split one shared order, so they
    # never overlap, and rank 0's share differs between epochs.
    # Persistent workers keep their dataset copy: the epoch reaches them through shared memory.
    loaders = [
        _module(
            uneven_shards, rank=r, world=2, num_workers=num_workers, persistent_workers=persistent
        ).train_dataloader()
        for r in (0, 1)
    ]
    shares = {}
    for epoch in (0, 1):
        per_rank = [{label for batch in _labels(loader) for label in batch} for loader in loaders]
        assert not per_rank[0] & per_rank[1]
        shares[epoch] = per_rank[0]
    assert shares[0] != shares[1]


def test_corrupt_sample_is_skipped_counted_and_logged(corrupt_shards, caplog):
    dm = _module(corrupt_shards)
    with caplog.at_level(logging.WARNING, logger="pipeline.data"):
        batches = _labels(dm.train_dataloader())
    seen = [label for batch in batches for label in batch]
    assert len(batches) == 24 // BATCH and 9 not in seen  # quota refilled: still 6 full batches
    assert dm.corrupt_samples == 1
    assert "corrupt sample 'img00009'" in caplog.text and "train-000001.tar" in caplog.text


def test_corrupt_count_reaches_the_main_process_from_workers(corrupt_shards):
    dm = _module(corrupt_shards, rank=1, world=2, num_workers=2)  # rank 1 holds sample 9 in some epochs
    loader = dm.train_dataloader()
    lengths = {len(_labels(loader)) for _ in range(4)}
    assert lengths == {24 // (2 * BATCH)}
    assert 1 <= dm.corrupt_samples <= 4  # once in every epoch where sample 9 fell to this rank


def test_reading_closes_every_shard_and_decode_warns_nothing(uneven_shards):
    loader = _module(uneven_shards).train_dataloader()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _labels(loader)
        eval_batches = list(_module(uneven_shards).eval_dataloader())
        del eval_batches
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning | DeprecationWarning)] == []


def test_crop_larger_than_images_is_a_clear_error(uneven_shards):
    loader = _module(uneven_shards, crop_size=227).train_dataloader()
    with pytest.raises(ValueError, match=r"is 64x64, smaller than the crop 227; set data.crop_size <= 64"):
        next(iter(loader))


def test_too_few_samples_for_one_global_batch(few_shards):
    with pytest.raises(ValueError, match="fewer than one global batch"):
        _module(few_shards, rank=0, world=4, batch_size=8).train_dataloader()


def test_a_rank_with_nothing_readable_fails_loudly_instead_of_hanging_ddp(shard_factory):
    root = shard_factory("unreadable", train=[4, 4], val=[1], corrupt=range(8))
    with pytest.raises(RuntimeError, match=r"rank 0 worker 0 produced 0 of 2 batches: no readable sample"):
        _labels(_module(root).train_dataloader())


def test_truncated_shard_counts_its_lost_samples_once_and_batches_stay_equal(shard_factory, caplog):
    root = shard_factory("truncated", train=[8, 8, 8], val=[2])
    shard = root / "train" / "train-000001.tar"
    shard.write_bytes(shard.read_bytes()[:5000])  # cut after its first sample
    dm = _module(root, verify="off")  # the reader's own handling of a short shard (checked: skipped whole)
    with caplog.at_level(logging.WARNING, logger="pipeline.data"):
        batches = _labels(dm.train_dataloader())
    seen = {label for batch in batches for label in batch}
    assert len(batches) == 24 // BATCH
    # the 7 samples after the cut are counted, once although the worker re-reads its share to fill its quota
    assert dm.corrupt_samples == 7 and "train-000001.tar ends after 1 samples" in caplog.text
    assert not seen & set(range(9, 16))  # the samples after the cut were never read
