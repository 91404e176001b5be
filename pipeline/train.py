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
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from alexnet_common.cli import EXIT_USER_ERROR
from pipeline.training.config_check import ConfigError, check_config
from pipeline.training.requeue_signal import watch_requeue_signal

# torch, Lightning and MLflow load inside the functions: a mistyped override then fails in a second, not ten.
if TYPE_CHECKING:
    from lightning.pytorch import LightningDataModule, LightningModule, Trainer

log = logging.getLogger(__name__)


class _NotAboutThisRun(logging.Filter):
    """Drops Lightning's advertisement for a hosted logging service, printed on every fit."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def one_console() -> None:
    """Each log line once: Lightning prints through a console handler of its own, and Hydra's root handler
    prints the same records again; where the root logger is configured, Lightning's handler goes."""
    lightning_logger = logging.getLogger("lightning")
    if logging.getLogger().handlers:
        for handler in list(lightning_logger.handlers):
            lightning_logger.removeHandler(handler)
    rank_zero_logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _NotAboutThisRun) for f in rank_zero_logger.filters):
        rank_zero_logger.addFilter(_NotAboutThisRun())


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

    from pipeline.checkpoints import AtomicCheckpointIO
    from pipeline.training.stop_signals import slurm_environment

    callbacks = [
        instantiate(node) for node in (cfg.get("callbacks") or {}).values() if node and "_target_" in node
    ]
    if not cfg.trainer.get("enable_progress_bar", True):  # Lightning refuses a progress bar callback then
        callbacks = [callback for callback in callbacks if not isinstance(callback, ProgressBar)]
    # The logger is attached once the run exists: its tags need the trainer's world size and strategy.
    # Checkpoints written atomically (the replaced one kept as .prev) and read with weights_only=True.
    trainer: Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=False, plugins=[AtomicCheckpointIO(), *slurm_environment()]
    )
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


def _build(cfg: DictConfig, trainer: Trainer) -> tuple[LightningDataModule, LightningModule]:
    datamodule: LightningDataModule = instantiate(
        cfg.data, batch_size=per_device_batch(int(cfg.data.batch_size), trainer.world_size)
    )
    _check_split(cfg.model.get("split_devices"), trainer)
    module: LightningModule = instantiate(cfg.model, num_classes=datamodule.num_classes, **cfg.optim)
    return datamodule, module


def _run_tags(cfg: DictConfig, trainer: Trainer, run_name: str, module: LightningModule) -> dict[str, str]:
    """Identity (experiment, seed, study, ...), the machine, and the common-random-numbers fingerprints of
    the freshly initialised net and the data stream (compare pairs runs of one seed by them)."""
    from pipeline.tracking.machine import machine_tags
    from pipeline.tracking.store import run_tags
    from pipeline.training.crn import crn_tags

    data = OmegaConf.to_container(cfg.data, resolve=True)
    return {
        **run_tags(
            name=str(cfg.name),
            seed=int(cfg.seed),
            study=study_name(cfg, run_name),
            world_size=trainer.world_size,
            strategy=type(trainer.strategy).__name__,
            num_nodes=trainer.num_nodes,
        ),
        **machine_tags(),
        **crn_tags(module.net, data, trainer.world_size),
    }


def _log_placement(trainer: Trainer) -> None:
    """Where this rank runs (a node name under Slurm), in every rank's own log: multi-node jobs show it."""
    from pipeline.tracking.identity import launch_rank

    host = socket.gethostname()
    node = os.environ.get("SLURMD_NODENAME", host)
    rank = launch_rank(os.environ)
    log.info("global rank %d of %d on node %s (host %s)", rank, trainer.world_size, node, host)


def _unsent_writes(trainer: Trainer, tracking_uri: str) -> int:
    """Writes the logger could not deliver by the end (0 if everything arrived); the run is tagged with the
    count where the store takes that one write."""
    from pipeline.tracking.replay import mark_unsent
    from pipeline.tracking.writer import run_writer

    writer = run_writer(trainer)
    if writer is None or writer.outbox is None or not writer.unsent:
        return 0
    mark_unsent(tracking_uri, str(writer.run_id), writer.unsent)
    return writer.outbox.pending  # the outbox kept trying: all may have arrived meanwhile


def use_credentials_file(path: str | None) -> None:
    """A team server's basic-auth credentials (``username=`` / ``password=`` lines) for MLflow's client,
    which reads them from the environment: never in a URI, a param or a log line."""
    if not path:
        return
    fields = dict(line.split("=", 1) for line in Path(path).read_text().splitlines() if "=" in line)
    if not fields.get("username") or not fields.get("password"):
        raise ConfigError("logger.credentials_file", path, "a file with username=... and password=... lines")
    os.environ["MLFLOW_TRACKING_USERNAME"] = fields["username"].strip()
    os.environ["MLFLOW_TRACKING_PASSWORD"] = fields["password"].strip()


