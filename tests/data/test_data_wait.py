"""throughput/data_wait_fraction: a loader made slow on purpose raises it, and the epoch's log line says what
to change. It lands in an MLflow run beside the system metrics: tests/train/test_train_input_bound.py."""

from __future__ import annotations

import logging
import time

import lightning as L
import pytest
import torch
import torch.nn.functional as F

import pipeline.data.datamodule as datamodule
from pipeline.data import ShardDataModule
from pipeline.data.transforms import TrainCrop
from pipeline.tracking import keys
from pipeline.training.throughput import DataWaitFraction

CROP = 56  # crops of the fixtures' 64x64 images (conftest.py)
STEP_S = 0.06


class SleepyStep(L.LightningModule):
    """A training step of a fixed ~60 ms, whatever the batch."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.head = torch.nn.Linear(3, num_classes)

    def training_step(self, batch, batch_idx):
        time.sleep(STEP_S)
        images, labels = batch
        return F.cross_entropy(self.head(images.mean((2, 3))), labels)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _wait_fraction(root, tmp_path, decode: str = "workers", warn_above: float = 0.5) -> float:
    dm = ShardDataModule(root, batch_size=4, num_workers=0, crop_size=CROP, shuffle_buffer=16, decode=decode)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[DataWaitFraction(warn_above=warn_above)],
    )
    trainer.fit(SleepyStep(dm.num_classes), datamodule=dm)
    return float(trainer.callback_metrics[keys.DATA_WAIT_FRACTION])


class SlowTrainCrop(TrainCrop):
    """The worker path's transform, 40 ms slower per image: a batch of 4 takes ~160 ms, a step ~60 ms."""

    def __call__(self, sample, draws):
        time.sleep(0.04)
        return super().__call__(sample, draws)


def test_a_slow_loader_raises_the_wait_fraction_and_says_what_to_change(
    uneven_shards, tmp_path, monkeypatch, caplog
):
    with caplog.at_level(logging.WARNING, logger="pipeline.training.throughput"):
        fast = _wait_fraction(uneven_shards, tmp_path)
        assert "input-bound" not in caplog.text
        monkeypatch.setattr(datamodule, "TrainCrop", SlowTrainCrop)
        slow = _wait_fraction(uneven_shards, tmp_path)
    assert 0 <= fast < 0.5 and slow > 0.6 and slow > fast + 0.2, (fast, slow)
    [line] = [r.getMessage() for r in caplog.records if "input-bound" in r.getMessage()]
    assert "epoch 0" in line and "data.num_workers (now 0" in line and "data.decode=device" in line


def test_the_wait_fraction_is_measured_on_the_device_path_too(uneven_shards, tmp_path):
    assert 0 <= _wait_fraction(uneven_shards, tmp_path, decode="device", warn_above=1.0) < 1


def test_the_fraction_is_a_share_of_the_epochs_time():
    """Waits and steps of known length, without Lightning's own overhead: the hooks alone."""

    class Recorder:
        world_size, is_global_zero, current_epoch, datamodule = 1, True, 0, None

        def __init__(self) -> None:
            self.strategy = self
            self.logged: dict[str, float] = {}

        def reduce(self, tensor, reduce_op):
            return tensor

        def log(self, key, value, **kwargs):
            self.logged[key] = value

        device = torch.device("cpu")

    trainer = module = Recorder()
    callback = DataWaitFraction(warn_above=1.0)
    batch = (None, torch.zeros(4))
    callback.on_train_epoch_start(trainer, module)
    for index in range(3):
        time.sleep(0.06)  # waiting for the batch
        callback.on_train_batch_start(trainer, module, batch, index)
        time.sleep(0.02)  # the step
        callback.on_train_batch_end(trainer, module, None, batch, index)
    callback.on_train_epoch_end(trainer, module)
    assert module.logged[keys.DATA_WAIT_FRACTION] == pytest.approx(0.75, abs=0.1)
