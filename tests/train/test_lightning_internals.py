"""pipeline.training.lightning_internals: the two uses of Lightning beyond its public API, checked against
the installed Lightning, so that an upgrade that removes or changes them fails here, loudly, and not in a
preempted job."""

from __future__ import annotations

import inspect
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.utils.data import DataLoader, TensorDataset

from pipeline.training.lightning_internals import log_step_metrics_now, stop_after_this_step

STEPS = 6


class Linear(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = torch.nn.functional.cross_entropy(self.layer(batch[0]), batch[1])
        self.log("loss", loss, on_step=True, on_epoch=False)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class Recorder(Logger):
    """Which steps' metrics arrived, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[int] = []

    @property
    def name(self) -> str:
        return "recorder"

    @property
    def version(self) -> str:
        return "0"

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if "loss" in metrics:
            self.steps.append(int(step or 0))

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass


def _trainer(callback: L.Callback, logger: Logger | bool = False) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        callbacks=[callback],
        logger=logger,
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def _loader() -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(STEPS * 2, 4, generator=generator), torch.arange(STEPS * 2) % 2)
    return DataLoader(data, batch_size=2)


def test_the_attributes_exist_on_the_installed_lightning() -> None:
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False)
    assert isinstance(trainer._signal_connector.received_sigterm, bool)
    assert inspect.signature(trainer._logger_connector.update_train_step_metrics).parameters == {}


def test_stop_after_this_step_raises_sigterm_at_that_steps_end() -> None:
    class StopAtStep(L.Callback):
        exception: BaseException | None = None

        def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
            if trainer.global_step == 3:
                stop_after_this_step(trainer)

        def on_exception(self, trainer: L.Trainer, module: Any, exception: BaseException) -> None:
            self.exception = exception

    stopper = StopAtStep()
    trainer = _trainer(stopper)
    with pytest.raises(SIGTERMException):
        trainer.fit(Linear(), _loader())
    assert trainer.global_step == 3  # not one step more
    assert isinstance(stopper.exception, SIGTERMException)  # what CheckpointOnSigterm writes its file on


def test_log_step_metrics_now_hands_the_steps_metrics_over_inside_the_hook() -> None:
    class CheckLogged(L.Callback):
        seen_inside: list[int] = []

        def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
            before = list(recorder.steps)
            log_step_metrics_now(trainer)
            assert recorder.steps[len(before) :] == [trainer.global_step - 1]
            self.seen_inside.append(trainer.global_step - 1)

    recorder = Recorder()
    _trainer(CheckLogged(), logger=recorder).fit(Linear(), _loader())
    assert CheckLogged.seen_inside == list(range(STEPS))
