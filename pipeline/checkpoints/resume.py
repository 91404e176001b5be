"""What a checkpoint holds beyond Lightning's own state so that a resumed job continues exactly as an
uninterrupted one: every rank's random generators (dropout, PCA lighting) and its torchmetrics accumulators
(the epoch's train error so far). The train loader's position is the loader's own state
(``pipeline.data.position``); weights, optimizer, lr schedule and loop counters are Lightning's.

Random generators: torch's CPU generator and the CUDA generators of every rank (gathered: ranks may draw
differently), Python's and NumPy's of rank 0 (nothing in training draws from them; kept for completeness).
They are saved at the checkpoint and set back when training starts (``on_train_start``), after the sanity
check and the loaders' creation (which draw from their own generators, see ``ShardDataModule._loader_args``),
so the first resumed batch sees the generator state that the uninterrupted job's next batch saw.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torchmetrics import Metric

log = logging.getLogger(__name__)

CHECKPOINT_KEY = "resume_state"


def _gather(trainer: Trainer, row: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's ``row`` (same length on all ranks), on the CPU: a collective under DDP."""
    if trainer.world_size == 1:
        return [row]
    gathered = trainer.strategy.all_gather(row.to(trainer.strategy.root_device)).cpu()
    return list(gathered.reshape(trainer.world_size, -1))


def _torch_rng_row() -> torch.Tensor:
    states = [torch.get_rng_state()]
    if torch.cuda.is_available():
        states += torch.cuda.get_rng_state_all()
    return torch.cat(states)


def _set_torch_rng(row: torch.Tensor) -> None:
    cpu_size = torch.get_rng_state().numel()
    torch.set_rng_state(row[:cpu_size].clone())
    if torch.cuda.is_available():
        cuda = list(row[cpu_size:].reshape(torch.cuda.device_count(), -1))
        torch.cuda.set_rng_state_all([state.clone() for state in cuda])


def _metrics(module: LightningModule) -> list[Metric]:
    """The module's torchmetrics whose states are all tensors (list states cannot be restored here)."""
    found = [m for m in module.modules() if isinstance(m, Metric)]
    return [m for m in found if all(isinstance(state, torch.Tensor) for state in m.metric_state.values())]


def _metric_row(module: LightningModule) -> torch.Tensor:
    """Every metric's states (by name) and its update count, one float64 row (the layout since the first
    release: checkpoints written before stay readable)."""
    parts = []
    for metric in _metrics(module):
        states = metric.metric_state
        parts += [states[name].detach().double().flatten().cpu() for name in sorted(states)]
        parts.append(torch.tensor([float(metric.update_count)], dtype=torch.float64))
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)


def _set_metrics(module: LightningModule, row: torch.Tensor) -> None:
    """Puts ``row``'s states back: each metric reset, then the saved state merged into the empty one (the
    sum of nothing and the saved counts). The update count is not restored (no public setter): it only
    silences compute()'s "called before update" warning, and every resumed epoch updates before computing."""
    position = 0
    for metric in _metrics(module):
        metric.reset()
        saved = {}
        for name, current in sorted(metric.metric_state.items()):
            size = current.numel()
            value = row[position : position + size].reshape(current.shape).to(current.dtype)
            saved[name] = value.to(current.device)
            position += size
        metric.merge_state(saved)
        position += 1  # the update count


class ResumeState(Callback):
    """Saves every rank's random generators and metric accumulators into each checkpoint (``resume_state``),
    and restores this rank's when a resumed training starts. On a different world size, rank 0's generators
    are used on every rank and the accumulators start empty (with a warning)."""

    def __init__(self) -> None:
        self._loaded: dict[str, Any] | None = None

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[CHECKPOINT_KEY] = {
            "torch": torch.stack(_gather(trainer, _torch_rng_row())),
            "metrics": torch.stack(_gather(trainer, _metric_row(pl_module))),
            "python": _python_state(),
            "numpy": _numpy_state(),
        }

    def on_load_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._loaded = checkpoint.get(CHECKPOINT_KEY)
        if self._loaded is None:
            log.warning("the checkpoint has no %s: random generators are not restored", CHECKPOINT_KEY)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        state, self._loaded = self._loaded, None
        if state is None:
            return
        ranks = state["torch"].shape[0]
        same_layout = ranks == trainer.world_size
        if not same_layout:
            log.warning(
                "checkpoint of %d ranks resumed on %d: accumulators start empty", ranks, trainer.world_size
            )
        rank = trainer.global_rank if same_layout else 0
        _set_torch_rng(state["torch"][rank])
        random.setstate((state["python"][0], tuple(state["python"][1]), state["python"][2]))
        np.random.set_state(("MT19937", np.array(state["numpy"][0], dtype=np.uint32), *state["numpy"][1:]))
        if same_layout:
            _set_metrics(pl_module, state["metrics"][rank])


def _python_state() -> list[Any]:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _numpy_state() -> list[Any]:
    _, keys, position, has_gauss, cached = np.random.get_state()
    return [keys.tolist(), int(position), int(has_gauss), float(cached)]
