"""The outbox's journal: metrics logged but not yet taken by the tracking server, kept on disk beside the
checkpoints, so that a job that dies before sending them (SIGKILL, OOM, a stop during an outage) loses none:
the job that resumes the run sends them first.

One JSON line per metric, ``[key, value, timestamp_ms, step]``, after a first line naming the run. Lines are
appended (and flushed to the operating system: they survive a killed process, not a lost node) as metrics are
logged; the file is emptied whenever the outbox has sent everything. On resume, ``replay_journal`` sends what
the run does not hold yet and raises the run's per-metric floors to it: the steps that the resumed job then
recomputes (the same values: resume is exact) are not logged again.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import IO

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

JOURNAL_NAME = "mlflow_unsent.jsonl"
METRICS_PER_REQUEST = 1000


class MetricJournal:
    """Appends metrics for ``run_id`` to ``path``; ``clear`` empties it. Not thread-safe: the outbox calls it
    under its lock."""

    def __init__(self, path: Path, run_id: str) -> None:
        self.path = path
        self.run_id = run_id
        self._file: IO[str] | None = None

    def append(self, metrics: list[Metric]) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a")
        if self._file.tell() == 0:
            self._file.write(json.dumps({"run_id": self.run_id}) + "\n")
        lines = (json.dumps([m.key, m.value, m.timestamp, m.step]) for m in metrics)
        self._file.write("".join(line + "\n" for line in lines))
        self._file.flush()

    def clear(self) -> None:
        if self._file is not None:
            self._file.truncate(0)
            self._file.seek(0)


def _read(path: Path) -> tuple[str | None, list[Metric]]:
    """The journal's run id and metrics; a line cut short by a kill mid-write is dropped."""
    run_id, metrics = None, []
    for number, line in enumerate(path.read_text().splitlines()):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if number == 0 and isinstance(record, dict):
            run_id = record.get("run_id")
        elif isinstance(record, list) and len(record) == 4:
            metrics.append(Metric(str(record[0]), float(record[1]), int(record[2]), int(record[3])))
    return run_id, metrics


def replay_journal(client: MlflowClient, run_id: str, path: Path, floors: dict[str, int]) -> dict[str, int]:
    """Sends the journal's metrics of ``run_id`` above ``floors`` (what the run already holds), empties the
    journal and returns the floors raised to what it sent. A journal of another run is discarded."""
    if not path.is_file():
        return floors
    journal_run, metrics = _read(path)
    if journal_run != run_id:
        if metrics:
            log.warning(
                "discarding %s: its %d metrics belong to run %s, not %s",
                path,
                len(metrics),
                journal_run,
                run_id,
            )
        path.unlink()
        return floors
    unsent = [m for m in metrics if m.step > floors.get(m.key, -1)]
    for start in range(0, len(unsent), METRICS_PER_REQUEST):
        client.log_batch(run_id, metrics=unsent[start : start + METRICS_PER_REQUEST])
    if unsent:
        log.info(
            "sent %d metrics that the previous job of run %s had logged but not sent", len(unsent), run_id
        )
    raised = dict(floors)
    for metric in unsent:
        raised[metric.key] = max(raised.get(metric.key, -1), metric.step)
    path.unlink()
    return raised
