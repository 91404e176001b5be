"""``python -m pipeline.tracking.replay ckpt_dir=DIR``: sends what a job could not deliver to its run.

A job whose tracking store stopped taking writes keeps them in ``DIR/mlflow_unsent.jsonl`` and exits with
:data:`EXIT_TRACKING_UNSENT` (75, ``EX_TEMPFAIL``: "try again later"), naming the journal and this command.
Once the store takes writes again, this sends the journal's metrics, params, tags, artifacts and the run's
final status, clears the run's ``tracking_unsent`` tag and removes the journal. Idempotent: metrics at steps
the run already holds are not sent again (a replay cut short can be run again), and with no journal it says
so and exits 0. A job that resumes the run does the metric part itself (``pipeline.tracking.journal``).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from mlflow.entities import Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from alexnet_common.cli import REQUIRED, Fields, fail, optional, parse_overrides
from alexnet_common.redact import MASK, redact_text, redact_uri
from pipeline.tracking import keys
from pipeline.tracking.journal import (
    JOURNAL_NAME,
    METRICS_PER_REQUEST,
    JournalContents,
    metric_floors,
    read_journal,
    unsent_metrics,
)

log = logging.getLogger(__name__)

PROGRAM = "python -m pipeline.tracking.replay"
EXIT_TRACKING_UNSENT = 75  # sysexits.h EX_TEMPFAIL: the job's tracking writes are journaled, not delivered
MARK_TIMEOUT_S = 5.0

FIELDS: Fields = {
    "ckpt_dir": (Path, REQUIRED, "the job's checkpoint folder, which holds " + JOURNAL_NAME),
    "tracking_uri": (optional(str), None, "the store; default: the journal's, else MLFLOW_TRACKING_URI"),
}


def replay_command(ckpt_dir: Path) -> str:
    return f"{PROGRAM} ckpt_dir={ckpt_dir}"


def mark_unsent(tracking_uri: str, run_id: str, count: int) -> None:
    """Tags the run with how many writes it is missing, if the store takes that one write within
    ``MARK_TIMEOUT_S`` (a thread: MLflow's own HTTP retries would hold the exit for minutes)."""

    def mark() -> None:
        try:
            MlflowClient(tracking_uri).set_tag(run_id, keys.TAG_TRACKING_UNSENT, str(count))
        except Exception as error:  # noqa: BLE001 - the store is down: the exit code and the journal remain
            log.info("could not tag run %s as incomplete: %s", run_id, redact_text(str(error))[:200])

    thread = threading.Thread(target=mark, name="mark-unsent", daemon=True)
    thread.start()
    thread.join(MARK_TIMEOUT_S)


def _store_uri(contents: JournalContents, configured: str | None) -> str:
    uri = configured or contents.header.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri or MASK in uri:
        fail(PROGRAM, f"the journal does not hold the store's full URI ({uri}): pass tracking_uri=URI")
    return uri


def _send_writes(client: MlflowClient, run_id: str, writes: list[tuple[str, object]]) -> str | None:
    """Params, tags and artifacts in order; returns the final status to set, if the job ended one."""
    status = None
    for kind, payload in writes:
        if kind == "params":
            try:
                client.log_batch(run_id, params=[Param(key, value) for key, value in payload])
            except MlflowException as error:  # already there (a previous replay): params never change
                log.info("params not sent again: %s", str(error).splitlines()[0][:200])
        elif kind == "tag":
            client.set_tag(run_id, *payload)
        elif kind == "artifact":
            local, artifact_path = payload
            if Path(local).is_file():
                client.log_artifact(run_id, local, artifact_path)
            else:
                log.warning("artifact %s is gone; not sent", local)
        elif kind == "status":
            status = str(payload)
    return status


def replay(ckpt_dir: Path, tracking_uri: str | None = None) -> str:
    """Sends ``ckpt_dir``'s journal to its run; returns a one-line summary."""
    journal = ckpt_dir / JOURNAL_NAME
    if not journal.is_file():
        return f"nothing to replay: no {JOURNAL_NAME} in {ckpt_dir} (sent already, or nothing was unsent)"
    contents = read_journal(journal)
    run_id = contents.header.get("run_id")
    if not run_id:
        fail(PROGRAM, f"{journal} names no run (empty or damaged first line)")
    client = MlflowClient(_store_uri(contents, tracking_uri))
    try:
        floors = metric_floors(client, run_id)
    except MlflowException as error:
        fail(PROGRAM, f"run {run_id} of {journal} is not in the store: {redact_text(str(error))[:200]}")
    metrics = unsent_metrics(contents.metrics, floors)
    for start in range(0, len(metrics), METRICS_PER_REQUEST):
        client.log_batch(run_id, metrics=metrics[start : start + METRICS_PER_REQUEST])
    status = _send_writes(client, run_id, contents.writes)
    if status is not None:
        client.set_terminated(run_id, status)
    if keys.TAG_TRACKING_UNSENT in client.get_run(run_id).data.tags:
        client.delete_tag(run_id, keys.TAG_TRACKING_UNSENT)
    journal.unlink()
    skipped = len(contents.metrics) - len(metrics)
    return (
        f"run {run_id} at {redact_uri(client.tracking_uri)}: sent {len(metrics)} metrics "
        f"({skipped} already in the run), {len(contents.writes)} other writes; status {status or 'unchanged'}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_overrides(PROGRAM, sys.argv[1:] if argv is None else argv, FIELDS)
    print(replay(args["ckpt_dir"].resolve(), args["tracking_uri"]))


if __name__ == "__main__":
    main()
