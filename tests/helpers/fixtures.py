"""Fixtures the training, resilience and tracking tests share: one thread per process, one sqlite store per
session. A pytest plugin (``pytest_plugins`` in tests/conftest.py): every test can ask for them by name; the
conftests of the folders that train turn ``one_thread_per_test_process`` on for all their tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from mlflow.tracking import MlflowClient


@pytest.fixture(scope="session")
def one_thread_per_test_process() -> Iterator[None]:
    # the test box has 2 shared cores; tiny nets gain nothing from more threads
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One sqlite store per session (creating MLflow's tables takes seconds); each test has its experiment."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def client(mlflow_uri: str) -> MlflowClient:
    return MlflowClient(mlflow_uri)
