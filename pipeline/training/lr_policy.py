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
"""

from __future__ import annotations

import math
from typing import Any

from torch.optim import Optimizer

RELATIVE_THRESHOLD = 1e-4  # torch's default: an epoch improves when error < best * (1 - 1e-4)


class PlateauDrops:
    """lr x ``factor`` on the ``patience``-th epoch in a row whose val error did not improve on the best so
    far, at most ``max_drops`` times; the next such plateau sets ``exhausted`` (the job should end) instead of
    dropping again. ``step(val_error)`` once per validation."""

    def __init__(self, optimizer: Optimizer, *, factor: float, patience: int, max_drops: int) -> None:
        if not 0.0 < factor < 1.0:
            raise ValueError(f"optim.lr_factor must be in (0, 1) (got {factor})")
        if patience < 1:
            raise ValueError(f"optim.lr_patience must be >= 1 epoch (got {patience})")
        if max_drops < 0:
            raise ValueError(f"optim.max_lr_drops must be >= 0 (got {max_drops})")
        self.optimizer = optimizer
        self.factor = factor
        self.patience = patience
        self.max_drops = max_drops
        self.best = math.inf
        self.num_bad_epochs = 0
        self.drops = 0
        self.exhausted = False
        self.last_epoch = 0

    def step(self, metric: Any) -> None:
        error = float(metric)
        self.last_epoch += 1
        if error < self.best * (1.0 - RELATIVE_THRESHOLD):
            self.best = error
            self.num_bad_epochs = 0
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

    def get_last_lr(self) -> list[float]:
        return [float(group["lr"]) for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "num_bad_epochs": self.num_bad_epochs,
            "drops": self.drops,
            "exhausted": self.exhausted,
            "last_epoch": self.last_epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Also reads the state that the torch-based scheduler of earlier releases saved (a superset)."""
        self.best = float(state["best"])
        self.num_bad_epochs = int(state["num_bad_epochs"])
        self.drops = int(state["drops"])
        self.exhausted = bool(state["exhausted"])
        self.last_epoch = int(state.get("last_epoch", 0))
