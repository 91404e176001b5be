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
