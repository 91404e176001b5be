"""A LightningModule that records what the loaders hand it, for the data tests under a real Trainer."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

from pipeline.data import ShardDataModule


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


def fit_recorder(root: Path, module: LabelRecorder, dm: ShardDataModule, **trainer_args) -> None:
    """Two CPU epochs of ``module`` on ``dm``, nothing written but the recorder's own files."""
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
