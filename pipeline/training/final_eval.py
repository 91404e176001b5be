"""The paper's test protocol at the end of every training job: the final weights (or the best checkpoint's)
on the whole val split, one centre crop and the 10 crops with the softmax averaged (``training.evaluation``),
logged into the job's MLflow run as ``eval/{center,tencrop}_top{1,5}_error`` and ``eval/images``, with the
tag ``eval_weights`` naming the weights.

Sharded across ranks: every rank evaluates its own share of the val images (the loader splits them by rank,
each image once) and the error meters sum the ranks' counts when computed, so DDP evaluates in 1/W of the time
and the split net evaluates on its two devices as it trained. Only rank 0 writes to MLflow.
"""

from __future__ import annotations

import logging

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from pipeline.checkpoints.files import load_checkpoint
from pipeline.data import ShardDataModule
from pipeline.tracking import keys
from pipeline.tracking.writer import run_writer
from pipeline.training.evaluation import evaluate

log = logging.getLogger(__name__)

WEIGHTS = ("final", "best")


def checked_weights(setting: str, weights: str) -> str:
    """``weights`` when it names weights a job ends with (the final ones or the best checkpoint's); else a
    ValueError naming the setting."""
    if weights not in WEIGHTS:
        raise ValueError(f"{setting} must be one of {', '.join(WEIGHTS)} (got {weights!r})")
    return weights


class FinalEvaluation(Callback):
    """Args:
    enabled: false skips it (``python -m pipeline.evaluate run_id=...`` can still evaluate the run later).
    weights: ``final`` (the weights training ended with) or ``best`` (the ModelCheckpoint's best by its
        monitor, val/top1_error; the final weights are put back afterwards).
    limit_batches: evaluate only this many val batches per rank (smoke tests); None = the whole split.
    """

    def __init__(
        self, enabled: bool = True, weights: str = "final", limit_batches: int | None = None
    ) -> None:
        checked_weights("callbacks.final_eval.weights", weights)
        if limit_batches is not None and limit_batches < 1:
            raise ValueError(f"callbacks.final_eval.limit_batches must be >= 1 or null (got {limit_batches})")
        self.enabled = enabled
        self.weights = weights
        self.limit_batches = limit_batches

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.enabled:
            return
        datamodule = trainer.datamodule
        if not isinstance(datamodule, ShardDataModule):
            log.warning("final eval skipped: %s has no full-size val images", type(datamodule).__name__)
            return
        best = self._best_checkpoint(trainer)
        if self.weights == "best" and best is None:
            log.warning("final eval skipped: weights=best, but no best checkpoint was saved")
            return
        with trainer.precision_plugin.forward_context():
            metrics, epoch = self._evaluate(pl_module, datamodule, trainer, best)
        trainer.callback_metrics.update({key: torch.tensor(value) for key, value in metrics.items()})
        self._log(trainer, metrics, epoch)

    def _best_checkpoint(self, trainer: Trainer) -> str | None:
        checkpoint = trainer.checkpoint_callback
        if self.weights != "best" or not isinstance(checkpoint, ModelCheckpoint):
            return None
        return checkpoint.best_model_path or None

    def _evaluate(
        self, module: LightningModule, datamodule: ShardDataModule, trainer: Trainer, best: str | None
    ) -> tuple[dict[str, float], int]:
        """The metrics, and the (0-based) epoch that produced the weights scored."""
        device = trainer.strategy.root_device
        if best is None:
            return evaluate(module, datamodule, device, self.limit_batches), max(trainer.current_epoch - 1, 0)
        final_state = {name: tensor.detach().clone() for name, tensor in module.state_dict().items()}
        checkpoint = load_checkpoint(best, map_location="cpu")
        module.load_state_dict(checkpoint["state_dict"])
        try:
            return evaluate(module, datamodule, device, self.limit_batches), int(checkpoint["epoch"])
        finally:
            module.load_state_dict(final_state)

    def _log(self, trainer: Trainer, metrics: dict[str, float], epoch: int) -> None:
        summary = ", ".join(f"{key} {value:.4f}" for key, value in metrics.items())
        log.info("final eval (%s weights, epoch %d): %s", self.weights, epoch, summary)
        # with the epoch of the weights, as Lightning logs it beside every metric (charts against epoch)
        logged = {**metrics, keys.EPOCH: float(epoch)}
        for logger in trainer.loggers:
            logger.log_metrics(logged, step=trainer.global_step)  # rank 0 only (Lightning's loggers)
        if trainer.is_global_zero and (writer := run_writer(trainer)) is not None:
            writer.set_tag(keys.TAG_EVAL_WEIGHTS, self.weights)  # through the outbox: never blocks
