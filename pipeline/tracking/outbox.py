"""Tracking off the training loop's critical path: MLflow writes queued and sent by one background thread.

MLflow's own asynchronous logging (``synchronous=False``, ``MLFLOW_ENABLE_ASYNC_LOGGING``) drops a batch once
its HTTP retries are spent (about 4 minutes with the defaults: ``async_logging_queue.py`` logs "Failed to log
run data" and moves on), so a longer tracking-server outage would lose metrics. ``Outbox`` keeps every write
in order in memory and retries the head of the queue until the server takes it, however long the outage; the
training loop only appends to the queue. ``BufferedMlflowLogger`` is a Lightning logger on top of it;
``finalize`` waits for the queue to drain (``flush_timeout_s``) before the run's final status is set.
"""

from __future__ import annotations

import logging
import threading
import time
from argparse import Namespace
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only
from mlflow.entities import Metric, Param, RunStatus
from mlflow.tracking import MlflowClient

from alexnet_common.redact import redact_uri
from pipeline.tracking.journal import MetricJournal
from pipeline.tracking.store import flatten

log = logging.getLogger(__name__)

METRICS_PER_REQUEST = 1000  # MLflow's log_batch limits
PARAMS_PER_REQUEST = 100


@dataclass
class _Write:
    kind: str  # "metrics" | "params" | "tag" | "artifact" | "status"
    payload: Any


class Outbox:
    """MLflow writes for one run, sent in order by a daemon thread; a failed send is retried (backoff up to
    ``retry_max_s``) until it succeeds, so nothing is lost to an outage while the process lives."""

    def __init__(
        self,
        client: MlflowClient,
        run_id: str,
        retry_max_s: float = 30.0,
        journal: MetricJournal | None = None,
    ) -> None:
        self.client = client
        self.run_id = run_id
        self.retry_max_s = retry_max_s
        self.journal = journal
        self._queue: deque[_Write] = deque()
        self._busy = False
        self._changed = threading.Condition()
        self.failed_sends = 0
        self._thread = threading.Thread(target=self._run, name="mlflow-outbox", daemon=True)
        self._thread.start()

    def put(self, kind: str, payload: Any) -> None:
        with self._changed:
            if self.journal is not None:
                self.journal.record(kind, payload)  # every write: replayable if never sent
            self._queue.append(_Write(kind, payload))
            self._changed.notify_all()

    @property
    def pending(self) -> int:
        with self._changed:
            return len(self._queue) + self._busy

    def flush(self, timeout_s: float) -> bool:
        """Waits until every queued write is sent; False if some are still queued after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 1.0))
        return True

    def _take(self) -> _Write:
        """The head of the queue; consecutive metric writes merged up to one request's worth."""
        with self._changed:
            while not self._queue:
                self._changed.wait()
            head = self._queue.popleft()
            if head.kind == "metrics":
                merged = list(head.payload)
                while self._queue and self._queue[0].kind == "metrics":
                    if len(merged) + len(self._queue[0].payload) > METRICS_PER_REQUEST:
                        break
                    merged += self._queue.popleft().payload
                head = _Write("metrics", merged)
            self._busy = True
            return head

    def _run(self) -> None:
        while True:
            write = self._take()
            delay = 1.0
            while not self._send(write):
                time.sleep(delay)
                delay = min(2 * delay, self.retry_max_s)
            with self._changed:
                self._busy = False
                if not self._queue and self.journal is not None:
                    self.journal.clear()  # everything logged so far is on the server
                self._changed.notify_all()

    def _send(self, write: _Write) -> bool:
        try:
            if write.kind == "metrics":
                self.client.log_batch(self.run_id, metrics=write.payload)
            elif write.kind == "params":
                self.client.log_batch(self.run_id, params=write.payload)
            elif write.kind == "tag":
                self.client.set_tag(self.run_id, *write.payload)
            elif write.kind == "artifact":
                self.client.log_artifact(self.run_id, *write.payload)
            elif write.kind == "status":
                self.client.set_terminated(self.run_id, write.payload)
        except Exception as error:  # noqa: BLE001 - any failure to reach the store: keep the write, retry
            self.failed_sends += 1
            if self.failed_sends == 1 or self.failed_sends % 10 == 0:
                log.warning(
                    "MLflow write failed (%s), %d writes queued; retrying: training goes on",
                    str(error).splitlines()[0][:200],
                    self.pending,
                )
            return False
        return True


