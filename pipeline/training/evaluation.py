"""The paper's test protocol: one centre crop, and the 10 crops (four corners + centre, each mirrored) with
the softmax averaged, over a val split. Used at the end of every job (``final_eval``) and by
``pipeline.evaluate``.
"""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics.aggregation import SumMetric
from torchmetrics.classification import MulticlassAccuracy
from torchvision.transforms.v2.functional import ten_crop

from pipeline.data import ShardDataModule
from pipeline.tracking import keys

CENTER_INDEX = 4  # ten_crop's order: 4 corners, centre, then the same five of the mirrored image
# The data settings of a training run that evaluation keeps (augmentation and the loader's size are its own).
DATA_SETTINGS = ("root", "full_size", "mean_subtraction", "seed")


@torch.no_grad()
def evaluate(
    module: torch.nn.Module,
    datamodule: ShardDataModule,
    device: torch.device,
    limit_batches: int | None = None,
    *,
    crop: int | None = None,
) -> dict[str, float]:
    """Centre-crop and 10-crop top-1/top-5 error over the val split, in one pass over the full-size images,
    and ``eval/images``, the number of images scored. ``crop``: the net's input side (default: the
    LightningModule's ``in_size``). Under DDP every rank scores its own share (the loader splits by rank) and
    the meters sum over the ranks when computed: call it on every rank."""
    crop = int(module.hparams.in_size) if crop is None else crop
    module.eval().to(device)
    classes = datamodule.num_classes
    top5 = min(5, classes)  # a demo with fewer than 5 classes still reports its "top-5" (= top-all)
    meters = {
        (crops, k): MulticlassAccuracy(classes, top_k=min(k, top5), average="micro").to(device)
        for crops in ("center", "tencrop")
        for k in (1, 5)
    }
    images_seen = SumMetric().to(device)
    for index, (images, labels) in enumerate(datamodule.eval_dataloader(crop="full")):
        if limit_batches is not None and index >= limit_batches:
            break
        images = datamodule.normalize(images.to(device), train=False)
        labels = labels.to(device)
        probabilities = tencrop_probabilities(module, images, crop)
        for crops, scores in (
            ("center", probabilities[CENTER_INDEX]),
            ("tencrop", probabilities.mean(dim=0)),
        ):
            meters[crops, 1].update(scores, labels)
            meters[crops, 5].update(scores, labels)
        images_seen.update(float(labels.numel()))
    errors = {keys.eval_key(crops, k): 1.0 - float(meter.compute()) for (crops, k), meter in meters.items()}
    return {**errors, keys.EVAL_IMAGES: float(images_seen.compute())}


def tencrop_probabilities(module: torch.nn.Module, images: torch.Tensor, crop: int) -> torch.Tensor:
    """[10, B, classes]: the softmax of each of the paper's ten crops (the four corners and the centre, then
    the same five of the mirrored image, torchvision's ten_crop order), before averaging."""
    return torch.stack([module(view).softmax(dim=1) for view in ten_crop(images, [crop, crop])])


def eval_datamodule(
    data_config: dict[str, Any], *, data_root: str | None, batch_size: int, num_workers: int, crop_size: int
) -> ShardDataModule:
    """A training run's own data settings (``DATA_SETTINGS`` of its ``data`` config), for evaluation: its root
    unless given, no augmentation."""
    settings = {key: value for key, value in data_config.items() if key in DATA_SETTINGS}
    settings.update(crop_size=crop_size, pca_lighting=0.0)
    root = data_root or settings.pop("root", None)
    settings.pop("root", None)
    if not root:
        raise ValueError("no data root: pass data_root=PATH (the folder holding manifest.json)")
    return ShardDataModule(root, batch_size=batch_size, num_workers=num_workers, **settings)
