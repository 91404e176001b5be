"""train(cfg) against a real `mlflow server` on 127.0.0.1: the run, its metrics and artifacts land there."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from train_helpers import METRIC_KEYS, compose_train, free_port, runs_of, shard_overrides

from pipeline.train import train

HEALTH_WAIT_S = 120


def _wait_healthy(uri: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + HEALTH_WAIT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"mlflow server at {uri} not healthy within {HEALTH_WAIT_S} s")


@pytest.fixture
def mlflow_server(tmp_path: Path):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{tmp_path / 'server.db'}",
        "--artifacts-destination",
        str(tmp_path / "artifacts"),
    ]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    # its own session: the server's web workers are stopped with it, by its process group id
    server = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_healthy(uri, server)
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


@pytest.mark.slow
def test_a_run_lands_in_a_real_tracking_server(demo_shards, tmp_path, mlflow_server):
    result = train(compose_train(shard_overrides(demo_shards, tmp_path / "out", mlflow_server, "served")))

    client = MlflowClient(mlflow_server)
    [run] = runs_of(client, "served")
    assert run.info.run_id == result["run_id"] and run.info.status == "FINISHED"
    assert set(run.data.metrics) >= METRIC_KEYS
    assert run.data.tags["experiment"] == "baseline"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "figures", "checkpoints"} <= artifacts
