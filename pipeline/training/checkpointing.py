"""When a job writes its checkpoints: at every epoch's end (``last.ckpt``, and the best by val error), every
N steps or M minutes, and on SIGTERM at a step boundary; and the best one logged into the run at the end.
What a checkpoint holds beyond Lightning's state: ``pipeline.checkpoints.resume``; the files themselves:
``pipeline.checkpoints.files``."""

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
from lightning.pytorch.utilities.exceptions import SIGTERMException

from pipeline.checkpoints.files import BEST_STEM, LAST_NAME, LAST_STEM
from pipeline.tracking import keys
from pipeline.tracking.writer import run_writer
from pipeline.training.lightning_internals import log_step_metrics_now, stop_after_this_step

log = logging.getLogger(__name__)


def signalled_on_any_rank(signalled: bool, trainer: Trainer, pl_module: LightningModule) -> bool:
    """Whether a signal reached any rank: the ranks must agree at a step boundary, or they would stop at
    different steps and the next collective would hang. One process asks no device: this runs after every
    step, and a tensor read back from a GPU would wait for its queue to drain."""
    if trainer.world_size == 1:
        return signalled
    flag = trainer.strategy.reduce(torch.tensor(float(signalled), device=pl_module.device), reduce_op="sum")
    return flag.item() > 0


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt`` at every epoch's end, whatever the val error did (Lightning's ``save_last`` skips epochs
    whose monitor did not improve), overwriting the one a SIGTERM or periodic checkpoint wrote mid-epoch."""

    def __init__(self, dirpath: str) -> None:
        super().__init__(
            dirpath=dirpath, filename=LAST_STEM, monitor=None, save_top_k=1, enable_version_counter=False
        )


class BestCheckpoint(ModelCheckpoint):
    """``best-epochNNN.ckpt``: the ``save_top_k`` epochs with the lowest ``monitor`` (val/top1_error)."""

    def __init__(
        self, dirpath: str, monitor: str = keys.VAL_TOP1, mode: str = "min", save_top_k: int = 1
    ) -> None:
        super().__init__(
            dirpath=dirpath,
            filename=BEST_STEM,
            auto_insert_metric_name=False,
            monitor=monitor,
            mode=mode,
            save_top_k=save_top_k,
            save_last=False,
        )


class BestCheckpointArtifact(Callback):
    """At the end of training, logs the best checkpoint (by the ModelCheckpoint's monitor) into the run."""

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        checkpoint, writer = trainer.checkpoint_callback, run_writer(trainer)
        if not trainer.is_global_zero or writer is None or not isinstance(checkpoint, ModelCheckpoint):
            return
        best = checkpoint.best_model_path
        if best and Path(best).is_file():
            writer.log_artifact(best, keys.ARTIFACT_CHECKPOINTS)
            writer.set_tag(keys.TAG_BEST_CHECKPOINT, best)


class CheckpointOnSigterm(Callback):
    """Stops on SIGTERM (Slurm's preemption or requeue) at the end of a training step, on every rank at the
    same step, and writes ``last.ckpt`` there: no step lost, none logged twice.

    Lightning's own SIGTERM handler broadcasts from inside the signal handler, wherever each rank happens to
    be, and a checkpoint (whose loader and RNG state are gathered from all ranks) can then pair mismatched
    collectives and hang. This callback's handler only sets a flag; after each step the ranks agree on it (a
    sum over ranks: any rank signalled stops all) and every rank asks Lightning to stop at this step's end
    (``stop_after_this_step``). Lightning then raises SIGTERMException on every rank, and ``on_exception``
    writes the file."""

    def __init__(self, ckpt_dir: Path) -> None:
        self.path = Path(ckpt_dir) / LAST_NAME
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
        if signalled_on_any_rank(self._signalled, trainer, pl_module) and not trainer.received_sigterm:
            log.info(
                "SIGTERM: stopping after step %d on every rank, writing %s", trainer.global_step, self.path
            )
            stop_after_this_step(trainer)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            trainer.save_checkpoint(self.path)


class PeriodicCheckpoint(Checkpoint):
    """Writes ``last.ckpt`` every ``every_n_train_steps`` training steps or every ``every_n_minutes`` minutes,
    whichever comes first (None turns a trigger off), so that a hard kill (SIGKILL, node loss, OOM) costs at
    most that much training. Not on an epoch's last batch: the end-of-epoch checkpoint follows it. Under DDP
    rank 0's clock decides for every rank (a broadcast per step while the time trigger is on).

    A Lightning ``Checkpoint``, so it runs after the other callbacks. It hands the step's metrics to the
    logger before writing (``log_step_metrics_now``): Lightning logs them only after ``on_train_batch_end``,
    and a job killed in between would lose them (the checkpoint covers the step, so no resumed job recomputes
    it). The logger drops the copy Lightning logs next (``BufferedMlflowLogger``: one value per metric and
    step)."""

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
        self.path = Path(dirpath) / LAST_NAME
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
        log_step_metrics_now(trainer)
        trainer.save_checkpoint(self.path)
        self._last_save = time.monotonic()
