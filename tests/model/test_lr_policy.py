"""The paper's lr policy on a scripted val-error sequence: /10 on the patience-th epoch in a row without a new
best, at most three times, and the job ends when the last rate has plateaued too; and no drop while the net
sits at chance (learning has not started)."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.utils.data import DataLoader, TensorDataset

from pipeline.tracking import keys
from pipeline.training.lr_policy import PlateauDrops
from pipeline.training.module import AlexNetModule

# Val top-1 error per epoch. With patience 2: epochs 2 and 3 bring no new best (0.8 stays the best), so the
# rate drops at the end of epoch 3; 4 improves (0.7), 5 and 6 do not: the second drop after epoch 6; 7 and 8:
# the third after epoch 8; 9 improves (0.6), 10 and 11 do not: the last rate has plateaued, training ends
# after epoch 11 (12 epochs run of at most 30). The remaining values would never be read.
SCRIPT = [0.9, 0.8, 0.8, 0.8, 0.7, 0.7, 0.7, 0.7, 0.7, 0.6, 0.6, 0.6] + [0.5] * 18
LR_PER_EPOCH = [1.0] * 4 + [0.1] * 3 + [0.01] * 2 + [0.001] * 3  # the rate each epoch trains with
DROP_EPOCHS = {3: 1, 6: 2, 8: 3}  # epoch -> drops done after its validation


def feed(scheduler: PlateauDrops, optimizer: torch.optim.Optimizer, errors: list[float]) -> list[float]:
    """Steps the scheduler once per epoch; returns the lr each epoch trained with, up to exhaustion."""
    trained_with = []
    for error in errors:
        trained_with.append(optimizer.param_groups[0]["lr"])
        scheduler.step(error)
        if scheduler.exhausted:
            break
    return trained_with


def sgd(lr: float = 1.0) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_drops_on_the_patience_th_flat_epoch_three_times_then_exhausts():
    optimizer = sgd()
    scheduler = PlateauDrops(optimizer, factor=0.1, patience=2, max_drops=3)
    assert feed(scheduler, optimizer, SCRIPT) == pytest.approx(LR_PER_EPOCH)
    assert (scheduler.drops, scheduler.exhausted, scheduler.last_epoch) == (3, True, 12)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.001)  # never below lr * factor**max_drops


def test_patience_one_drops_on_the_first_epoch_without_improvement():
    optimizer = sgd()
    scheduler = PlateauDrops(optimizer, factor=0.1, patience=1, max_drops=1)
    assert feed(scheduler, optimizer, [0.9, 0.8, 0.85, 0.7, 0.75]) == pytest.approx([1.0, 1.0, 1.0, 0.1, 0.1])
    assert scheduler.exhausted


def test_the_policy_state_survives_a_checkpoint():
    optimizer = sgd()
    scheduler = PlateauDrops(optimizer, factor=0.1, patience=2, max_drops=3)
    feed(scheduler, optimizer, SCRIPT[:7])  # two drops so far
    resumed_optimizer = sgd(optimizer.param_groups[0]["lr"])
    resumed = PlateauDrops(resumed_optimizer, factor=0.1, patience=2, max_drops=3)
    resumed.load_state_dict(scheduler.state_dict())
    assert resumed.drops == 2
    assert feed(resumed, resumed_optimizer, SCRIPT[7:]) == pytest.approx(LR_PER_EPOCH[7:])


@pytest.mark.parametrize(
    ("settings", "name"),
    [
        ({"factor": 1.0}, "optim.lr_factor"),
        ({"patience": 0}, "optim.lr_patience"),
        ({"max_drops": -1}, "optim.max_lr_drops"),
    ],
)
def test_bad_settings_are_value_errors_naming_the_setting(settings: dict, name: str):
    arguments = {"factor": 0.1, "patience": 2, "max_drops": 3, **settings}
    with pytest.raises(ValueError, match=name):
        PlateauDrops(sgd(), **arguments)


class ScriptedValError(AlexNetModule):
    """Logs the scripted val error for the epoch instead of the measured one."""

    def on_validation_epoch_end(self) -> None:
        self.val_top1.reset()
        self.val_top5.reset()
        self.log(keys.VAL_TOP1, SCRIPT[self.current_epoch])


class RecordLr(Callback):
    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_epoch_start(self, trainer: Trainer, pl_module: AlexNetModule) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def _fit_recording_lr(module: LightningModule, max_epochs: int) -> tuple[Trainer, RecordLr]:
    """Fits ``module`` on two random images (its scripted val errors drive the policy); records each lr."""
    images, labels = torch.randn(2, 3, 67, 67), torch.tensor([0, 1])
    loader = DataLoader(TensorDataset(images, labels), batch_size=2)
    record = RecordLr()
    trainer = Trainer(
        accelerator="cpu", max_epochs=max_epochs, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, callbacks=[record],
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=loader, val_dataloaders=loader)
    return trainer, record


def test_training_stops_when_the_last_rate_has_plateaued():
    torch.manual_seed(0)
    # 10 classes: chance 0.9, so learning starts at the script's 0.8 (epoch 1), as the drops above presume
    module = ScriptedValError(10, width=0.0625, in_size=67, lr=1.0, lr_patience=2, max_lr_drops=3)
    trainer, record = _fit_recording_lr(module, max_epochs=30)
    assert trainer.current_epoch == 12  # epochs 0..11, then the stop (max_epochs=30 never reached)
    assert record.lrs == pytest.approx(LR_PER_EPOCH)


# A run that sits at chance (0.9 for 10 classes) for its first four epochs, then learns: SCRIPT shifted by 4.
AT_CHANCE = [0.9, 0.9, 0.9, 0.9]
CHANCE_10 = 0.9


def test_no_drop_while_at_chance_then_the_papers_rule():
    """The old rule dropped at epoch 2 (two flat epochs at chance). Now: nothing until the best is a tenth of
    chance below chance (0.81), reached at the script's 0.8 (epoch 4 + 1); from there, the drops of SCRIPT."""
    optimizer = sgd()
    waiting = PlateauDrops(optimizer, factor=0.1, patience=2, max_drops=3, chance_error=CHANCE_10)
    trained_with = feed(waiting, optimizer, AT_CHANCE + SCRIPT)
    assert trained_with == pytest.approx([1.0] * 4 + LR_PER_EPOCH)
    assert waiting.learning_started_epoch == 5
    assert [drop["epoch"] for drop in waiting.drop_log] == [4 + epoch for epoch in DROP_EPOCHS]
    assert [drop["lr"] for drop in waiting.drop_log] == pytest.approx([0.1, 0.01, 0.001])
    assert (
        "2 epochs without a new best val error (best 0.8000, learning started at epoch 5)"
        in (waiting.drop_log[0]["reason"])
    )
    # the same errors under the rule without the wait drop the rate at chance
    optimizer = sgd()
    eager = PlateauDrops(optimizer, factor=0.1, patience=2, max_drops=3)
    feed(eager, optimizer, AT_CHANCE + SCRIPT)
    assert eager.drop_log[0]["epoch"] == 2 and eager.learning_started_epoch == 0


