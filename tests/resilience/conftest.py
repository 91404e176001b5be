"""Fixtures for the resilience tests (resume, checkpoints, damaged shards, tracking outages, failing jobs)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
# the training tests' helpers (compose_train, shard_overrides, ...) and the faults injected into jobs
sys.path[:0] = [str(HERE.parent / "train"), str(HERE)]


@pytest.fixture(scope="session", autouse=True)
def _one_thread_per_test_process():
    previous = torch.get_num_threads()  # 2 shared cores; tiny nets gain nothing from more threads
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory) -> str:
    """One sqlite store per session; each test has its own experiment."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
