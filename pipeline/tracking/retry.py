"""Retrying the tracking store's known transient errors with backoff: what many jobs starting at once on one
store meet (sqlite's "database is locked", two jobs creating one experiment, a server or database restarting),
as opposed to a wrong URI or a refused write, which fail at once."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from alexnet_common.redact import redact_text

log = logging.getLogger(__name__)

T = TypeVar("T")

# Lower-cased fragments of the messages of errors that go away when tried again.
TRANSIENT = (
    "database is locked",
    "database table is locked",
    "already exists",  # another job created the experiment between our lookup and our create
    "unique constraint",
    "duplicate key value",
    "online migration expected",  # alembic: another process migrated the schema under us
    "could not connect to server",
    "connection refused",
    "server closed the connection",
    "terminating connection",  # PostgreSQL restarting
    "the database system is starting up",
    "the database system is shutting down",
    "max retries exceeded",
    "temporarily unavailable",
    "503",
)


def is_transient(error: BaseException) -> bool:
    text = f"{type(error).__name__}: {error}".lower()
    return any(fragment in text for fragment in TRANSIENT)


def with_retries(
    action: Callable[[], T],
    what: str,
    *,
    attempts: int = 10,
    first_delay_s: float = 0.2,
    max_delay_s: float = 5.0,
) -> T:
    """``action()``, tried again after a transient error (jittered exponential backoff, ``attempts`` tries in
    all, about a minute with the defaults); any other error, or the last one, is raised."""
    delay = first_delay_s
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as error:
            if attempt == attempts or not is_transient(error):
                raise
            log.info(
                "%s: %s; trying again in %.1f s (%d/%d)",
                what,
                redact_text(str(error).splitlines()[0][:200]),
                delay,
                attempt,
                attempts,
            )
            time.sleep(delay * random.uniform(0.5, 1.5))  # jitter: jobs started together spread out
            delay = min(2 * delay, max_delay_s)
    raise AssertionError("unreachable")
