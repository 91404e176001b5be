"""The LightningModule: AlexNet, cross-entropy, the paper's SGD and lr schedule, top-1/top-5 error.

It takes plain arguments and builds the network itself, so ``AlexNetModule.load_from_checkpoint(path)``
rebuilds the whole model from the checkpoint alone. ``split_devices`` builds the paper's two-device split
(``SplitAlexNet``) instead of the one-device grouped net; the state_dict is the same either way.
``channels_last`` and ``compile`` change how the step runs, never what it computes (nor the state_dict keys).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from pipeline.models import AlexNet, AlexNetHParams, SplitAlexNet
from pipeline.models.cpu_memory import reuse_freed_memory
from pipeline.tracking import keys
from pipeline.tracking.writer import run_writer
from pipeline.training.lr_policy import DEFAULT_START_MARGIN, PlateauDrops

log = logging.getLogger(__name__)


def build_net(
    num_classes: int,
    hparams: AlexNetHParams,
    *,
    init_std: float | None,
    split_devices: Sequence[str] | None,
) -> nn.Module:
    """The grouped AlexNet, or the same weights split over two devices (drawn once, on the grouped layout)."""
    grouped = AlexNet(num_classes, hparams)
    if init_std is not None:
        for layer in grouped.modules():
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(layer.weight, mean=0.0, std=init_std)
    if split_devices is None:
        return grouped
    split = SplitAlexNet(num_classes, hparams, devices=tuple(split_devices))
    split.load_state_dict(grouped.state_dict())
    return split


class AlexNetModule(LightningModule):
    """AlexNet trained as in the paper.

    Args:
        num_classes: fc8 outputs.
        **net: the net's hyperparameters, the fields of ``pipeline.models.AlexNetHParams`` (width, lrn, pool,
            dropout, groups, one_gpu_half, in_size, bias_init); left out, the paper's. Flat keywords, so that
            the config (``model.lrn=false``) and the checkpoint's hparams read as they always have.
        init_std: redraw every conv/fc weight from N(0, init_std); None keeps the paper's N(0, 0.01).
            Narrow demo nets want about 0.01 / sqrt(width): the paper's 0.01 at full width keeps a signal
            through eight layers, while at width 1/8 it shrinks ~3x more per layer and the loss stalls at
            chance.
        split_devices: two devices (e.g. ``["cuda:0", "cuda:1"]``) to split the net over as the paper did;
            None = the one-device net.
        channels_last: weights and input batches in NHWC memory layout (what GPU tensor cores and oneDNN
            prefer for convolutions); the function is unchanged.
        compile: ``torch.compile`` the net (``nn.Module.compile``: in place, same state_dict keys). The first
            training and the first validation step each pay the compilation, logged once each.
        lr, momentum, weight_decay: SGD (the paper: 0.01, 0.9, 5e-4).
        decay_biases: weight decay on biases too (the paper's update rule does; Caffe's recipe does not).
        lr_factor, lr_patience, max_lr_drops: the paper's policy (``training.lr_policy.PlateauDrops``): lr x
            ``lr_factor`` on the ``lr_patience``-th epoch in a row without a new best val top-1 error, at most
            ``max_lr_drops`` times; the next plateau ends training (the paper: /10, three times, then stop).
        lr_start_margin: no drop before learning has started: the best val top-1 error at least this fraction
            of chance below chance (``PlateauDrops``; 0.1: 0.81 for 10 classes). Each drop, its epoch and its
            reason go to the run's ``lr_drops`` tag, the start to ``lr_learning_started_epoch``.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        init_std: float | None = None,
        split_devices: Sequence[str] | None = None,
        channels_last: bool = False,
        compile: bool = False,
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        decay_biases: bool = True,
        lr_factor: float = 0.1,
        lr_patience: int = 5,
        max_lr_drops: int = 3,
        lr_start_margin: float = DEFAULT_START_MARGIN,
        **net: Any,
    ) -> None:
        super().__init__()
        self.net_hparams = AlexNetHParams.of(**net)
        if split_devices is not None:
            split_devices = [str(device) for device in split_devices]
            if compile:
                raise ValueError(
                    "model.compile=true with model.split_devices: compiling the two-device split is not "
                    "supported (untested across two GPUs); use one or the other"
                )
        self.save_hyperparameters()
        # every net hyperparameter in the checkpoint, defaults included: the checkpoint alone rebuilds the net
        self.hparams.update(asdict(self.net_hparams))
        self.net = build_net(num_classes, self.net_hparams, init_std=init_std, split_devices=split_devices)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.net.to(memory_format=self.memory_format)
        if compile:
            self.net.compile()  # lazy: compiles on the first call of each mode (train, eval)
        self._compile_started: dict[str, float] = {}
        self._compile_logged: set[str] = set()
        top5 = min(5, num_classes)
        # Epoch-level accuracies; they sync across DDP ranks on compute(), so val counts every image once.
        self.train_top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_top5 = MulticlassAccuracy(num_classes, top_k=top5, average="micro")

    def setup(self, stage: str) -> None:
        # Training on the CPU: keep freed activations' memory for the next step (1.2-1.4x per step; see
        # pipeline.models.cpu_memory). Process-wide and idempotent; GPU runs leave the CPU allocator alone.
        if self.trainer.strategy.root_device.type == "cpu" and reuse_freed_memory():
            log.info("CPU training: freed blocks up to 1 GiB stay in the heap for reuse (mallopt)")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images.contiguous(memory_format=self.memory_format))

    def _time_first_step(self, mode: str, starting: bool) -> None:
        """With ``compile``: log, once per process and mode, how long the first (compiling) step took."""
        if not self.hparams.compile or mode in self._compile_logged:
            return
        if starting:
            self._compile_started[mode] = time.perf_counter()
            return
        elapsed = time.perf_counter() - self._compile_started.pop(mode)
        self._compile_logged.add(mode)
        log.info("torch.compile: the first %s step took %.1f s (compiling the net)", mode, elapsed)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._time_first_step("train", starting=True)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._time_first_step("train", starting=False)

    def on_validation_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._time_first_step("validation", starting=True)

    def on_validation_batch_end(
        self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._time_first_step("validation", starting=False)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        labels = labels.to(logits.device)
        loss = F.cross_entropy(logits, labels)
        with torch.no_grad():
            self.train_top1.update(logits, labels)
            step_error = 1.0 - (logits.argmax(dim=1) == labels).float().mean()
        # on_step only: Lightning appends _step/_epoch to the key when both are on.
        self.log(keys.TRAIN_LOSS, loss, on_step=True, on_epoch=False, prog_bar=True)
        self.log(keys.TRAIN_TOP1, step_error, on_step=True, on_epoch=False)
        self.log(
            keys.LEARNING_RATE, self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False
        )
        return loss

    def on_train_epoch_end(self) -> None:
        self.log(keys.TRAIN_EPOCH_TOP1, 1.0 - self.train_top1.compute())
        self.train_top1.reset()

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        logits = self(images)
        labels = labels.to(logits.device)
        loss = F.cross_entropy(logits, labels)
        self.val_top1.update(logits, labels)
        self.val_top5.update(logits, labels)
        self.log(keys.VAL_LOSS, loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=labels.numel())

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:  # a partial pass must not feed the lr schedule
            self.val_top1.reset()
            self.val_top5.reset()
            return
        self.log(keys.VAL_TOP1, 1.0 - self.val_top1.compute(), prog_bar=True)
        self.log(keys.VAL_TOP5, 1.0 - self.val_top5.compute())
        self.val_top1.reset()
        self.val_top5.reset()

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        groups = self._param_groups(hp.weight_decay, hp.decay_biases)
        try:
            # One fused kernel per tensor instead of foreach's separate passes: the full net's SGD step with
            # momentum and weight decay drops from ~320 to ~70 ms of CPU time (bench/step.py). The update is
            # the same up to fp32 rounding.
            optimizer = torch.optim.SGD(groups, lr=hp.lr, momentum=hp.momentum, fused=True)
        except RuntimeError:  # parameters on a device without fused kernels
            optimizer = torch.optim.SGD(groups, lr=hp.lr, momentum=hp.momentum)
        scheduler = PlateauDrops(
            optimizer,
            factor=hp.lr_factor,
            patience=hp.lr_patience,
            max_drops=hp.max_lr_drops,
            chance_error=1.0 - 1.0 / hp.num_classes,
            start_margin=hp.get("lr_start_margin", DEFAULT_START_MARGIN),
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": scheduler,
                "monitor": keys.VAL_TOP1,
                "reduce_on_plateau": True,  # Lightning hands it the monitored value (lr_scheduler_step)
                "interval": "epoch",
                "frequency": 1,
                "strict": False,  # without validation (limit_val_batches=0) the lr just stays, with a warning
            },
        }

    def lr_scheduler_step(self, scheduler: PlateauDrops, metric: Any) -> None:
        drops = scheduler.drops
        scheduler.step(metric, epoch=self.current_epoch)
        if scheduler.drops > drops:
            drop = scheduler.drop_log[-1]
            log.info("lr policy: epoch %d: lr -> %.3g (%s)", drop["epoch"], drop["lr"], drop["reason"])
        if self.trainer.is_global_zero and (writer := run_writer(self.trainer)) is not None:
            # every epoch, so a resumed or crashed run holds its drops so far (through the outbox: no wait)
            writer.set_tag(keys.TAG_LR_DROPS, json.dumps(scheduler.drop_log))
            started = scheduler.learning_started_epoch
            writer.set_tag(keys.TAG_LR_LEARNING_STARTED, "not yet" if started is None else str(started))
        if scheduler.exhausted and not self.trainer.should_stop:
            # the last rate has plateaued too: the paper's end of training (the job stops after this epoch)
            log.info("lr policy: plateau after %d lr drops; training ends", scheduler.drops)
            self.trainer.should_stop = True

    def _param_groups(self, weight_decay: float, decay_biases: bool) -> list[dict[str, Any]]:
        weights = [p for p in self.net.parameters() if p.ndim > 1]
        biases = [p for p in self.net.parameters() if p.ndim <= 1]
        return [
            {"params": weights, "weight_decay": weight_decay},
            {"params": biases, "weight_decay": weight_decay if decay_biases else 0.0},
        ]