def test_a_run_that_never_leaves_chance_never_drops_nor_ends():
    optimizer = sgd()
    scheduler = PlateauDrops(optimizer, factor=0.1, patience=1, max_drops=0, chance_error=CHANCE_10)
    noisy_chance = [0.90, 0.91, 0.89, 0.90, 0.88, 0.90, 0.85, 0.9]  # 0.85 > 0.81: still not learning
    assert feed(scheduler, optimizer, noisy_chance) == [1.0] * len(noisy_chance)
    assert (scheduler.drops, scheduler.exhausted, scheduler.learning_started_epoch) == (0, False, None)


def test_the_wait_and_drop_log_survive_a_checkpoint_and_old_states_load():
    optimizer = sgd()
    scheduler = PlateauDrops(optimizer, factor=0.1, patience=2, max_drops=3, chance_error=CHANCE_10)
    feed(scheduler, optimizer, AT_CHANCE + SCRIPT[:5])  # started at epoch 5, one drop (epoch 7)
    state = scheduler.state_dict()
    resumed = PlateauDrops(sgd(0.1), factor=0.1, patience=2, max_drops=3, chance_error=CHANCE_10)
    resumed.load_state_dict(state)
    assert (resumed.learning_started_epoch, resumed.drop_log) == (5, scheduler.drop_log)
    # a state saved before the wait existed: started if its best clears the bar, else it waits
    old = {"best": 0.9, "num_bad_epochs": 1, "drops": 0, "exhausted": False, "last_epoch": 2}
    at_chance = PlateauDrops(sgd(), factor=0.1, patience=2, max_drops=3, chance_error=CHANCE_10)
    at_chance.load_state_dict(old)
    learning = PlateauDrops(sgd(), factor=0.1, patience=2, max_drops=3, chance_error=CHANCE_10)
    learning.load_state_dict({**old, "best": 0.5})
    assert (at_chance.learning_started_epoch, learning.learning_started_epoch) == (None, 1)
    assert at_chance.drop_log == [] and learning.drop_log == []


def test_bad_start_margin_is_a_value_error():
    with pytest.raises(ValueError, match="optim.lr_start_margin"):
        PlateauDrops(sgd(), factor=0.1, patience=2, max_drops=3, chance_error=0.9, start_margin=1.0)


class ChanceThenScript(AlexNetModule):
    """Logs AT_CHANCE + SCRIPT as the val error of each epoch."""

    def on_validation_epoch_end(self) -> None:
        self.val_top1.reset()
        self.val_top5.reset()
        self.log(keys.VAL_TOP1, (AT_CHANCE + SCRIPT)[self.current_epoch])


def test_training_waits_at_chance_then_drops_and_stops_as_the_paper():
    torch.manual_seed(0)
    module = ChanceThenScript(10, width=0.0625, in_size=67, lr=1.0, lr_patience=2, max_lr_drops=3)
    trainer, record = _fit_recording_lr(module, max_epochs=40)
    assert record.lrs == pytest.approx([1.0] * 4 + LR_PER_EPOCH)
    assert trainer.current_epoch == 16
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert [drop["epoch"] for drop in scheduler.drop_log] == [7, 10, 12]
