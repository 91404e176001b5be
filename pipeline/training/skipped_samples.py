"""``data/skipped_samples``: what the loaders could not train on, counted over all ranks and resumes."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from pipeline.tracking import keys


class SkippedSamples(Callback):
    """Logs ``data/skipped_samples``: samples the loaders skipped as corrupt or lost to a damaged shard, over
    all ranks, since the run began (carried across resumes in the checkpoint), every ``log_every_n_steps``
    steps and at each epoch's end. Each skip is also a warning naming the shard (``pipeline.data``)."""

    KEY = keys.SKIPPED_SAMPLES

    def __init__(self) -> None:
        self.before = 0  # skipped by the jobs this run resumed from
        self.total = 0

    def _count(self, trainer: Trainer, pl_module: LightningModule) -> float:
        local = torch.tensor(
            float(getattr(trainer.datamodule, "corrupt_samples", 0)), device=pl_module.device
        )
        self.total = self.before + int(trainer.strategy.reduce(local, reduce_op="sum").item())
        return float(self.total)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step % max(trainer.log_every_n_steps, 1) == 0:
            count = self._count(trainer, pl_module)
            pl_module.log(self.KEY, count, on_step=True, on_epoch=False, rank_zero_only=True)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        pl_module.log(self.KEY, self._count(trainer, pl_module), on_epoch=True, rank_zero_only=True)

    def state_dict(self) -> dict[str, Any]:
        return {"total": self.total}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.before = self.total = int(state_dict.get("total", 0))
