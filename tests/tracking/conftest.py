"""The tracking tests: one thread per process (tests.helpers.fixtures)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _one_thread(one_thread_per_test_process: None) -> None:
    """Tiny nets on 2 shared cores gain nothing from more threads."""
