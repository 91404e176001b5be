"""The paper's learning-rate policy: divide by 10 when the validation error plateaus, at most three times, and
end training when the last rate has plateaued too.

    "The heuristic which we followed was to divide the learning rate by 10 when the validation error rate
    stopped improving with the current learning rate. The learning rate was initialized at 0.01 and reduced
    three times prior to termination." (Krizhevsky et al. 2012, Sec. 5)

:class:`PlateauDrops` follows torch's ``ReduceLROnPlateau`` (mode ``min``, a relative threshold of 1e-4) with
three changes: ``patience`` counts the epoch that drops the rate (the drop comes on the ``patience``-th epoch
in a row without improvement, where torch's comes on the one after), it drops at most ``max_drops`` times,
and the plateau after the last drop sets :attr:`exhausted`, which ``AlexNetModule`` turns into the end of
training. Its state is the scheduler's state_dict (the keys torch's uses), so a resumed job continues it.

Learning must have started before the rate drops. The paper's rule presumes the error "had been improving";
a net that sits at chance for its first epochs (a slow start, an ablation that starts later) has not stopped
improving, it has not begun. So no drop (nor the end of training) until the best val error lies a set
fraction of chance below chance: ``best <= (1 - start_margin) * chance`` with chance = 1 - 1/classes (top-1).
The default margin, a tenth, puts the bar at 0.81 for 10 classes and 0.899 for ImageNet's 1,000: several
standard errors of a val error at chance (sqrt(p(1-p)/n) = 0.012 for 600 images at p = 0.9), so noise does
not start it, while any net that learns crosses it early (the paper's net within its first epoch). Before
that, epochs without a new best are not counted; from the epoch it crosses (a new best, so the count is 0),
the paper's rule applies unchanged. ``start_margin=0`` turns the wait off (any val error below chance, which
the first epoch nearly always reaches). Every drop is recorded (:attr:`drop_log`: the epoch, the new rate,
the reason), with the epoch learning started (:attr:`learning_started_epoch`).
"""

from __future__ import annotations

import math
from typing import Any

from torch.optim import Optimizer

RELATIVE_THRESHOLD = 1e-4  # torch's default: an epoch improves when error < best * (1 - 1e-4)
DEFAULT_START_MARGIN = 0.1  # learning has started once the best val error is a tenth of chance below chance


class PlateauDrops:
    """lr x ``factor`` on the ``patience``-th epoch in a row whose val error did not improve on the best so
    far, at most ``max_drops`` times; the next such plateau sets ``exhausted`` (the job should end) instead of
    dropping again. ``step(val_error)`` once per validation."""

    def __init__(
        self,
        optimizer: Optimizer,
        *,
        factor: float,
        patience: int,
        max_drops: int,
        chance_error: float | None = None,
        start_margin: float = DEFAULT_START_MARGIN,
    ) -> None:
        if not 0.0 < factor < 1.0:
            raise ValueError(f"optim.lr_factor must be in (0, 1) (got {factor})")
        if patience < 1:
            raise ValueError(f"optim.lr_patience must be >= 1 epoch (got {patience})")
        if max_drops < 0:
            raise ValueError(f"optim.max_lr_drops must be >= 0 (got {max_drops})")
        if not 0.0 <= start_margin < 1.0:
            raise ValueError(f"optim.lr_start_margin must be in [0, 1) (got {start_margin})")
        if chance_error is not None and not 0.0 < chance_error <= 1.0:
            raise ValueError(f"chance_error must be in (0, 1] (got {chance_error})")
        self.optimizer = optimizer
        self.factor = factor
        self.patience = patience
        self.max_drops = max_drops
        self.best = math.inf
        self.num_bad_epochs = 0
        self.drops = 0
        self.exhausted = False
        self.last_epoch = 0
        # None: no chance level known (no wait); else the error the best must reach before any drop
        self.start_threshold = None if chance_error is None else (1.0 - start_margin) * chance_error
        self.learning_started_epoch: int | None = None if chance_error is not None else 0
        self.drop_log: list[dict[str, Any]] = []

    @property
    def learning_started(self) -> bool:
        return self.learning_started_epoch is not None

    def step(self, metric: Any, epoch: int | None = None) -> None:
        """One validation's error; ``epoch``: its epoch as the run logs it (default: its index, from 0)."""
        error = float(metric)
        self.last_epoch += 1
        epoch = self.last_epoch - 1 if epoch is None else epoch
        improved = error < self.best * (1.0 - RELATIVE_THRESHOLD)
        if improved:
            self.best = error
            self.num_bad_epochs = 0
        if not self.learning_started:
            if min(error, self.best) <= self.start_threshold:
                self.learning_started_epoch = epoch
                self.num_bad_epochs = 0
            return  # before and at the start no epoch counts towards a plateau
        if improved:
            return
        self.num_bad_epochs += 1
        if self.num_bad_epochs < self.patience:
            return
        self.num_bad_epochs = 0
        if self.drops >= self.max_drops:
            self.exhausted = True
            return
        for group in self.optimizer.param_groups:
            group["lr"] *= self.factor
        self.drops += 1
        self.drop_log.append(
            {
                "epoch": epoch,
                "lr": self.get_last_lr()[0],
                "reason": f"{self.patience} epochs without a new best val error (best {self.best:.4f}, "
                f"learning started at epoch {self.learning_started_epoch})",
            }
        )

    def get_last_lr(self) -> list[float]:
        return [float(group["lr"]) for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "num_bad_epochs": self.num_bad_epochs,
            "drops": self.drops,
            "exhausted": self.exhausted,
            "last_epoch": self.last_epoch,
            "learning_started_epoch": self.learning_started_epoch,
            "drop_log": [dict(drop) for drop in self.drop_log],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Also reads the state that earlier releases saved: the torch-based scheduler's (a superset), and one
        from before the learning-started wait, whose start is read off it: started if it has dropped or its
        best already clears the bar (at its last epoch, at the latest), else it waits as a new run would."""
        self.best = float(state["best"])
        self.num_bad_epochs = int(state["num_bad_epochs"])
        self.drops = int(state["drops"])
        self.exhausted = bool(state["exhausted"])
        self.last_epoch = int(state.get("last_epoch", 0))
        if "learning_started_epoch" in state:
            started = state["learning_started_epoch"]
            self.learning_started_epoch = None if started is None else int(started)
        elif self.drops > 0 or self.start_threshold is None or self.best <= self.start_threshold:
            self.learning_started_epoch = max(self.last_epoch - 1, 0)
        else:
            self.learning_started_epoch = None
        self.drop_log = [dict(drop) for drop in state.get("drop_log", [])]
