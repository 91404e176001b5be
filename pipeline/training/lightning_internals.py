"""The two places where the training loop needs Lightning beyond its public API, kept here and nowhere else.

Checked against lightning 2.6.6 (the version ``pyproject.toml`` admits); ``tests/train/
test_lightning_internals.py`` fails loudly if either attribute is gone or changes meaning after an upgrade.

- ``stop_after_this_step``: Lightning has no public way to stop *every rank at the same step* with an
  exception that runs ``on_exception`` (its SIGTERM path). ``trainer.should_stop`` ends the epoch loop
  gracefully instead, after validation, and a preempted job has no time for that. Setting the signal
  connector's flag makes the loop raise ``SIGTERMException`` at this step's end, on this rank.
- ``log_step_metrics_now``: the metrics ``self.log`` recorded in this step reach the loggers only after
  ``on_train_batch_end``; a checkpoint written inside that hook must send them first, or a job killed right
  after it would lose the step's metrics (the checkpoint covers the step, so no resumed job recomputes them).
"""

from __future__ import annotations

from lightning.pytorch import Trainer


def stop_after_this_step(trainer: Trainer) -> None:
    """Makes Lightning raise ``SIGTERMException`` at the end of the current training step."""
    trainer._signal_connector.received_sigterm = True


def log_step_metrics_now(trainer: Trainer) -> None:
    """Hands the current step's logged metrics to the loggers now (Lightning would after this hook)."""
    trainer._logger_connector.update_train_step_metrics()
