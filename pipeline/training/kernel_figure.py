"""conv1's learned kernels as a picture, the paper's Figure 3, logged into the run at the end of training."""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torchvision.utils import make_grid, save_image

from pipeline.tracking import keys
from pipeline.tracking.writer import run_writer

TILE_SCALE = 4


def conv1_kernel_figure(weight: torch.Tensor, path: Path, groups: int = 2) -> Path:
    """Draws conv1's kernels as RGB tiles, one row block per tower, as the paper's Figure 3 (96 kernels,
    11x11x3, the top half learned on GPU 1, the bottom half on GPU 2). Each kernel is scaled to [0, 1] on its
    own; tiles are enlarged 4x (nearest) so that an 11x11 kernel is visible at a glance."""
    kernels = weight.detach().float().cpu()
    count = kernels.shape[0]
    columns = min(count, 16) if count % groups else max(1, min(count // groups, 16))
    tiles = torch.nn.functional.interpolate(kernels, scale_factor=TILE_SCALE, mode="nearest")
    grid = make_grid(tiles, nrow=columns, padding=2, normalize=True, scale_each=True, pad_value=1.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, path)
    return path


class Conv1KernelFigure(Callback):
    """At the end of training, logs ``figures/conv1_kernels.png`` into the run (and keeps it in out_dir)."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        weight = pl_module.net.state_dict()["conv1.weight"]  # the split net's state_dict merges its towers
        path = conv1_kernel_figure(weight, self.out_dir / "conv1_kernels.png")
        if (writer := run_writer(trainer)) is not None:
            writer.log_artifact(str(path), keys.ARTIFACT_FIGURES)
