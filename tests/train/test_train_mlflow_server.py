"""train(cfg) against a real `mlflow server` on 127.0.0.1: the run, its metrics and artifacts land there."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline.train import train
from tests.helpers.mlflow_server import mlflow_server
from tests.helpers.training import METRIC_KEYS, compose_train, runs_of, shard_overrides


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    with mlflow_server(tmp_path) as url:
        yield url


@pytest.mark.slow
def test_a_run_lands_in_a_real_tracking_server(demo_shards, tmp_path, served):
    result = train(compose_train(shard_overrides(demo_shards, tmp_path / "out", served, "served")))

    client = MlflowClient(served)
    [run] = runs_of(client, "served")
    assert run.info.run_id == result["run_id"] and run.info.status == "FINISHED"
    assert set(run.data.metrics) >= METRIC_KEYS
    assert run.data.tags["experiment"] == "baseline"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "figures", "checkpoints"} <= artifacts
