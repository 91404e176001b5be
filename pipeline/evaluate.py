"""Test a trained net as the paper did: one centre crop, and 10 crops (four corners + centre, each mirrored)
with the softmax averaged; logs ``eval/{center,tencrop}_{top1,top5}_error`` into the training run.

    python -m pipeline.evaluate --run-id RUN_ID                 # the run's best checkpoint and data.root
    python -m pipeline.evaluate --checkpoint PATH --data-root demo/shards
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import torch
from mlflow.tracking import MlflowClient
from torchmetrics.classification import MulticlassAccuracy
from torchvision.transforms.v2.functional import ten_crop

from pipeline import tracking
from pipeline.data import ShardDataModule
from pipeline.module import AlexNetModule

log = logging.getLogger(__name__)
CENTER_INDEX = 4  # ten_crop's order: 4 corners, centre, then the same five of the mirrored image


@torch.no_grad()
def evaluate(
    module: AlexNetModule, datamodule: ShardDataModule, device: torch.device, limit_batches: int | None = None
) -> dict[str, float]:
    """Centre-crop and 10-crop top-1/top-5 error over the val split, in one pass over the full-size images."""
    module.eval().to(device)
    crop = int(module.hparams.in_size)
    classes = datamodule.num_classes
    top5 = min(5, classes)
    meters = {
        name: MulticlassAccuracy(classes, top_k=k, average="micro").to(device)
        for name, k in (
            ("center_top1", 1),
            ("center_top5", top5),
            ("tencrop_top1", 1),
            ("tencrop_top5", top5),
        )
    }
    for index, (images, labels) in enumerate(datamodule.eval_dataloader(crop="full")):
        if limit_batches is not None and index >= limit_batches:
            break
        images = datamodule.normalize(images.to(device), train=False)
        labels = labels.to(device)
        crops = ten_crop(images, [crop, crop])
        probabilities = torch.stack([module(c).softmax(dim=1) for c in crops])
        for name, scores in (("center", probabilities[CENTER_INDEX]), ("tencrop", probabilities.mean(dim=0))):
            meters[f"{name}_top1"].update(scores, labels)
            meters[f"{name}_top5"].update(scores, labels)
    return {f"eval/{name}_error": 1.0 - float(meter.compute()) for name, meter in meters.items()}


def _checkpoint_of(client: MlflowClient, run_id: str, scratch: Path) -> Path:
    """The run's best checkpoint: the local file its tag names, else the logged artifact (downloaded)."""
    tags = client.get_run(run_id).data.tags
    local = tags.get("best_checkpoint")
    if local and Path(local).is_file():
        return Path(local)
    artifacts = [a.path for a in client.list_artifacts(run_id, "checkpoints") if a.path.endswith(".ckpt")]
    if not artifacts:
        raise ValueError(f"run {run_id} has no best_checkpoint file and no checkpoints/*.ckpt artifact")
    return Path(client.download_artifacts(run_id, artifacts[0], str(scratch)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.evaluate", description=__doc__.split("\n\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--run-id", help="MLflow run of the training job (its best checkpoint is evaluated)")
    target.add_argument("--checkpoint", type=Path, help="a training checkpoint (.ckpt)")
    parser.add_argument("--data-root", help="prep output dir (manifest.json); default: the run's data.root")
    parser.add_argument(
        "--tracking-uri", help="default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--limit-batches", type=int, default=None, help="evaluate only this many batches")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    uri = tracking.resolve_tracking_uri(args.tracking_uri)
    tracking.check_reachable(uri)
    client = MlflowClient(uri)
    with tempfile.TemporaryDirectory() as scratch:
        if args.checkpoint is not None and not args.checkpoint.is_file():
            raise ValueError(f"--checkpoint {args.checkpoint}: no such file")
        run_id = args.run_id or tracking.run_id_in_checkpoint(args.checkpoint)
        checkpoint = args.checkpoint or _checkpoint_of(client, run_id, Path(scratch))
        data_root = args.data_root or (
            client.get_run(run_id).data.params.get("data.root") if run_id else None
        )
        if not data_root:
            raise ValueError("no data root: pass --data-root PATH (the folder holding manifest.json)")
        # One device, whatever layout trained it: the split net's state_dict is the grouped net's.
        module = AlexNetModule.load_from_checkpoint(checkpoint, map_location="cpu", split_devices=None)
        datamodule = ShardDataModule(
            data_root,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            crop_size=int(module.hparams.in_size),
            pca_lighting=0.0,
        )
        metrics = evaluate(module, datamodule, torch.device(args.device), args.limit_batches)
    for key, value in metrics.items():
        log.info("%s = %.4f", key, value)
    if run_id is None:
        log.warning("the checkpoint names no MLflow run: metrics printed only")
        return 0
    for key, value in metrics.items():
        client.log_metric(run_id, key, value)
    log.info("logged into MLflow run %s (%s)", run_id, uri)
    return 0


if __name__ == "__main__":
    sys.exit(main())