class BufferedMlflowLogger(Logger):
    """A Lightning logger for an existing MLflow run whose writes go through an ``Outbox``: ``log_metrics``
    returns at once; only the ``owner`` (the process that opened the run) sends anything. A metric is logged
    at most once per step, and not at or below ``floors[key]`` (steps a killed job already logged, which the
    resumed job recomputes).
    Metrics not sent yet are also in ``journal`` (``pipeline.tracking.journal``), for a job killed before it
    sends them. ``finalize`` drains the queue for at most ``flush_timeout_s`` at the end of a training
    (``stop_flush_timeout_s`` when the job fails or stops for a requeue), then sets the status.

    Built on Lightning's public ``Logger`` base rather than its ``MLFlowLogger``: the run exists before the
    trainer does (``RunIdentity``), so nothing of MLFlowLogger's run lookup or model logging is wanted."""

    def __init__(
        self,
        *,
        tracking_uri: str,
        experiment_name: str,
        run_name: str,
        run_id: str | None,
        floors: Mapping[str, int] | None = None,
        journal: Path | None = None,
        owner: bool = True,
        flush_timeout_s: float = 600.0,
        stop_flush_timeout_s: float = 20.0,
    ) -> None:
        super().__init__()
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.run_name = run_name
        self.run_id = run_id
        self.floors = dict(floors or {})
        self.flush_timeout_s = flush_timeout_s
        self.stop_flush_timeout_s = stop_flush_timeout_s
        self.client = MlflowClient(tracking_uri)
        self.outbox: Outbox | None = None
        self.journal_path = journal
        self.unsent = 0  # writes finalize could not deliver: the job must not exit 0
        self.continues = False  # set on a stop for a requeue: the next job continues the run (no status)
        if owner:
            if run_id is None:
                raise ValueError("the process that owns the MLflow run needs its run_id")
            journal_file = MetricJournal(journal, run_id, tracking_uri) if journal is not None else None
            self.outbox = Outbox(self.client, run_id, journal=journal_file)

    @property
    def name(self) -> str:
        return self.experiment_name

    @property
    def version(self) -> str:
        return self.run_id or ""

    @property
    @rank_zero_experiment
    def experiment(self) -> MlflowClient:
        return self.client

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        timestamp, step = int(time.time() * 1000), step or 0
        batch = [
            Metric(key, float(value), timestamp, step)
            for key, value in metrics.items()
            if not isinstance(value, str) and step > self.floors.get(key, -1)
        ]
        self.floors.update((metric.key, step) for metric in batch)  # one value per metric and step
        if batch and self.outbox is not None:
            self.outbox.put("metrics", batch)

    @rank_zero_only
    def log_hyperparams(self, params: Mapping[str, Any] | Namespace) -> None:
        flat = flatten(vars(params) if isinstance(params, Namespace) else params)
        items = [Param(key, str(value)[:6000]) for key, value in flat]
        for start in range(0, len(items), PARAMS_PER_REQUEST):
            if self.outbox is not None:
                self.outbox.put("params", items[start : start + PARAMS_PER_REQUEST])

    def log_artifact(self, local_path: str, artifact_path: str | None = None) -> None:
        if self.outbox is not None:
            self.outbox.put("artifact", (local_path, artifact_path))

    def set_tag(self, key: str, value: str) -> None:
        if self.outbox is not None:
            self.outbox.put("tag", (key, value))

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        if self.outbox is None:
            return
        # "finished": Lightning's SLURM requeue handler (the time limit is near); "failed": also a SIGTERM
        if not self.continues:  # a run that a requeued job continues stays RUNNING
            finished = status in ("success", "finished")
            self.outbox.put(
                "status", RunStatus.to_string(RunStatus.FINISHED if finished else RunStatus.FAILED)
            )
        timeout = (
            self.flush_timeout_s if status == "success" and not self.continues else self.stop_flush_timeout_s
        )
        if not self.outbox.flush(timeout):
            self.unsent = self.outbox.pending
            log.error(
                "MLflow run %s: %d writes still unsent after %.0f s (tracking store %s unreachable); they "
                "are kept in %s",
                self.run_id,
                self.unsent,
                timeout,
                redact_uri(self.tracking_uri),
                self.journal_path,
            )
