"""Slurm's time-limit signal (``sbatch --signal=USR1@SECONDS``): checkpoint at a step boundary, requeue, and
let the requeued job continue the same MLflow run, which stays RUNNING in between.

Lightning's own SLURM handler (``SLURMEnvironment(auto_requeue=True)``) writes ``hpc_ckpt_N.ckpt`` and calls
the loggers' ``finalize`` from inside the signal handler, wherever training happens to be: the run is marked
FINISHED while training goes on, and under DDP a collective inside a signal handler can hang. The trainer
gets ``SLURMEnvironment(auto_requeue=False)`` instead (``slurm_environment``), and this callback's handler
only sets a flag. After each step the ranks agree on it (any rank signalled stops all), tell the run's
writer that the run continues elsewhere (its ``finalize`` then flushes but sets no status), and stop at
this step's end the way a SIGTERM does (``CheckpointOnSigterm`` writes ``last.ckpt``). Rank 0 then asks
Slurm to requeue the job (``scontrol requeue``); the requeued job resumes ``last.ckpt`` into the same run.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities.exceptions import SIGTERMException

from pipeline.checkpoints.files import LAST_NAME
from pipeline.tracking.writer import run_writer
from pipeline.training.checkpointing import signalled_on_any_rank
from pipeline.training.lightning_internals import stop_after_this_step
from pipeline.training.requeue_signal import REQUEUE_REQUESTED, watch_requeue_signal

log = logging.getLogger(__name__)


def slurm_environment() -> list[SLURMEnvironment]:
    """Under Slurm: the cluster environment, Lightning's own requeue handler off (this module's instead)."""
    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


def requeue_slurm_job(environ: dict[str, str] | None = None) -> bool:
    """``scontrol requeue`` of this job (the array task where there is one); False outside Slurm."""
    environ = dict(os.environ if environ is None else environ)
    job = environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{job}_{environ['SLURM_ARRAY_TASK_ID']}" if job else environ.get("SLURM_JOB_ID")
    if not job:
        log.warning(
            "not under Slurm: nothing requeues this job; run the same command again to continue the run"
        )
        return False
    done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        log.error("scontrol requeue %s failed: %s", job, done.stderr.strip())
        return False
    log.info("job %s requeued: it continues the same MLflow run from %s", job, LAST_NAME)
    return True


class RequeueOnSignal(Callback):
    """SIGUSR1: stop at this step's end on every rank, ``last.ckpt`` written, run RUNNING, job requeued."""

    def __init__(self, ckpt_dir: Path) -> None:
        self.path = Path(ckpt_dir) / LAST_NAME
        self.stopping = False

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        watch_requeue_signal()  # the entry has done so already; a trainer built elsewhere is covered too

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if signalled_on_any_rank(REQUEUE_REQUESTED.is_set(), trainer, pl_module) and not self.stopping:
            log.info(
                "SIGUSR1 (time limit near): stopping after step %d, writing %s",
                trainer.global_step,
                self.path,
            )
            self.stopping = True
            REQUEUE_REQUESTED.clear()  # acted on: a later training in this process starts unsignalled
            writer = run_writer(trainer)
            if writer is not None:
                writer.continues = True  # the requeued job continues the run: no final status
            stop_after_this_step(trainer)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        # CheckpointOnSigterm (an earlier callback) has written last.ckpt at this step by now
        if self.stopping and isinstance(exception, SIGTERMException) and trainer.is_global_zero:
            requeue_slurm_job()
