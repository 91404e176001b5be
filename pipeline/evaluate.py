"""Test a trained net as the paper did: one centre crop, and 10 crops (four corners + centre, each mirrored)
with the softmax averaged; logs ``eval/{center,tencrop}_{top1,top5}_error`` and ``eval/images`` into the
training run, and the tag ``eval_weights`` (``best``, or ``checkpoint <file>``) naming what it scored.

Every training job already does this for its final weights (``pipeline.training.final_eval``); this
command is for a checkpoint, or a run trained without it (``callbacks.final_eval.enabled=false``).

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

from alexnet_common.cli import Fields, fail, optional, parse_overrides
from pipeline.tracking import keys
from pipeline.tracking.identity import run_id_in_checkpoint
from pipeline.tracking.store import check_reachable, resolve_tracking_uri
from pipeline.training.evaluation import eval_datamodule, evaluate
from pipeline.training.module import AlexNetModule

log = logging.getLogger(__name__)
PROGRAM = "python -m pipeline.evaluate"


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
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True).get("data") or {}


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
