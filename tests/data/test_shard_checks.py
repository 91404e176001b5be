"""data.verify: each shard checked against the manifest's sha256 before its samples leave the reader.

A shard with one byte flipped (size unchanged) is skipped and counted under ``skip``, stops the reader naming
it under ``fail``, and is read as it is under ``off``; with intact shards the batches are the same with the
check on and off (the samples, their order, every crop and flip), with and without workers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil

import pytest
import torch

from data_prep.manifest import MANIFEST_NAME, load_manifest
from pipeline.data import ShardDataModule
from pipeline.data.shard_checks import ShardCheckFailed, ShardChecks, ShardMismatchError
from pipeline.data.spans import SkipCounter, Span, _read_spans
from tests.helpers.faults import flip_byte

CROP, BATCH = 56, 4


@pytest.fixture(scope="module")
def checked_shards(shard_factory):
    """58 train samples in 5 uneven shards (14 batches of 4 per epoch), 20 val samples in 5."""
    return shard_factory("checked", train=[13, 7, 22, 5, 11], val=[5, 3, 6, 2, 4])


@pytest.fixture
def flipped(checked_shards, tmp_path):
    """A copy whose train shard 2 (22 samples) has one byte flipped in its middle: same size, other sha256."""
    root = tmp_path / "shards"
    shutil.copytree(checked_shards, root)
    flip_byte(root / "train" / "train-000002.tar")
    return root


def _checks(root, mode: str) -> ShardChecks:
    manifest = load_manifest(root)
    shards = [
        (str(root.resolve() / s.name), s.bytes, s.sha256)
        for split in manifest.splits.values()
        for s in split.shards
    ]
    return ShardChecks(shards, mode=mode, manifest=str(root / MANIFEST_NAME))


def _read(root, mode: str) -> tuple[list[str], int]:
    """(keys read, samples counted as skipped) reading every train shard whole through the checks."""
    manifest, checks, counter = load_manifest(root), _checks(root, mode), SkipCounter(1)
    spans = [Span(str(root.resolve() / s.name), 0, s.samples) for s in manifest.split("train").shards]
    keys = [sample["__key__"] for sample in _read_spans(spans, counter.handler(0), checks)]
    return keys, counter.total


def test_skip_leaves_out_the_changed_shard_counts_it_and_names_both_hashes(flipped, checked_shards, caplog):
    with caplog.at_level(logging.WARNING, logger="pipeline.data"):
        keys, skipped = _read(flipped, "skip")
    assert skipped == 22 and len(keys) == 58 - 22
    assert not {f"img{label:05d}" for label in range(20, 42)} & set(keys)  # shard 2 holds labels 20..41
    expected = load_manifest(checked_shards).split("train").shards[2].sha256
    found = hashlib.sha256((flipped / "train" / "train-000002.tar").read_bytes()).hexdigest()
    assert f"train-000002.tar does not match {flipped / MANIFEST_NAME}: sha256 {found}" in caplog.text
    assert f"the manifest says {expected}" in caplog.text and "(22 samples lost)" in caplog.text


def test_fail_raises_naming_the_shard(flipped):
    with pytest.raises(ShardCheckFailed, match=r"shard .*train-000002.tar does not match .*data.verify=fail"):
        _read(flipped, "fail")


def test_off_reads_the_changed_bytes_unchecked(flipped):
    keys, _ = _read(flipped, "off")
    assert len(keys) >= 58 - 22  # whatever the flipped byte did to its sample, the shard was read
    assert any(key in keys for key in (f"img{label:05d}" for label in range(20, 42)))


def test_a_verified_shard_changed_later_is_checked_again(checked_shards, tmp_path):
    root = tmp_path / "shards"
    shutil.copytree(checked_shards, root)
    checks = _checks(root, "skip")
    path = str(root.resolve() / "val" / "val-000000.tar")
    with checks.open(path) as stream:
        assert len(stream.read()) == os.path.getsize(path)
    assert checks.counts() == (1, 0)
    flip_byte(root / "val" / "val-000000.tar", offset=700)
    os.utime(path, ns=(1, 1))  # another mtime, whatever the clock's resolution
    with pytest.raises(ShardMismatchError, match="val-000000.tar does not match"):
        checks.open(path)
    assert checks.counts() == (1, 1)


def test_an_unknown_setting_is_refused(checked_shards):
    with pytest.raises(ValueError, match=r"data.verify must be one of skip, fail, off \(got 'sometimes'\)"):
        ShardDataModule(checked_shards, crop_size=CROP, full_size=64, verify="sometimes")


def test_a_manifest_pointing_outside_data_root_is_refused(checked_shards, tmp_path):
    root = tmp_path / "shards"
    shutil.copytree(checked_shards, root)
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    manifest["splits"]["train"]["shards"][0]["name"] = "../../elsewhere/x.tar"
    (root / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"field splits.train.shards\[0\].name is '../../elsewhere/x.tar'"):
        ShardDataModule(root, crop_size=CROP, full_size=64)


def _epochs(root, verify: str, workers: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    dm = ShardDataModule(
        root,
        batch_size=BATCH,
        num_workers=workers,
        crop_size=CROP,
        full_size=64,
        shuffle_buffer=16,
        verify=verify,
    )
    loader = dm.train_dataloader()
    batches = [batch for _ in range(2) for batch in loader]
    batches += list(dm.val_dataloader())
    assert dm.corrupt_samples == 0
    assert dm.shard_checks.counts() == ((10, 0) if verify != "off" else (0, 0))
    return batches


@pytest.mark.parametrize("workers", [0, 2])
def test_intact_shards_give_the_same_batches_with_the_check_on_and_off(checked_shards, workers):
    on, off = _epochs(checked_shards, "skip", workers), _epochs(checked_shards, "off", workers)
    val_batches = 5 if workers == 0 else 6  # each worker's last val batch may be partial
    assert len(on) == len(off) == 2 * 14 + val_batches  # two epochs of train batches, then the val batches
    assert all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(on, off, strict=True))
