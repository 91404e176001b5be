"""The paper's learning-rate policy: divide by 10 when the validation error plateaus, at most three times, and
end training when the last rate has plateaued too.

    "The heuristic which we followed was to divide the learning rate by 10 when the validation error rate
    stopped improving with the current learning rate. The learning rate was initialized at 0.01 and reduced
    three times prior to termination." (Krizhevsky et al. 2012, Sec. 5)

:class:`PlateauDrops` is torch's ``ReduceLROnPlateau`` with three changes: ``patience`` counts the epoch that
drops the rate (the drop comes on the ``patience``-th epoch in a row without improvement, where torch's
comes on the one after), it drops at most ``max_drops`` times (the rate never goes below
``lr * factor**max_drops``), and the plateau after the last drop sets :attr:`exhausted`, which
``AlexNetModule`` turns into the end of training. Its state (drops, exhausted) is part of the scheduler's
state_dict, so a resumed job continues it.
"""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import ReduceLROnPlateau


class PlateauDrops(ReduceLROnPlateau):
    """lr x ``factor`` on the ``patience``-th epoch in a row whose val error did not improve on the best so
    far (torch's default relative threshold, 1e-4), at most ``max_drops`` times; the next such plateau sets
    ``exhausted`` (the job should end) instead of dropping again."""

    def __init__(self, optimizer: Optimizer, *, factor: float, patience: int, max_drops: int) -> None:
        if not 0.0 < factor < 1.0:
            raise ValueError(f"optim.lr_factor must be in (0, 1) (got {factor})")
        if patience < 1:
            raise ValueError(f"optim.lr_patience must be >= 1 epoch (got {patience})")
        if max_drops < 0:
            raise ValueError(f"optim.max_lr_drops must be >= 0 (got {max_drops})")
        self.max_drops = max_drops
        self.drops = 0
        self.exhausted = False
        floors = [float(group["lr"]) * factor**max_drops for group in optimizer.param_groups]
        # torch drops once num_bad_epochs > patience, i.e. on the (patience + 1)-th bad epoch
        super().__init__(optimizer, mode="min", factor=factor, patience=patience - 1, min_lr=floors)

    def _reduce_lr(self, epoch: int) -> None:
        if self.drops >= self.max_drops:
            self.exhausted = True
            return
        super()._reduce_lr(epoch)
        self.drops += 1
