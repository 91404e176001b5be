"""``data/skipped_samples``: what the loaders could not train on, counted over all ranks and resumes; and
``data/shards_checked`` / ``data/shards_failed``: what data.verify checked against the manifest."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from pipeline.data.shard_checks import BAD, UNCHECKED
from pipeline.tracking import keys


class SkippedSamples(Callback):
    """Logs ``data/skipped_samples``: samples the loaders skipped as corrupt or lost to a damaged shard, over
    all ranks, since the run began (carried across resumes in the checkpoint), every ``log_every_n_steps``
    steps and at each epoch's end. Each skip is also a warning naming the shard (``pipeline.data``).

    At each epoch's end it also logs how many shards data.verify has checked and how many differed from the
    manifest: the union over ranks (each checks what it reads) and over the jobs the run resumed from, so the
    run's lineage says how much of its dataset digest was verified.
    """

    KEY = keys.SKIPPED_SAMPLES

    def __init__(self) -> None:
        self.before = 0  # skipped by the jobs this run resumed from
        self.total = 0
        self.verdicts: torch.Tensor | None = None  # per shard, the worst verdict of any rank and job so far

    def _count(self, trainer: Trainer, pl_module: LightningModule) -> float:
        local = torch.tensor(
            float(getattr(trainer.datamodule, "corrupt_samples", 0)), device=pl_module.device
        )
        self.total = self.before + int(trainer.strategy.reduce(local, reduce_op="sum").item())
        return float(self.total)

    def _shard_counts(self, trainer: Trainer, pl_module: LightningModule) -> tuple[int, int] | None:
        checks = getattr(trainer.datamodule, "shard_checks", None)
        if checks is None:
            return None
        local = checks.verdicts.to(device=pl_module.device, dtype=torch.int32)
        merged = trainer.strategy.reduce(local, reduce_op="max").cpu()
        if self.verdicts is not None and len(self.verdicts) == len(merged):
            merged = torch.maximum(merged, self.verdicts)
        self.verdicts = merged
        return int((merged != UNCHECKED).sum()), int((merged == BAD).sum())

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step % max(trainer.log_every_n_steps, 1) == 0:
            count = self._count(trainer, pl_module)
            pl_module.log(self.KEY, count, on_step=True, on_epoch=False, rank_zero_only=True)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        pl_module.log(self.KEY, self._count(trainer, pl_module), on_epoch=True, rank_zero_only=True)
        counts = self._shard_counts(trainer, pl_module)
        if counts is not None:
            checked, failed = counts
            pl_module.log(keys.SHARDS_CHECKED, float(checked), on_epoch=True, rank_zero_only=True)
            pl_module.log(keys.SHARDS_FAILED, float(failed), on_epoch=True, rank_zero_only=True)

    def state_dict(self) -> dict[str, Any]:
        verdicts = None if self.verdicts is None else self.verdicts.tolist()
        return {"total": self.total, "shard_verdicts": verdicts}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.before = self.total = int(state_dict.get("total", 0))
        verdicts = state_dict.get("shard_verdicts")
        self.verdicts = None if verdicts is None else torch.tensor(verdicts, dtype=torch.int32)
