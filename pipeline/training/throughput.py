"""How fast a run trains, and is it input-bound? Images per second, and the share of step time spent waiting
for the next batch (the machine's load is MLflow's system metrics: ``pipeline.tracking.system_metrics``).

``ImagesPerSecond`` logs ``throughput/images_per_s``: training images per second over all ranks, averaged over
each logging window, data loading included (the rate a user actually gets).

``DataWaitFraction`` logs ``throughput/data_wait_fraction`` once per epoch: of the host's wall time between
the first batch request and the last training step of the epoch, the share spent between steps, i.e. waiting
for the DataLoader, moving the batch to the device and (``data.decode=device``) decoding it there, plus
Lightning's per-step bookkeeping (logging, step checkpoints). Validation is not counted. Above ``warn_above``
it logs one line saying what to change. On a GPU the launched work queued ahead can hide short waits, so the
fraction is an upper bound on the GPU's idle time from input; ``system/gpu_0_utilization_percentage``
confirms.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from pipeline.tracking import keys

log = logging.getLogger(__name__)


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


class DataWaitFraction(Callback):
    """Logs ``throughput/data_wait_fraction`` per epoch (mean over ranks) and warns above ``warn_above``."""

    KEY = keys.DATA_WAIT_FRACTION

    def __init__(self, warn_above: float = 0.1) -> None:
        self.warn_above = warn_above
        self._mark: float | None = None
        self._wait = self._busy = 0.0
        self._images = 0

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._mark = time.perf_counter()  # the epoch's first batch request (and its worker start) follows
        self._wait = self._busy = 0.0
        self._images = 0

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        if self._mark is not None:
            self._wait += now - self._mark
        self._mark = now

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        if self._mark is not None:
            self._busy += now - self._mark
        self._mark = now
        self._images += int(batch[1].shape[0])

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._mark is not None:
            self._mark = time.perf_counter()  # a mid-epoch validation is not a wait for training data

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._mark = None
        sums = [self._wait, self._busy + self._wait, float(self._images)]
        local = torch.tensor(sums, dtype=torch.float64, device=pl_module.device)  # NCCL reduces CUDA tensors
        wait, total, images = (float(x) for x in trainer.strategy.reduce(local, reduce_op="sum"))
        if total <= 0:
            return
        fraction = wait / total
        pl_module.log(self.KEY, fraction, on_step=False, on_epoch=True)
        if trainer.is_global_zero and fraction > self.warn_above:
            seconds = total / trainer.world_size
            log.warning(input_bound_advice(trainer, fraction, images / seconds if seconds > 0 else 0.0))


def input_bound_advice(trainer: Trainer, fraction: float, images_per_s: float) -> str:
    """The end-of-epoch line: how input-bound the epoch was and which setting to change."""
    data = trainer.datamodule
    workers, decode = getattr(data, "num_workers", None), getattr(data, "decode", None)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    head = (
        f"epoch {trainer.current_epoch}: {fraction:.0%} of the training time went to waiting for data "
        f"({images_per_s:,.0f} images/s over all ranks): the run is input-bound"
    )
    if decode == "workers":
        return (
            f"{head}. Raise data.num_workers (now {workers} per process; {cores} cores visible to this one) "
            "or set data.decode=device to decode the JPEGs on the GPU (docs/cluster.md)."
        )
    if decode == "device":
        return (
            f"{head}. With data.decode=device the workers only read shards: raise data.num_workers (now "
            f"{workers}) if they fall behind, else the decode itself is the limit (docs/cluster.md)."
        )
    return f"{head}. Raise data.num_workers (now {workers}) (docs/cluster.md)."
