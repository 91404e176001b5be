"""The one way a training callback reaches the job's MLflow run: the trainer's ``BufferedMlflowLogger``.

Every write goes through the logger's outbox (``pipeline.tracking.outbox``), so an artifact or a tag never
blocks training on the tracking server; nothing is sent from a rank that does not own the run.
"""

from __future__ import annotations

from lightning.pytorch import Trainer

from pipeline.tracking.outbox import BufferedMlflowLogger


def run_writer(trainer: Trainer) -> BufferedMlflowLogger | None:
    """The logger that writes the job's run, or None (a trainer built without tracking, as in tests)."""
    return next((logger for logger in trainer.loggers if isinstance(logger, BufferedMlflowLogger)), None)


def log_artifact(trainer: Trainer, path: str, folder: str) -> bool:
    """Queues ``path`` as an artifact under ``folder`` of the run; False where the trainer has no run."""
    writer = run_writer(trainer)
    if writer is None:
        return False
    writer.log_artifact(path, folder)
    return True


def set_run_tag(trainer: Trainer, key: str, value: str) -> bool:
    """Queues a tag on the run; False where the trainer has no run."""
    writer = run_writer(trainer)
    if writer is None:
        return False
    writer.set_tag(key, value)
    return True
