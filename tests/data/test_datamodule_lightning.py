"""The DataModule under a real Lightning Trainer: epochs reach the workers, per-batch normalising, DDP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.data import ShardDataModule
from tests.helpers.label_recorder import LabelRecorder, fit_recorder

CROP = 56  # crops of the fixtures' 64x64 images (conftest.py)
BATCH = 4


def _datamodule(root: Path, num_workers: int) -> ShardDataModule:
    return ShardDataModule(root, batch_size=BATCH, num_workers=num_workers, crop_size=CROP, shuffle_buffer=16)


def test_fit_gives_each_epoch_its_shard_order_and_normalises_per_batch(uneven_shards, tmp_path):
    dm = _datamodule(uneven_shards, num_workers=2)
    module = LabelRecorder(dm.num_classes)
    fit_recorder(tmp_path, module, dm)

    # The trainer's epoch reached the workers: each epoch holds what a plain loader gives for that epoch.
    reference = _datamodule(uneven_shards, num_workers=0).train_dataloader()
    for epoch in (0, 1):
        expected = {label for _, labels in reference for label in labels.tolist()}
        train = [r for r in module.records if r["stage"] == "train" and r["epoch"] == epoch]
        assert len(train) == 58 // BATCH
        assert {label for r in train for label in r["labels"]} == expected

    train = [r for r in module.records if r["stage"] == "train"]
    val = [r for r in module.records if r["stage"] == "val"]
    assert {r["dtype"] for r in module.records} == {"torch.float32"}
    assert max(r["off_integer"] for r in val) < 1e-3  # val: exact mean subtraction, no colour noise
    assert max(r["off_integer"] for r in train) > 0.05  # train: PCA lighting moved the colours
    assert sorted(label for r in val if r["epoch"] == 0 for label in r["labels"]) == list(range(58, 78))


@pytest.mark.slow
def test_ddp_spawn_ranks_come_from_the_trainer(uneven_shards, tmp_path):
    # Under ddp_spawn the DataLoader workers have no process group: the rank must come from the trainer.
    dm = _datamodule(uneven_shards, num_workers=1)
    fit_recorder(
        tmp_path, LabelRecorder(dm.num_classes, out_dir=str(tmp_path)), dm, devices=2, strategy="ddp_spawn"
    )
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for epoch in (0, 1):
        train = [[r for r in records if r["stage"] == "train" and r["epoch"] == epoch] for records in ranks]
        assert [len(batches) for batches in train] == [58 // (2 * BATCH)] * 2
        labels = [label for batches in train for r in batches for label in r["labels"]]
        assert len(labels) == len(set(labels)) == 56
        val = [
            label
            for records in ranks
            for r in records
            if r["stage"] == "val" and r["epoch"] == epoch
            for label in r["labels"]
        ]
        assert sorted(val) == list(range(58, 78))
