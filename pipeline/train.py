"""Training entry point: ``python -m pipeline.train +experiment=no_lrn`` (Hydra composes ``conf/train.yaml``).

``train(cfg)`` is the one place that instantiates the datamodule, module, logger, callbacks and trainer.
Batch size: ``data.batch_size`` is the GLOBAL batch (the paper's 128); every process gets
``batch_size / world_size`` and the lr is unchanged, so one device and N devices take the same
optimisation steps.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from pipeline import tracking

# torch, Lightning and MLflow load inside the functions: a mistyped override then fails in a second, not ten.
if TYPE_CHECKING:
    from lightning.pytorch import LightningDataModule, LightningModule, Trainer
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)


def per_device_batch(global_batch: int, world_size: int) -> int:
    if global_batch % world_size:
        raise ValueError(
            f"data.batch_size={global_batch} is the global batch and must divide evenly over {world_size} "
            "processes (trainer.devices x trainer.num_nodes); pick a multiple of the world size"
        )
    return global_batch // world_size


def study_name(cfg: DictConfig, run_name: str) -> str:
    """``study`` if set; in a Hydra multirun the sweep directory's name (same for every job); else the run."""
    if cfg.get("study"):
        return str(cfg.study)
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return Path(HydraConfig.get().sweep.dir).name
    return run_name


def _instantiate_trainer(cfg: DictConfig) -> Trainer:
    from lightning.pytorch.callbacks import ProgressBar

    callbacks = [
        instantiate(node) for node in (cfg.get("callbacks") or {}).values() if node and "_target_" in node
    ]
    if not cfg.trainer.get("enable_progress_bar", True):  # Lightning refuses a progress bar callback then
        callbacks = [callback for callback in callbacks if not isinstance(callback, ProgressBar)]
    # The logger is attached once the run exists: its tags need the trainer's world size and strategy.
    trainer: Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=False)
    if (
        trainer.world_size > 1
        and HydraConfig.initialized()
        and HydraConfig.get().mode == RunMode.MULTIRUN
        and not trainer.strategy.cluster_environment.creates_processes_externally
    ):
        raise ValueError(
            "trainer=ddp inside a local Hydra multirun: Lightning's launcher would re-run the whole sweep in "
            "every rank. Launch each job on its own, or sweep with hydra/launcher=slurm (srun starts ranks)"
        )
    return trainer


def _check_split(split_devices: Any, trainer: Trainer) -> None:
    import torch

    if not split_devices:
        return
    if trainer.world_size != 1:
        raise ValueError(
            f"model.split_devices={list(split_devices)} with {trainer.world_size} processes: the two-device "
            "split runs in one process (split + DDP over pairs of GPUs is not supported); use "
            "trainer=model_parallel alone"
        )
    if trainer.strategy.root_device != torch.device(split_devices[0]):
        raise ValueError(
            f"model.split_devices={list(split_devices)} but the trainer's device is "
            f"{trainer.strategy.root_device}; the batch must arrive on the first split device (set "
            "trainer.accelerator / trainer.devices to it)"
        )


def _resume_target(cfg: DictConfig, ckpt_dir: Path, uri: str) -> tuple[Path | None, str | None]:
    """(checkpoint to resume, MLflow run to continue): resume_run_id, else ckpt_path, else an existing
    ``<ckpt_dir>/last.ckpt`` (a requeued job), else a fresh start."""
    from mlflow.tracking import MlflowClient

    if cfg.get("resume_run_id"):
        run_id = str(cfg.resume_run_id)
        if cfg.get("ckpt_path"):
            return Path(cfg.ckpt_path), run_id
        return tracking.checkpoint_of_run(MlflowClient(uri), run_id), run_id
    if cfg.get("ckpt_path"):
        ckpt = Path(cfg.ckpt_path)
        if not ckpt.is_file():
            raise ValueError(f"ckpt_path={ckpt}: no such checkpoint file")
        return ckpt, tracking.run_id_in_checkpoint(ckpt)
    # Lightning's SLURM pre-emption handler writes hpc_ckpt_N.ckpt (default_root_dir = ckpt_dir): newest wins
    candidates = [
        path for path in (ckpt_dir / "last.ckpt", *ckpt_dir.glob("hpc_ckpt_*.ckpt")) if path.is_file()
    ]
    if candidates:
        newest = max(candidates, key=lambda path: path.stat().st_mtime)
        return newest, tracking.read_run_record(ckpt_dir) or tracking.run_id_in_checkpoint(newest)
    # Stopped before its first checkpoint: start over, but in the same MLflow run.
    return None, tracking.read_run_record(ckpt_dir)


