"""Test a trained net as the paper did: one centre crop, and 10 crops (four corners + centre, each mirrored)
with the softmax averaged; logs ``eval/{center,tencrop}_{top1,top5}_error`` and ``eval/images`` into the
training run, and the tag ``eval_weights`` (``best``, or ``checkpoint <file>``) naming what it scored.

Every training job already does this for its final weights (``pipeline.training.final_eval``); this
command is for a checkpoint, a run trained without it (``callbacks.final_eval.enabled=false``), or any logged
model (``model_uri=``: printed, and written to ``out=``, not logged: the run already holds its eval/*).

    python -m pipeline.evaluate run_id=RUN_ID                 # the run's best checkpoint and data settings
    python -m pipeline.evaluate checkpoint=PATH data_root=demo/shards
    python -m pipeline.evaluate model_uri=models:/alexnet/3   # a registered version (or runs:/<id>/model)
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import torch
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from alexnet_common.cli import Fields, fail, optional, parse_overrides
from pipeline.tracking import keys
from pipeline.tracking.identity import run_id_in_checkpoint
from pipeline.tracking.logged_model import load_python_model, source_run_of
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
    "model_uri": (optional(str), None, "a logged model instead: runs:/<id>/model, models:/NAME/VERSION"),
    "data_root": (optional(str), None, "prep output dir (manifest.json); default: the run's data.root"),
    "tracking_uri": (optional(str), None, "default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db"),
    "batch_size": (int, 32, "images per batch (each gives 10 crops)"),
    "num_workers": (int, 2, "JPEG-decoding loader workers"),
    "device": (str, "auto", "where the net runs: auto (cuda if available, else cpu), cpu, cuda, cuda:1"),
    "limit_batches": (optional(int), None, "evaluate only this many batches"),
    "out": (optional(Path), None, "also write the metrics to this JSON file"),
}


def resolve_device(name: str) -> torch.device:
    """``auto``: the best device this machine has (a GPU if torch sees one)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"device={name}: not a torch device ({error}); use auto, cpu or cuda") from error


def _evaluate_model(args: dict[str, Any], client: MlflowClient, scratch: Path) -> dict[str, float]:
    """A logged model's net (the pyfunc's own weights) on the val split of its run's data settings."""
    try:
        classifier = load_python_model(args["model_uri"])
        run_id = source_run_of(args["model_uri"])
    except MlflowException as error:
        fail(PROGRAM, f"model_uri={args['model_uri']}: {str(error).splitlines()[0]}")
    net, card = classifier.net, classifier.card
    datamodule = eval_datamodule(
        _data_config_of(client, run_id, scratch),
        data_root=args["data_root"],
        batch_size=args["batch_size"],
        num_workers=args["num_workers"],
        crop_size=card.in_size,
    )
    if [c.wnid for c in datamodule.manifest.classes] != card.wnids:
        fail(PROGRAM, f"data_root={datamodule.manifest.root}: its classes are not the model's")
    return evaluate(net, datamodule, resolve_device(args["device"]), args["limit_batches"], crop=card.in_size)


def _report(metrics: dict[str, float], out: Path | None) -> None:
    for key, value in metrics.items():
        log.info("%s = %.4f", key, value)
    if out is not None:
        out.write_text(json.dumps(metrics, indent=1))


def main(argv: list[str] | None = None) -> int:
    args = parse_overrides(PROGRAM, sys.argv[1:] if argv is None else argv, FIELDS)
    if sum(args[name] is not None for name in ("run_id", "checkpoint", "model_uri")) != 1:
        fail(PROGRAM, "give exactly one of run_id=ID, checkpoint=PATH and model_uri=URI")
    try:
        args["device"] = str(resolve_device(args["device"]))
    except ValueError as error:
        fail(PROGRAM, str(error))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    uri = resolve_tracking_uri(args["tracking_uri"])
    check_reachable(uri)
    client = MlflowClient(uri)
    if args["model_uri"] is not None:
        mlflow.set_tracking_uri(uri)  # models:/ and runs:/ URIs resolve through MLflow's global store
        with tempfile.TemporaryDirectory() as scratch:
            _report(_evaluate_model(args, client, Path(scratch)), args["out"])
        return 0
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
        metrics = evaluate(module, datamodule, resolve_device(args["device"]), args["limit_batches"])
    _report(metrics, args["out"])
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
