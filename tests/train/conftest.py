"""Fixtures for the training tests: one thread per process, one sqlite store per session."""

from __future__ import annotations

import pytest
import torch
from mlflow.tracking import MlflowClient


@pytest.fixture(scope="session", autouse=True)
def _one_thread_per_test_process():
    # the test box has 2 shared cores; tiny nets gain nothing from more threads
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory) -> str:
    """One sqlite store per session (creating MLflow's tables takes seconds); each test has its experiment."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def client(mlflow_uri) -> MlflowClient:
    return MlflowClient(mlflow_uri)
