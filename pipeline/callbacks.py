"""Training callbacks: throughput, conv1 kernel figure (the paper's Figure 3), best checkpoint, SIGTERM."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torchvision.utils import make_grid, save_image

from pipeline.tracking import keys

TILE_SCALE = 4


def _mlflow_logger(trainer: Trainer) -> MLFlowLogger | None:
    return next((logger for logger in trainer.loggers if isinstance(logger, MLFlowLogger)), None)


class ImagesPerSecond(Callback):
    """Logs ``throughput/images_per_s``: training images per second over all ranks, averaged over each logging
    window of ``trainer.log_every_n_steps`` steps, data loading included (the rate a user actually gets)."""

    KEY = keys.IMAGES_PER_S

    def __init__(self) -> None:
        self._window_start: float | None = None
        self._window_images = 0

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._window_start = time.perf_counter()  # validation between epochs is not training throughput
        self._window_images = 0

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._window_images += int(batch[1].shape[0]) * trainer.world_size
        if trainer.global_step % max(trainer.log_every_n_steps, 1) != 0 or self._window_start is None:
            return
        elapsed = time.perf_counter() - self._window_start
        if elapsed > 0:
            pl_module.log(self.KEY, self._window_images / elapsed, on_step=True, on_epoch=False)
        self._window_start = time.perf_counter()
        self._window_images = 0


def conv1_kernel_figure(weight: torch.Tensor, path: Path, groups: int = 2) -> Path:
    """Draws conv1's kernels as RGB tiles, one row block per tower, as the paper's Figure 3 (96 kernels,
    11x11x3, the top half learned on GPU 1, the bottom half on GPU 2). Each kernel is scaled to [0, 1] on its
    own; tiles are enlarged 4x (nearest) so that an 11x11 kernel is visible at a glance."""
    kernels = weight.detach().float().cpu()
    count = kernels.shape[0]
    columns = min(count, 16) if count % groups else max(1, min(count // groups, 16))
    tiles = torch.nn.functional.interpolate(kernels, scale_factor=TILE_SCALE, mode="nearest")
    grid = make_grid(tiles, nrow=columns, padding=2, normalize=True, scale_each=True, pad_value=1.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, path)
    return path


class Conv1KernelFigure(Callback):
    """At the end of training, logs ``figures/conv1_kernels.png`` into the run (and keeps it in out_dir)."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        weight = pl_module.net.state_dict()["conv1.weight"]  # the split net's state_dict merges its towers
        path = conv1_kernel_figure(weight, self.out_dir / "conv1_kernels.png")
        logger = _mlflow_logger(trainer)
        if logger is not None:
            logger.experiment.log_artifact(logger.run_id, str(path), keys.ARTIFACT_FIGURES)


class BestCheckpointArtifact(Callback):
    """At the end of training, logs the best checkpoint (by the ModelCheckpoint's monitor) into the run."""

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        checkpoint = trainer.checkpoint_callback
        logger = _mlflow_logger(trainer)
        if not trainer.is_global_zero or logger is None or not isinstance(checkpoint, ModelCheckpoint):
            return
        best = checkpoint.best_model_path
        if best and Path(best).is_file():
            logger.experiment.log_artifact(logger.run_id, best, keys.ARTIFACT_CHECKPOINTS)
            logger.experiment.set_tag(logger.run_id, keys.TAG_BEST_CHECKPOINT, best)


class CheckpointOnSigterm(Callback):
    """Writes ``last.ckpt`` when Lightning stops on SIGTERM (Slurm preemption or requeue). Lightning raises
    SIGTERMException at a batch boundary, after the step's metrics are logged, so the requeued job resumes at
    the next step: no step lost, none logged twice."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            trainer.save_checkpoint(self.path)