def _start_run(
    cfg: DictConfig, trainer: Trainer, client: MlflowClient, ckpt_dir: Path, run_id: str | None
) -> str:
    run_name = f"{cfg.name}-seed{cfg.seed}"
    tags = tracking.run_tags(
        name=str(cfg.name),
        seed=int(cfg.seed),
        study=study_name(cfg, run_name),
        world_size=trainer.world_size,
        strategy=type(trainer.strategy).__name__,
        num_nodes=trainer.num_nodes,
    )
    tags[tracking.CKPT_DIR_TAG] = str(ckpt_dir.resolve())
    if run_id is not None:
        client_run = _existing_run(client, run_id)
        if client_run:
            tracking.reopen_run(client, run_id, tags)
            log.info("continuing MLflow run %s", run_id)
            return run_id
        log.warning("MLflow run %s of the checkpoint is not in this store; starting a new run", run_id)
    params = dict(tracking.flatten(OmegaConf.to_container(cfg, resolve=True)))
    run_id = tracking.create_run(client, cfg.logger.experiment_name, run_name, tags, params)
    log.info("MLflow run %s (%s)", run_id, run_name)
    return run_id


def _existing_run(client: MlflowClient, run_id: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_run(run_id)
    except MlflowException:
        return False
    return True


def _log_resolved_config(client: MlflowClient, run_id: str, cfg: DictConfig, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "config.yaml"
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    os.replace(tmp, path)
    client.log_artifact(run_id, str(path))


def _build(cfg: DictConfig, trainer: Trainer) -> tuple[LightningDataModule, LightningModule]:
    datamodule: LightningDataModule = instantiate(
        cfg.data, batch_size=per_device_batch(int(cfg.data.batch_size), trainer.world_size)
    )
    _check_split(cfg.model.get("split_devices"), trainer)
    module: LightningModule = instantiate(cfg.model, num_classes=datamodule.num_classes, **cfg.optim)
    return datamodule, module


def train(cfg: DictConfig) -> dict[str, Any]:
    """Trains one job into one MLflow run; returns the final metrics, ``run_id`` and ``best_checkpoint``."""
    from lightning.pytorch import seed_everything
    from lightning.pytorch.loggers import MLFlowLogger
    from mlflow.tracking import MlflowClient

    from pipeline.callbacks import CheckpointOnSigterm, RunIdBroadcast

    rank = tracking.launch_rank()
    uri = tracking.resolve_tracking_uri(cfg.logger.get("tracking_uri"))
    if rank == 0:
        tracking.check_reachable(uri)
    seed_everything(int(cfg.seed), workers=True)
    trainer = _instantiate_trainer(cfg)
    # Where each rank runs (a node name under Slurm): multi-node jobs log it in every rank's own log.
    host = socket.gethostname()
    node = os.environ.get("SLURMD_NODENAME", host)
    log.info("global rank %d of %d on node %s (host %s)", rank, trainer.world_size, node, host)
    datamodule, module = _build(cfg, trainer)
    ckpt_dir = Path(cfg.paths.ckpt_dir)
    client = MlflowClient(uri) if rank == 0 else None
    launched_here = tracking.RUN_ID_ENV not in os.environ  # Lightning's ddp children inherit the run id
    if launched_here:
        ckpt_path, run_id = _resume_target(cfg, ckpt_dir, uri)
        if rank == 0:
            run_id = _start_run(cfg, trainer, client, ckpt_dir, run_id)
            tracking.write_run_record(ckpt_dir, run_id, uri)
            _log_resolved_config(client, run_id, cfg, Path(cfg.paths.output_dir))
    else:
        run_id = os.environ[tracking.RUN_ID_ENV]
        ckpt_path = (
            Path(os.environ[tracking.CKPT_PATH_ENV]) if os.environ.get(tracking.CKPT_PATH_ENV) else None
        )
    logger = MLFlowLogger(
        experiment_name=cfg.logger.experiment_name,
        run_name=f"{cfg.name}-seed{cfg.seed}",
        tracking_uri=uri,
        run_id=run_id,
        log_model=False,
    )
    trainer.loggers = [logger]
    trainer.callbacks.append(RunIdBroadcast(run_id))
    trainer.callbacks.append(CheckpointOnSigterm(ckpt_dir / "last.ckpt"))
    if launched_here and run_id is not None:
        os.environ[tracking.RUN_ID_ENV] = run_id
        os.environ[tracking.CKPT_PATH_ENV] = str(ckpt_path or "")
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    except BaseException:
        if client is not None and run_id is not None:
            tracking.mark_failed(client, run_id)
        raise
    finally:
        if launched_here:  # a sequential multirun must not hand this run id to the next job
            os.environ.pop(tracking.RUN_ID_ENV, None)
            os.environ.pop(tracking.CKPT_PATH_ENV, None)
    metrics: dict[str, Any] = {key: float(value) for key, value in trainer.callback_metrics.items()}
    checkpoint = trainer.checkpoint_callback
    metrics["run_id"] = run_id
    metrics["best_checkpoint"] = getattr(checkpoint, "best_model_path", None) or None
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    result = train(cfg)
    log.info("run %s: %s", result["run_id"], {k: v for k, v in result.items() if k.startswith("val/")})


if __name__ == "__main__":
    main()
