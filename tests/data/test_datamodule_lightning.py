"""The DataModule under a real Lightning Trainer: epochs reach the workers, per-batch normalising, DDP."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from pipeline.data import ShardDataModule

CROP = 56  # crops of the fixtures' 64x64 images (conftest.py)
BATCH = 4


class LabelRecorder(L.LightningModule):
    """A tiny classifier that records, per batch, its labels and how far inputs + mean are from integers."""

    def __init__(self, num_classes: int, out_dir: str | None = None) -> None:
        super().__init__()
        self.head = torch.nn.Linear(3, num_classes)
        self.out_dir = out_dir
        self.records: list[dict] = []

    def _record(self, stage: str, images: torch.Tensor, labels: torch.Tensor) -> None:
        restored = images + self.trainer.datamodule.mean[None, :, None, None]
        self.records.append(
            {
                "stage": stage,
                "epoch": self.current_epoch,
                "dtype": str(images.dtype),
                "labels": labels.tolist(),
                "off_integer": float((restored - restored.round()).abs().max()),
            }
        )

    def training_step(self, batch, batch_idx):
        images, labels = batch
        self._record("train", images, labels)
        return F.cross_entropy(self.head(images.mean((2, 3))), labels)

    def validation_step(self, batch, batch_idx):
        self._record("val", *batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def on_fit_end(self) -> None:
        if self.out_dir is not None:
            Path(self.out_dir, f"rank{self.global_rank}.json").write_text(json.dumps(self.records))


def _fit(root: Path, module: LabelRecorder, dm: ShardDataModule, **trainer_args) -> None:
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=root,
        **trainer_args,
    )
    trainer.fit(module, datamodule=dm)


def _datamodule(root: Path, num_workers: int) -> ShardDataModule:
    return ShardDataModule(root, batch_size=BATCH, num_workers=num_workers, crop_size=CROP, shuffle_buffer=16)


def test_fit_gives_each_epoch_its_shard_order_and_normalises_per_batch(uneven_shards, tmp_path):
    dm = _datamodule(uneven_shards, num_workers=2)
    module = LabelRecorder(dm.num_classes)
    _fit(tmp_path, module, dm)

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
    _fit(tmp_path, LabelRecorder(dm.num_classes, out_dir=str(tmp_path)), dm, devices=2, strategy="ddp_spawn")
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
