"""Faults the resilience tests inject into a training job through its config (``+callbacks.fault=...``).

Targets read ``tests.helpers.faults.<Fault>``: importable wherever the repository root is on the path (pytest
puts it there; the tests set PYTHONPATH for the subprocesses they start).
"""

from __future__ import annotations

import io
import os
import signal
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer


class SignalAtStep(Callback):
    """Sends ``signal`` (default SIGTERM) to this job's launching process once ``step`` training steps are
    done (Lightning forwards it to the ranks it started), or with ``group`` to its whole process group, loader
    workers included, as Slurm does to a job it preempts."""

    def __init__(self, step: int, signal_name: str = "SIGTERM", group: bool = False) -> None:
        self.step = step
        self.signum = signal.Signals[signal_name]
        self.group = group

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step == self.step and trainer.global_rank == 0:
            if self.group:
                os.killpg(os.getpgid(0), self.signum)
            else:
                os.kill(os.getpid(), self.signum)


class SignalAtSetup(Callback):
    """Sends ``signal_name`` to this process while the trainer sets up, before training starts: a time-limit
    signal that finds the job still starting."""

    def __init__(self, signal_name: str) -> None:
        self.signum = signal.Signals[signal_name]

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            os.kill(os.getpid(), self.signum)


class RaiseAtStep(Callback):
    """Raises in the training process at ``step``: a fault in the main process."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError(f"injected fault at step {self.step}")


class StepClock(Callback):
    """Appends each training step's end time (time.time()) to ``path``, one per line, after sleeping
    ``sleep_s`` in the step (a long, CPU-light job: the tracking-outage test spans minutes with it)."""

    def __init__(self, path: str, sleep_s: float = 0.0) -> None:
        self.path = path
        self.sleep_s = sleep_s

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        time.sleep(self.sleep_s)
        with open(self.path, "a") as clock:
            clock.write(f"{trainer.global_step} {time.time():.3f}\n")


class ArchiveCheckpoints(Callback):
    """Copies ``last.ckpt`` of ``ckpt_dir`` into ``archive`` as ``<global step>.ckpt`` each time it changes
    (checked after every step and epoch end): every checkpoint the job wrote, for the simulated kills."""

    def __init__(self, ckpt_dir: str, archive: str) -> None:
        self.last = Path(ckpt_dir) / "last.ckpt"
        self.archive = Path(archive)
        self._seen: tuple[int, int] | None = None

    def _check(self) -> None:
        if not self.last.is_file():
            return
        stat = self.last.stat()
        if (stat.st_ino, stat.st_mtime_ns) != self._seen:
            self._seen = (stat.st_ino, stat.st_mtime_ns)
            self.archive.mkdir(parents=True, exist_ok=True)
            data = self.last.read_bytes()
            step = torch.load(io.BytesIO(data), weights_only=True, mmap=False)["global_step"]
            (self.archive / f"{step:05d}.ckpt").write_bytes(data)

    def on_train_batch_end(self, trainer: Trainer, *args: Any) -> None:
        self._check()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._check()

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._check()


def flip_byte(path: Path, offset: int | None = None) -> None:
    """One bit of ``path`` flipped in place (at ``offset``, else the middle): same size, another sha256."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if offset is None else offset] ^= 0x01
    path.write_bytes(bytes(data))
