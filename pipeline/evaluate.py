"""Test a trained net as the paper did: one centre crop, and 10 crops (four corners + centre, each mirrored)
with the softmax averaged; logs ``eval/{center,tencrop}_{top1,top5}_error`` and ``eval/images`` into the
training run, and the tag ``eval_weights`` (``best``, or ``checkpoint <file>``) naming what it scored.

Every training job already does this for its final weights (``pipeline.final_eval``); this command is for a
checkpoint, or a run trained without it (``callbacks.final_eval.enabled=false``).

    python -m pipeline.evaluate run_id=RUN_ID                 # the run's best checkpoint and data settings
    python -m pipeline.evaluate checkpoint=PATH data_root=demo/shards
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from torchmetrics.aggregation import SumMetric
from torchmetrics.classification import MulticlassAccuracy
from torchvision.transforms.v2.functional import ten_crop

from data_prep.cli import Fields, fail, optional, parse_overrides
from pipeline.data import ShardDataModule
from pipeline.module import AlexNetModule
from pipeline.tracking import keys
from pipeline.tracking.identity import run_id_in_checkpoint
from pipeline.tracking.store import check_reachable, resolve_tracking_uri

log = logging.getLogger(__name__)
PROGRAM = "python -m pipeline.evaluate"
# The data settings of a training run that evaluation keeps (augmentation and the loader's size are its own).
DATA_SETTINGS = ("root", "full_size", "mean_subtraction", "seed")
CENTER_INDEX = 4  # ten_crop's order: 4 corners, centre, then the same five of the mirrored image


@torch.no_grad()
def evaluate(
    module: AlexNetModule, datamodule: ShardDataModule, device: torch.device, limit_batches: int | None = None
) -> dict[str, float]:
    """Centre-crop and 10-crop top-1/top-5 error over the val split, in one pass over the full-size images,
    and ``eval/images``, the number of images scored. Under DDP every rank scores its own share (the loader
    splits by rank) and the meters sum over the ranks when computed: call it on every rank."""
    module.eval().to(device)
    crop = int(module.hparams.in_size)
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


def _checkpoint_of(client: MlflowClient, run_id: str, scratch: Path) -> Path:
    """The run's best checkpoint: the local file its tag names, else the logged artifact (downloaded)."""
    tags = client.get_run(run_id).data.tags
    local = tags.get(keys.TAG_BEST_CHECKPOINT)
    if local and Path(local).is_file():
        return Path(local)
    artifacts = [
        a.path for a in client.list_artifacts(run_id, keys.ARTIFACT_CHECKPOINTS) if a.path.endswith(".ckpt")
    ]
    if not artifacts:
        raise ValueError(
            f"run {run_id} has no {keys.TAG_BEST_CHECKPOINT} file and no "
            f"{keys.ARTIFACT_CHECKPOINTS}/*.ckpt artifact"
        )
    return Path(client.download_artifacts(run_id, artifacts[0], str(scratch)))


def _data_config_of(client: MlflowClient, run_id: str | None, scratch: Path) -> dict[str, Any]:
    """The ``data`` section of the run's logged config (mean subtraction, full size, ...), {} without one."""
    if run_id is None:
        return {}
    try:
        path = client.download_artifacts(run_id, keys.ARTIFACT_CONFIG, str(scratch))
    except MlflowException:
        log.warning(
            "run %s has no %s artifact: evaluating with the data defaults", run_id, keys.ARTIFACT_CONFIG
        )
        return {}
    data = OmegaConf.to_container(OmegaConf.load(path), resolve=True).get("data") or {}
    return {key: value for key, value in data.items() if key in DATA_SETTINGS}


def eval_datamodule(
    data_config: dict[str, Any], *, data_root: str | None, batch_size: int, num_workers: int, crop_size: int
) -> ShardDataModule:
    """The training run's own data settings, for evaluation: its root unless given, no augmentation."""
    settings = {**data_config, "crop_size": crop_size, "pca_lighting": 0.0}
    root = data_root or settings.pop("root", None)
    settings.pop("root", None)
    if not root:
        raise ValueError("no data root: pass data_root=PATH (the folder holding manifest.json)")
    return ShardDataModule(root, batch_size=batch_size, num_workers=num_workers, **settings)


FIELDS: Fields = {
    "run_id": (optional(str), None, "MLflow run of the training job (its best checkpoint is evaluated)"),
    "checkpoint": (optional(Path), None, "a training checkpoint (.ckpt) instead of run_id="),
    "data_root": (optional(str), None, "prep output dir (manifest.json); default: the run's data.root"),
    "tracking_uri": (optional(str), None, "default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db"),
    "batch_size": (int, 32, "images per batch (each gives 10 crops)"),
    "num_workers": (int, 2, "JPEG-decoding loader workers"),
    "device": (str, "cuda" if torch.cuda.is_available() else "cpu", "where the net runs"),
    "limit_batches": (optional(int), None, "evaluate only this many batches"),
}


def main(argv: list[str] | None = None) -> int:
    args = parse_overrides(PROGRAM, sys.argv[1:] if argv is None else argv, FIELDS)
    if (args["run_id"] is None) == (args["checkpoint"] is None):
        fail(PROGRAM, "give exactly one of run_id=ID and checkpoint=PATH")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    uri = resolve_tracking_uri(args["tracking_uri"])
    check_reachable(uri)
    client = MlflowClient(uri)
    checkpoint: Path | None = args["checkpoint"]
    if checkpoint is not None and not checkpoint.is_file():
        fail(PROGRAM, f"checkpoint={checkpoint}: no such file")
    with tempfile.TemporaryDirectory() as scratch:
        run_id = args["run_id"] or run_id_in_checkpoint(checkpoint)
        checkpoint = checkpoint or _checkpoint_of(client, run_id, Path(scratch))
        # One device, whatever layout trained it: the split net's state_dict is the grouped net's.
        module = AlexNetModule.load_from_checkpoint(
            checkpoint, map_location="cpu", weights_only=True, split_devices=None
        )
        datamodule = eval_datamodule(
            _data_config_of(client, run_id, Path(scratch)),
            data_root=args["data_root"],
            batch_size=args["batch_size"],
            num_workers=args["num_workers"],
            crop_size=int(module.hparams.in_size),
        )
        metrics = evaluate(module, datamodule, torch.device(args["device"]), args["limit_batches"])
    for key, value in metrics.items():
        log.info("%s = %.4f", key, value)
    if run_id is None:
        log.warning("the checkpoint names no MLflow run: metrics printed only")
        return 0
    for key, value in metrics.items():
        client.log_metric(run_id, key, value)
    weights = keys.EVAL_WEIGHTS_BEST if args["checkpoint"] is None else f"checkpoint {checkpoint.name}"
    client.set_tag(run_id, keys.TAG_EVAL_WEIGHTS, weights)
    log.info("logged into MLflow run %s (%s), %s=%s", run_id, uri, keys.TAG_EVAL_WEIGHTS, weights)
    return 0


if __name__ == "__main__":
    sys.exit(main())
