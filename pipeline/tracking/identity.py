"""Which MLflow run a training job writes to and which checkpoint it resumes from, decided in one place.

The launching process (global rank 0 as the user, Hydra's launcher or Slurm started it) resolves both from the
config, the checkpoint directory and the environment, first match wins:

1. ``resume_run_id=ID``: that run; its checkpoint is ``ckpt_path=`` if given, else ``last.ckpt`` in the run's
   ``ckpt_dir`` tag.
2. ``ckpt_path=PATH``: that checkpoint, and the run recorded inside it.
3. a checkpoint in ``ckpt_dir`` (a requeued or restarted job): the newest readable one, and the run recorded
   inside it. A newest file that does not load (cut short while written, damaged) is passed over with a
   warning naming it and the one used instead; if none loads, the job refuses to start rather than train
   from step 0 into a run that has steps.
4. no checkpoint: the run tagged with this ``ckpt_dir`` (a job stopped before its first checkpoint), else a
   new run.

Checkpoints are read with ``weights_only=True`` only (``pipeline.checkpoints``). A resumed run first gets
the metrics its killed job had logged but not sent (``pipeline.tracking.journal``), and its logger skips the
steps the run then holds (``metric_floors``): after a hard kill, the steps since the last checkpoint are
trained again (the same values: resume is exact) but logged once.

It then creates or reopens the run and hands the identity on. The ranks Lightning starts for the other local
devices inherit it in one environment variable; ranks an external launcher started (srun, torchrun) resolve
the same checkpoint from the same files and receive the run id by broadcast once the process group exists
(:class:`ShareRunId`), which also writes it into every checkpoint. Only the launching process talks to MLflow.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from mlflow.tracking import MlflowClient

from pipeline.checkpoints.files import PREVIOUS_SUFFIX, TEMPORARY_MARK, load_checkpoint
from pipeline.tracking import keys, shared_store, store
from pipeline.tracking.journal import JOURNAL_NAME, metric_floors, replay_journal
from pipeline.tracking.outbox import BufferedMlflowLogger

log = logging.getLogger(__name__)

IDENTITY_ENV = "ALEXNET_RUN_IDENTITY"  # {"run_id": ..., "ckpt_path": ...} for the ranks Lightning starts
_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def launch_rank(environ: Mapping[str, str]) -> int:
    """This process's global rank as the launcher set it (0 for a plain process), before any process group."""
    return next((int(environ[name]) for name in _RANK_VARIABLES if name in environ), 0)


def run_id_in_checkpoint(ckpt_path: Path) -> str | None:
    """The run id :class:`ShareRunId` stored in a checkpoint (memory-mapped: cheap even for 240 MB)."""
    return load_checkpoint(ckpt_path, mmap=True).get(keys.CKPT_RUN_ID_KEY)


def _readable(path: Path) -> bool:
    try:
        checkpoint = load_checkpoint(path, mmap=True)
    except Exception as error:  # noqa: BLE001 - a truncated zip, garbage, a refused type: not resumable
        log.warning("checkpoint %s does not load: %s", path, str(error).splitlines()[0][:300])
        return False
    return isinstance(checkpoint, dict) and "state_dict" in checkpoint and "loops" in checkpoint


