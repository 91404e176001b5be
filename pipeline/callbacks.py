"""Training callbacks: throughput, conv1 kernel figure (the paper's Figure 3), best checkpoint, skipped
samples; checkpoints on SIGTERM and every N steps or M minutes (what else they hold to resume exactly:
``pipeline.resume``)."""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torchvision.utils import make_grid, save_image

from pipeline.tracking import keys
from pipeline.tracking.outbox import BufferedMlflowLogger

TILE_SCALE = 4
log = logging.getLogger(__name__)


def _mlflow_logger(trainer: Trainer) -> MLFlowLogger | None:
    return next((logger for logger in trainer.loggers if isinstance(logger, MLFlowLogger)), None)


def _log_artifact(logger: MLFlowLogger, path: str, folder: str) -> None:
    """Through the logger's outbox when it has one (pipeline.tracking.outbox), so an outage does not block."""
    if isinstance(logger, BufferedMlflowLogger):
        logger.log_artifact(path, folder)
    else:
        logger.experiment.log_artifact(logger.run_id, path, folder)


def set_run_tag(logger: MLFlowLogger, key: str, value: str) -> None:
    """A tag on the logger's run, through its outbox when it has one (never blocking on the server)."""
    if isinstance(logger, BufferedMlflowLogger):
        logger.set_tag(key, value)
    else:
        logger.experiment.set_tag(logger.run_id, key, value)


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
            _log_artifact(logger, str(path), keys.ARTIFACT_FIGURES)


class BestCheckpointArtifact(Callback):
    """At the end of training, logs the best checkpoint (by the ModelCheckpoint's monitor) into the run."""

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        checkpoint = trainer.checkpoint_callback
        logger = _mlflow_logger(trainer)
        if not trainer.is_global_zero or logger is None or not isinstance(checkpoint, ModelCheckpoint):
            return
        best = checkpoint.best_model_path
        if best and Path(best).is_file():
            _log_artifact(logger, best, keys.ARTIFACT_CHECKPOINTS)
            set_run_tag(logger, keys.TAG_BEST_CHECKPOINT, best)


class CheckpointOnSigterm(Callback):
    """Stops on SIGTERM (Slurm's preemption or requeue) at the end of a training step, on every rank at the
    same step, and writes ``last.ckpt`` there: no step lost, none logged twice.

    Lightning's own SIGTERM handler broadcasts from inside the signal handler, wherever each rank happens to
    be, and a checkpoint (whose loader and RNG state are gathered from all ranks) can then pair mismatched
    collectives and hang. This callback's handler only sets a flag; after each step the ranks agree on it (a
    sum over ranks: any rank signalled stops all) and raise the flag Lightning checks once the step's metrics
    are logged. Lightning then raises SIGTERMException on every rank, and ``on_exception`` writes the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._signalled = False

    def _handler(self, signum: int, frame: Any) -> None:
        self._signalled = True

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # after Lightning registered its handlers; Lightning's teardown puts the ones from before fit back
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._handler)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        signalled = torch.tensor(float(self._signalled), device=pl_module.device)
        if trainer.world_size > 1:
            signalled = trainer.strategy.reduce(signalled, reduce_op="sum")
        if signalled.item() > 0 and not trainer.received_sigterm:
            log.info(
                "SIGTERM: stopping after step %d on every rank, writing %s", trainer.global_step, self.path
            )
            trainer._signal_connector.received_sigterm = True  # Lightning raises at this step's end

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            trainer.save_checkpoint(self.path)


class PeriodicCheckpoint(Checkpoint):
    """Writes ``last.ckpt`` every ``every_n_train_steps`` training steps or every ``every_n_minutes`` minutes,
    whichever comes first (None turns a trigger off), so that a hard kill (SIGKILL, node loss, OOM) costs at
    most that much training. Not on an epoch's last batch: the end-of-epoch checkpoint follows it. Under DDP
    rank 0's clock decides for every rank (a broadcast per step while the time trigger is on).

    A Lightning ``Checkpoint``, so it runs after the other callbacks. It hands the step's metrics to the
    logger before writing: Lightning logs them only after ``on_train_batch_end``, and a job killed in between
    would lose them (the checkpoint covers the step, so no resumed job recomputes it). The logger drops the
    copy Lightning logs next (``BufferedMlflowLogger``: one value per metric and step)."""

    def __init__(
        self, dirpath: str, every_n_train_steps: int | None = None, every_n_minutes: float | None = None
    ) -> None:
        if every_n_train_steps is not None and every_n_train_steps < 1:
            raise ValueError(
                f"callbacks.periodic_checkpoint.every_n_train_steps must be >= 1 or null "
                f"(got {every_n_train_steps})"
            )
        if every_n_minutes is not None and every_n_minutes <= 0:
            raise ValueError(
                f"callbacks.periodic_checkpoint.every_n_minutes must be > 0 or null (got {every_n_minutes})"
            )
        self.path = Path(dirpath) / "last.ckpt"
        self.every_n_train_steps = every_n_train_steps
        self.every_s = every_n_minutes * 60 if every_n_minutes is not None else None
        self._last_save = time.monotonic()

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._last_save = time.monotonic()

    def _due(self, trainer: Trainer) -> bool:
        due = self.every_n_train_steps is not None and trainer.global_step % self.every_n_train_steps == 0
        if self.every_s is not None:
            late = time.monotonic() - self._last_save >= self.every_s
            due = bool(trainer.strategy.broadcast(due or late, src=0))
        return due

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch or not self._due(trainer):
            return
        trainer._logger_connector.update_train_step_metrics()  # what Lightning logs after this hook
        trainer.save_checkpoint(self.path)
        self._last_save = time.monotonic()


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