def _results(trainer: Trainer, run_id: str | None, unsent: int) -> dict[str, Any]:
    metrics: dict[str, Any] = {key: float(value) for key, value in trainer.callback_metrics.items()}
    metrics["run_id"] = run_id
    metrics["unsent_writes"] = unsent
    metrics["best_checkpoint"] = getattr(trainer.checkpoint_callback, "best_model_path", None) or None
    return metrics


def train(cfg: DictConfig) -> dict[str, Any]:
    """Trains one job into one MLflow run; returns the final metrics, ``run_id`` and ``best_checkpoint``."""
    check_config(cfg)  # first, before torch loads or the store is touched: a typo leaves no run behind
    from lightning.pytorch import seed_everything

    from alexnet_common.redact import redact_text
    from pipeline.checkpoints import ResumeState
    from pipeline.tracking.identity import RunIdentity
    from pipeline.tracking.lineage import log_lineage
    from pipeline.tracking.store import flatten, resolve_experiment_name, resolve_tracking_uri
    from pipeline.training.checkpointing import CheckpointOnSigterm
    from pipeline.training.stop_signals import RequeueOnSignal

    one_console()
    use_credentials_file(cfg.logger.get("credentials_file"))
    ckpt_dir = Path(cfg.paths.ckpt_dir)
    identity = RunIdentity.resolve(
        tracking_uri=resolve_tracking_uri(cfg.logger.get("tracking_uri")),
        experiment_name=resolve_experiment_name(cfg.logger.get("experiment_name")),
        ckpt_dir=ckpt_dir,
        resume_run_id=cfg.get("resume_run_id"),
        ckpt_path=cfg.get("ckpt_path"),
    )
    seed_everything(int(cfg.seed), workers=True)
    trainer = _instantiate_trainer(cfg)
    _log_placement(trainer)
    datamodule, module = _build(cfg, trainer)
    run_name = f"{cfg.name}-seed{cfg.seed}"
    identity = identity.open(
        run_name=run_name,
        tags=_run_tags(cfg, trainer, run_name, module),
        params={
            key: redact_text(value) if isinstance(value, str) else value
            for key, value in flatten(OmegaConf.to_container(cfg, resolve=True))
        },
        config_yaml=redact_text(OmegaConf.to_yaml(cfg, resolve=True)),
    )
    writer = identity.logger(
        run_name,
        flush_timeout_s=float(cfg.logger.flush_timeout_s),
        stop_flush_timeout_s=float(cfg.logger.stop_flush_timeout_s),
    )
    trainer.loggers = [writer]
    shared = identity.share()  # on ranks srun started, the run id arrives by broadcast
    # in this order: on a SIGUSR1 stop, last.ckpt is written before the job is requeued
    trainer.callbacks += [shared, ResumeState(), CheckpointOnSigterm(ckpt_dir), RequeueOnSignal(ckpt_dir)]
    with identity.running(continues=lambda: writer.continues):
        log_lineage(identity, datamodule)  # the prep output (manifest sha256) as the run's dataset input
        trainer.fit(module, datamodule=datamodule, ckpt_path=identity.ckpt_path, weights_only=True)
    return _results(trainer, shared.run_id, _unsent_writes(trainer, identity.tracking_uri))


# The configs as package resources (alexnet_common/conf links to conf/): a checkout or an installed wheel.
@hydra.main(version_base="1.3", config_path="pkg://alexnet_common.conf", config_name="train")
def main(cfg: DictConfig) -> None:
    watch_requeue_signal()  # first: a time-limit signal during start-up must not end the job
    try:
        result = train(cfg)
    except ConfigError as error:  # one line, exit 2, nothing created (the check runs first)
        print(f"pipeline.train: error: {error}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except ConnectionError as error:  # an unreachable store: one line (Hydra's report would echo the
        print(f"pipeline.train: error: {error}", file=sys.stderr)  # overrides, a URI's password included)
        sys.exit(1)
    log.info("run %s: %s", result["run_id"], {k: v for k, v in result.items() if k.startswith("val/")})
    if result["unsent_writes"]:  # never exit 0 having lost tracking data: say where it is and how to send it
        from pipeline.tracking.journal import JOURNAL_NAME
        from pipeline.tracking.replay import EXIT_TRACKING_UNSENT, replay_command

        ckpt_dir = Path(cfg.paths.ckpt_dir).resolve()
        log.error(
            "run %s: %d tracking writes were not delivered; they are kept in %s. Once the store takes writes "
            "again, send them with:\n  %s",
            result["run_id"],
            result["unsent_writes"],
            ckpt_dir / JOURNAL_NAME,
            replay_command(ckpt_dir),
        )
        sys.exit(EXIT_TRACKING_UNSENT)


if __name__ == "__main__":
    main()