def newest_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest checkpoint in ``ckpt_dir`` that loads: ``last.ckpt``, the version it replaced
    (``last.ckpt.prev``), Lightning's SLURM ``hpc_ckpt_N.ckpt``, the end-of-epoch best. A newer file that does
    not load is passed over with a warning naming both; None if there is no file; ValueError if none loads."""
    candidates = sorted(
        (
            path
            for path in (*ckpt_dir.glob("*.ckpt"), *ckpt_dir.glob(f"*.ckpt{PREVIOUS_SUFFIX}"))
            if path.is_file()
        ),
        key=lambda path: path.stat().st_mtime,
        reverse=True,
    )
    for path in candidates:
        if _readable(path):
            if path != candidates[0]:
                log.warning(
                    "resuming from %s: the newer checkpoint %s is unreadable (killed while written, damaged)",
                    path,
                    candidates[0],
                )
            return path
    if candidates:
        names = ", ".join(path.name for path in candidates)
        raise ValueError(
            f"no checkpoint in {ckpt_dir} loads ({names}); refusing to start over from step 0 in a run that "
            "has steps. Pass ckpt_path= to a good checkpoint, or move the files away to start afresh"
        )
    return None


def remove_stale_temporaries(ckpt_dir: Path) -> None:
    """Temporary files of checkpoint writes that a killed job left (each as large as a checkpoint)."""
    for path in ckpt_dir.glob(f".*{TEMPORARY_MARK}*"):
        path.unlink(missing_ok=True)


@dataclass(frozen=True)
class RunIdentity:
    """The MLflow run (``run_id``; None until created, or until broadcast on the other ranks) and the
    checkpoint to resume (``ckpt_path``; None: from the start). ``launcher``: this process owns the run."""

    tracking_uri: str
    experiment_name: str
    ckpt_dir: Path
    ckpt_path: Path | None
    run_id: str | None
    launcher: bool
    floors: dict[str, int] = field(default_factory=dict)  # metric -> last step already in the run

    @classmethod
    def resolve(
        cls,
        *,
        tracking_uri: str,
        experiment_name: str,
        ckpt_dir: Path,
        resume_run_id: str | None = None,
        ckpt_path: str | Path | None = None,
        environ: Mapping[str, str] = os.environ,
    ) -> RunIdentity:
        if inherited := environ.get(IDENTITY_ENV):
            handed = json.loads(inherited)
            path = Path(handed["ckpt_path"]) if handed["ckpt_path"] else None
            return cls(tracking_uri, experiment_name, ckpt_dir, path, handed["run_id"], launcher=False)
        launcher = launch_rank(environ) == 0
        if launcher:
            store.check_reachable(tracking_uri)
            shared_store.prepare_store(tracking_uri, experiment_name)  # safe with many jobs starting at once
            remove_stale_temporaries(ckpt_dir)
        identity = cls(tracking_uri, experiment_name, ckpt_dir, None, None, launcher)
        return identity._resume_target(resume_run_id, Path(ckpt_path) if ckpt_path else None)

    def _resume_target(self, resume_run_id: str | None, ckpt_path: Path | None) -> RunIdentity:
        if resume_run_id:
            return replace(
                self, run_id=resume_run_id, ckpt_path=ckpt_path or self._last_of_run(resume_run_id)
            )
        if ckpt_path is not None:
            if not ckpt_path.is_file():
                raise ValueError(f"ckpt_path={ckpt_path}: no such checkpoint file")
            return replace(self, ckpt_path=ckpt_path, run_id=run_id_in_checkpoint(ckpt_path))
        newest = newest_checkpoint(self.ckpt_dir)
        if newest is not None:
            return replace(self, ckpt_path=newest, run_id=run_id_in_checkpoint(newest))
        return replace(self, run_id=self._run_of_ckpt_dir() if self.launcher else None)

    def _last_of_run(self, run_id: str) -> Path:
        tagged = MlflowClient(self.tracking_uri).get_run(run_id).data.tags.get(keys.TAG_CKPT_DIR)
        last = newest_checkpoint(Path(tagged)) if tagged and Path(tagged).is_dir() else None
        if last is None:
            raise ValueError(
                f"resume_run_id={run_id}: no checkpoint under the run's {keys.TAG_CKPT_DIR} tag ({tagged}); "
                "pass ckpt_path=PATH to the checkpoint to resume"
            )
        return last

    def _run_of_ckpt_dir(self) -> str | None:
        client = MlflowClient(self.tracking_uri)
        experiment = client.get_experiment_by_name(self.experiment_name)
        if experiment is None:
            return None
        escaped = str(self.ckpt_dir.resolve()).replace("'", "\\'")
        runs = client.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.{keys.TAG_CKPT_DIR} = '{escaped}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        return runs[0].info.run_id if runs else None

    def open(
        self, *, run_name: str, tags: dict[str, str], params: dict[str, Any], config_yaml: str
    ) -> RunIdentity:
        """On the launching process: reopens the resolved run or creates one, logs the resolved config, and
        exports the identity for the ranks Lightning starts. Elsewhere: returns the identity unchanged."""
        if not self.launcher:
            return self
        client = MlflowClient(self.tracking_uri)
        tags = {**tags, keys.TAG_CKPT_DIR: str(self.ckpt_dir.resolve())}
        floors: dict[str, int] = {}
        if self.run_id is not None and store.run_exists(client, self.run_id):
            store.reopen_run(client, self.run_id, tags)
            run_id = self.run_id
            floors = replay_journal(
                client, run_id, self.ckpt_dir / JOURNAL_NAME, metric_floors(client, run_id)
            )
            log.info("continuing MLflow run %s", run_id)
        else:
            if self.run_id is not None:
                log.warning(
                    "MLflow run %s of the checkpoint is not in this store; starting a new run", self.run_id
                )
            run_id = shared_store.create_run(client, self.experiment_name, run_name, tags, params)
            (self.ckpt_dir / JOURNAL_NAME).unlink(missing_ok=True)  # unsent metrics of a run that is gone
            log.info("MLflow run %s (%s)", run_id, run_name)
        client.log_text(run_id, config_yaml, keys.ARTIFACT_CONFIG)
        os.environ[IDENTITY_ENV] = json.dumps({"run_id": run_id, "ckpt_path": str(self.ckpt_path or "")})
        return replace(self, run_id=run_id, floors=floors)

    def logger(self, run_name: str, **timeouts: float) -> BufferedMlflowLogger:
        """The run's logger: asynchronous (``Outbox``), skipping the steps the run already holds; only the
        launching process sends. ``timeouts``: ``flush_timeout_s``, ``stop_flush_timeout_s``.
        Ranks an external launcher started have no run id yet (it arrives by broadcast) and never send."""
        if self.launcher and self.run_id is None:
            raise ValueError("RunIdentity.logger() before the run exists (call open() first)")
        return BufferedMlflowLogger(
            tracking_uri=self.tracking_uri,
            experiment_name=self.experiment_name,
            run_name=run_name,
            run_id=self.run_id,
            floors=self.floors,
            journal=self.ckpt_dir / JOURNAL_NAME,
            owner=self.launcher,
            **timeouts,
        )

    def share(self) -> ShareRunId:
        return ShareRunId(self.run_id)

    @contextmanager
    def running(self, continues: Callable[[], bool] = lambda: False) -> Iterator[None]:
        """Marks the run FAILED if the block raises, unless ``continues()`` (stopped for a requeue: the next
        job continues the run); then forgets the exported identity (the next job of a sequential multirun is
        a new job)."""
        try:
            yield
        except BaseException:
            if self.launcher and self.run_id is not None and not continues():
                store.mark_failed(MlflowClient(self.tracking_uri), self.run_id)
            raise
        finally:
            if self.launcher:
                os.environ.pop(IDENTITY_ENV, None)


class ShareRunId(Callback):
    """Gets rank 0's run id to every rank once the process group exists, and stores it in every checkpoint,
    so that ``ckpt_path=``, a requeue and ``pipeline.evaluate`` find the run from the checkpoint alone."""

    def __init__(self, run_id: str | None) -> None:
        self.run_id = run_id

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.run_id = trainer.strategy.broadcast(self.run_id, src=0)

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[keys.CKPT_RUN_ID_KEY] = self.run_id
