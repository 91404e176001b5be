"""The outbox's journal: metrics logged but not yet taken by the tracking server, kept on disk beside the
checkpoints, so that a job that dies before sending them (SIGKILL, OOM, a stop during an outage) loses none:
the job that resumes the run sends them first.

One JSON line per metric, ``[key, value, timestamp_ms, step]``, after a first line naming the run (and the
store, its password masked); the outbox's other writes (params, tags, artifacts, the final status) as
``{"kind": ..., "payload": ...}`` lines, which ``python -m pipeline.tracking.replay`` sends. Lines are
appended (and flushed to the operating system: they survive a killed process, not a lost node) as metrics are
logged; the file is emptied whenever the outbox has sent everything. On resume, ``replay_journal`` sends what
the run does not hold yet and raises the run's per-metric floors to it: the steps that the resumed job then
recomputes (the same values: resume is exact) are not logged again.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from alexnet_common.redact import redact_uri

log = logging.getLogger(__name__)

JOURNAL_NAME = "mlflow_unsent.jsonl"
METRICS_PER_REQUEST = 1000


class MetricJournal:
    """Appends metrics for ``run_id`` to ``path``; ``clear`` empties it. Not thread-safe: the outbox calls it
    under its lock."""

    def __init__(self, path: Path, run_id: str, tracking_uri: str | None = None) -> None:
        self.path = path
        self.run_id = run_id
        self.header = {"run_id": run_id, "tracking_uri": redact_uri(tracking_uri) if tracking_uri else None}
        self._file: IO[str] | None = None

    def _write(self, lines: list[str]) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a")
        if self._file.tell() == 0:
            self._file.write(json.dumps(self.header) + "\n")
        self._file.write("".join(line + "\n" for line in lines))
        self._file.flush()

    def append(self, metrics: list[Metric]) -> None:
        self._write([json.dumps([m.key, m.value, m.timestamp, m.step]) for m in metrics])

    def record(self, kind: str, payload: Any) -> None:
        """Any outbox write: metrics as metric lines, the others as ``{"kind", "payload"}`` lines."""
        if kind == "metrics":
            self.append(payload)
            return
        if kind == "params":
            payload = [[param.key, param.value] for param in payload]
        self._write([json.dumps({"kind": kind, "payload": payload}, default=str)])

    def clear(self) -> None:
        if self._file is not None:
            self._file.truncate(0)
            self._file.seek(0)


@dataclass
class JournalContents:
    header: dict[str, Any] = field(default_factory=dict)  # run_id, tracking_uri (password masked)
    metrics: list[Metric] = field(default_factory=list)
    writes: list[tuple[str, Any]] = field(default_factory=list)  # (kind, payload) of the other writes


def read_journal(path: Path) -> JournalContents:
    """The journal's header, metrics and other writes; a line cut short by a kill mid-write is dropped."""
    contents = JournalContents()
    for number, line in enumerate(path.read_text().splitlines()):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if number == 0 and isinstance(record, dict) and "run_id" in record:
            contents.header = record
        elif isinstance(record, dict) and "kind" in record:
            contents.writes.append((str(record["kind"]), record.get("payload")))
        elif isinstance(record, list) and len(record) == 4:
            contents.metrics.append(Metric(str(record[0]), float(record[1]), int(record[2]), int(record[3])))
    return contents


def _read(path: Path) -> tuple[str | None, list[Metric]]:
    contents = read_journal(path)
    return contents.header.get("run_id"), contents.metrics


def metric_floors(client: MlflowClient, run_id: str) -> dict[str, int]:
    """The last step each metric of the run was logged at (steps a resumed job must not log again): the
    run's latest metrics as the store returns them, each with its step (one request, whatever the history)."""
    latest = client.get_run(run_id).data.to_proto().metrics
    return {metric.key: int(metric.step) for metric in latest}


def unsent_metrics(metrics: list[Metric], floors: dict[str, int]) -> list[Metric]:
    """The metrics above the run's last step of each key: sending them twice adds nothing twice."""
    return [m for m in metrics if m.step > floors.get(m.key, -1)]


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
    unsent = unsent_metrics(metrics, floors)
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
