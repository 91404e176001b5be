"""One real training on the demo shards, its model logged and registered, shared by the serving tests."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest

from pipeline.train import train
from tests.helpers.training import compose_train, shard_overrides

REGISTERED_NAME = "alexnet-demo"
EXPERIMENT = "serving"


@dataclass(frozen=True)
class LoggedRun:
    run_id: str
    uri: str  # the tracking URI
    model_uri: str  # runs:/<run id>/model
    result: dict


@pytest.fixture(scope="session", autouse=True)
def _one_thread(one_thread_per_test_process: None) -> None:
    """Tiny nets on 2 shared cores gain nothing from more threads."""


@pytest.fixture(scope="module")
def logged_run(demo_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> LoggedRun:
    root = tmp_path_factory.mktemp("serving")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    overrides = shard_overrides(demo_shards, root / "out", uri, EXPERIMENT)
    here = Path.cwd()
    os.chdir(root)  # the sqlite store keeps its artifacts in ./mlruns
    try:
        result = train(compose_train([*overrides, f"logger.register_model={REGISTERED_NAME}"]))
    finally:
        os.chdir(here)
    mlflow.set_tracking_uri(uri)  # runs:/ and models:/ URIs in the tests resolve through it
    return LoggedRun(result["run_id"], uri, f"runs:/{result['run_id']}/model", result)


@pytest.fixture(scope="module")
def unseen_jpeg(demo_source: Path) -> Path:
    """A real photo of the demo's val split in its source form (any size, never a training image)."""
    return sorted((demo_source / "val").rglob("*.JPEG"))[0]
