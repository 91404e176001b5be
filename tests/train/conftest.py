"""Fixtures for the training tests: one thread per process, one sqlite store per session (shared_fixtures)."""

from __future__ import annotations

from shared_fixtures import client, mlflow_uri, one_thread_per_test_process  # noqa: F401 (found by name)
