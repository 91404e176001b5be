"""One tracking store, many jobs starting at once: a workstation's parallel commands, a Slurm array or sweep,
a lab against one server.

MLflow creates (or migrates) a sqlite store's schema the first time any process opens it, and two processes
doing so together fail ("table ... already exists", alembic's "Online migration expected to match one row").
:func:`prepare_store` opens a sqlite store under an exclusive file lock beside the database
(``<db>.lock``, ``fcntl.flock``: released by the kernel if the holder dies), so exactly one job creates it and
the others find it ready; it also switches the database to write-ahead logging (readers never block the
writer; persistent in the file) and creates the experiment under the same lock. A server store
(``http://``, ``postgresql://``) creates its schema once at server start; experiment creation racing another
job's is retried (``pipeline.tracking.retry``). Creating runs is retried the same way (:func:`create_run`).
"""

from __future__ import annotations

import fcntl
import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from pipeline.tracking import store
from pipeline.tracking.retry import with_retries

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".lock"
BUSY_TIMEOUT_S = 30.0  # sqlite waits this long for another job's write before "database is locked"


def sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """An exclusive lock on a sqlite store (a file beside it) for the block; nothing for a server store."""
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    with (db.parent / (db.name + LOCK_SUFFIX)).open("a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)  # blocks until the job ahead has created or opened the store
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _write_ahead_log(db: Path) -> None:
    """WAL mode: concurrent jobs' reads no longer wait for a writer (and the other way round)."""
    try:
        with sqlite3.connect(db, timeout=BUSY_TIMEOUT_S) as connection:
            connection.execute("PRAGMA journal_mode=WAL")
        connection.close()
    except sqlite3.OperationalError as error:  # an optimisation only: the store works without it
        log.warning("sqlite store %s stays in its journal mode (%s)", db, error)


def prepare_store(uri: str, experiment_name: str) -> str:
    """Creates or opens the store at ``uri`` and the experiment, safe for any number of jobs at once; returns
    the experiment id."""
    with store_lock(uri):
        client = with_retries(lambda: _opened(uri), f"opening the MLflow store {_shown(uri)}")
        db = sqlite_path(uri)
        if db is not None:
            _write_ahead_log(db)
        return with_retries(
            lambda: store.get_or_create_experiment(client, experiment_name),
            f"creating MLflow experiment {experiment_name!r}",
        )


def _opened(uri: str) -> MlflowClient:
    client = MlflowClient(uri)
    client.search_experiments(max_results=1)  # makes MLflow create or migrate a sqlite store's schema now
    return client


def _shown(uri: str) -> str:
    from alexnet_common.redact import redact_uri

    return redact_uri(uri)


def create_run(
    client: MlflowClient, experiment_name: str, run_name: str, tags: dict[str, str], params: dict[str, Any]
) -> str:
    """``store.create_run``, retried on transient errors. Params are written in a second request: a retry
    after the run exists would create a second run, so only the run's creation is retried as a whole."""
    experiment_id = with_retries(
        lambda: store.get_or_create_experiment(client, experiment_name), "looking up the experiment"
    )
    run = with_retries(
        lambda: client.create_run(experiment_id, run_name=run_name, tags=tags), f"creating run {run_name}"
    )
    for batch in store.param_batches(params):
        with_retries(lambda batch=batch: client.log_batch(run.info.run_id, params=batch), "logging params")
    return run.info.run_id
